//! HTTP caching as RFC 9111 has it, one test per section a defect broke:
//! `Expires`, the received `Age`, repeated directives, freshness from the
//! origin. Each is named after the section it proves.

use e2e::{json_reply, proxy_config, spawn_proxy, ProxyHandle, ScriptedUpstream};

/// A public cached route `/items/{id}`, with `freshness` as given, and the
/// same under `/asked/{id}` where clients' directives are honoured.
fn config(freshness: &str) -> String {
    format!(
        r#"
[[routes]]
name = "items"
path = "/items/{{id}}"
methods = ["GET"]
access = "public"
cache = {{ ttl = "1h", freshness = "{freshness}" }}

[[routes]]
name = "asked"
path = "/asked/{{id}}"
methods = ["GET"]
access = "public"
cache = {{ ttl = "1h", freshness = "{freshness}", honour_request_directives = true }}

[[routes]]
name = "shared"
path = "/shared/{{id}}"
methods = ["GET"]
access = "public"
forward_headers = ["authorization"]
cache = {{ ttl = "1h", freshness = "{freshness}" }}

[[routes]]
name = "varied"
path = "/varied/{{id}}"
methods = ["GET"]
access = "public"
forward_headers = ["foo"]
cache = {{ ttl = "1h", freshness = "{freshness}" }}

[[routes]]
name = "notes-write"
path = "/notes/{{id}}"
methods = ["PUT"]
access = "public"

[[routes]]
name = "notes"
path = "/notes/{{id}}"
methods = ["GET"]
access = "public"
cache = {{ ttl = "1h", freshness = "{freshness}" }}

[[routes]]
name = "cdn"
path = "/cdn/{{id}}"
methods = ["GET"]
access = "public"
cache = {{ ttl = "1h", freshness = "{freshness}", targeted_cache_control = "CDN-Cache-Control" }}
"#
    )
}

/// A backend answering `/items/{id}` with the headers its id names.
async fn upstream() -> ScriptedUpstream {
    ScriptedUpstream::start(|req| async move {
        let date = httpdate::fmt_http_date(std::time::SystemTime::now());
        let past = httpdate::fmt_http_date(std::time::SystemTime::now() - std::time::Duration::from_secs(600));
        let headers: Vec<(&str, String)> = match req.uri().path() {
            "/items/expired" => vec![("date", date), ("expires", past)],
            "/items/expires-zero" => vec![("date", date), ("expires", "0".into())],
            "/items/aged" => vec![("cache-control", "max-age=3600".into()), ("age", "7200".into())],
            "/items/half-aged" => vec![("cache-control", "max-age=3600".into()), ("age", "1800".into())],
            "/items/twice" => vec![("cache-control", "max-age=0, max-age=3600".into())],
            "/items/silent" => vec![],
            "/items/modified" => vec![("date", date), ("last-modified", past)],
            "/cdn/fresh" => vec![
                ("cache-control", "no-store".into()),
                ("cdn-cache-control", "max-age=600".into()),
            ],
            "/cdn/none" => vec![
                ("cache-control", "max-age=600".into()),
                ("cdn-cache-control", "no-store".into()),
            ],
            "/shared/own" => vec![("cache-control", "max-age=600".into())],
            "/shared/public" => vec![("cache-control", "max-age=600, public".into())],
            path if path.starts_with("/notes/") => {
                if req.method() == "PUT" {
                    return json_reply(201, "{}", &[("location", "/notes/2")]);
                }
                vec![("cache-control", "max-age=600".into())]
            }
            "/varied/on-foo" => vec![("cache-control", "max-age=600".into()), ("vary", "Foo".into())],
            "/varied/plain" => vec![("cache-control", "max-age=600".into())],
            "/items/weak" => {
                if req.headers().get("if-none-match").is_some_and(|v| v == "W/\"w1\"") {
                    return json_reply(304, "", &[("etag", "W/\"w1\""), ("cache-control", "max-age=600")]);
                }
                return json_reply(200, "{}", &[("etag", "W/\"w1\""), ("cache-control", "max-age=600")]);
            }
            "/items/digits" => {
                return json_reply(200, "01234567890", &[("cache-control", "max-age=600")]);
            }
            "/asked/short" => vec![("cache-control", "max-age=1".into()), ("etag", "\"s1\"".into())],
            "/asked/old" => vec![("cache-control", "max-age=3600".into()), ("age", "30".into())],
            path if path.starts_with("/asked/") || path.starts_with("/items/plain") => {
                vec![("cache-control", "max-age=3600".into())]
            }
            other => panic!("unexpected {other}"),
        };
        let pairs: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        json_reply(200, "{}", &pairs)
    })
    .await
}

