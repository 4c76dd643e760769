//! How tokens are verified, as configured: one issuer's settings. Key
//! files and URLs are named, not read: [`super::JwtVerifier::load`] reads
//! them when the settings are put to use.

use std::path::PathBuf;
use std::time::Duration;

use http::Uri;
use jsonwebtoken::Algorithm;

use crate::secret::Secret;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwtSettings {
    /// Algorithms tokens may use; each key narrows them to its own.
    pub algorithms: Vec<Algorithm>,
    pub keys: KeySetting,
    pub issuer: Option<String>,
    pub audience: Option<String>,
    pub leeway: Duration,
    pub role_claim: String,
    /// `JWT_SECRET_KEY_PREVIOUS`: with an HMAC secret, tokens signed with
    /// this one are accepted too, so a secret rotates without logging
    /// everyone out.
    pub previous_secret: Option<Secret>,
}

/// Where the verification keys come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySetting {
    /// HMAC secret, from `JWT_SECRET_KEY`.
    Secret(Secret),
    /// HMAC secret read from a file (`secret_file`, as container
    /// orchestrators mount secrets), and the previous one while rotating
    /// (`previous_secret_file`): how issuers other than `[jwt]` get one.
    SecretFile { file: PathBuf, previous: Option<PathBuf> },
    /// `jwt.public_key_file`, resolved against the config file's folder.
    PemFile(PathBuf),
    /// `jwt.jwks_file`, likewise.
    JwksFile(PathBuf),
    /// `jwt.jwks_url`: fetched at start and kept fresh.
    JwksUrl(RemoteSettings),
}

/// A JWKS published at a URL, and how it is kept fresh.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteSettings {
    /// The JWKS itself, or (with `discovery`) the issuer whose
    /// `/.well-known/openid-configuration` names it.
    pub url: Uri,
    /// Read `url`'s OpenID configuration for `jwks_uri` first.
    pub discovery: bool,
    /// Trust only these CAs for an `https://` URL; `None`: the built-in roots.
    pub ca_file: Option<PathBuf>,
    /// Bounds on the refresh interval the response's `max-age` asks for.
    pub min_refresh: Duration,
    pub max_refresh: Duration,
    /// An unknown `kid` refetches at most this often (counted from the last
    /// fetch of any kind).
    pub refetch_interval: Duration,
    /// After this long without a successful fetch, the last good set is
    /// no longer trusted and tokens are refused (503).
    pub max_stale: Duration,
}
