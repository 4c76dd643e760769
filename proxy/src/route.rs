//! Path normalisation and rule matching (DESIGN.md step 1).
//!
//! Owns how a request target becomes the canonical path and query that are
//! both matched, keyed and forwarded — so what the proxy authorises, caches
//! and sends upstream is always the same string — and which [`Rule`] it
//! selects. Does not authenticate or look at headers.

use std::borrow::Cow;
use std::collections::HashSet;

use http::{HeaderValue, Method};

use crate::cache::CachePolicy;
use crate::rbac::Access;

/// Why a request target was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    /// Not an origin-form path, bad percent-encoding, or an encoded
    /// separator the matched rule does not allow.
    #[error("malformed request path: {0}")]
    BadPath(&'static str),
    #[error("no route for this path")]
    NoRule,
    /// The path matched, not the method; carries the `Allow` value.
    #[error("method not allowed")]
    MethodNotAllowed(HeaderValue),
}

/// A request target in canonical form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Percent-decoded where unreserved, dot-segments resolved, no empty
    /// segments. Always starts with `/`.
    pub path: String,
    /// Parameters stably sorted by name; `None` when empty.
    pub query: Option<String>,
    /// The path still holds `%2F`, `%5C`, `%00`, `\`, `;` or `%3B`:
    /// characters that back ends split or truncate paths on differently
    /// from us (some decode `%3B` before cutting `;params` off a segment).
    pub has_ambiguous_chars: bool,
}

impl Target {
    /// Path and query as sent upstream.
    pub fn path_and_query(&self) -> String {
        match &self.query {
            Some(q) => format!("{}?{}", self.path, q),
            None => self.path.clone(),
        }
    }
}

/// Normalises an origin-form path and query.
pub fn normalise(path: &str, query: Option<&str>) -> Result<Target, RouteError> {
    if !path.starts_with('/') {
        return Err(RouteError::BadPath("path must start with '/'"));
    }
    let decoded = decode_unreserved(path)?;
    let has_ambiguous_chars = has_ambiguous_chars(&decoded);
    let path = resolve_segments(&decoded);
    let query = match query {
        Some(q) if !q.is_empty() => sort_query(q)?,
        _ => None,
    };
    Ok(Target {
        path,
        query,
        has_ambiguous_chars,
    })
}

/// Decodes `%XX` that encode unreserved characters (RFC 3986 §2.3), which
/// are equivalent to their literal form, and upper-cases the hex of the
/// rest, which are not. Bytes a URI may not carry literally are escaped
/// (see [`must_escape`]). Rejects malformed escapes.
fn decode_unreserved(input: &str) -> Result<Cow<'_, str>, RouteError> {
    if !input.bytes().any(|b| b == b'%' || must_escape(b)) {
        return Ok(Cow::Borrowed(input));
    }
    let bytes = input.as_bytes();
    let mut out = String::with_capacity(input.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .ok_or(RouteError::BadPath("truncated percent-encoding"))?;
            // Both must be hex digits: `from_str_radix` alone would accept
            // "+0", which some back ends decode to NUL.
            if !hex.iter().all(u8::is_ascii_hexdigit) {
                return Err(RouteError::BadPath("invalid percent-encoding"));
            }
            let value = u8::from_str_radix(std::str::from_utf8(hex).expect("hex digits are ASCII"), 16)
                .expect("two hex digits fit a byte");
            if value.is_ascii_alphanumeric() || matches!(value, b'-' | b'.' | b'_' | b'~') {
                out.push(value as char);
            } else {
                out.push('%');
                out.push_str(&String::from_utf8_lossy(hex).to_ascii_uppercase());
            }
            i += 3;
        } else if must_escape(bytes[i]) {
            push_escape(&mut out, bytes[i]);
            i += 1;
        } else {
            // Safe: what is left between '%'s and escaped bytes is ASCII.
            let next = input[i..]
                .find(|c: char| c == '%' || !c.is_ascii() || must_escape(c as u8))
                .map_or(input.len(), |n| i + n);
            out.push_str(&input[i..next]);
            i = next;
        }
    }
    Ok(Cow::Owned(out))
}

