//! Fuzz targets for the parsers that clients, origins and operators reach.
//!
//! Each target is a plain `pub fn(&[u8])` that feeds its input to the real
//! parser and asserts what must hold for *every* input: no panic, and cheap
//! invariants (normalisation is idempotent, a decoded entry re-encodes to
//! itself, a verified token really carries the claims it was accepted for).
//! A failed assertion is a finding, exactly like a panic.
//!
//! The functions are engine-agnostic. Two drivers call them:
//! - `fuzz/libfuzzer/` (its own workspace, nightly, `cargo fuzz`): one
//!   `fuzz_target!` per target, run by `scripts/fuzz`;
//! - `fuzz/tests/replay.rs` (stable, part of `cargo test --workspace`):
//!   every file under `fuzz/corpus/<target>/` and `fuzz/regressions/<target>/`
//!   through the same function, so seeds and past crashes stay green.
//!
//! This crate owns the targets, their input formats and invariants; it
//! does not own the parsers (they live in `proxy` and `origin`) and needs
//! nothing from them beyond their public API (`origin::validate::json_object`
//! was split out of the body extractor so it can be called without HTTP).
//!
//! # Layout
//! - [`route`]: request target normalisation and rule matching.
//! - [`query`]: the query normaliser, against what a backend decodes.
//! - [`jwt`]: bearer tokens through the verifier, raw and signed.
//! - [`config`]: `config.toml` text through parsing and validation.
//! - [`entry`]: cache entry decoding (v1, v2) and encoding.
//! - [`headers`]: `Cache-Control`, `Vary`, surrogate keys, validators.
//! - [`origin_json`]: the origin's request-body and query validation.

pub mod config;
pub mod entry;
pub mod headers;
pub mod jwt;
pub mod origin_json;
pub mod query;
pub mod route;

/// One fuzz target: its name (the corpus folder and the cargo-fuzz binary)
/// and the function that checks one input.
#[derive(Clone, Copy)]
pub struct Target {
    pub name: &'static str,
    pub run: fn(&[u8]),
}

/// Every target, in the order `scripts/fuzz` runs them.
pub const TARGETS: &[Target] = &[
    Target {
        name: "route",
        run: route::route,
    },
    Target {
        name: "query",
        run: query::query,
    },
    Target {
        name: "jwt",
        run: jwt::jwt,
    },
    Target {
        name: "config",
        run: config::config,
    },
    Target {
        name: "entry",
        run: entry::entry,
    },
    Target {
        name: "headers",
        run: headers::headers,
    },
    Target {
        name: "origin_json",
        run: origin_json::origin_json,
    },
];

/// A cursor over fuzz bytes for targets with a binary input format: reads
/// past the end yield zeros and empty slices, so every input is usable.
pub(crate) struct Input<'a>(&'a [u8]);

impl<'a> Input<'a> {
    pub(crate) fn new(data: &'a [u8]) -> Input<'a> {
        Input(data)
    }

    pub(crate) fn byte(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&b, rest)) => {
                self.0 = rest;
                b
            }
            None => 0,
        }
    }

    pub(crate) fn u16(&mut self) -> u16 {
        u16::from_be_bytes([self.byte(), self.byte()])
    }

    pub(crate) fn u64(&mut self) -> u64 {
        let mut bytes = [0; 8];
        for b in &mut bytes {
            *b = self.byte();
        }
        u64::from_be_bytes(bytes)
    }

    /// A slice whose length is the next byte (capped by what is left).
    pub(crate) fn chunk(&mut self) -> &'a [u8] {
        let len = usize::from(self.byte()).min(self.0.len());
        let (chunk, rest) = self.0.split_at(len);
        self.0 = rest;
        chunk
    }

    /// Whatever is left.
    pub(crate) fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.0)
    }
}

/// Folder of the test keys shipped with the repository (`tests/keys`).
pub(crate) fn keys_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/keys")
}