async fn proxy(upstream: &ScriptedUpstream, freshness: &str) -> ProxyHandle {
    spawn_proxy(proxy_config(&config(freshness), upstream.addr, None, None)).await
}

/// X-Cache and Age of two GETs of `path`, one after the other.
async fn twice(proxy: &ProxyHandle, path: &str) -> [(String, Option<u64>); 2] {
    let client = reqwest::Client::new();
    let mut seen = Vec::new();
    for _ in 0..2 {
        let response = client.get(format!("{}{path}", proxy.base_url())).send().await.unwrap();
        assert_eq!(response.status(), 200);
        let x_cache = response.headers()["x-cache"].to_str().unwrap().to_owned();
        let age = response
            .headers()
            .get("age")
            .map(|a| a.to_str().unwrap().parse().unwrap());
        seen.push((x_cache, age));
    }
    [seen[0].clone(), seen[1].clone()]
}

#[tokio::test]
async fn rfc9111_5_3_an_expires_in_the_past_or_invalid_is_never_served_from_the_cache() {
    let upstream = upstream().await;
    for freshness in ["route", "origin"] {
        let proxy = proxy(&upstream, freshness).await;
        for path in ["/items/expired", "/items/expires-zero"] {
            let [first, second] = twice(&proxy, path).await;
            assert_eq!(
                (first.0.as_str(), second.0.as_str()),
                ("MISS", "MISS"),
                "{freshness} {path}"
            );
        }
    }
}

#[tokio::test]
async fn rfc9111_4_2_3_the_received_age_is_spent_freshness_and_carried_on() {
    let upstream = upstream().await;
    let proxy = proxy(&upstream, "route").await;
    let [first, second] = twice(&proxy, "/items/aged").await;
    assert_eq!(
        (first.0.as_str(), second.0.as_str()),
        ("MISS", "MISS"),
        "older than its max-age"
    );
    assert_eq!(first.1, Some(7200), "a miss forwards the backend's Age");
    let [first, second] = twice(&proxy, "/items/half-aged").await;
    assert_eq!((first.0.as_str(), first.1), ("MISS", Some(1800)));
    assert_eq!(second.0, "HIT");
    assert!(
        second.1.unwrap() >= 1800,
        "a hit's Age goes on from the received one: {second:?}"
    );
}

#[tokio::test]
async fn rfc9111_4_2_1_of_two_max_ages_the_first_counts() {
    let upstream = upstream().await;
    let proxy = proxy(&upstream, "route").await;
    let [first, second] = twice(&proxy, "/items/twice").await;
    assert_eq!(
        (first.0.as_str(), second.0.as_str()),
        ("MISS", "MISS"),
        "max-age=0 came first"
    );
}

#[tokio::test]
async fn rfc9111_4_2_2_origin_freshness_stores_only_what_says_how_long() {
    let upstream = upstream().await;
    let origin = proxy(&upstream, "origin").await;
    let [_, second] = twice(&origin, "/items/silent").await;
    assert_eq!(second.0, "MISS", "no explicit or heuristic freshness: not stored");
    let [_, second] = twice(&origin, "/items/modified").await;
    assert_eq!(second.0, "HIT", "heuristic freshness from Last-Modified");
    let route = proxy(&upstream, "route").await;
    let [_, second] = twice(&route, "/items/silent").await;
    assert_eq!(second.0, "HIT", "the route's ttl stands in for the backend's silence");
}

