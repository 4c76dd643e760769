//! Smoke test of the load generator and scenarios: statuses and upstream
//! counts only. No figure from a benchmark is ever asserted here.

use std::time::Duration;

use benches::load::{self, LoadSpec, Protocol};
use benches::scenarios::{self, BenchStack, Target};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_scenario_runs_cleanly_and_hits_stay_off_the_upstream() {
    let stack = BenchStack::start(20).await.unwrap();
    for scenario in scenarios::all(&stack, 10) {
        for rate in [None, Some(200)] {
            let spec = LoadSpec {
                addr: stack.addr(scenario.target),
                connections: 2,
                warmup: Duration::ZERO,
                duration: Duration::from_millis(300),
                rate,
                tls: None,
                limit: None,
                protocol: Protocol::Http,
            };
            // Warm the cache in a run of its own, so the count below covers
            // only the measured run.
            load::run(&spec, scenario.plan.clone()).await.unwrap();
            let before = stack.upstream_requests(scenario.target).await;
            let result = load::run(&spec, scenario.plan.clone()).await.unwrap();
            let after = stack.upstream_requests(scenario.target).await;
            let label = format!("{} on {} (rate {rate:?})", scenario.name, scenario.target.name());
            assert!(result.requests > 0, "{label}: no requests completed");
            assert_eq!(result.errors, 0, "{label}: transport errors");
            assert_eq!(result.offered_rate, rate, "{label}");
            assert_eq!(
                result.status_classes[1..].iter().sum::<u64>(),
                0,
                "{label}: non-2xx answers {:?}",
                result.status_classes
            );
            if scenario.name.starts_with("hit-") {
                // Warm-up filled the cache: the measured hits never reach the upstream.
                let reached = after.unwrap() - before.unwrap();
                assert_eq!(reached, 0, "{label}: {reached} hits reached the upstream");
            }
            if scenario.name == "miss-unique"
                || (scenario.name == "static-miss" && scenario.target == Target::ProxyStatic)
            {
                assert!(
                    after.unwrap() - before.unwrap() >= result.requests,
                    "{label}: misses must reach the upstream"
                );
            }
        }
    }
    // A limited run sends each of its requests once, then stops.
    let scenario = &scenarios::all(&stack, 10)[0];
    let once = LoadSpec {
        addr: stack.addr(scenario.target),
        connections: 4,
        warmup: Duration::ZERO,
        duration: Duration::ZERO,
        rate: None,
        tls: None,
        limit: Some(25),
        protocol: Protocol::Http,
    };
    let result = load::run(&once, scenario.plan.clone()).await.unwrap();
    assert_eq!(result.requests + result.errors, 25, "a limit of 25 sent {result:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_ping_runs_count_each_pong_and_fail_on_anything_else() {
    let redis = e2e::RedisServer::start();
    let ping = |addr| LoadSpec {
        addr,
        connections: 1,
        warmup: Duration::ZERO,
        duration: Duration::from_millis(300),
        rate: Some(200),
        tls: None,
        limit: None,
        protocol: Protocol::RedisPing,
    };
    // A PING run sends no request of its plan.
    let plan: load::Plan = std::sync::Arc::new(|_| scenarios::get("/".into(), http::HeaderMap::new()));
    let result = load::run(&ping(redis.addr()), plan.clone()).await.unwrap();
    assert!(result.requests > 0, "no PING answered: {result:?}");
    assert_eq!(result.errors, 0, "{result:?}");
    assert_eq!(result.status_classes[1..].iter().sum::<u64>(), 0, "{result:?}");
    // An HTTP server does not answer +PONG: every exchange is an error.
    let http = e2e::ScriptedUpstream::start(|_req| async { e2e::json_reply(200, "{}", &[]) }).await;
    let result = load::run(&ping(http.addr), plan).await.unwrap();
    assert_eq!(result.requests, 0, "an HTTP answer counted as a PONG: {result:?}");
    assert!(result.errors > 0, "{result:?}");
}
