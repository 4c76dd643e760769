//! Where the shared Redis is: one node, a primary found through Sentinel,
//! or a cluster, read from `cache.redis_url` / `cache.redis_cluster`.

use crate::secret::Secret;

/// The Redis deployment the proxy talks to. URLs may carry passwords, so
/// they are kept as [`Secret`]s.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedisTarget {
    /// `redis://` or `rediss://` (TLS): one node.
    Node(Secret),
    /// `redis+sentinel://` or `rediss+sentinel://`: the primary of
    /// `service`, asked of the sentinels and asked again after a failover.
    Sentinel(SentinelTarget),
    /// `cache.redis_cluster`: seed nodes of a Redis Cluster; the rest of
    /// the topology is learnt from them and followed as it changes.
    Cluster(Vec<Secret>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentinelTarget {
    /// The sentinels, as `redis://host:port` (or `rediss://`).
    pub sentinels: Vec<String>,
    /// The name the sentinels monitor the primary under.
    pub service: String,
    pub tls: bool,
    pub db: i64,
    pub username: Option<String>,
    pub password: Option<Secret>,
}

impl RedisTarget {
    /// Reads `cache.redis_url`: `redis://`, `rediss://`, or
    /// `redis+sentinel://[user:password@]host:port[,host:port…]/service[/db]`
    /// (`rediss+sentinel://` for TLS to the sentinels and the primary).
    ///
    /// `redis+cluster://[user:password@]host:port[,host:port…]` (or
    /// `rediss+cluster://`) names a cluster's seed nodes in one URL, so one
    /// environment variable (`REDIS_URL`) can point at any deployment; it
    /// is read as `cache.redis_cluster` would be.
    pub fn from_url(url: &str) -> Result<RedisTarget, String> {
        let cluster = url
            .strip_prefix("redis+cluster://")
            .map(|rest| (rest, "redis"))
            .or_else(|| url.strip_prefix("rediss+cluster://").map(|rest| (rest, "rediss")));
        if let Some((rest, scheme)) = cluster {
            let (credentials, hosts) = match rest.rsplit_once('@') {
                Some((credentials, hosts)) => (format!("{credentials}@"), hosts),
                None => (String::new(), rest),
            };
            let seeds: Vec<String> = hosts
                .trim_end_matches('/')
                .split(',')
                .filter(|h| !h.is_empty())
                .map(|host| format!("{scheme}://{credentials}{host}"))
                .collect();
            return RedisTarget::cluster(&seeds);
        }
        let sentinel = url
            .strip_prefix("redis+sentinel://")
            .map(|rest| (rest, false))
            .or_else(|| url.strip_prefix("rediss+sentinel://").map(|rest| (rest, true)));
        match sentinel {
            Some((rest, tls)) => parse_sentinel(rest, tls).map(RedisTarget::Sentinel),
            None => {
                redis::Client::open(url).map_err(|e| e.to_string())?;
                Ok(RedisTarget::Node(Secret(url.to_owned())))
            }
        }
    }

    /// Reads `cache.redis_cluster`: at least one seed node URL.
    pub fn cluster(seeds: &[String]) -> Result<RedisTarget, String> {
        if seeds.is_empty() {
            return Err("must name at least one seed node".into());
        }
        for seed in seeds {
            if seed.contains("+sentinel://") {
                return Err("a cluster's seeds are redis:// or rediss:// URLs of its nodes".into());
            }
            redis::Client::open(seed.as_str()).map_err(|e| e.to_string())?;
        }
        Ok(RedisTarget::Cluster(seeds.iter().cloned().map(Secret).collect()))
    }

    /// How operators and `/config` name the deployment's kind.
    pub fn kind(&self) -> &'static str {
        match self {
            RedisTarget::Node(_) => "standalone",
            RedisTarget::Sentinel(_) => "sentinel",
            RedisTarget::Cluster(_) => "cluster",
        }
    }

    pub fn is_cluster(&self) -> bool {
        matches!(self, RedisTarget::Cluster(_))
    }
}