/// Bytes a URI may not carry literally (RFC 3986 §2): non-ASCII, controls,
/// space and `"<>^`{|}`. Clients send raw UTF-8 anyway (hyper accepts it),
/// and back ends decode `%C3%A9` and a raw `é` to the same bytes, so the
/// normal form spells them as escapes: one spelling, one rule, one key.
/// A backslash stays as it is: it is flagged as ambiguous either way.
fn must_escape(b: u8) -> bool {
    b >= 0x80 || b <= 0x20 || b == 0x7f || matches!(b, b'"' | b'<' | b'>' | b'^' | b'`' | b'{' | b'|' | b'}')
}

fn push_escape(out: &mut String, b: u8) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    out.push('%');
    out.push(HEX[usize::from(b >> 4)] as char);
    out.push(HEX[usize::from(b & 15)] as char);
}

/// Removes `.` and `..` segments (RFC 3986 §5.2.4) and empty segments from
/// repeated slashes. `..` never climbs above the root. A trailing slash is
/// kept: `/a/` and `/a` are different resources to many back ends.
fn resolve_segments(path: &str) -> String {
    // Written straight into the result (every request's path goes through
    // here): `..` takes back the last segment written.
    let mut out = String::with_capacity(path.len());
    let mut trailing_slash = false;
    for segment in path.split('/').skip(1) {
        trailing_slash = false;
        match segment {
            "" | "." => trailing_slash = true,
            ".." => {
                out.truncate(out.rfind('/').unwrap_or(0));
                trailing_slash = true;
            }
            s => {
                out.push('/');
                out.push_str(s);
            }
        }
    }
    if out.is_empty() || trailing_slash {
        out.push('/');
    }
    out
}

/// Whether a decoded path holds a separator in disguise (`%2F`, `%5C`,
/// `%3B`), a NUL (`%00`), `\` or `;`: read without copying the path, as
/// every request's is.
fn has_ambiguous_chars(decoded: &str) -> bool {
    const ESCAPES: [&[u8; 2]; 4] = [b"2F", b"5C", b"00", b"3B"];
    decoded.contains(['\\', ';'])
        || decoded
            .as_bytes()
            .windows(3)
            .any(|w| w[0] == b'%' && ESCAPES.iter().any(|e| w[1..].eq_ignore_ascii_case(&e[..])))
}

/// Sorts `name=value` pairs by name, stably, so repeated names keep their
/// order (`a=2&a=1` differs from `a=1&a=2`). Empty pairs are dropped.
///
/// Names compare as a form decoder reads them, so spellings a back end
/// takes for the same name (`a+b`, `a%20b`) count as repeats of one name
/// and keep their order: sorting them apart would change which value a
/// back end reading the first (or last) one sees.
fn sort_query(query: &str) -> Result<Option<String>, RouteError> {
    let decoded = decode_unreserved(query)?;
    let mut pairs: Vec<&str> = decoded.split('&').filter(|p| !p.is_empty()).collect();
    if pairs.is_empty() {
        return Ok(None);
    }
    pairs.sort_by_cached_key(|&pair| param_name(pair));
    Ok(Some(pairs.join("&")))
}

/// A parameter's name as `application/x-www-form-urlencoded` decoding reads
/// it: `+` a space, escapes decoded, invalid UTF-8 replaced.
fn param_name(pair: &str) -> Cow<'_, str> {
    let name = pair.split_once('=').map_or(pair, |(name, _)| name);
    if !name.contains(['%', '+']) {
        return Cow::Borrowed(name);
    }
    form_urlencoded::parse(name.as_bytes())
        .next()
        .map_or(Cow::Borrowed(""), |(name, _)| Cow::Owned(name.into_owned()))
}

// === Pattern ===

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    /// `{name}`: any one non-empty segment.
    Param,
}

/// A route path pattern: literal segments, `{param}` segments and an
/// optional trailing `*` matching any remainder (including none).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    segments: Vec<Segment>,
    wildcard: bool,
    trailing_slash: bool,
}

