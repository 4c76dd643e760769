//! Tokens from an identity provider: a JWKS served over HTTPS by a real
//! local server made per test (its own CA), fetched by the proxy at start,
//! on rotation and after failures, and several issuers kept apart.

use std::sync::{Arc, Mutex};

use e2e::tls::TestCa;
use e2e::token::now;
use e2e::wait::eventually;
use e2e::{json_reply, proxy_config_file, spawn_reloadable_proxy, ProxyHandle, ScriptedUpstream};
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

const KEYS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/keys");

/// A signing key and its public half as a JWK under `kid`.
#[derive(Clone)]
struct SigningKey {
    kid: String,
    algorithm: Algorithm,
    encoding: EncodingKey,
    jwk: Value,
}

impl SigningKey {
    fn new(kid: &str, algorithm: Algorithm, encoding: EncodingKey) -> SigningKey {
        let mut jwk = serde_json::to_value(Jwk::from_encoding_key(&encoding, algorithm).unwrap()).unwrap();
        jwk["kid"] = json!(kid);
        jwk["use"] = json!("sig");
        SigningKey {
            kid: kid.into(),
            algorithm,
            encoding,
            jwk,
        }
    }

    fn rsa(kid: &str) -> SigningKey {
        let pem = std::fs::read(format!("{KEYS}/rsa-private.pem")).unwrap();
        SigningKey::new(kid, Algorithm::RS256, EncodingKey::from_rsa_pem(&pem).unwrap())
    }

    fn ec(kid: &str) -> SigningKey {
        let pem = std::fs::read(format!("{KEYS}/ec256-private.pem")).unwrap();
        SigningKey::new(kid, Algorithm::ES256, EncodingKey::from_ec_pem(&pem).unwrap())
    }

    /// A P-256 key made now: one no test has published yet.
    fn fresh_ec(kid: &str) -> SigningKey {
        let pem = rcgen::KeyPair::generate().unwrap().serialize_pem();
        SigningKey::new(kid, Algorithm::ES256, EncodingKey::from_ec_pem(pem.as_bytes()).unwrap())
    }

    /// A token for `sub`, valid for ten minutes, from `iss`.
    fn token(&self, sub: &str, iss: &str, extra: Value) -> String {
        let mut header = Header::new(self.algorithm);
        header.kid = Some(self.kid.clone());
        let mut claims = json!({ "sub": sub, "iss": iss, "exp": now() + 600, "role": "user" });
        for (k, v) in extra.as_object().unwrap() {
            claims[k] = v.clone();
        }
        jsonwebtoken::encode(&header, &claims, &self.encoding).unwrap()
    }
}

/// What the JWKS server answers.
struct Published {
    keys: Vec<Value>,
    failing: bool,
    /// How long each answer takes: a slow identity provider.
    delay: std::time::Duration,
}

/// An HTTPS server publishing a JWKS at `/jwks` (and an OpenID
/// configuration naming it), counting fetches.
struct JwksServer {
    ca: TestCa,
    tls: Arc<rustls::ServerConfig>,
    published: Arc<Mutex<Published>>,
    server: Option<ScriptedUpstream>,
    addr: std::net::SocketAddr,
}

impl JwksServer {
    async fn start(keys: &[&SigningKey]) -> JwksServer {
        let ca = TestCa::new("idp CA");
        let tls = ca.server(&["localhost"]).server_config(&["http/1.1"]);
        let published = Arc::new(Mutex::new(Published {
            keys: keys.iter().map(|k| k.jwk.clone()).collect(),
            failing: false,
            delay: std::time::Duration::ZERO,
        }));
        let server = ScriptedUpstream::start_tls(tls.clone(), serve(published.clone())).await;
        let addr = server.addr;
        JwksServer {
            ca,
            tls,
            published,
            server: Some(server),
            addr,
        }
    }

    /// A server whose port is reserved but not yet listening: the
    /// identity provider is down when the proxy starts.
    async fn down(keys: &[&SigningKey]) -> JwksServer {
        let mut server = JwksServer::start(keys).await;
        server.server = None;
        server
    }

    async fn come_up(&mut self) {
        let script = serve(self.published.clone());
        self.server = Some(ScriptedUpstream::start_tls_at(self.addr, self.tls.clone(), script).await);
    }

    fn url(&self) -> String {
        format!("https://localhost:{}/jwks", self.addr.port())
    }

