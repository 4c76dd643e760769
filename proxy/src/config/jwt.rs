//! `[jwt]` and `[[jwt.issuers]]`: how tokens are verified. Key files and
//! URLs are named here and read when the settings are put to use
//! (`JwtVerifier::load`), so parsing does no I/O.

use std::collections::HashSet;
use std::path::Path;

use http::Uri;
use jsonwebtoken::{Algorithm, AlgorithmFamily};

use super::defaults::*;
use super::errors::Problems;
use super::raw::RawJwt;
use crate::auth::{check_secret, JwtSettings, KeySetting, RemoteSettings};
use crate::secret::Secret;

/// The `[jwt]` table as one issuer, or each of its `[[jwt.issuers]]`.
/// `secrets`: `JWT_SECRET_KEY` and `JWT_SECRET_KEY_PREVIOUS`, which only
/// the `[jwt]` table uses. `needed`: some route needs a token.
pub(super) fn jwt_settings(
    p: &mut Problems,
    raw: &RawJwt,
    secrets: (Option<String>, Option<String>),
    base_dir: &Path,
    needed: bool,
) -> Vec<JwtSettings> {
    if raw.issuers.is_empty() {
        return issuer_settings(p, "jwt", raw, secrets, base_dir, needed)
            .into_iter()
            .collect();
    }
    let top_level = [
        ("algorithm", raw.algorithm.is_some()),
        ("algorithms", raw.algorithms.is_some()),
        ("public_key_file", raw.public_key_file.is_some()),
        ("jwks_file", raw.jwks_file.is_some()),
        ("jwks_url", raw.jwks_url.is_some()),
        ("issuer", raw.issuer.is_some()),
        ("audience", raw.audience.is_some()),
        ("role_claim", raw.role_claim.is_some()),
    ];
    for (field, set) in top_level {
        if set {
            p.add(
                format!("jwt.{field}"),
                "set it in each [[jwt.issuers]] table: with several issuers, [jwt] holds only the list",
            );
        }
    }
    let mut names = HashSet::new();
    let mut out = Vec::new();
    for (i, issuer) in raw.issuers.iter().enumerate() {
        let prefix = format!("jwt.issuers[{i}]");
        if !issuer.issuers.is_empty() {
            p.add(format!("{prefix}.issuers"), "issuers cannot be nested");
        }
        match &issuer.issuer {
            None => p.add(
                format!("{prefix}.issuer"),
                "is required: the token's iss chooses the issuer",
            ),
            Some(name) if !names.insert(name.clone()) => {
                p.add(format!("{prefix}.issuer"), format!("{name:?} is listed twice"))
            }
            Some(_) => {}
        }
        out.extend(issuer_settings(p, &prefix, issuer, (None, None), base_dir, true));
    }
    out
}

/// One issuer's settings, fields named under `prefix`.
fn issuer_settings(
    p: &mut Problems,
    prefix: &str,
    raw: &RawJwt,
    (secret, previous_secret): (Option<String>, Option<String>),
    base_dir: &Path,
    needed: bool,
) -> Option<JwtSettings> {
    let field = |name: &str| format!("{prefix}.{name}");
    let algorithms = algorithms(p, prefix, raw)?;
    let hmac = algorithms.iter().all(|a| a.family() == AlgorithmFamily::Hmac);
    let sources = [
        raw.public_key_file.is_some(),
        raw.jwks_file.is_some(),
        raw.jwks_url.is_some(),
        raw.secret_file.is_some(),
    ];
    if sources.iter().filter(|set| **set).count() > 1 {
        p.add(
            field("jwks_url"),
            "set one of public_key_file, jwks_file, jwks_url and secret_file",
        );
        return None;
    }
    if raw.previous_secret_file.is_some() && raw.secret_file.is_none() {
        p.add(field("previous_secret_file"), "needs secret_file");
        return None;
    }
    let keys = if let Some(path) = &raw.public_key_file {
        let family = algorithms[0].family();
        if family == AlgorithmFamily::Hmac || algorithms.iter().any(|a| a.family() != family) {
            p.add(
                field("algorithms"),
                "a public key file verifies one asymmetric family (RS/PS, ES or EdDSA)",
            );
            return None;
        }
        KeySetting::PemFile(base_dir.join(path))
    } else if let Some(path) = &raw.jwks_file {
        KeySetting::JwksFile(base_dir.join(path))
    } else if let Some(url) = &raw.jwks_url {
        if algorithms.iter().any(|a| a.family() == AlgorithmFamily::Hmac) {
            p.add(
                field("algorithms"),
                "HMAC keys are secrets: a JWKS URL must not publish them",
            );
            return None;
        }
        KeySetting::JwksUrl(remote_settings(p, prefix, raw, url, base_dir)?)
    } else if let Some(file) = &raw.secret_file {
        if !hmac || algorithms.len() > 1 {
            p.add(
                field("secret_file"),
                "holds an HMAC secret: algorithm must be one of HS256/384/512",
            );
            return None;
        }
        KeySetting::SecretFile {
            file: base_dir.join(file),
            previous: raw.previous_secret_file.as_ref().map(|path| base_dir.join(path)),
        }
    } else if hmac && prefix == "jwt" {
        match secret {
            Some(secret) => {
                if let Err(e) = check_secret(algorithms[0], secret.len()) {
                    p.add(e.field, e.message);
                    return None;
                }
                KeySetting::Secret(Secret(secret))
            }
            None if needed => {
                p.add(
                    "JWT_SECRET_KEY",
                    format!(
                        "must be set in the environment: jwt.algorithm is {:?} and some routes need a token",
                        algorithms[0]
                    ),
                );
                return None;
            }
            None => return None,
        }
    } else if hmac {
        p.add(
            field("algorithms"),
            "an HMAC issuer needs secret_file (JWT_SECRET_KEY is the [jwt] table's)",
        );
        return None;
    } else if needed {
        p.add(
            field("public_key_file"),
            format!("is required for {:?} (or set jwks_file or jwks_url)", algorithms[0]),
        );
        return None;
    } else {
        return None;
    };
    if hmac && algorithms.len() > 1 {
        p.add(field("algorithms"), "an HMAC secret verifies one algorithm");
        return None;
    }
    let previous_secret = match (previous_secret, &keys) {
        (None, _) => None,
        (Some(previous), KeySetting::Secret(_)) => {
            if let Err(e) = check_secret(algorithms[0], previous.len()) {
                p.add("JWT_SECRET_KEY_PREVIOUS", e.message);
                return None;
            }
            Some(Secret(previous))
        }
        (Some(_), _) => {
            p.add(
                "JWT_SECRET_KEY_PREVIOUS",
                "only an HMAC secret (JWT_SECRET_KEY) can have a previous one",
            );
            return None;
        }
    };
    Some(JwtSettings {
        algorithms,
        keys,
        previous_secret,
        issuer: raw.issuer.clone(),
        audience: raw.audience.clone(),
        leeway: raw.leeway.unwrap_or(DEFAULT_LEEWAY),
        role_claim: raw.role_claim.clone().unwrap_or_else(|| DEFAULT_ROLE_CLAIM.to_owned()),
    })
}