/// X-Cache (or the status, when not 200) of a GET of `path` with a request
/// `Cache-Control`.
async fn asking(proxy: &ProxyHandle, path: &str, cache_control: Option<&str>) -> String {
    let mut request = reqwest::Client::new().get(format!("{}{path}", proxy.base_url()));
    if let Some(value) = cache_control {
        request = request.header("cache-control", value);
    }
    let response = request.send().await.unwrap();
    match response.status().as_u16() {
        200 => response.headers()["x-cache"].to_str().unwrap().to_owned(),
        other => other.to_string(),
    }
}

#[tokio::test]
async fn rfc9111_5_2_1_5_the_answer_to_a_no_store_request_is_not_stored() {
    let upstream = upstream().await;
    let proxy = proxy(&upstream, "route").await;
    assert_eq!(asking(&proxy, "/items/plain-1", Some("no-store")).await, "MISS");
    assert_eq!(
        asking(&proxy, "/items/plain-1", None).await,
        "MISS",
        "nothing was stored"
    );
    assert_eq!(asking(&proxy, "/items/plain-1", None).await, "HIT");
}

#[tokio::test]
async fn rfc9111_5_2_1_4_no_cache_and_max_age_are_followed_only_where_the_route_lets_clients_decide() {
    let upstream = upstream().await;
    let proxy = proxy(&upstream, "route").await;
    for path in ["/items/plain-2", "/asked/a"] {
        assert_eq!(asking(&proxy, path, None).await, "MISS");
        assert_eq!(asking(&proxy, path, None).await, "HIT");
    }
    // A shared gateway by default: a client cannot force a miss.
    assert_eq!(asking(&proxy, "/items/plain-2", Some("no-cache")).await, "HIT");
    assert_eq!(asking(&proxy, "/items/plain-2", Some("max-age=0")).await, "HIT");
    // Where the route honours them, the entry is not served as it is.
    assert_eq!(asking(&proxy, "/asked/a", Some("no-cache")).await, "MISS");
    // An entry 30 s old when it arrived: too old for max-age=10.
    assert_eq!(asking(&proxy, "/asked/old", None).await, "MISS");
    assert_eq!(asking(&proxy, "/asked/old", Some("max-age=60")).await, "HIT");
    assert_eq!(asking(&proxy, "/asked/old", Some("max-age=10")).await, "MISS");
    assert_eq!(asking(&proxy, "/asked/old", Some("min-fresh=7200")).await, "MISS");
}

#[tokio::test]
async fn rfc9111_5_2_1_7_only_if_cached_is_answered_from_the_cache_or_504() {
    let upstream = upstream().await;
    let proxy = proxy(&upstream, "route").await;
    assert_eq!(asking(&proxy, "/asked/b", Some("only-if-cached")).await, "504");
    assert_eq!(upstream.hits(), 0, "the backend was not asked");
    assert_eq!(asking(&proxy, "/asked/b", None).await, "MISS");
    assert_eq!(asking(&proxy, "/asked/b", Some("only-if-cached")).await, "HIT");
}

#[tokio::test]
async fn rfc9213_a_field_targeted_at_this_cache_decides_in_place_of_cache_control() {
    let upstream = upstream().await;
    let proxy = proxy(&upstream, "origin").await;
    let [first, second] = twice(&proxy, "/cdn/fresh").await;
    assert_eq!(
        (first.0.as_str(), second.0.as_str()),
        ("MISS", "HIT"),
        "CDN-Cache-Control over no-store"
    );
    let [_, second] = twice(&proxy, "/cdn/none").await;
    assert_eq!(second.0, "MISS", "CDN-Cache-Control: no-store over max-age");
    for path in ["/cdn/fresh", "/cdn/none"] {
        let response = reqwest::get(format!("{}{path}", proxy.base_url())).await.unwrap();
        for name in ["cdn-cache-control", "cache-control"] {
            assert!(
                response.headers().get(name).is_some(),
                "{path}: {name} passed on, for caches after this one"
            );
        }
    }
}

