//! Failover under load: a Redis Cluster primary holding a hot entry's slot,
//! or a Sentinel group's primary, is killed (`kill -9`) while two proxy
//! instances serve reads and writes of that entry. Requests keep being
//! answered (BYPASS while the slot has no primary, never a 5xx from the
//! cache), and once the failover has settled no read is older than a write
//! acknowledged before it was sent, and reads are cached again on the
//! promoted replica.
//!
//! This binary starts its own cluster and Sentinel group: the tests kill
//! their nodes.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use e2e::cluster::RedisCluster;
use e2e::sentinel::SentinelGroup;
use e2e::wait::eventually;
use e2e::{json_reply, proxy_config, shared_key, spawn_proxy, ApiClient, ProxyHandle, ScriptedUpstream, ITEMS_CONFIG};
use http::Method;
use serde_json::json;

/// Reads and writes made after the failover settled, to check it.
const WRITES_AFTER: u64 = 200;

/// An upstream whose `/items` answers `{"version": v}`; each `POST`
/// commits the next version and answers it.
async fn versioned_upstream() -> ScriptedUpstream {
    let version = Arc::new(AtomicU64::new(0));
    ScriptedUpstream::start(move |req| {
        let version = version.clone();
        async move {
            let v = if req.method() == Method::POST {
                version.fetch_add(1, Ordering::SeqCst) + 1
            } else {
                version.load(Ordering::SeqCst)
            };
            json_reply(200, &json!({ "version": v }).to_string(), &[])
        }
    })
    .await
}

/// What the readers saw, by phase.
#[derive(Default)]
struct Tally {
    reads: AtomicU64,
    server_errors: AtomicU64,
    /// Reads older than a write acknowledged before they were sent, while
    /// the failover was under way (reported: the documented window of a
    /// write whose invalidation reached the slot only after it came back).
    stale_during: AtomicU64,
    /// The same after the failover settled: must stay 0.
    stale_after: AtomicU64,
}

/// The load: two instances, readers on both, a writer alternating between
/// them, and a checker that knows every acknowledged version.
struct Load {
    instances: [ProxyHandle; 2],
    acknowledged: Arc<AtomicU64>,
    settled: Arc<AtomicBool>,
    done: Arc<AtomicBool>,
    tally: Arc<Tally>,
    readers: Vec<tokio::task::JoinHandle<()>>,
    writes: u64,
}

