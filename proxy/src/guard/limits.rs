//! Rate limits as configured (`[[routes]].limits`, `[limits].default`) and
//! what one request asks of them.
//!
//! A limit counts requests per *key*: the verified subject, the role set,
//! the client's address, a request header's value, a field of a JSON
//! request body, or the route as a whole. Each (route, limit, key value)
//! has its own GCRA cell, named by a hash of the three, so the store never
//! holds a subject, an address or an API key in clear.

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderMap, HeaderName};
use sha2::{Digest, Sha256};

use super::gcra::Cell;
use super::CellId;
use crate::auth::Claims;

/// What a limit counts requests by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LimitKey {
    /// The token's verified `sub`.
    Subject,
    /// The client's address (an IPv6 client's /64 network).
    Ip,
    /// The token's roles, as a set.
    Role,
    /// A request header's value (a request without it is not counted; one
    /// sending it twice is refused).
    Header(HeaderName),
    /// A field of a JSON request body, by JSON pointer, compared without
    /// case (a request without it is not counted).
    Body(String),
    /// Every request of the route together.
    Route,
}

impl LimitKey {
    /// Parses `subject`, `ip`, `role`, `route`, `header:<name>` or
    /// `body:<JSON pointer>`.
    pub fn parse(text: &str) -> Result<LimitKey, String> {
        match text {
            "subject" => return Ok(LimitKey::Subject),
            "ip" => return Ok(LimitKey::Ip),
            "role" => return Ok(LimitKey::Role),
            "route" => return Ok(LimitKey::Route),
            _ => {}
        }
        if let Some(name) = text.strip_prefix("header:") {
            return HeaderName::try_from(name)
                .map(LimitKey::Header)
                .map_err(|_| format!("{name:?} is not a header name"));
        }
        if let Some(pointer) = text.strip_prefix("body:") {
            let printable = pointer.bytes().all(|b| b.is_ascii_graphic());
            return if pointer.starts_with('/') && printable {
                Ok(LimitKey::Body(pointer.to_owned()))
            } else {
                Err(format!(
                    "{pointer:?} is not a JSON pointer (\"/username\", printable ASCII)"
                ))
            };
        }
        Err(format!(
            "{text:?} is not a limit key: subject, ip, role, route, header:<name> or body:<JSON pointer>"
        ))
    }

    /// Whether the key needs a verified token.
    pub fn needs_token(&self) -> bool {
        matches!(self, LimitKey::Subject | LimitKey::Role)
    }
}

impl fmt::Display for LimitKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LimitKey::Subject => f.write_str("subject"),
            LimitKey::Ip => f.write_str("ip"),
            LimitKey::Role => f.write_str("role"),
            LimitKey::Route => f.write_str("route"),
            LimitKey::Header(name) => write!(f, "header:{name}"),
            LimitKey::Body(pointer) => write!(f, "body:{pointer}"),
        }
    }
}

/// `count` requests per `period`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub count: u32,
    pub period: Duration,
}

impl Rate {
    /// Parses `"100/s"`, `"1000/min"`, `"5000/h"` (also `sec`, `second`,
    /// `m`, `minute`, `hour`, `d`, `day`).
    pub fn parse(text: &str) -> Result<Rate, String> {
        let bad = || format!("{text:?} is not a rate such as \"100/s\", \"1000/min\" or \"5000/h\"");
        let (count, unit) = text.split_once('/').ok_or_else(bad)?;
        let count: u32 = count.trim().parse().map_err(|_| bad())?;
        let period = match unit.trim() {
            "s" | "sec" | "second" => Duration::from_secs(1),
            "m" | "min" | "minute" => Duration::from_secs(60),
            "h" | "hour" => Duration::from_secs(3600),
            "d" | "day" => Duration::from_secs(86_400),
            _ => return Err(bad()),
        };
        if count == 0 {
            return Err(format!("{text:?}: the count must be at least 1"));
        }
        Ok(Rate { count, period })
    }
}

/// One configured limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limit {
    pub key: LimitKey,
    pub rate: Rate,
    pub cell: Cell,
    /// Its name in metrics and the RateLimit headers: the key, as written
    /// (with its rate, where a route limits one key twice).
    pub label: Arc<str>,
    /// Its item of `RateLimit-Policy` (`"subject";q=10;w=1`), and the
    /// start of its item of `RateLimit` (`"subject";r=`): the same on
    /// every answer, so built once.
    pub policy_item: Arc<str>,
    pub state_item: Arc<str>,
}

impl Limit {
    /// `rate` with `burst` requests at once (default: the rate's count, so
    /// "1000/min" allows a thousand at once, then one every 60 ms).
    pub fn new(key: LimitKey, rate: Rate, burst: Option<u32>) -> Limit {
        let interval_us = (rate.period.as_micros() as u64 / u64::from(rate.count)).max(1);
        let label = key.to_string();
        Limit {
            key,
            rate,
            cell: Cell {
                interval_us,
                burst: burst.unwrap_or(rate.count).max(1),
            },
            label: "".into(),
            policy_item: "".into(),
            state_item: "".into(),
        }
        .named(&label)
    }