#[tokio::test]
async fn rfc9111_3_5_an_answer_to_credentials_is_shared_only_when_it_says_so() {
    let upstream = upstream().await;
    let proxy = proxy(&upstream, "route").await;
    let client = reqwest::Client::new();
    let get = |path: &'static str, credentials: bool| {
        let mut request = client.get(format!("{}{path}", proxy.base_url()));
        if credentials {
            request = request.header("authorization", "Basic dXNlcjpwYXNz");
        }
        async move {
            request.send().await.unwrap().headers()["x-cache"]
                .to_str()
                .unwrap()
                .to_owned()
        }
    };
    assert_eq!(get("/shared/own", true).await, "MISS");
    assert_eq!(
        get("/shared/own", false).await,
        "MISS",
        "the credentialed answer was not stored"
    );
    assert_eq!(get("/shared/own", false).await, "HIT", "an anonymous one was");
    assert_eq!(get("/shared/public", true).await, "MISS");
    assert_eq!(get("/shared/public", false).await, "HIT", "public: shared");
}

#[tokio::test]
async fn rfc9111_4_4_a_write_invalidates_its_url_and_the_one_its_answer_names() {
    let upstream = upstream().await;
    let proxy = proxy(&upstream, "route").await;
    for path in ["/notes/1", "/notes/1?page=2", "/notes/2", "/notes/3"] {
        assert_eq!(asking(&proxy, path, None).await, "MISS");
        assert_eq!(asking(&proxy, path, None).await, "HIT");
    }
    // No `invalidates` on the write route: its URL alone is the reason.
    let write = reqwest::Client::new()
        .put(format!("{}/notes/1", proxy.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(write.status(), 201);
    assert_eq!(asking(&proxy, "/notes/1", None).await, "MISS", "the written URL");
    assert_eq!(
        asking(&proxy, "/notes/1?page=2", None).await,
        "MISS",
        "every query of it"
    );
    assert_eq!(asking(&proxy, "/notes/2", None).await, "MISS", "its Location");
    assert_eq!(asking(&proxy, "/notes/3", None).await, "HIT", "nothing else");
}

#[tokio::test]
async fn rfc9111_4_3_an_expired_entry_with_a_validator_is_revalidated_not_fetched_whole() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    let conditional = Arc::new(AtomicUsize::new(0));
    let seen = conditional.clone();
    // Fresh for one second; an If-None-Match for its ETag gets a 304.
    let upstream = ScriptedUpstream::start(move |req| {
        let seen = seen.clone();
        async move {
            if req.headers().get("if-none-match").is_some_and(|v| v == "\"v1\"") {
                seen.fetch_add(1, Ordering::SeqCst);
                return json_reply(304, "", &[("etag", "\"v1\""), ("cache-control", "max-age=1")]);
            }
            json_reply(200, "{}", &[("etag", "\"v1\""), ("cache-control", "max-age=1")])
        }
    })
    .await;
    let proxy = proxy(&upstream, "route").await;
    assert_eq!(asking(&proxy, "/items/plain-r", None).await, "MISS");
    // Past "as long again" (1 s more), within cache.revalidation_retention.
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    let answer = reqwest::get(format!("{}/items/plain-r", proxy.base_url()))
        .await
        .unwrap();
    let cache_status = answer.headers()["cache-status"].to_str().unwrap().to_owned();
    assert!(cache_status.contains("fwd-status=304"), "{cache_status}");
    assert_eq!(
        conditional.load(Ordering::SeqCst),
        1,
        "revalidated with the stored ETag"
    );
}

#[tokio::test]
async fn rfc9110_14_a_range_of_a_stored_answer_is_a_206_and_nothing_partial_is_stored() {
    let upstream = upstream().await;
    let proxy = proxy(&upstream, "route").await;
    let client = reqwest::Client::new();
    let ranged = |range: &'static str| {
        let request = client
            .get(format!("{}/items/digits", proxy.base_url()))
            .header("range", range);
        async move {
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            let content_range = response
                .headers()
                .get("content-range")
                .map(|v| v.to_str().unwrap().to_owned());
            (status, content_range, response.text().await.unwrap())
        }
    };
    // The first, a miss, is stored whole and answered in part.
    assert_eq!(
        ranged("bytes=0-1").await,
        (206, Some("bytes 0-1/11".into()), "01".into())
    );
    assert_eq!(
        ranged("bytes=-3").await,
        (206, Some("bytes 8-10/11".into()), "890".into())
    );
    assert_eq!(
        ranged("bytes=20-").await,
        (416, Some("bytes */11".into()), String::new())
    );
    assert_eq!(ranged("bytes=0-1,4-5").await.0, 200, "several ranges: the whole answer");
    let whole = reqwest::get(format!("{}/items/digits", proxy.base_url()))
        .await
        .unwrap();
    assert_eq!(whole.headers()["x-cache"], "HIT");
    assert_eq!(
        whole.text().await.unwrap(),
        "01234567890",
        "the entry is the whole answer"
    );
    assert_eq!(upstream.hits(), 1);
}

