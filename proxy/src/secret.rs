//! A string kept out of logs, `Debug` output and the admin `/config` page.

/// A secret setting: a Redis URL with a password, the admin token.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}