    fn issuer_url(&self) -> String {
        format!("https://localhost:{}/realm", self.addr.port())
    }

    fn fetches(&self) -> usize {
        self.server.as_ref().map_or(0, ScriptedUpstream::hits)
    }

    fn publish(&self, keys: &[&SigningKey]) {
        self.published.lock().unwrap().keys = keys.iter().map(|k| k.jwk.clone()).collect();
    }

    fn fail(&self, failing: bool) {
        self.published.lock().unwrap().failing = failing;
    }
}

fn serve(
    published: Arc<Mutex<Published>>,
) -> impl Fn(
    http::Request<hyper::body::Incoming>,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = e2e::upstream::Reply> + Send>>
       + Send
       + Sync
       + 'static {
    move |req| {
        let published = published.lock().unwrap();
        let reply = if published.failing {
            json_reply(500, r#"{"error":"idp down"}"#, &[])
        } else if req.uri().path() == "/realm/.well-known/openid-configuration" {
            let host = req.headers()["host"].to_str().unwrap().to_owned();
            json_reply(
                200,
                &json!({ "jwks_uri": format!("https://{host}/jwks") }).to_string(),
                &[],
            )
        } else {
            let body = json!({ "keys": published.keys }).to_string();
            json_reply(200, &body, &[("cache-control", "public, max-age=3600")])
        };
        let delay = published.delay;
        Box::pin(async move {
            tokio::time::sleep(delay).await;
            reply
        })
    }
}

/// An upstream that answers with the identity the proxy forwarded.
async fn identity_upstream() -> ScriptedUpstream {
    ScriptedUpstream::start(|req| {
        let header = |name: &str| {
            req.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned()
        };
        let body = json!({ "sub": header("x-auth-subject"), "role": header("x-auth-role") }).to_string();
        async move { json_reply(200, &body, &[]) }
    })
    .await
}

const ROUTES: &str = r#"
[[routes]]
name = "me"
path = "/me"
methods = ["GET"]
access = "authenticated"

[[routes]]
name = "public"
path = "/public"
methods = ["GET"]
access = "public"
"#;

/// The proxy with token settings `jwt`, in front of an upstream that
/// echoes the identity it is sent. `idp`'s CA is written beside the config
/// as `idp-ca.pem`, and `files` too.
struct Rig {
    proxy: ProxyHandle,
    _upstream: ScriptedUpstream,
    _dir: tempfile::TempDir,
}

impl Rig {
    async fn start(idp: &JwksServer, jwt: &str, files: &[(&str, &[u8])]) -> Rig {
        let dir = tempfile::tempdir().unwrap();
        idp.ca.write(dir.path(), "idp-ca");
        for (name, contents) in files {
            std::fs::write(dir.path().join(name), contents).unwrap();
        }
        let upstream = identity_upstream().await;
        let toml = format!("{jwt}\n{ROUTES}");
        let proxy = spawn_reloadable_proxy(proxy_config_file(dir.path(), &toml, upstream.addr, None, None)).await;
        Rig {
            proxy,
            _upstream: upstream,
            _dir: dir,
        }
    }

    /// Verifying RS256 and ES256 tokens of issuer `idp` with keys from
    /// `idp`'s JWKS URL, with `extra` `[jwt]` settings.
    async fn jwks(idp: &JwksServer, extra: &str) -> Rig {
        let jwt = format!(
            "[jwt]\njwks_ca_file = \"idp-ca.pem\"\nalgorithms = [\"RS256\", \"ES256\"]\njwks_url = \"{}\"\nissuer = \"idp\"\n{extra}",
            idp.url()
        );
        Rig::start(idp, &jwt, &[]).await
    }
}

/// Status and body of `GET path` with `token`.
async fn get(proxy: &ProxyHandle, path: &str, token: Option<&str>) -> (u16, Value) {
    let mut request = reqwest::Client::new().get(proxy.base_url() + path);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn rs256_and_es256_tokens_verify_with_the_key_their_kid_names() {
    let (rsa, ec) = (SigningKey::rsa("rsa-1"), SigningKey::ec("ec-1"));
    let idp = JwksServer::start(&[&rsa, &ec]).await;
    let rig = Rig::jwks(&idp, "").await;
    let proxy = &rig.proxy;

    for key in [&rsa, &ec] {
        let (status, body) = get(proxy, "/me", Some(&key.token(&key.kid, "idp", json!({})))).await;
        assert_eq!((status, body["sub"].as_str()), (200, Some(key.kid.as_str())));
    }
    // The EC key signing under the RSA key's kid, an HS256 token naming a
    // published kid, and a token for another issuer: all refused.
    let mut misnamed = ec.clone();
    misnamed.kid = "rsa-1".into();
    let hs256 = SigningKey {
        kid: "rsa-1".into(),
        algorithm: Algorithm::HS256,
        encoding: EncodingKey::from_secret(b"a-secret-anyone-could-have-picked-0123"),
        jwk: Value::Null,
    };
    for token in [
        misnamed.token("m", "idp", json!({})),
        hs256.token("h", "idp", json!({})),
        rsa.token("o", "other-idp", json!({})),
    ] {
        assert_eq!(get(proxy, "/me", Some(&token)).await.0, 401);
    }
    assert_eq!(idp.fetches(), 1, "fetched once, at start");
}

#[tokio::test]
async fn a_new_key_is_accepted_after_exactly_one_refetch_and_a_removed_one_stops_verifying() {
    let rsa = SigningKey::rsa("rsa-1");
    let idp = JwksServer::start(&[&rsa]).await;
    let rig = Rig::jwks(&idp, "jwks_refetch_interval = \"1ms\"").await;
    let proxy = &rig.proxy;
    let old_token = rsa.token("before", "idp", json!({}));
    assert_eq!(get(proxy, "/me", Some(&old_token)).await.0, 200);
    assert_eq!(idp.fetches(), 1);

    // Rotation: the IdP publishes a new key next to the old one.
    let rotated = SigningKey::fresh_ec("ec-2");
    idp.publish(&[&rsa, &rotated]);
    let new_token = rotated.token("after", "idp", json!({}));
    assert_eq!(get(proxy, "/me", Some(&new_token)).await.0, 200);
    assert_eq!(idp.fetches(), 2, "one refetch for the new kid");
    assert_eq!(get(proxy, "/me", Some(&new_token)).await.0, 200);
    assert_eq!(get(proxy, "/me", Some(&old_token)).await.0, 200);
    assert_eq!(idp.fetches(), 2, "known kids fetch nothing");
    let series = |name: &str, outcome: &str| format!(r#"{name}{{jwks="{}",outcome="{outcome}"}}"#, idp.url());
    assert_eq!(proxy.metric(&series("proxy_jwks_fetches_total", "ok")).await, 2);
    assert_eq!(
        proxy
            .metric(&format!(r#"proxy_jwks_keys{{jwks="{}"}}"#, idp.url()))
            .await,
        2
    );

    // The old key is withdrawn; a token naming an unknown kid brings the
    // new set, and the old key's token, though remembered as verified,
    // is refused from then on.
    idp.publish(&[&rotated]);
    let stranger = SigningKey::fresh_ec("never-published").token("x", "idp", json!({}));
    assert_eq!(get(proxy, "/me", Some(&stranger)).await.0, 401);
    assert_eq!(idp.fetches(), 3);
    assert_eq!(get(proxy, "/me", Some(&old_token)).await.0, 401);
    assert_eq!(get(proxy, "/me", Some(&new_token)).await.0, 200);
}

#[tokio::test]
async fn an_unknown_kid_refetches_at_most_once_per_interval() {
    let rsa = SigningKey::rsa("rsa-1");
    let idp = JwksServer::start(&[&rsa]).await;
    let rig = Rig::jwks(&idp, "jwks_refetch_interval = \"1h\"").await;
    let proxy = &rig.proxy;
    for i in 0..20 {
        let token = SigningKey::fresh_ec(&format!("unknown-{i}")).token("x", "idp", json!({}));
        assert_eq!(get(proxy, "/me", Some(&token)).await.0, 401);
    }
    assert_eq!(idp.fetches(), 1, "the fetch at start is the last for an hour");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_concurrent_requests_with_a_new_kid_fetch_once() {
    let rsa = SigningKey::rsa("rsa-1");
    let idp = JwksServer::start(&[&rsa]).await;
    let rig = Rig::jwks(&idp, "jwks_refetch_interval = \"1ms\"").await;
    let proxy = &rig.proxy;
    assert_eq!(get(proxy, "/public", None).await.0, 200);
    let rotated = SigningKey::fresh_ec("ec-2");
    idp.publish(&[&rsa, &rotated]);
    // A slow answer, so every request finds the kid unknown and waits on
    // the one refetch (each would otherwise be free to fetch: the
    // interval is 1 ms).
    idp.published.lock().unwrap().delay = std::time::Duration::from_millis(500);

    let client = reqwest::Client::new();
    let requests = (0..200).map(|i| {
        let token = rotated.token(&format!("u{i}"), "idp", json!({}));
        let request = client.get(proxy.base_url() + "/me").bearer_auth(token).send();
        async move { request.await.unwrap().status().as_u16() }
    });
    let statuses = futures_util::future::join_all(requests).await;
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    assert_eq!(idp.fetches(), 2, "the start, and one refetch for all 200");
}

#[tokio::test]
async fn with_the_idp_down_at_start_public_routes_work_and_tokens_wait_for_keys() {
    let ec = SigningKey::ec("ec-1");
    let mut idp = JwksServer::down(&[&ec]).await;
    let rig = Rig::jwks(&idp, "jwks_refetch_interval = \"1ms\"").await;
    let proxy = &rig.proxy;
    let token = ec.token("u1", "idp", json!({}));

    assert_eq!(get(proxy, "/public", None).await.0, 200);
    let (status, body) = get(proxy, "/me", Some(&token)).await;
    assert_eq!((status, body), (503, json!({ "error": "keys unavailable" })));
    let ready = reqwest::get(proxy.admin_url("/readyz")).await.unwrap();
    assert_eq!(ready.status(), 503);
    let ready: Value = ready.json().await.unwrap();
    assert_eq!(ready["keys"], "unavailable");
    let why = ready["keys_unavailable"][0].as_str().unwrap();
    assert!(why.contains(&idp.url()) && why.contains("never fetched"), "{why}");

    idp.come_up().await;
    eventually("tokens verify once the IdP is up", || async {
        get(proxy, "/me", Some(&token)).await.0 == 200
    })
    .await;
    assert_eq!(reqwest::get(proxy.admin_url("/readyz")).await.unwrap().status(), 200);
}

#[tokio::test]
async fn a_failing_idp_leaves_the_last_good_keys_serving_until_their_maximum_age() {
    let ec = SigningKey::ec("ec-1");
    let idp = JwksServer::start(&[&ec]).await;
    let rig = Rig::jwks(&idp, "jwks_refetch_interval = \"1ms\"").await;
    let proxy = &rig.proxy;
    // Served, so the set was fetched at start.
    assert_eq!(get(proxy, "/me", Some(&ec.token("u", "idp", json!({})))).await.0, 200);
    idp.fail(true);
    // A token with an unknown kid makes the proxy try, and fail, to fetch.
    let stranger = SigningKey::fresh_ec("unknown").token("x", "idp", json!({}));
    assert_eq!(get(proxy, "/me", Some(&stranger)).await.0, 401);
    assert_eq!(idp.fetches(), 2);
    let failed = format!(r#"proxy_jwks_fetches_total{{jwks="{}",outcome="error"}}"#, idp.url());
    assert_eq!(proxy.metric(&failed).await, 1);
    for i in 0..3 {
        // New tokens each time: verified with the keys, not remembered.
        let token = ec.token(&format!("u{i}"), "idp", json!({}));
        assert_eq!(get(proxy, "/me", Some(&token)).await.0, 200);
    }

    // Past jwks_max_stale, the last good set is no longer trusted.
    idp.fail(false);
    let strict = Rig::jwks(&idp, "jwks_refetch_interval = \"1ms\"\njwks_max_stale = \"300ms\"").await;
    let strict = &strict.proxy;
    // Once serving, it holds a fetched set (fresh or already too old).
    assert_ne!(get(strict, "/public", None).await.0, 0);
    idp.fail(true);
    eventually("tokens are refused once the keys are too old", || async {
        let token = ec.token(&format!("late-{}", rand_suffix()), "idp", json!({}));
        get(strict, "/me", Some(&token)).await == (503, json!({ "error": "keys unavailable" }))
    })
    .await;
    let ready: Value = reqwest::get(strict.admin_url("/readyz"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let why = ready["keys_unavailable"][0].as_str().unwrap();
    assert!(why.contains("jwks_max_stale") && why.contains("500"), "{why}");
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::SeqCst)
}

#[tokio::test]
async fn a_token_from_one_issuer_is_never_verified_with_another_issuers_keys() {
    let rsa = SigningKey::rsa("rsa-1");
    let idp = JwksServer::start(&[&rsa]).await;
    let ec_local = SigningKey::ec("local");
    let issuers = format!(
        r#"
[[jwt.issuers]]
issuer = "https://idp.example"
algorithms = ["RS256"]
jwks_url = "{}"
jwks_ca_file = "idp-ca.pem"
role_claim = "realm_access.roles"

[[jwt.issuers]]
issuer = "local"
algorithm = "ES256"
public_key_file = "{KEYS}/ec256-public.pem"
"#,
        idp.url()
    );
    let rig = Rig::start(&idp, &issuers, &[]).await;
    let proxy = &rig.proxy;

    let keycloak = rsa.token(
        "kc-user",
        "https://idp.example",
        json!({ "realm_access": { "roles": ["editor"] } }),
    );
    let (status, body) = get(proxy, "/me", Some(&keycloak)).await;
    assert_eq!((status, &body["role"]), (200, &json!("editor")));
    let local = ec_local.token("local-user", "local", json!({}));
    assert_eq!(get(proxy, "/me", Some(&local)).await.1["role"], "user");

    // Each key signing for the other issuer, and an unknown issuer.
    let rsa_as_local = rsa.token("x", "local", json!({}));
    let ec_as_idp = ec_local.token("x", "https://idp.example", json!({}));
    let nobody = rsa.token("x", "https://elsewhere.example", json!({}));
    for token in [rsa_as_local, ec_as_idp, nobody] {
        assert_eq!(get(proxy, "/me", Some(&token)).await.0, 401);
    }
}

#[tokio::test]
async fn discovery_finds_the_key_set_from_the_issuer() {
    let ec = SigningKey::ec("ec-1");
    let idp = JwksServer::start(&[&ec]).await;
    let jwt = format!(
        "[jwt]\njwks_ca_file = \"idp-ca.pem\"\nalgorithms = [\"ES256\"]\njwks_url = \"{}\"\ndiscovery = true\nissuer = \"idp\"\n",
        idp.issuer_url()
    );
    let rig = Rig::start(&idp, &jwt, &[]).await;
    let proxy = &rig.proxy;
    assert_eq!(get(proxy, "/me", Some(&ec.token("u", "idp", json!({})))).await.0, 200);
    assert_eq!(idp.fetches(), 2, "the configuration, then the key set");
}

#[tokio::test]
async fn an_hmac_issuer_reads_its_secrets_from_files_and_verifies_the_previous_one_too() {
    let ec = SigningKey::ec("ec-1");
    let idp = JwksServer::start(&[&ec]).await;
    let (current, previous): (&[u8], &[u8]) = (
        b"current-issuer-secret-of-32-bytes-at-least",
        b"previous-issuer-secret-of-32-bytes-at-least",
    );
    let toml = format!(
        r#"
[[jwt.issuers]]
issuer = "service"
algorithm = "HS256"
secret_file = "secret"
previous_secret_file = "previous"

[[jwt.issuers]]
issuer = "idp"
algorithms = ["ES256"]
jwks_url = "{}"
jwks_ca_file = "idp-ca.pem"
"#,
        idp.url()
    );
    let files = [("secret", &[current, b"\n"].concat()[..]), ("previous", previous)];
    let rig = Rig::start(&idp, &toml, &files).await;
    let proxy = &rig.proxy;
    let hmac = |secret: &[u8], iss: &str| {
        SigningKey {
            kid: "k".into(),
            algorithm: Algorithm::HS256,
            encoding: EncodingKey::from_secret(secret),
            jwk: Value::Null,
        }
        .token("svc", iss, json!({}))
    };
    assert_eq!(get(proxy, "/me", Some(&hmac(current, "service"))).await.0, 200);
    assert_eq!(get(proxy, "/me", Some(&hmac(previous, "service"))).await.0, 200);
    assert_eq!(get(proxy, "/me", Some(&ec.token("u", "idp", json!({})))).await.0, 200);
    // The service's secret verifies nothing claimed by the IdP.
    assert_eq!(get(proxy, "/me", Some(&hmac(current, "idp"))).await.0, 401);
}