impl Pattern {
    pub fn parse(pattern: &str) -> Result<Pattern, String> {
        if !pattern.starts_with('/') {
            return Err(format!("{pattern:?} must start with '/'"));
        }
        let mut parts: Vec<&str> = pattern[1..].split('/').collect();
        let wildcard = parts.last() == Some(&"*");
        if wildcard {
            parts.pop();
        }
        let trailing_slash = !wildcard && parts.len() > 1 && parts.last() == Some(&"");
        if trailing_slash || parts == [""] {
            parts.pop();
        }
        let mut segments = Vec::with_capacity(parts.len());
        for part in parts {
            let segment = if part.starts_with('{') && part.ends_with('}') && part.len() > 2 {
                Segment::Param
            } else if part.is_empty() || part.contains(['{', '}', '*', '%', '?', '#']) || part == "." || part == ".." {
                return Err(format!(
                    "{pattern:?}: segment {part:?} must be a literal, a {{param}}, or a final *"
                ));
            } else {
                // Spelled as a request's normal form spells it (`é` as
                // `%C3%A9`), or no request could ever match it.
                let mut literal = String::with_capacity(part.len());
                for &b in part.as_bytes() {
                    if must_escape(b) {
                        push_escape(&mut literal, b);
                    } else {
                        literal.push(b as char);
                    }
                }
                Segment::Literal(literal)
            };
            segments.push(segment);
        }
        Ok(Pattern {
            segments,
            wildcard,
            trailing_slash,
        })
    }

    /// The pattern in one spelling for all the ways of writing it
    /// (`{id}` and `{user}` alike), for fingerprints.
    pub fn canonical(&self) -> String {
        let mut out = String::new();
        for segment in &self.segments {
            out.push('/');
            match segment {
                Segment::Literal(literal) => out.push_str(literal),
                Segment::Param => out.push_str("{}"),
            }
        }
        match (self.wildcard, self.trailing_slash) {
            (true, _) => out.push_str("/*"),
            (false, true) => out.push('/'),
            (false, false) if out.is_empty() => out.push('/'),
            (false, false) => {}
        }
        out
    }

    /// Matches a normalised path.
    pub fn matches(&self, path: &str) -> bool {
        let rest = &path[1..];
        let trailing_slash = rest.ends_with('/');
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        let mut parts = rest.split('/').filter(|p| !p.is_empty());
        for segment in &self.segments {
            match (segment, parts.next()) {
                (Segment::Literal(lit), Some(part)) if lit == part => {}
                (Segment::Param, Some(_)) => {}
                _ => return false,
            }
        }
        if self.wildcard {
            return true;
        }
        parts.next().is_none() && trailing_slash == self.trailing_slash
    }
}

// === Rule ===

/// One `[[routes]]` entry, validated.
#[derive(Debug)]
pub struct Rule {
    /// Labels metrics. Interned, so metrics label by it without allocating
    /// on every request.
    pub name: &'static str,
    /// What this rule's cache entries are filed under (keys, learned
    /// `vary`): see [`cache_id`]. Interned like `name`.
    pub cache_id: &'static str,
    pub pattern: Pattern,
    pub methods: Vec<Method>,
    pub access: Access,
    /// `Some` on cacheable (GET/HEAD) rules.
    pub cache: Option<CachePolicy>,
    /// Tags whose cached entries a completed write through this rule
    /// invalidates.
    pub invalidates: Vec<String>,
    /// On cacheable rules, the only client headers (besides `vary` ones)
    /// that reach the upstream.
    pub forward_headers: Vec<http::HeaderName>,
    /// Lets `%2F`, `%5C`, `%00`, `\`, `;` and `%3B` through in this rule's
    /// paths.
    pub allow_encoded_separators: bool,
    /// Requests of this rule at the backend at once; `None`: no limit of
    /// its own.
    pub max_concurrent_requests: Option<usize>,
    /// Rate limits every request of this rule counts in (its own, or
    /// `[limits].default`).
    pub limits: crate::guard::limits::Limits,
}

/// The name a rule's entries are filed under: its name and a fingerprint
/// of everything that decides which request an entry answers, what the
/// origin was asked, and what invalidates it (path pattern, scope, `vary`,
/// forwarded headers, stored statuses, tags). A reload that keeps these
/// keeps the rule's entries; one that changes any of them files the rule's
/// entries anew, so an entry stored under the old rule is never served
/// under the new one. TTL, stale windows and access are not in it: entries
/// keep the lifetime they were stored with, and access is checked before
/// any lookup.
pub fn cache_id(
    name: &str,
    pattern: &Pattern,
    cache: Option<&CachePolicy>,
    forward_headers: &[http::HeaderName],
) -> &'static str {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    let mut field = |bytes: &[u8]| {
        h.update((bytes.len() as u64).to_be_bytes());
        h.update(bytes);
    };
    field(pattern.canonical().as_bytes());
    for name in forward_headers {
        field(name.as_str().as_bytes());
    }
    if let Some(cache) = cache {
        field(format!("{:?}", cache.scope).as_bytes());
        field(b"vary");
        for name in &cache.vary {
            field(name.as_str().as_bytes());
        }
        field(b"statuses");
        for status in &cache.statuses {
            field(&status.to_be_bytes());
        }
        field(b"tags");
        for tag in &cache.tags {
            field(tag.as_bytes());
        }
    }
    let digest = h.finalize();
    let fingerprint: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    intern(&format!("{name}@{fingerprint}"))
}