fn parse_sentinel(rest: &str, tls: bool) -> Result<SentinelTarget, String> {
    let (credentials, rest) = match rest.rsplit_once('@') {
        Some((credentials, rest)) => (Some(credentials), rest),
        None => (None, rest),
    };
    let (hosts, path) = rest
        .split_once('/')
        .ok_or("names no service: redis+sentinel://host:port[,host:port…]/service[/db]")?;
    let mut segments = path.split('/').filter(|s| !s.is_empty());
    let service = segments.next().ok_or("names no service")?.to_owned();
    let db = match segments.next() {
        Some(db) => db.parse().map_err(|_| format!("{db:?} is not a database number"))?,
        None => 0,
    };
    let scheme = if tls { "rediss" } else { "redis" };
    let sentinels: Vec<String> = hosts
        .split(',')
        .filter(|h| !h.is_empty())
        .map(|host| format!("{scheme}://{host}"))
        .collect();
    if sentinels.is_empty() {
        return Err("names no sentinel".into());
    }
    for sentinel in &sentinels {
        redis::Client::open(sentinel.as_str()).map_err(|e| format!("{sentinel}: {e}"))?;
    }
    let (username, password) = match credentials.map(|c| c.split_once(':').unwrap_or(("", c))) {
        Some((user, password)) => (
            (!user.is_empty()).then(|| percent_decoded(user)),
            (!password.is_empty()).then(|| Secret(percent_decoded(password))),
        ),
        None => (None, None),
    };
    Ok(SentinelTarget {
        sentinels,
        service,
        tls,
        db,
        username,
        password,
    })
}

/// Credentials in a URL are percent-encoded (a `@` or `:` in a password).
fn percent_decoded(text: &str) -> String {
    percent_encoding::percent_decode_str(text)
        .decode_utf8_lossy()
        .into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plain_url_is_one_node() {
        assert_eq!(
            RedisTarget::from_url("redis://127.0.0.1:6379/2"),
            Ok(RedisTarget::Node(Secret("redis://127.0.0.1:6379/2".into())))
        );
        assert!(RedisTarget::from_url("http://x").is_err());
    }

    #[test]
    fn a_sentinel_url_names_its_sentinels_service_database_and_credentials() {
        let RedisTarget::Sentinel(target) =
            RedisTarget::from_url("redis+sentinel://app:p%40ss@10.0.0.1:26379,10.0.0.2:26379/cache/3").unwrap()
        else {
            panic!("not read as sentinel")
        };
        assert_eq!(target.sentinels, ["redis://10.0.0.1:26379", "redis://10.0.0.2:26379"]);
        assert_eq!(target.service, "cache");
        assert_eq!(target.db, 3);
        assert_eq!(target.username.as_deref(), Some("app"));
        assert_eq!(target.password, Some(Secret("p@ss".into())));
        assert!(!target.tls);
    }

    #[test]
    fn a_sentinel_url_without_a_service_or_sentinel_is_refused() {
        assert!(RedisTarget::from_url("redis+sentinel://10.0.0.1:26379").is_err());
        assert!(RedisTarget::from_url("redis+sentinel://10.0.0.1:26379/").is_err());
        assert!(RedisTarget::from_url("redis+sentinel:///cache").is_err());
        assert!(RedisTarget::from_url("redis+sentinel://h:1/cache/x").is_err());
    }

    #[test]
    fn a_cluster_url_names_its_seed_nodes_with_their_credentials() {
        assert_eq!(
            RedisTarget::from_url("redis+cluster://:pw@10.0.0.1:7000,10.0.0.2:7000"),
            Ok(RedisTarget::Cluster(vec![
                Secret("redis://:pw@10.0.0.1:7000".into()),
                Secret("redis://:pw@10.0.0.2:7000".into())
            ]))
        );
        assert!(RedisTarget::from_url("redis+cluster://").is_err());
    }

    #[test]
    fn a_cluster_needs_seed_nodes() {
        assert!(RedisTarget::cluster(&[]).is_err());
        assert!(RedisTarget::cluster(&["redis+sentinel://h:1/s".into()]).is_err());
        assert!(RedisTarget::cluster(&["redis://10.0.0.1:7000".into()])
            .unwrap()
            .is_cluster());
    }
}
