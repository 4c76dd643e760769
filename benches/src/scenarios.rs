//! The benchmark stack and its scenarios.
//!
//! Builds everything from the e2e harness (real Redis, real FerretDB with
//! bench data, the origin, the proxy with each store, and a static hyper
//! upstream), then describes each scenario as a request plan against one
//! target.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use e2e::origin::{origin_env, TEST_JWT_SECRET};
use e2e::{
    json_reply, proxy_config, spawn_origin_with, spawn_proxy, MongoServer, OriginHandle, ProxyHandle, RedisServer,
    ScriptedUpstream, SHIPPED_CONFIG,
};
use http::{HeaderMap, HeaderValue, Method};
use mongodb::bson::{doc, oid::ObjectId, DateTime, Document};

use crate::load::{Plan, Planned};

/// Password of every bench user.
pub const BENCH_PASSWORD: &str = "bench-password";

/// A proxy route in front of the static upstream, for measuring the
/// proxy's own overhead on a miss without a database's jitter.
const STATIC_CONFIG: &str = r#"
[[routes]]
name = "static"
path = "/static"
methods = ["GET"]
access = "public"
cache = {}
"#;

/// Everything the scenarios run against.
pub struct BenchStack {
    pub proxy_redis: ProxyHandle,
    pub proxy_memory: ProxyHandle,
    pub proxy_static: ProxyHandle,
    pub origin: OriginHandle,
    pub static_upstream: ScriptedUpstream,
    pub user_ids: Vec<String>,
    pub user_tokens: Vec<String>,
    pub admin_token: String,
    _redis: RedisServer,
    _mongo: MongoServer,
}

impl BenchStack {
    pub async fn start(users: usize) -> anyhow::Result<BenchStack> {
        let redis = RedisServer::start();
        let mongo = MongoServer::start();
        let env = origin_env(&mongo);
        let database = env["MONGO_DB"].clone();
        let origin = spawn_origin_with(env).await;
        let user_ids = seed_users(&mongo.uri(), &database, users).await?;
        let admin_id = user_ids[0].clone();
        let proxy_redis = spawn_proxy(proxy_config(SHIPPED_CONFIG, origin.addr, Some(redis.url()), Some(300))).await;
        let proxy_memory = spawn_proxy(proxy_config(SHIPPED_CONFIG, origin.addr, None, Some(300))).await;
        let static_upstream = ScriptedUpstream::start(|_req| async {
            json_reply(
                200,
                r#"{"id":"6b08b61b37e4dcf6714b2d92","username":"static","email":"static@example.com","role":"user"}"#,
                &[],
            )
        })
        .await;
        let proxy_static = spawn_proxy(proxy_config(STATIC_CONFIG, static_upstream.addr, None, None)).await;
        let user_tokens = user_ids.iter().map(|id| mint_token(id, "user")).collect();
        Ok(BenchStack {
            proxy_redis,
            proxy_memory,
            proxy_static,
            origin,
            static_upstream,
            admin_token: mint_token(&admin_id, "admin"),
            user_ids,
            user_tokens,
            _redis: redis,
            _mongo: mongo,
        })
    }
}

/// Inserts `n` users directly (the first one an admin), as the origin would
/// store them; returns their ids.
pub async fn seed_users(uri: &str, database: &str, n: usize) -> anyhow::Result<Vec<String>> {
    let client = mongodb::Client::with_uri_str(uri).await?;
    let users = client.database(database).collection::<Document>("users");
    // Hashed once and shared by every user: seeding 1,000 users costs one
    // bcrypt, and logins still work.
    let passwords = origin::password::Passwords::new(4)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let hash = passwords
        .hash(BENCH_PASSWORD.into())
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let start = DateTime::now().timestamp_millis();
    let mut ids = Vec::with_capacity(n);
    let docs: Vec<Document> = (0..n)
        .map(|i| {
            let id = ObjectId::new();
            ids.push(id.to_hex());
            let username = format!("bench{i:05}");
            doc! {
                "_id": id,
                // The origin's case-insensitive unique index is on this
                // field; MongoDB's unique indexes count every missing value
                // as null, so there users without it would clash.
                "username_lower": origin::users::username_key(&username),
                "username": username,
                "email": format!("bench{i:05}@example.com"),
                "role": if i == 0 { "admin" } else { "user" },
                "password_hash": hash.as_str(),
                "created_at": DateTime::from_millis(start + i as i64),
            }
        })
        .collect();
    for chunk in docs.chunks(500) {
        users.insert_many(chunk.to_vec()).await?;
    }
    // Closed explicitly: a client dropped while its runtime shuts down
    // panics inside the driver.
    client.shutdown().await;
    Ok(ids)
}

/// A token the bench proxies and origin accept, valid for a day (longer
/// than any run): bench users need no bcrypt login.
pub fn mint_token(sub: &str, role: &str) -> String {
    mint_token_with(sub, role, TEST_JWT_SECRET)
}

/// As [`mint_token`], signed with `secret`.
pub fn mint_token_with(sub: &str, role: &str, secret: &str) -> String {
    e2e::token::sign(&e2e::token::claims(sub, role, 86_400), secret.as_bytes())
}

fn bearer(token: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(
        http::header::AUTHORIZATION,
        HeaderValue::from_str(&format!("Bearer {token}")).expect("token is ASCII"),
    );
    h
}

/// A GET of `path` with `headers`.
pub fn get(path: String, headers: HeaderMap) -> Planned {
    Planned {
        method: Method::GET,
        path,
        headers,
        body: Bytes::new(),
    }
}

