//! An error with every cause below it, for log lines: hyper's and
//! rustls' errors name what happened only in their sources.

/// `err: cause: cause's cause …`.
pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(e) = source {
        out.push_str(": ");
        out.push_str(&e.to_string());
        source = e.source();
    }
    out
}