#[tokio::test]
async fn rfc9110_8_8_1_a_weak_origin_etag_is_kept_and_matched_weakly() {
    let upstream = upstream().await;
    let proxy = proxy(&upstream, "route").await;
    let first = reqwest::get(format!("{}/items/weak", proxy.base_url())).await.unwrap();
    assert_eq!(first.headers()["etag"], "W/\"w1\"", "not replaced by a computed tag");
    let again = reqwest::Client::new()
        .get(format!("{}/items/weak", proxy.base_url()))
        .header("if-none-match", "W/\"w1\"")
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 304, "the client holding the weak tag gets a 304");
}

#[tokio::test]
async fn rfc9111_4_1_a_learned_vary_keys_its_own_url_only() {
    let upstream = upstream().await;
    let proxy = proxy(&upstream, "route").await;
    let client = reqwest::Client::new();
    let get = |path: &'static str, foo: &'static str| {
        let request = client.get(format!("{}{path}", proxy.base_url())).header("foo", foo);
        async move {
            request.send().await.unwrap().headers()["x-cache"]
                .to_str()
                .unwrap()
                .to_owned()
        }
    };
    assert_eq!(get("/varied/plain", "1").await, "MISS");
    assert_eq!(get("/varied/plain", "2").await, "HIT", "it does not vary");
    assert_eq!(get("/varied/on-foo", "1").await, "MISS");
    assert_eq!(get("/varied/on-foo", "1").await, "HIT");
    assert_eq!(get("/varied/on-foo", "2").await, "MISS", "another variant of this URL");
    assert_eq!(
        get("/varied/plain", "3").await,
        "HIT",
        "the other URL keeps its key and its entry"
    );
}

#[tokio::test]
async fn rfc9111_5_2_1_2_max_stale_accepts_an_expired_entry_where_clients_decide() {
    let upstream = upstream().await;
    let proxy = proxy(&upstream, "route").await;
    assert_eq!(asking(&proxy, "/asked/short", None).await, "MISS");
    // Expired (max-age=1), still kept to be revalidated.
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    assert_eq!(
        asking(&proxy, "/asked/short", Some("max-stale=1")).await,
        "MISS",
        "too stale for it"
    );
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    assert_eq!(asking(&proxy, "/asked/short", Some("max-stale=60")).await, "STALE");
    assert_eq!(asking(&proxy, "/asked/short", Some("max-stale")).await, "STALE");
}
