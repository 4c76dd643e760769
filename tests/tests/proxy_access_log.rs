//! The access log: one line per request with what an operator asks of it,
//! and none of what must never be written down (tokens, secret query
//! values, bodies, cookies).

use e2e::token::mint;
use e2e::{json_reply, proxy_config, spawn_logging_proxy, AccessLines, ProxyHandle, ScriptedUpstream};
use proxy::access_log::AccessFormat;
use serde_json::Value;

const CONFIG: &str = r#"
[[routes]]
name = "notes"
path = "/notes"
methods = ["GET"]
access = "authenticated"
cache = { scope = "user", tags = ["notes"] }

[[routes]]
name = "notes-write"
path = "/notes"
methods = ["POST"]
access = "authenticated"
invalidates = ["notes"]

[[routes]]
name = "broken"
path = "/broken"
methods = ["GET"]
access = "public"
"#;

const BODY_MARKER: &str = "body-marker-7f3a";
const COOKIE: &str = "session=cookie-secret-91c2";

/// A backend whose answers carry a recognisable body, and a cookie on
/// writes (an answer with one is not stored); `/broken` fails with a 502.
async fn upstream() -> ScriptedUpstream {
    ScriptedUpstream::start(|req| async move {
        if req.uri().path() == "/broken" {
            return json_reply(502, r#"{"error":"down"}"#, &[]);
        }
        let cookie: &[(&str, &str)] = if req.method() == "POST" {
            &[("set-cookie", COOKIE)]
        } else {
            &[]
        };
        json_reply(200, &format!(r#"{{"note":"{BODY_MARKER}"}}"#), cookie)
    })
    .await
}

async fn proxy(
    toml: &str,
    upstream: &ScriptedUpstream,
    format: AccessFormat,
) -> (ProxyHandle, std::sync::Arc<AccessLines>) {
    spawn_logging_proxy(proxy_config(toml, upstream.addr, None, None), format).await
}

#[tokio::test]
async fn each_request_is_one_json_line_with_its_fields_and_no_secret() {
    let upstream = upstream().await;
    let (proxy, lines) = proxy(CONFIG, &upstream, AccessFormat::Json).await;
    let token = mint("alice", "user");
    let client = reqwest::Client::new();

    let read = client
        .get(format!(
            "{}/notes?page=2&access_token=query-secret-5d1e",
            proxy.base_url()
        ))
        .bearer_auth(&token)
        .header("user-agent", "probe/1.0")
        .send()
        .await
        .unwrap();
    assert_eq!(read.status(), 200);
    let read_id = read.headers()["x-request-id"].to_str().unwrap().to_owned();
    let read_len = read.bytes().await.unwrap().len();

    // A hit: served without the backend (before the write invalidates it).
    let hit = client
        .get(format!(
            "{}/notes?page=2&access_token=query-secret-5d1e",
            proxy.base_url()
        ))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    let hit_id = hit.headers()["x-request-id"].to_str().unwrap().to_owned();
    hit.bytes().await.unwrap();
    let hit_line: Value = serde_json::from_str(&lines.find(&hit_id).await).unwrap();
    assert_eq!(
        (&hit_line["cache"], &hit_line["upstream_status"]),
        (&"hit".into(), &Value::Null)
    );

    let password_body = r#"{"password":"hunter2-body-secret"}"#;
    let write = client
        .post(format!("{}/notes", proxy.base_url()))
        .bearer_auth(&token)
        .header("content-type", "application/json")
        .body(password_body)
        .send()
        .await
        .unwrap();
    assert_eq!(write.status(), 200);
    let write_id = write.headers()["x-request-id"].to_str().unwrap().to_owned();
    write.bytes().await.unwrap();

    let read_line: Value = serde_json::from_str(&lines.find(&read_id).await).unwrap();
    assert_eq!(read_line["method"], "GET");
    assert_eq!(
        read_line["path"], "/notes?access_token=REDACTED&page=2",
        "normalised, secret redacted"
    );
    assert_eq!(read_line["rule"], "notes");
    assert_eq!(read_line["status"], 200);
    assert_eq!(read_line["cache"], "miss");
    assert_eq!(read_line["upstream_status"], 200);
    assert!(read_line["upstream_seconds"].as_f64().unwrap() > 0.0);
    assert!(read_line["duration_seconds"].as_f64().unwrap() >= read_line["upstream_seconds"].as_f64().unwrap());
    assert_eq!(read_line["bytes_out"], read_len as u64);
    assert_eq!(read_line["completed"], true);
    assert_eq!(read_line["peer"], "127.0.0.1");
    assert_eq!(read_line["subject"], "alice");
    assert_eq!(read_line["jti"], "e2e");
    assert_eq!(read_line["user_agent"], "probe/1.0");
    assert_eq!(read_line["protocol"], "HTTP/1.1");
    assert!(read_line["time"].as_str().unwrap().ends_with('Z'));

    let write_line: Value = serde_json::from_str(&lines.find(&write_id).await).unwrap();
    assert_eq!(write_line["method"], "POST");
    assert_eq!(write_line["rule"], "notes-write");
    assert_eq!(write_line["cache"], "bypass");
    assert_eq!(write_line["bytes_in"], password_body.len() as u64);

    let everything = lines.all().concat();
    assert_eq!(lines.all().len(), 3, "one line per request: {everything}");
    for secret in [
        token.as_str(),
        "query-secret-5d1e",
        "hunter2-body-secret",
        BODY_MARKER,
        "cookie-secret-91c2",
    ] {
        assert!(!everything.contains(secret), "{secret:?} logged: {everything}");
    }
}

#[tokio::test]
async fn text_lines_read_like_combined_and_refusals_say_why() {
    let upstream = upstream().await;
    let (proxy, lines) = proxy(CONFIG, &upstream, AccessFormat::Text).await;
    let client = reqwest::Client::new();
    let forged = format!("{}x", mint("mallory", "user"));
    let refused = client
        .get(format!("{}/notes?token=query-secret-5d1e", proxy.base_url()))
        .bearer_auth(&forged)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
    let id = refused.headers()["x-request-id"].to_str().unwrap().to_owned();
    let line = lines.find(&id).await;
    assert!(
        line.starts_with("127.0.0.1 - - ["),
        "peer, no subject for a token that did not verify: {line}"
    );
    assert!(line.contains("] \"GET /notes?token=REDACTED HTTP/1.1\" 401 "), "{line}");
    assert!(line.contains(" rule=notes cache=bypass "), "{line}");
    assert!(line.contains(" error=\"invalid token"), "{line}");
    assert!(!line.contains(&forged) && !line.contains("query-secret-5d1e"), "{line}");
    assert_eq!(line.matches('\n').count(), 1);
}

#[tokio::test]
async fn hashed_subjects_name_no_one() {
    let upstream = upstream().await;
    let toml = format!("[log]\nhash_subjects = true\n{CONFIG}");
    let (proxy, lines) = proxy(&toml, &upstream, AccessFormat::Json).await;
    let mut hashes = Vec::new();
    for _ in 0..2 {
        let response = reqwest::Client::new()
            .get(format!("{}/notes", proxy.base_url()))
            .bearer_auth(mint("alice", "user"))
            .send()
            .await
            .unwrap();
        let id = response.headers()["x-request-id"].to_str().unwrap().to_owned();
        response.bytes().await.unwrap();
        let line: Value = serde_json::from_str(&lines.find(&id).await).unwrap();
        assert!(line.get("subject").is_none(), "{line}");
        assert!(!line.to_string().contains("alice"), "{line}");
        hashes.push(line["subject_hash"].as_str().unwrap().to_owned());
    }
    assert_eq!(hashes[0], hashes[1], "the same subject, the same hash");
    assert_eq!(hashes[0].len(), 16);
}

#[tokio::test]
async fn sampling_zero_still_logs_server_errors() {
    let upstream = upstream().await;
    let toml = format!("[log]\naccess_sample = 0.0\n{CONFIG}");
    let (proxy, lines) = proxy(&toml, &upstream, AccessFormat::Json).await;
    // One connection: the first response's line, if any, is written before
    // the second request is read.
    let client = reqwest::Client::builder().pool_max_idle_per_host(1).build().unwrap();
    let ok = client
        .get(format!("{}/notes", proxy.base_url()))
        .bearer_auth(mint("alice", "user"))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    let ok_id = ok.headers()["x-request-id"].to_str().unwrap().to_owned();
    ok.bytes().await.unwrap();
    let failed = client.get(format!("{}/broken", proxy.base_url())).send().await.unwrap();
    assert_eq!(failed.status(), 502);
    let failed_id = failed.headers()["x-request-id"].to_str().unwrap().to_owned();
    failed.bytes().await.unwrap();
    let line: Value = serde_json::from_str(&lines.find(&failed_id).await).unwrap();
    assert_eq!((&line["status"], &line["upstream_status"]), (&502.into(), &502.into()));
    assert!(
        !lines.all().concat().contains(&ok_id),
        "a 200 is not sampled at 0: {:?}",
        lines.all()
    );
}

#[tokio::test]
async fn a_client_that_hangs_up_mid_body_is_logged_as_incomplete() {
    use tokio::io::AsyncWriteExt;
    // A backend that sends the head and part of a large body, then stalls.
    let (addr, _) = e2e::upstream::raw_upstream(|mut stream| async move {
        let head = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 1000000\r\n\r\n";
        let _ = stream.write_all(head.as_bytes()).await;
        let _ = stream.write_all(&[b' '; 4096]).await;
        std::future::pending::<()>().await;
    })
    .await;
    // Far longer than the wait for the line: only the hang-up can end it.
    let toml = format!("[upstream]\nresponse_timeout = \"60s\"\n{CONFIG}");
    let (proxy, lines) = spawn_logging_proxy(proxy_config(&toml, addr, None, None), AccessFormat::Json).await;
    let response = reqwest::Client::new()
        .get(format!("{}/broken", proxy.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let id = response.headers()["x-request-id"].to_str().unwrap().to_owned();
    drop(response);
    let line: Value = serde_json::from_str(&lines.find(&id).await).unwrap();
    assert_eq!(line["completed"], false, "{line}");
    assert_eq!(line["status"], 200);
    assert!(line["bytes_out"].as_u64().unwrap() < 1_000_000, "{line}");
}

#[tokio::test]
async fn a_hostile_path_and_agent_stay_one_bounded_line() {
    let upstream = upstream().await;
    let (proxy, lines) = proxy(CONFIG, &upstream, AccessFormat::Text).await;
    let long = format!("/{}?token=abc", "a".repeat(6000));
    let response = reqwest::Client::new()
        .get(format!("{}{long}", proxy.base_url()))
        .header(
            "user-agent",
            reqwest::header::HeaderValue::from_bytes(b"x\" rule=forged \\ \xff").unwrap(),
        )
        .send()
        .await
        .unwrap();
    let id = response.headers()["x-request-id"].to_str().unwrap().to_owned();
    response.bytes().await.unwrap();
    let line = lines.find(&id).await;
    assert!(line.len() < 3000, "cut: {} bytes", line.len());
    assert!(line.contains("\"x\\x22 rule=forged \\x5C \\xFF\""), "escaped: {line}");
    assert_eq!(
        line.matches(" rule=").count(),
        2,
        "the forged field stays inside the quotes: {line}"
    );
    assert_eq!(line.matches('\n').count(), 1);
}

#[tokio::test]
async fn a_chunked_answer_sent_whole_is_complete() {
    use tokio::io::AsyncWriteExt;
    let (addr, _) = e2e::upstream::raw_upstream(|mut stream| async move {
        let answer = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n\
                      5\r\n{\"a\":\r\n2\r\n1}\r\n0\r\n\r\n";
        let _ = stream.write_all(answer.as_bytes()).await;
    })
    .await;
    let (proxy, lines) = spawn_logging_proxy(proxy_config(CONFIG, addr, None, None), AccessFormat::Json).await;
    let response = reqwest::get(format!("{}/broken", proxy.base_url())).await.unwrap();
    let id = response.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert_eq!(response.text().await.unwrap(), "{\"a\":1}");
    let line: Value = serde_json::from_str(&lines.find(&id).await).unwrap();
    assert_eq!(
        (&line["completed"], &line["bytes_out"]),
        (&true.into(), &7.into()),
        "{line}"
    );
}

#[tokio::test]
async fn a_client_gone_before_the_answer_is_logged_as_499() {
    // A backend that never answers; the client gives up first.
    let (addr, heads) = e2e::upstream::raw_upstream(|stream| async move {
        let _held_open = stream;
        std::future::pending::<()>().await
    })
    .await;
    let (proxy, lines) = spawn_logging_proxy(proxy_config(CONFIG, addr, None, None), AccessFormat::Json).await;
    let impatient = reqwest::Client::builder()
        .timeout(std::time::Duration::from_millis(300))
        .build()
        .unwrap();
    let gave_up = impatient
        .get(format!("{}/broken?token=abc", proxy.base_url()))
        .header("x-request-id", "gone-1")
        .send()
        .await;
    assert!(gave_up.unwrap_err().is_timeout());
    assert_eq!(
        heads.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "the request reached the backend"
    );
    let line: Value = serde_json::from_str(&lines.find("gone-1").await).unwrap();
    assert_eq!(line["status"], 499, "{line}");
    assert_eq!(line["completed"], false);
    assert_eq!(line["path"], "/broken?token=REDACTED");
}