/// `algorithm` or `algorithms` (not both); HS256 when neither is set.
fn algorithms(p: &mut Problems, prefix: &str, raw: &RawJwt) -> Option<Vec<Algorithm>> {
    let (field, names) = match (&raw.algorithm, &raw.algorithms) {
        (Some(_), Some(_)) => {
            p.add(format!("{prefix}.algorithms"), "set algorithm or algorithms, not both");
            return None;
        }
        (Some(one), None) => ("algorithm", vec![one.clone()]),
        (None, Some(list)) if !list.is_empty() => ("algorithms", list.clone()),
        (None, Some(_)) => {
            p.add(format!("{prefix}.algorithms"), "must name at least one algorithm");
            return None;
        }
        (None, None) => ("algorithm", vec!["HS256".to_owned()]),
    };
    let mut out = Vec::new();
    for name in names {
        match name.parse::<Algorithm>() {
            Ok(algorithm) if !out.contains(&algorithm) => out.push(algorithm),
            Ok(_) => {}
            Err(_) => {
                p.add(
                    format!("{prefix}.{field}"),
                    format!("{name:?} is not one of HS256/384/512, RS256/384/512, PS256/384/512, ES256/384, EdDSA"),
                );
                return None;
            }
        }
    }
    Some(out)
}

fn remote_settings(p: &mut Problems, prefix: &str, raw: &RawJwt, url: &str, base_dir: &Path) -> Option<RemoteSettings> {
    let field = format!("{prefix}.jwks_url");
    let uri = match url.parse::<Uri>() {
        Ok(uri) if uri.host().is_some() && matches!(uri.scheme_str(), Some("https" | "http")) => uri,
        _ => {
            p.add(field, format!("{url:?} is not an http(s):// URL"));
            return None;
        }
    };
    // Keys fetched in plain text from across a network could be anyone's:
    // http:// only to this machine (a sidecar, a test).
    let loopback = matches!(uri.host(), Some("localhost" | "127.0.0.1" | "[::1]"));
    if uri.scheme_str() == Some("http") && !loopback {
        p.add(
            field,
            format!("{url:?}: keys must be fetched over https:// (http:// only from localhost)"),
        );
        return None;
    }
    let min_refresh = raw.jwks_min_refresh.unwrap_or(DEFAULT_JWKS_MIN_REFRESH);
    let max_refresh = raw.jwks_max_refresh.unwrap_or(DEFAULT_JWKS_MAX_REFRESH);
    if min_refresh.is_zero() || min_refresh > max_refresh {
        p.add(
            format!("{prefix}.jwks_min_refresh"),
            "must be above zero and at most jwks_max_refresh",
        );
    }
    Some(RemoteSettings {
        url: uri,
        discovery: raw.discovery.unwrap_or(false),
        ca_file: raw.jwks_ca_file.as_ref().map(|path| base_dir.join(path)),
        min_refresh,
        max_refresh,
        refetch_interval: raw.jwks_refetch_interval.unwrap_or(DEFAULT_JWKS_REFETCH_INTERVAL),
        max_stale: raw.jwks_max_stale.unwrap_or(DEFAULT_JWKS_MAX_STALE),
    })
}