    /// This limit under the name `label`.
    pub fn named(mut self, label: &str) -> Limit {
        let name = sf_string(label);
        self.policy_item = format!("{name};q={};w={}", self.rate.count, self.rate.period.as_secs()).into();
        self.state_item = format!("{name};r=").into();
        self.label = label.into();
        self
    }

    /// This limit with its rate and burst divided among `instances`: what
    /// each instance allows on its own while the shared store is away.
    pub fn per_instance(&self, instances: u32) -> Cell {
        let instances = instances.max(1);
        Cell {
            interval_us: self.cell.interval_us.saturating_mul(u64::from(instances)),
            burst: (self.cell.burst / instances).max(1),
        }
    }
}

/// `text` as a structured-field string (RFC 8941 §3.3.3): labels are
/// printable ASCII already; quotes and backslashes are escaped.
fn sf_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

/// A request sent a header a limit counts by more than once.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("more than one {0} header")]
pub struct RepeatedHeader(pub HeaderName);

/// A rule's limits, with the `RateLimit-Policy` value of them all, which
/// every answer counting in each of them carries: built once.
#[derive(Debug, Clone, Default)]
pub struct Limits {
    list: Arc<[Limit]>,
    policy: Option<http::HeaderValue>,
    /// Whether one of them counts by a field of the body.
    reads_body: bool,
}

impl Limits {
    pub fn new(list: Vec<Limit>) -> Limits {
        let items: Vec<&str> = list.iter().map(|l| &*l.policy_item).collect();
        let policy = (!list.is_empty())
            .then(|| http::HeaderValue::try_from(items.join(", ")).ok())
            .flatten();
        Limits {
            reads_body: list.iter().any(|l| matches!(l.key, LimitKey::Body(_))),
            list: list.into(),
            policy,
        }
    }

    /// Whether a limit reads the request body, so they are counted once
    /// it has been read rather than before.
    pub fn read_body(&self) -> bool {
        self.reads_body
    }

    /// `RateLimit-Policy` when a request counted in every limit.
    pub fn policy(&self) -> Option<&http::HeaderValue> {
        self.policy.as_ref()
    }
}

impl std::ops::Deref for Limits {
    type Target = [Limit];

    fn deref(&self) -> &[Limit] {
        &self.list
    }
}

/// What a request offers the keys of its limits.
pub struct Caller<'a> {
    pub rule: &'a str,
    pub claims: Option<&'a Claims>,
    pub ip: IpAddr,
    pub headers: &'a HeaderMap,
    /// The request body, where a limit reads it (write routes).
    pub body: Option<&'a [u8]>,
}

/// The cell a request counts in for one limit (128 bits of a SHA-256);
/// `None`
/// when the request has no value for the limit's key (a header or body
/// field it does not send), which the limit then does not count: an `ip`
/// limit beside it is what covers such requests.
pub fn cell_id(limit: &Limit, caller: &Caller<'_>) -> Result<Option<CellId>, RepeatedHeader> {
    let mut hash = Sha256::new();
    hash.update(caller.rule.as_bytes());
    hash.update([0]);
    hash.update(limit.label.as_bytes());
    hash.update([0]);
    // Two limits on one key count apart.
    hash.update(limit.cell.interval_us.to_le_bytes());
    hash.update(limit.cell.burst.to_le_bytes());
    match &limit.key {
        LimitKey::Subject => hash.update(caller.claims.map_or("", |c| c.subject.as_str())),
        LimitKey::Role => {
            let mut roles: Vec<&str> = caller
                .claims
                .map(|c| c.roles.iter().map(String::as_str).collect())
                .unwrap_or_default();
            roles.sort_unstable();
            roles.dedup();
            hash.update(roles.join(","));
        }
        LimitKey::Ip => hash.update(network_of(caller.ip).to_string()),
        LimitKey::Header(name) => {
            let mut values = caller.headers.get_all(name).iter();
            let Some(value) = values.next() else { return Ok(None) };
            // A second value would make a new cell per request while the
            // backend reads one of them: refused, not guessed at.
            if values.next().is_some() {
                return Err(RepeatedHeader(name.clone()));
            }
            hash.update(value.as_bytes());
        }
        LimitKey::Body(pointer) => match body_value(caller.body, pointer) {
            Some(value) => hash.update(value),
            None => return Ok(None),
        },
        LimitKey::Route => {}
    }
    let digest = hash.finalize();
    let mut id = [0; 16];
    id.copy_from_slice(&digest[..16]);
    Ok(Some(id))
}

/// An IPv4 address, or an IPv6 address's /64: one subscriber usually holds
/// a whole /64, so counting addresses would let them use 2^64 counts.
fn network_of(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let bits = u128::from(v6) & !((1u128 << 64) - 1);
                IpAddr::V6(bits.into())
            }
        },
    }
}

