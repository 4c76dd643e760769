//! The config file (and `.env`) as a source of settings: read at start and
//! again on every reload.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;

use super::{boot_changes, Config, ConfigError, ConfigErrors, Env, Overrides};
use crate::boot::BootSettings;
use crate::runtime::{Problem, RuntimeSettings, SettingsSource};

/// Where settings are read from, and what overrides them.
#[derive(Debug, Clone)]
pub struct ConfigFile {
    pub path: PathBuf,
    /// The process environment as it was at start, before `.env` was read:
    /// a running process cannot see its environment change, so only the
    /// file and `.env` can change what a reload reads.
    pub environment: HashMap<String, String>,
    /// `.env`, read anew each time; its values yield to `environment`.
    pub dotenv: Option<PathBuf>,
    /// CLI flags: above everything.
    pub flags: Overrides,
}

/// Environment variables first, then `.env`.
struct Layered<'a> {
    environment: &'a HashMap<String, String>,
    dotenv: HashMap<String, String>,
}

impl Env for Layered<'_> {
    fn get(&self, name: &str) -> Option<String> {
        self.environment
            .get(name)
            .or_else(|| self.dotenv.get(name))
            .filter(|v| !v.is_empty())
            .cloned()
    }
}

impl ConfigFile {
    /// Reads and validates the file, `.env` and overrides.
    pub fn load(&self) -> Result<Config, ConfigErrors> {
        let one = |field: String, message: String| ConfigErrors(vec![ConfigError::new(field, message)]);
        let text = std::fs::read_to_string(&self.path)
            .map_err(|e| one(self.path.display().to_string(), format!("cannot read: {e}")))?;
        let dotenv = match &self.dotenv {
            Some(path) => dotenvy::from_path_iter(path)
                .and_then(|entries| entries.collect::<Result<HashMap<_, _>, _>>())
                .map_err(|e| one(path.display().to_string(), format!("cannot read: {e}")))?,
            None => HashMap::new(),
        };
        let env = Layered {
            environment: &self.environment,
            dotenv,
        };
        let overrides = Overrides::from_env(&env).overridden_by(self.flags.clone());
        let base_dir = self.path.parent().map(PathBuf::from).unwrap_or_default();
        Config::load(&text, overrides, &base_dir)
    }
}

impl ConfigFile {
    /// A digest of what [`load`](Self::load) reads (the file and `.env`)
    /// and of the files the settings name (`also`: certificates, keys), to
    /// notice a change; an unreadable file digests as empty.
    pub fn contents_digest(&self, also: &[PathBuf]) -> [u8; 32] {
        use sha2::{Digest, Sha256};
        let mut digest = Sha256::new();
        for path in std::iter::once(&self.path).chain(&self.dotenv).chain(also) {
            let contents = std::fs::read(path).unwrap_or_default();
            digest.update((contents.len() as u64).to_be_bytes());
            digest.update(contents);
        }
        digest.finalize().into()
    }
}

/// Reloads from a [`ConfigFile`], refusing changes to boot settings.
pub struct FileSource {
    pub file: ConfigFile,
    /// The boot settings the process runs with.
    pub running: BootSettings,
}

#[async_trait]
impl SettingsSource for FileSource {
    async fn read(&self) -> Result<(RuntimeSettings, Arc<str>), Vec<Problem>> {
        let file = self.file.clone();
        let config = tokio::task::spawn_blocking(move || file.load())
            .await
            .map_err(|e| vec![Problem::new("config", format!("reading the config failed: {e}"))])?
            .map_err(|errors| errors.0)?;
        let changed = boot_changes(&self.running, &config.boot);
        if !changed.is_empty() {
            return Err(changed);
        }
        Ok((config.runtime, config.version))
    }
}