/// The one `&'static str` for `s`: each distinct rule name or cache id is
/// allocated once for the process's life, however often rules are
/// reloaded, so metric labels and keys borrow it freely.
pub fn intern(s: &str) -> &'static str {
    static INTERNED: std::sync::OnceLock<std::sync::Mutex<HashSet<&'static str>>> = std::sync::OnceLock::new();
    let mut interned = INTERNED.get_or_init(Default::default).lock().expect("intern lock");
    if let Some(existing) = interned.get(s) {
        return existing;
    }
    let leaked: &'static str = Box::leak(s.to_owned().into_boxed_str());
    interned.insert(leaked);
    leaked
}

/// Rules in config order; the first rule whose pattern and method match wins.
#[derive(Debug)]
pub struct RuleSet {
    rules: Vec<Rule>,
    /// Every tag a cacheable rule's entries record a generation for.
    recorded_tags: HashSet<String>,
}

impl RuleSet {
    pub fn new(rules: Vec<Rule>) -> RuleSet {
        let recorded_tags = rules
            .iter()
            .filter_map(|r| r.cache.as_ref())
            .flat_map(|c| c.tags.iter().cloned())
            .collect();
        RuleSet { rules, recorded_tags }
    }

    /// Whether some cacheable rule's entries record `tag`'s generation.
    pub fn records_tag(&self, tag: &str) -> bool {
        self.recorded_tags.contains(tag)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Rule> {
        self.rules.iter()
    }

    pub fn by_name(&self, name: &str) -> Option<&Rule> {
        self.rules.iter().find(|r| r.name == name)
    }

    /// Selects the rule for `method` on `target`, or says why there is none.
    pub fn match_rule(&self, method: &Method, target: &Target) -> Result<&Rule, RouteError> {
        let mut path_matched = false;
        for rule in self.rules.iter().filter(|r| r.pattern.matches(&target.path)) {
            path_matched = true;
            if rule.methods.contains(method) {
                if target.has_ambiguous_chars && !rule.allow_encoded_separators {
                    return Err(RouteError::BadPath("encoded separator, backslash or ';' in path"));
                }
                return Ok(rule);
            }
        }
        if target.has_ambiguous_chars {
            return Err(RouteError::BadPath("encoded separator, backslash or ';' in path"));
        }
        if !path_matched {
            return Err(RouteError::NoRule);
        }
        Err(RouteError::MethodNotAllowed(self.allow(&target.path)))
    }

    fn allow(&self, path: &str) -> HeaderValue {
        let mut methods: Vec<&str> = Vec::new();
        for rule in self.rules.iter().filter(|r| r.pattern.matches(path)) {
            for m in &rule.methods {
                if !methods.contains(&m.as_str()) {
                    methods.push(m.as_str());
                }
            }
        }
        HeaderValue::from_str(&methods.join(", ")).unwrap_or_else(|_| HeaderValue::from_static(""))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(path: &str) -> String {
        normalise(path, None).unwrap().path
    }

    #[test]
    fn dot_segments_and_duplicate_slashes_are_resolved() {
        assert_eq!(norm("/a/./b/../c"), "/a/c");
        assert_eq!(norm("//admin"), "/admin");
        assert_eq!(norm("/./admin"), "/admin");
        assert_eq!(norm("/users/../admin"), "/admin");
        assert_eq!(norm("/../../etc/passwd"), "/etc/passwd");
        assert_eq!(norm("/a/b/.."), "/a/");
        assert_eq!(norm("/"), "/");
        assert_eq!(norm("/admin/"), "/admin/");
    }

    #[test]
    fn only_unreserved_characters_are_decoded() {
        assert_eq!(norm("/%61dmin"), "/admin");
        assert_eq!(norm("/users/%2e%2e/admin"), "/admin");
        assert_eq!(norm("/a%7eb"), "/a~b");
        assert_eq!(norm("/a%20b"), "/a%20b");
        assert_eq!(norm("/a%c3%a9"), "/a%C3%A9");
    }

    #[test]
    fn bytes_a_uri_cannot_carry_are_escaped_so_each_path_has_one_spelling() {
        assert_eq!(norm("/caf\u{e9}"), "/caf%C3%A9");
        assert_eq!(norm("/caf%c3%a9"), "/caf%C3%A9");
        assert_eq!(norm("/a b\"<>^`{|}"), "/a%20b%22%3C%3E%5E%60%7B%7C%7D");
        assert_eq!(norm("/a\\b"), "/a\\b", "a backslash stays, flagged");
        assert_eq!(
            normalise("/", Some("q=\u{e9}")).unwrap().query.as_deref(),
            Some("q=%C3%A9")
        );
        let p = Pattern::parse("/caf\u{e9}/{id}").unwrap();
        assert!(p.matches(&norm("/caf\u{e9}/1")));
        assert!(p.matches(&norm("/caf%C3%A9/1")));
    }

    #[test]
    fn malformed_escapes_are_rejected() {
        for bad in ["/a%", "/a%4", "/a%zz", "/a%%20", "/x%+0y", "/x%-1"] {
            assert!(normalise(bad, None).is_err(), "{bad}");
        }
        assert!(normalise("admin", None).is_err());
        assert!(normalise("*", None).is_err());
    }

    #[test]
    fn ambiguous_characters_are_flagged() {
        for flagged in [
            "/admin%2f",
            "/admin%2Fx",
            "/a%5cb",
            "/a%00",
            "/a\\b",
            "/admin;x",
            "/admin%3bx",
        ] {
            assert!(normalise(flagged, None).unwrap().has_ambiguous_chars, "{flagged}");
        }
        assert!(!normalise("/a%20b", None).unwrap().has_ambiguous_chars);
    }

    #[test]
    fn query_parameters_are_sorted_stably_by_name() {
        let q = |s: &str| normalise("/", Some(s)).unwrap().query;
        assert_eq!(q("b=2&a=1"), Some("a=1&b=2".into()));
        assert_eq!(q("a=2&b=1&a=1"), Some("a=2&a=1&b=1".into()));
        assert_eq!(q("a=%7e&&b"), Some("a=~&b".into()));
        assert_eq!(q(""), None);
        assert_eq!(q("&&"), None);
    }

    #[test]
    fn names_a_form_decoder_reads_alike_keep_their_order() {
        let q = |s: &str| normalise("/", Some(s)).unwrap().query.unwrap();
        // Both are the name "a b" to a back end: it must still see 1 first.
        assert_eq!(q("a+b=1&a%20b=2"), "a+b=1&a%20b=2");
        assert_eq!(q("a%20b=2&a+b=1"), "a%20b=2&a+b=1");
        assert_eq!(q("b=0&a%2Bb=1&a=2"), "a=2&a%2Bb=1&b=0");
    }

    fn rule(name: &str, pattern: &str, methods: &[Method]) -> Rule {
        let pattern = Pattern::parse(pattern).unwrap();
        Rule {
            name: intern(name),
            cache_id: cache_id(name, &pattern, None, &[]),
            pattern,
            methods: methods.to_vec(),
            access: Access::Public,
            cache: None,
            invalidates: vec![],
            forward_headers: vec![],
            allow_encoded_separators: false,
            max_concurrent_requests: None,
            limits: Default::default(),
        }
    }

    #[test]
    fn a_rule_keeps_its_cache_id_unless_what_its_entries_answer_changes() {
        use crate::cache::{CachePolicy, Scope};
        let policy = |scope: Scope, ttl: u64, vary: &[&'static str]| CachePolicy {
            scope,
            ttl: std::time::Duration::from_secs(ttl),
            statuses: vec![200],
            vary: vary.iter().map(|v| http::HeaderName::from_static(v)).collect(),
            tags: vec!["users".into(), "*".into()],
            stale_while_revalidate: Default::default(),
            stale_if_error: Default::default(),
            max_origin_stale: Default::default(),
            freshness: crate::cache::Freshness::Route,
            honour_request_directives: false,
            targeted_cache_control: None,
        };
        let id =
            |path: &str, policy: &CachePolicy| cache_id("users", &Pattern::parse(path).unwrap(), Some(policy), &[]);
        let base = id("/users/{id}", &policy(Scope::User, 60, &[]));
        // The same rule spelled another way, or with another TTL: same id.
        assert_eq!(base, id("/users/{user}", &policy(Scope::User, 60, &[])));
        assert_eq!(base, id("/users/{id}", &policy(Scope::User, 5, &[])));
        // What an entry answers changed: a new id, so old entries are unreachable.
        assert_ne!(base, id("/users/{id}/", &policy(Scope::User, 60, &[])));
        assert_ne!(base, id("/users/*", &policy(Scope::User, 60, &[])));
        assert_ne!(base, id("/users/{id}", &policy(Scope::Shared, 60, &[])));
        assert_ne!(base, id("/users/{id}", &policy(Scope::User, 60, &["accept"])));
        let mut retagged = policy(Scope::User, 60, &[]);
        retagged.tags = vec!["people".into(), "*".into()];
        assert_ne!(base, id("/users/{id}", &retagged));
        let mut statuses = policy(Scope::User, 60, &[]);
        statuses.statuses = vec![200, 404];
        assert_ne!(base, id("/users/{id}", &statuses));
        assert_ne!(
            base,
            cache_id(
                "users",
                &Pattern::parse("/users/{id}").unwrap(),
                Some(&policy(Scope::User, 60, &[])),
                &[http::header::ACCEPT]
            )
        );
        assert!(base.starts_with("users@"), "{base}");
    }

    #[test]
    fn interned_names_are_one_allocation_each() {
        let a = intern(&String::from("interned-rule"));
        let b = intern(&String::from("interned-rule"));
        assert!(std::ptr::eq(a, b));
    }

    #[test]
    fn patterns_match_literals_params_and_trailing_wildcards() {
        let p = Pattern::parse("/users/{id}").unwrap();
        assert!(p.matches("/users/42"));
        assert!(!p.matches("/users"));
        assert!(!p.matches("/users/"));
        assert!(!p.matches("/users/42/x"));
        let w = Pattern::parse("/static/*").unwrap();
        assert!(w.matches("/static/"));
        assert!(w.matches("/static/a/b"));
        assert!(!w.matches("/statics"));
        assert!(Pattern::parse("/").unwrap().matches("/"));
        assert!(!Pattern::parse("/").unwrap().matches("/a"));
        assert!(!Pattern::parse("/admin").unwrap().matches("/admin/"));
        assert!(!Pattern::parse("/admin").unwrap().matches("/ADMIN"));
        for bad in ["users", "/a/*/b", "/a/{", "/a//b", "/a/../b"] {
            assert!(Pattern::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn match_gives_404_405_with_allow_and_first_rule_wins() {
        let set = RuleSet::new(vec![
            rule("list", "/users", &[Method::GET, Method::HEAD]),
            rule("item", "/users/{id}", &[Method::GET]),
            rule("item-write", "/users/{id}", &[Method::PUT, Method::DELETE]),
        ]);
        let t = |p: &str| normalise(p, None).unwrap();
        assert_eq!(set.match_rule(&Method::GET, &t("/users")).unwrap().name, "list");
        assert_eq!(set.match_rule(&Method::PUT, &t("/users/1")).unwrap().name, "item-write");
        assert_eq!(
            set.match_rule(&Method::GET, &t("/nope")).unwrap_err(),
            RouteError::NoRule
        );
        assert_eq!(
            set.match_rule(&Method::POST, &t("/users/1")).unwrap_err(),
            RouteError::MethodNotAllowed(HeaderValue::from_static("GET, PUT, DELETE"))
        );
    }

    #[test]
    fn ambiguous_paths_are_400_unless_the_rule_allows_them() {
        let mut open = rule("files", "/files/*", &[Method::GET]);
        open.allow_encoded_separators = true;
        let set = RuleSet::new(vec![rule("admin", "/admin", &[Method::GET]), open]);
        let t = |p: &str| normalise(p, None).unwrap();
        assert!(matches!(
            set.match_rule(&Method::GET, &t("/admin%2f")),
            Err(RouteError::BadPath(_))
        ));
        assert!(matches!(
            set.match_rule(&Method::GET, &t("/admin;x")),
            Err(RouteError::BadPath(_))
        ));
        assert_eq!(set.match_rule(&Method::GET, &t("/files/a%2Fb")).unwrap().name, "files");
    }
}