/// The text at `pointer` in a JSON body, lower-cased (a string, or a
/// number's or boolean's text); `None` when there is none. Parsed as the
/// origin parses it (serde_json: the last of duplicate names wins).
fn body_value(body: Option<&[u8]>, pointer: &str) -> Option<String> {
    let value = serde_json::from_slice::<serde_json::Value>(body?).ok()?;
    match value.pointer(pointer)? {
        serde_json::Value::String(s) => Some(s.to_lowercase()),
        v @ (serde_json::Value::Number(_) | serde_json::Value::Bool(_)) => Some(v.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_parse_and_refuse() {
        assert_eq!(
            Rate::parse("100/s").unwrap(),
            Rate {
                count: 100,
                period: Duration::from_secs(1)
            }
        );
        assert_eq!(Rate::parse("1000/min").unwrap().period, Duration::from_secs(60));
        for bad in ["", "100", "0/s", "x/s", "10/week", "-1/s"] {
            assert!(Rate::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn keys_parse_and_print_as_written() {
        for text in ["subject", "ip", "role", "route", "header:x-api-key", "body:/username"] {
            assert_eq!(LimitKey::parse(text).unwrap().to_string(), text);
        }
        for bad in ["user", "header:bad name", "body:username", "body:/a b"] {
            assert!(LimitKey::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_burst_defaults_to_the_count_and_divides_among_instances() {
        let limit = Limit::new(LimitKey::Ip, Rate::parse("10/s").unwrap(), None);
        assert_eq!(
            limit.cell,
            Cell {
                interval_us: 100_000,
                burst: 10
            }
        );
        assert_eq!(
            limit.per_instance(3),
            Cell {
                interval_us: 300_000,
                burst: 3
            }
        );
        assert_eq!(limit.per_instance(20).burst, 1);
    }

    fn caller<'a>(headers: &'a HeaderMap, body: Option<&'a [u8]>, ip: &str) -> Caller<'a> {
        Caller {
            rule: "login",
            claims: None,
            ip: ip.parse().unwrap(),
            headers,
            body,
        }
    }

    #[test]
    fn cells_separate_values_and_join_what_should_count_together() {
        let headers = HeaderMap::new();
        let by_name = Limit::new(
            LimitKey::parse("body:/username").unwrap(),
            Rate::parse("10/min").unwrap(),
            None,
        );
        let id = |body: &[u8], ip: &str| cell_id(&by_name, &caller(&headers, Some(body), ip)).unwrap();
        assert_eq!(
            id(br#"{"username":"Alice"}"#, "10.0.0.1"),
            id(br#"{"username":"alice"}"#, "10.0.0.2")
        );
        assert_ne!(
            id(br#"{"username":"alice"}"#, "10.0.0.1"),
            id(br#"{"username":"bob"}"#, "10.0.0.1")
        );
        // Duplicate names: the last one, as the origin reads it.
        assert_eq!(
            id(br#"{"username":"x","username":"alice"}"#, "10.0.0.1"),
            id(br#"{"username":"alice"}"#, "10.0.0.1")
        );
        assert_eq!(id(b"not json", "10.0.0.1"), None, "no value: not counted");
        assert_eq!(id(br#"{"email":"a@b.c"}"#, "10.0.0.1"), None);
        let by_key = Limit::new(
            LimitKey::parse("header:x-api-key").unwrap(),
            Rate::parse("10/min").unwrap(),
            None,
        );
        assert_eq!(cell_id(&by_key, &caller(&headers, None, "10.0.0.1")), Ok(None));
        let mut twice = HeaderMap::new();
        twice.append("x-api-key", "real".parse().unwrap());
        twice.append("x-api-key", "random".parse().unwrap());
        assert!(
            cell_id(&by_key, &caller(&twice, None, "10.0.0.1")).is_err(),
            "a repeated key is refused"
        );
        // Two limits on one key, at different rates, count apart.
        let hourly = Limit::new(LimitKey::Ip, Rate::parse("1000/h").unwrap(), None);
        let by_ip_again = Limit::new(LimitKey::Ip, Rate::parse("10/min").unwrap(), Some(3));
        let single = HeaderMap::new();
        let id_of = |limit: &Limit| cell_id(limit, &caller(&single, None, "10.0.0.1")).unwrap();
        assert_ne!(id_of(&hourly), id_of(&by_ip_again));

        let by_ip = Limit::new(LimitKey::Ip, Rate::parse("10/min").unwrap(), None);
        let ip = |addr: &str| cell_id(&by_ip, &caller(&headers, None, addr)).unwrap();
        assert_eq!(ip("2001:db8::1"), ip("2001:db8::ffff:1"), "one /64");
        assert_ne!(ip("2001:db8::1"), ip("2001:db8:0:1::1"));
        assert_eq!(ip("::ffff:10.0.0.1"), ip("10.0.0.1"));
        assert_ne!(ip("10.0.0.1"), ip("10.0.0.2"));
    }
}