impl Load {
    async fn start(redis_url: &str, upstream: &ScriptedUpstream) -> Load {
        let mut instances = Vec::new();
        for _ in 0..2 {
            instances.push(spawn_proxy(proxy_config(ITEMS_CONFIG, upstream.addr, Some(redis_url.into()), None)).await);
        }
        let instances: [ProxyHandle; 2] = instances.try_into().unwrap_or_else(|_| unreachable!());
        let (acknowledged, settled, done) = Default::default();
        let tally = Arc::new(Tally::default());
        let readers = instances
            .iter()
            .flat_map(|proxy| [proxy.base_url(), proxy.base_url()])
            .map(|base| {
                let api = ApiClient::new(base);
                let (acknowledged, settled, done, tally): (Arc<AtomicU64>, Arc<AtomicBool>, Arc<AtomicBool>, _) = (
                    Arc::clone(&acknowledged),
                    Arc::clone(&settled),
                    Arc::clone(&done),
                    tally.clone(),
                );
                tokio::spawn(async move {
                    while !done.load(Ordering::SeqCst) {
                        let after = settled.load(Ordering::SeqCst);
                        let floor = acknowledged.load(Ordering::SeqCst);
                        let read = api.get("/items", None).await;
                        tally.reads.fetch_add(1, Ordering::SeqCst);
                        if read.status.is_server_error() {
                            tally.server_errors.fetch_add(1, Ordering::SeqCst);
                            continue;
                        }
                        let seen = read.body["version"].as_u64().expect("a version");
                        if seen < floor {
                            let phase = if after { &tally.stale_after } else { &tally.stale_during };
                            phase.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                })
            })
            .collect();
        Load {
            instances,
            acknowledged,
            settled,
            done,
            tally,
            readers,
            writes: 0,
        }
    }

    /// One write, through the instances in turn; the version it committed
    /// is acknowledged once the answer is in.
    async fn write(&mut self) {
        let proxy = &self.instances[(self.writes % 2) as usize];
        let write = ApiClient::new(proxy.base_url())
            .send(Method::POST, "/items", None, None)
            .await;
        assert_eq!(write.status, 200, "a write failed: {:?}", write.body);
        let version = write.body["version"].as_u64().expect("a version");
        self.acknowledged.fetch_max(version, Ordering::SeqCst);
        self.writes += 1;
    }

    /// Writes until `holds` is true.
    async fn write_until(&mut self, what: &str, holds: impl Fn() -> bool) {
        let deadline = tokio::time::Instant::now() + e2e::wait::LIMIT;
        while !holds() {
            assert!(tokio::time::Instant::now() < deadline, "timed out waiting until {what}");
            self.write().await;
        }
    }

    /// Marks the failover settled once a write through each instance has
    /// been applied everywhere (so neither keeps an invalidation pending).
    async fn settle(&mut self) {
        for proxy in &self.instances {
            let applied = r#"proxy_invalidations_total{operation="applied"}"#;
            let before = proxy.metric(applied).await;
            let api = ApiClient::new(proxy.base_url());
            eventually("a write through each instance is applied", || async {
                let write = api.send(Method::POST, "/items", None, None).await;
                assert_eq!(write.status, 200);
                let version = write.body["version"].as_u64().expect("a version");
                self.acknowledged.fetch_max(version, Ordering::SeqCst);
                proxy.metric(applied).await > before
            })
            .await;
        }
        self.settled.store(true, Ordering::SeqCst);
    }

    /// Once the failover happened: settles, writes [`WRITES_AFTER`] more
    /// under the readers, checks caching and readiness are back, and
    /// reports what the readers saw.
    async fn after_failover(mut self, what: &str) {
        self.settle().await;
        for _ in 0..WRITES_AFTER {
            self.write().await;
        }
        self.caches_again().await;
        self.ready().await;
        let writes = self.writes;
        report(what, &self.finish().await, writes);
    }

    /// Stops the readers; what they saw.
    async fn finish(self) -> Arc<Tally> {
        self.done.store(true, Ordering::SeqCst);
        for reader in self.readers {
            reader.await.expect("a reader failed");
        }
        self.tally
    }

    /// Both instances say they are ready, though a node is still dead.
    async fn ready(&self) {
        for proxy in &self.instances {
            eventually("/readyz is 200 after the failover", || async {
                let ready = reqwest::get(proxy.admin_url("/readyz")).await.unwrap();
                ready.status() == 200
            })
            .await;
        }
    }

    /// A write, then two reads through `instance`: the second is a hit
    /// (the cache works on the promoted primary).
    async fn caches_again(&self) {
        let api = ApiClient::new(self.instances[1].base_url());
        let write = ApiClient::new(self.instances[0].base_url())
            .send(Method::POST, "/items", None, None)
            .await;
        assert_eq!(write.status, 200);
        eventually("reads through the other instance are hits again", || async {
            api.get("/items", None).await.header("x-cache") == Some("HIT")
        })
        .await;
    }
}

/// The hash tag of the bucket `/items`'s entry lives in on a cluster.
fn items_bucket_tag(redis_url: &str, upstream: &ScriptedUpstream) -> String {
    let config = proxy_config(ITEMS_CONFIG, upstream.addr, Some(redis_url.into()), None);
    let key = shared_key(&config, "items", "/items");
    format!("{{b{}}}", key.bucket(proxy::cache::redis::keys::CLUSTER_BUCKETS))
}

fn report(what: &str, tally: &Arc<Tally>, writes: u64) {
    eprintln!(
        "{what}: {} reads, {writes} writes, {} 5xx, {} stale during the failover, {} stale after it settled",
        tally.reads.load(Ordering::SeqCst),
        tally.server_errors.load(Ordering::SeqCst),
        tally.stale_during.load(Ordering::SeqCst),
        tally.stale_after.load(Ordering::SeqCst),
    );
    assert_eq!(tally.server_errors.load(Ordering::SeqCst), 0, "the cache caused 5xx");
    assert_eq!(
        tally.stale_after.load(Ordering::SeqCst),
        0,
        "a read after the failover settled was older than an acknowledged write"
    );
    assert!(tally.reads.load(Ordering::SeqCst) > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killing_the_cluster_primary_of_a_hot_entry_costs_no_5xx_and_no_stale_read() {
    let mut cluster = RedisCluster::start_for_failover();
    let url = cluster.url();
    let upstream = versioned_upstream().await;
    let tag = items_bucket_tag(&url, &upstream);
    let victim = cluster.primary_of(&tag).expect("a primary serves the entry's slot");
    let mut load = Load::start(&url, &upstream).await;
    for _ in 0..50 {
        load.write().await;
    }

    cluster.kill(victim);
    let cluster = Arc::new(cluster);
    let promoted = {
        let (cluster, tag) = (cluster.clone(), tag.clone());
        move || cluster.is_ok() && cluster.primary_of(&tag).is_some_and(|p| p != victim)
    };
    load.write_until("a replica is promoted for the entry's slot", promoted)
        .await;
    load.after_failover("cluster failover").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_sentinel_failover_costs_no_5xx_and_no_stale_read() {
    let mut group = SentinelGroup::start_for_failover();
    let url = group.url();
    let upstream = versioned_upstream().await;
    let old_primary = group.primary_port();
    let mut load = Load::start(&url, &upstream).await;
    for _ in 0..50 {
        load.write().await;
    }

    group.kill_primary();
    let group = Arc::new(group);
    let promoted = {
        let group = group.clone();
        move || group.current_primary().is_some_and(|p| p != old_primary)
    };
    load.write_until("the sentinels promote the replica", promoted).await;
    load.after_failover("sentinel failover").await;
}