/// A counter for unique query strings: it outlives single runs (request
/// indices restart at 0 in each), so a warm-up never pre-fills a miss
/// scenario's keys. Seeded from the clock so repeated suites on one Redis
/// miss too.
fn unique_counter() -> Arc<AtomicU64> {
    let seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    Arc::new(AtomicU64::new(seed))
}

/// Which server a scenario drives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Target {
    ProxyRedis,
    ProxyMemory,
    Origin,
    StaticDirect,
    ProxyStatic,
}

impl Target {
    pub fn name(&self) -> &'static str {
        match self {
            Target::ProxyRedis => "proxy (redis)",
            Target::ProxyMemory => "proxy (memory)",
            Target::Origin => "origin direct",
            Target::StaticDirect => "static upstream",
            Target::ProxyStatic => "proxy -> static",
        }
    }
}

/// One scenario against one target.
pub struct Scenario {
    pub name: &'static str,
    pub target: Target,
    pub plan: Plan,
}

/// Every scenario of the suite. `write_percent` sets the share of writes in
/// the mixed scenario.
pub fn all(stack: &BenchStack, write_percent: u64) -> Vec<Scenario> {
    let admin = stack.admin_token.clone();
    let shared_hit = {
        let headers = bearer(&admin);
        Arc::new(move |_i: u64| get("/users".into(), headers.clone())) as Plan
    };
    let user_hits = {
        let headers: Vec<HeaderMap> = stack.user_tokens.iter().map(|t| bearer(t)).collect();
        Arc::new(move |i: u64| get("/me".into(), headers[(i as usize) % headers.len()].clone())) as Plan
    };
    let misses = {
        let headers = bearer(&admin);
        let ids = stack.user_ids.clone();
        let next = unique_counter();
        Arc::new(move |i: u64| {
            let n = next.fetch_add(1, Ordering::Relaxed);
            get(
                format!("/users/{}?n={n}", ids[(i as usize) % ids.len()]),
                headers.clone(),
            )
        }) as Plan
    };
    let public = Arc::new(|_i: u64| get("/healthz".into(), HeaderMap::new())) as Plan;
    let mixed = {
        let headers = bearer(&admin);
        let ids = stack.user_ids.clone();
        let next = unique_counter();
        Arc::new(move |i: u64| {
            if i % 100 < write_percent {
                let id = &ids[1 + (i as usize) % (ids.len() - 1)];
                let mut h = headers.clone();
                h.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
                let body = Bytes::from(format!(r#"{{"username":"w{}"}}"#, next.fetch_add(1, Ordering::Relaxed)));
                Planned {
                    method: Method::PUT,
                    path: format!("/users/{id}"),
                    headers: h,
                    body,
                }
            } else {
                get("/users".into(), headers.clone())
            }
        }) as Plan
    };
    let static_miss = {
        let next = unique_counter();
        Arc::new(move |_i: u64| {
            get(
                format!("/static?n={}", next.fetch_add(1, Ordering::Relaxed)),
                HeaderMap::new(),
            )
        }) as Plan
    };
    vec![
        Scenario {
            name: "hit-shared",
            target: Target::ProxyMemory,
            plan: shared_hit.clone(),
        },
        Scenario {
            name: "hit-shared",
            target: Target::ProxyRedis,
            plan: shared_hit.clone(),
        },
        Scenario {
            name: "hit-user",
            target: Target::ProxyMemory,
            plan: user_hits.clone(),
        },
        Scenario {
            name: "hit-user",
            target: Target::ProxyRedis,
            plan: user_hits,
        },
        Scenario {
            name: "miss-unique",
            target: Target::ProxyRedis,
            plan: misses,
        },
        Scenario {
            name: "public",
            target: Target::ProxyRedis,
            plan: public,
        },
        Scenario {
            name: "mixed",
            target: Target::ProxyRedis,
            plan: mixed,
        },
        Scenario {
            name: "uncached-users",
            target: Target::Origin,
            plan: shared_hit,
        },
        Scenario {
            name: "static-miss",
            target: Target::StaticDirect,
            plan: static_miss.clone(),
        },
        Scenario {
            name: "static-miss",
            target: Target::ProxyStatic,
            plan: static_miss,
        },
    ]
}

impl BenchStack {
    pub fn addr(&self, target: Target) -> std::net::SocketAddr {
        match target {
            Target::ProxyRedis => self.proxy_redis.addr,
            Target::ProxyMemory => self.proxy_memory.addr,
            Target::Origin => self.origin.addr,
            Target::StaticDirect => self.static_upstream.addr,
            Target::ProxyStatic => self.proxy_static.addr,
        }
    }

    /// Requests that reached an upstream so far through `target`'s proxy,
    /// from its `/metrics`; `None` for targets that are not the proxy.
    pub async fn upstream_requests(&self, target: Target) -> Option<u64> {
        let proxy = match target {
            Target::ProxyRedis => &self.proxy_redis,
            Target::ProxyMemory => &self.proxy_memory,
            Target::ProxyStatic => &self.proxy_static,
            Target::Origin | Target::StaticDirect => return None,
        };
        let text = reqwest::get(proxy.admin_url("/metrics"))
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        Some(upstream_count(&text))
    }
}

/// Sums `proxy_upstream_duration_seconds_count` over every rule.
pub fn upstream_count(metrics: &str) -> u64 {
    metrics
        .lines()
        .filter(|l| l.starts_with("proxy_upstream_duration_seconds_count"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}
