use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::time::Duration;

use super::*;
use crate::cache::settings::Backend;
use crate::cache::Scope;
use crate::rbac::Access;
use crate::redis_layer::RedisTarget;

/// Long enough for HS256 (RFC 7518 §3.2).
const SECRET: &str = "config-test-secret-of-32-bytes-or-more";

const MINIMAL: &str = r#"
    [upstream]
    url = "http://127.0.0.1:5000"
    [[routes]]
    name = "login"
    path = "/login"
    methods = ["POST"]
    access = "public"
"#;

fn load(text: &str) -> Result<Config, ConfigErrors> {
    Config::load(text, Overrides::default(), Path::new("."))
}

fn fields(err: ConfigErrors) -> Vec<String> {
    err.0.into_iter().map(|e| e.field).collect()
}

#[test]
fn a_minimal_config_gets_every_default() {
    let cfg = load(MINIMAL).unwrap();
    assert_eq!(cfg.boot.listen.to_string(), DEFAULT_LISTEN);
    assert_eq!(cfg.boot.admin_listen.to_string(), DEFAULT_ADMIN_LISTEN);
    assert_eq!(
        cfg.boot.store.backend,
        Backend::Memory {
            max_bytes: DEFAULT_MEMORY_MAX_BYTES
        }
    );
    let cached = load(&format!(
        "{MINIMAL}\n[[routes]]\nname = \"r\"\npath = \"/r\"\nmethods = [\"GET\"]\naccess = \"public\"\ncache = {{}}\n"
    ))
    .unwrap();
    let ttl = cached.runtime.routes.by_name("r").unwrap().cache.as_ref().unwrap().ttl;
    assert_eq!(ttl, DEFAULT_CACHE_TTL);
    assert!(cfg.runtime.jwt.is_empty(), "no route needs a token");
}

#[test]
fn unknown_fields_are_rejected_with_their_name() {
    let err = load(&format!("{MINIMAL}\n[cache]\nttl_seconds = 5\n")).unwrap_err();
    assert!(err.to_string().contains("ttl_seconds"), "{err}");
    let err = load(&MINIMAL.replace("access = \"public\"", "access = \"public\"\nrole = [\"x\"]")).unwrap_err();
    assert!(err.to_string().contains("role"), "{err}");
}

#[test]
fn every_problem_is_reported_with_its_path() {
    let text = r#"
        listen = "nowhere"
        [upstream]
        url = "https://example.com/api"
        [[routes]]
        name = "a"
        path = "/a"
        methods = ["GET"]
        access = "public"
        [[routes]]
        name = "a"
        path = "no-slash"
        methods = []
        roles = []
    "#;
    let got = fields(load(text).unwrap_err());
    for want in [
        "listen",
        "upstream.url",
        "routes[1].name",
        "routes[1].path",
        "routes[1].methods",
        "routes[1].roles",
    ] {
        assert!(got.iter().any(|f| f == want), "missing {want} in {got:?}");
    }
}

#[test]
fn admin_listener_must_differ_from_the_client_listener() {
    let text = format!("listen = \"127.0.0.1:8080\"\nadmin_listen = \"127.0.0.1:8080\"\n{MINIMAL}");
    assert_eq!(fields(load(&text).unwrap_err()), ["admin_listen"]);
}

#[test]
fn precedence_is_cli_then_environment_then_file() {
    let text = format!("listen = \"127.0.0.1:1000\"\n{MINIMAL}");
    let env: HashMap<String, String> = [("PROXY_LISTEN", "127.0.0.1:2000")]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let from_env = Overrides::from_env(&env);
    assert_eq!(
        Config::load(&text, from_env.clone(), Path::new("."))
            .unwrap()
            .boot
            .listen
            .port(),
        2000
    );
    let cli = Overrides {
        listen: Some("127.0.0.1:3000".into()),
        ..Overrides::default()
    };
    assert_eq!(
        Config::load(&text, from_env.overridden_by(cli), Path::new("."))
            .unwrap()
            .boot
            .listen
            .port(),
        3000
    );
    assert_eq!(load(&text).unwrap().boot.listen.port(), 1000);
}

#[test]
fn redis_url_wins_over_the_seed_variables_which_build_a_url() {
    let env = |pairs: &[(&str, &str)]| -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    };
    let seed = Overrides::from_env(&env(&[("REDIS_HOST", "10.0.0.1"), ("REDIS_DB", "2")]));
    assert_eq!(seed.redis_url.as_deref(), Some("redis://10.0.0.1:6379/2"));
    let both = Overrides::from_env(&env(&[("REDIS_HOST", "10.0.0.1"), ("REDIS_URL", "redis://x:1/0")]));
    assert_eq!(both.redis_url.as_deref(), Some("redis://x:1/0"));
    assert_eq!(Overrides::from_env(&env(&[])).redis_url, None);
}

#[test]
fn routes_may_not_forward_or_vary_on_headers_the_proxy_sets() {
    let text = MINIMAL.replace(
        "access = \"public\"",
        "access = \"public\"\nforward_headers = [\"accept\", \"X-Auth-Subject\", \"x-forwarded-for\"]",
    );
    let err = load(&text).unwrap_err();
    assert_eq!(fields(err), ["routes[0].forward_headers", "routes[0].forward_headers"]);
}

#[test]
fn routes_may_not_forward_or_vary_on_underscore_twins_or_override_headers() {
    let text = r#"
        [upstream]
        url = "http://127.0.0.1:5000"
        [[routes]]
        name = "a"
        path = "/a"
        methods = ["GET"]
        access = "public"
        forward_headers = ["accept", "x_auth_role", "X-Original-URL", "x_forwarded_for"]
        cache = { vary = ["accept-language", "X-HTTP-Method-Override", "x_auth_subject"] }
    "#;
    let got = fields(load(text).unwrap_err());
    let mut want = vec!["routes[0].forward_headers"; 3];
    want.extend(["routes[0].cache.vary"; 2]);
    assert_eq!(got, want);
}

#[test]
fn redis_gets_an_l1_unless_its_bound_is_zero() {
    let with_redis = |extra: &str| {
        let text = format!("{MINIMAL}\n[cache]\nredis_url = \"redis://127.0.0.1:6379/0\"\n{extra}");
        load(&text).unwrap().boot.store.backend
    };
    let target = RedisTarget::Node(Secret("redis://127.0.0.1:6379/0".into()));
    assert_eq!(
        with_redis(""),
        Backend::Redis {
            target: target.clone(),
            buckets: 0,
            l1_max_bytes: DEFAULT_L1_MAX_BYTES
        }
    );
    assert_eq!(
        with_redis("l1_max_bytes = 0"),
        Backend::Redis {
            target,
            buckets: 0,
            l1_max_bytes: 0
        }
    );
}

#[test]
fn redis_cluster_names_seed_nodes_and_refuses_a_url_beside_it_or_braces_in_names() {
    let load_cache = |cache: &str| load(&format!("{MINIMAL}\n[cache]\n{cache}"));
    let backend = load_cache("redis_cluster = [\"redis://10.0.0.1:7000\", \"redis://10.0.0.2:7000\"]")
        .unwrap()
        .boot
        .store
        .backend;
    let Backend::Redis { target, buckets: 0, .. } = backend else {
        panic!("not a redis backend with default buckets: {backend:?}")
    };
    assert!(target.is_cluster());
    let both = "redis_url = \"redis://h:1\"\nredis_cluster = [\"redis://h:2\"]";
    assert_eq!(fields(load_cache(both).unwrap_err()), ["cache.redis_cluster"]);
    let braces = "redis_cluster = [\"redis://h:2\"]\nnamespace = \"{x}\"";
    assert_eq!(fields(load_cache(braces).unwrap_err()), ["cache.namespace"]);
    assert_eq!(
        fields(load_cache("redis_url = \"redis://h:1\"\nredis_buckets = 0").unwrap_err()),
        ["cache.redis_buckets"]
    );
    assert_eq!(
        fields(load_cache("redis_url = \"redis+sentinel://h:1\"").unwrap_err()),
        ["cache.redis_url"]
    );
}

#[test]
fn cache_ttl_sets_the_default_but_not_explicit_route_ttls() {
    let text = r#"
        [upstream]
        url = "http://127.0.0.1:5000"
        [[routes]]
        name = "a"
        path = "/a"
        methods = ["GET"]
        access = "public"
        cache = {}
        [[routes]]
        name = "b"
        path = "/b"
        methods = ["GET"]
        access = "public"
        cache = { ttl = "5s" }
    "#;
    let overrides = Overrides {
        cache_ttl: Some("120".into()),
        ..Overrides::default()
    };
    let cfg = Config::load(text, overrides, Path::new(".")).unwrap();
    let ttl = |name: &str| cfg.runtime.routes.by_name(name).unwrap().cache.as_ref().unwrap().ttl;
    assert_eq!(ttl("a"), Duration::from_secs(120));
    assert_eq!(ttl("b"), Duration::from_secs(5));
    let bad = Overrides {
        cache_ttl: Some("soon".into()),
        ..Overrides::default()
    };
    assert_eq!(
        fields(Config::load(text, bad, Path::new(".")).unwrap_err()),
        ["CACHE_TTL"]
    );
}

#[test]
fn scopes_default_by_access_and_shared_must_be_explicit_for_authenticated_routes() {
    let text = r#"
        [upstream]
        url = "http://127.0.0.1:5000"
        [[routes]]
        name = "pub"
        path = "/pub"
        methods = ["GET"]
        access = "public"
        cache = {}
        [[routes]]
        name = "auth"
        path = "/auth"
        methods = ["GET"]
        cache = {}
        [[routes]]
        name = "role"
        path = "/role"
        methods = ["GET"]
        roles = ["admin"]
        cache = { scope = "role" }
    "#;
    let overrides = Overrides {
        jwt_secret: Some(SECRET.into()),
        ..Overrides::default()
    };
    let cfg = Config::load(text, overrides, Path::new(".")).unwrap();
    let scope = |name: &str| cfg.runtime.routes.by_name(name).unwrap().cache.as_ref().unwrap().scope;
    assert_eq!(scope("pub"), Scope::Shared);
    assert_eq!(scope("auth"), Scope::User);
    assert_eq!(scope("role"), Scope::Role);
    assert_eq!(
        cfg.runtime.routes.by_name("role").unwrap().access,
        Access::Roles(vec!["admin".into()])
    );
}

#[test]
fn authenticated_routes_need_a_secret_from_the_environment() {
    let text = MINIMAL.replace("access = \"public\"", "access = \"authenticated\"");
    assert_eq!(fields(load(&text).unwrap_err()), ["JWT_SECRET_KEY"]);
}

#[test]
fn a_short_hmac_secret_is_named_without_being_shown() {
    let text = MINIMAL.replace("access = \"public\"", "access = \"authenticated\"");
    let short = "thirty-one-bytes-is-one-too-few";
    assert_eq!(short.len(), 31);
    let overrides = Overrides {
        jwt_secret: Some(short.into()),
        ..Overrides::default()
    };
    let err = Config::load(&text, overrides, Path::new(".")).unwrap_err();
    let message = err.to_string();
    assert!(!message.contains(short), "{message}");
    assert_eq!(fields(err), ["JWT_SECRET_KEY"]);
}

#[test]
fn writes_cannot_be_cached_and_reads_cannot_invalidate() {
    let text = r#"
        [upstream]
        url = "http://127.0.0.1:5000"
        [[routes]]
        name = "w"
        path = "/w"
        methods = ["POST"]
        access = "public"
        cache = {}
        [[routes]]
        name = "r"
        path = "/r"
        methods = ["GET"]
        access = "public"
        invalidates = ["x"]
    "#;
    assert_eq!(
        fields(load(text).unwrap_err()),
        ["routes[0].cache", "routes[1].invalidates"]
    );
}

#[test]
fn the_shipped_config_is_valid() {
    let text = include_str!("../../../config.toml");
    let overrides = Overrides {
        jwt_secret: Some(SECRET.into()),
        ..Overrides::default()
    };
    let cfg = Config::load(text, overrides, Path::new("..")).unwrap();
    assert_eq!(cfg.runtime.jwt.len(), 1);
    assert!(cfg.runtime.routes.by_name("users-list").is_some());
}

/// Field names serde accepts in one section, read from its
/// unknown-field error ("expected one of `a`, `b`").
fn accepted_fields(section: &str) -> Vec<String> {
    let err = RawConfig::parse(section).unwrap_err().to_string();
    let expected = err
        .split("expected")
        .nth(1)
        .unwrap_or_else(|| panic!("no field list in: {err}"));
    expected.split('`').skip(1).step_by(2).map(str::to_owned).collect()
}

#[test]
fn the_readme_and_the_shipped_config_document_every_field() {
    let readme = include_str!("../../../README.md");
    let shipped = include_str!("../../../config.toml");
    let documented: HashSet<&str> = readme
        .lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split('`').next())
        .collect();
    let sections = [
        ("", "zzz = 1"),
        ("server.", "[server]\nzzz = 1"),
        ("upstream.", "[upstream]\nzzz = 1"),
        ("cache.", "[cache]\nzzz = 1"),
        ("jwt.", "[jwt]\nzzz = 1"),
        ("identity.", "[identity]\nzzz = 1"),
        ("log.", "[log]\nzzz = 1"),
        ("limits.", "[limits]\nzzz = 1"),
        ("limits.default[].", "[limits]\ndefault = [{ zzz = 1 }]"),
        ("revocation.", "[revocation]\nzzz = 1"),
        ("routes[].", "[[routes]]\nzzz = 1"),
        ("routes[].limits[].", "[[routes]]\nlimits = [{ zzz = 1 }]"),
        ("routes[].cache.", "[[routes]]\ncache = { zzz = 1 }"),
        ("tls.", "[tls]\nzzz = 1"),
        ("tls.certificates[].", "[[tls.certificates]]\nzzz = 1"),
        ("admin_tls.", "[admin_tls]\nzzz = 1"),
        // Each issuer takes the fields of [jwt]: documented once, there.
        ("jwt.", "[[jwt.issuers]]\nzzz = 1"),
    ];
    let tables = [
        "server",
        "upstream",
        "cache",
        "jwt",
        "identity",
        "log",
        "limits",
        "revocation",
        "routes",
        "tls",
        "admin_tls",
    ];
    let mut checked = 0;
    for (prefix, toml) in sections {
        for field in accepted_fields(toml) {
            if prefix.is_empty() && tables.contains(&field.as_str()) {
                continue;
            }
            let path = format!("{prefix}{field}");
            assert!(
                documented.contains(path.as_str()),
                "README's configuration table lacks `{path}`"
            );
            assert!(
                shipped.contains(&format!("{field} ")) || shipped.contains(&format!("{field}=")),
                "config.toml does not document `{field}`"
            );
            checked += 1;
        }
    }
    assert!(checked > 30, "only {checked} fields found: the error format changed?");
    // Lower-case rows are config fields; upper-case ones are variables.
    for row in documented.iter().filter(|r| !r.chars().any(|c| c.is_ascii_uppercase())) {
        let known = sections.iter().any(|(prefix, toml)| {
            row.strip_prefix(prefix)
                .is_some_and(|f| accepted_fields(toml).iter().any(|a| a == f))
        });
        assert!(known, "README documents `{row}`, which the config does not accept");
    }
}

#[test]
fn boot_changes_name_every_changed_boot_field_and_nothing_else() {
    let running = load(MINIMAL).unwrap().boot;
    assert!(boot_changes(&running, &load(MINIMAL).unwrap().boot).is_empty());
    let changed = load(&format!(
        "[server]\nmax_connections = 5\n[cache]\nredis_url = \"redis://127.0.0.1:1/0\"\nmax_entry_bytes = 10\n{MINIMAL}"
    ))
    .unwrap()
    .boot;
    assert_eq!(
        fields(ConfigErrors(boot_changes(&running, &changed))),
        [
            "server.max_connections",
            "cache.redis_url",
            "cache.memory_max_bytes",
            "cache.l1_max_bytes"
        ]
    );
}

#[test]
fn a_previous_secret_must_be_as_long_as_the_current_one_and_only_for_hmac() {
    let text = MINIMAL.replace("access = \"public\"", "access = \"authenticated\"");
    let with = |previous: &str, algorithm: Option<&str>| {
        let text = match algorithm {
            Some(alg) => format!("[jwt]\nalgorithm = \"{alg}\"\njwks_file = \"jwks.json\"\n{text}"),
            None => text.clone(),
        };
        let overrides = Overrides {
            jwt_secret: Some(SECRET.into()),
            jwt_secret_previous: Some(previous.into()),
            ..Overrides::default()
        };
        Config::load(&text, overrides, Path::new("."))
    };
    let ok = with("previous-secret-of-at-least-32-bytes", None).unwrap();
    assert!(ok.runtime.jwt[0].previous_secret.is_some());
    let short = with("too-short", None).unwrap_err();
    assert!(!short.to_string().contains("too-short"), "{short}");
    assert_eq!(fields(short), ["JWT_SECRET_KEY_PREVIOUS"]);
    assert_eq!(
        fields(with("previous-secret-of-at-least-32-bytes", Some("RS256")).unwrap_err()),
        ["JWT_SECRET_KEY_PREVIOUS"]
    );
}

#[test]
fn tls_settings_name_every_missing_or_misplaced_file() {
    let err = load(&format!(
        r#"
        [tls]
        cert_file = "a.crt"
        client_auth = "sometimes"
        [[tls.certificates]]
        key_file = "b.key"
        server_names = ["b.test", "*.*.bad"]
        [admin_tls]
        client_auth = "optional"
        {MINIMAL}"#
    ))
    .unwrap_err();
    assert_eq!(
        fields(err),
        [
            "tls.key_file",
            "tls.certificates[0].server_names",
            "tls.certificates[0].cert_file",
            "tls.client_auth",
            "admin_tls.cert_file",
            "admin_tls.client_auth",
        ]
    );

    let https = MINIMAL.replace("http://127.0.0.1:5000", "https://backend.internal:8443");
    let tls_only = "[upstream]\nca_file = \"ca.pem\"\nserver_name = \"b.internal\"\nclient_cert_file = \"c.crt\"\nclient_key_file = \"c.key\"\nhttp2 = \"always\"\n";
    let plain = load(&format!("{tls_only}{}", MINIMAL.replace("[upstream]\n", ""))).unwrap_err();
    assert_eq!(
        fields(plain),
        ["upstream.ca_file", "upstream.server_name", "upstream.client_cert_file"]
    );
    let cfg = load(&format!("{tls_only}{}", https.replace("[upstream]\n", ""))).unwrap();
    let tls = cfg.boot.upstream.tls.unwrap();
    assert_eq!(tls.server_name.as_deref(), Some("b.internal"));
    assert_eq!(cfg.boot.upstream.http2, crate::upstream::Http2::Always);
    let err = load(&format!(
        "[upstream]\nhttp2 = \"maybe\"\n{}",
        https.replace("[upstream]\n", "")
    ))
    .unwrap_err();
    assert_eq!(fields(err), ["upstream.http2"]);
}

#[test]
fn issuers_are_validated_each_under_its_own_name() {
    let authenticated = MINIMAL.replace("access = \"public\"", "access = \"authenticated\"");
    let err = load(&format!(
        r#"
        [jwt]
        audience = "api"
        [[jwt.issuers]]
        algorithm = "RS256"
        jwks_url = "http://idp.example.com/jwks"
        [[jwt.issuers]]
        issuer = "b"
        algorithm = "HS256"
        [[jwt.issuers]]
        issuer = "b"
        algorithms = ["ES256", "HS256"]
        jwks_url = "https://idp.example.com/jwks"
        {authenticated}"#
    ))
    .unwrap_err();
    assert_eq!(
        fields(err),
        [
            "jwt.audience",
            "jwt.issuers[0].issuer",
            "jwt.issuers[0].jwks_url",
            "jwt.issuers[1].algorithms",
            "jwt.issuers[2].issuer",
            "jwt.issuers[2].algorithms",
        ]
    );
    let ok = load(&format!(
        r#"
        [[jwt.issuers]]
        issuer = "https://idp.example.com"
        algorithms = ["RS256", "ES256"]
        jwks_url = "https://idp.example.com/jwks"
        role_claim = "realm_access.roles"
        [[jwt.issuers]]
        issuer = "service"
        algorithm = "HS512"
        secret_file = "secret"
        {authenticated}"#
    ))
    .unwrap();
    assert_eq!(ok.runtime.jwt.len(), 2);
    assert!(matches!(ok.runtime.jwt[0].keys, crate::auth::KeySetting::JwksUrl(_)));
    assert_eq!(ok.runtime.jwt[1].role_claim, DEFAULT_ROLE_CLAIM);
}

/// `MINIMAL` with two endpoints instead of its one URL.
fn two_endpoints() -> String {
    MINIMAL.replace(
        "url = \"http://127.0.0.1:5000\"",
        "urls = [\"http://10.0.0.1:5000\", \"http://10.0.0.2:5000\"]",
    )
}

#[test]
fn upstream_urls_name_several_endpoints_and_the_first_names_the_cache() {
    let cfg = load(&two_endpoints()).unwrap();
    let upstream = &cfg.boot.upstream;
    let authorities: Vec<&str> = upstream.authorities().map(|a| a.as_str()).collect();
    assert_eq!(authorities, ["10.0.0.1:5000", "10.0.0.2:5000"]);
    assert_eq!(upstream.balance, crate::upstream::Balance::RoundRobin);
    assert_eq!(upstream.eject_after, DEFAULT_EJECT_AFTER);
    assert_eq!(upstream.eject_for, DEFAULT_EJECT_FOR);
    assert_eq!(cfg.boot.store.namespace, "10.0.0.1:5000");

    let tuned = load(&two_endpoints().replace(
        "[upstream]\n",
        "[upstream]\nbalance = \"least_outstanding\"\neject_after = 5\neject_for = \"250ms\"\n",
    ))
    .unwrap();
    assert_eq!(tuned.boot.upstream.balance, crate::upstream::Balance::LeastOutstanding);
    assert_eq!(tuned.boot.upstream.eject_after, 5);
    assert_eq!(tuned.boot.upstream.eject_for, Duration::from_millis(250));

    // One URL is what it always was; UPSTREAM_URL replaces a list.
    let single = load(MINIMAL).unwrap();
    assert_eq!(
        single.boot.upstream.endpoints,
        ["http://127.0.0.1:5000".parse::<http::Uri>().unwrap()]
    );
    assert_eq!(single.boot.store.namespace, "127.0.0.1:5000");
    let overrides = Overrides {
        upstream: Some("http://10.0.0.9:80".into()),
        ..Overrides::default()
    };
    let replaced = Config::load(&two_endpoints(), overrides, Path::new(".")).unwrap();
    assert_eq!(replaced.boot.upstream.endpoints.len(), 1);
    assert_eq!(replaced.boot.store.namespace, "10.0.0.9:80");
}

#[test]
fn upstream_urls_are_checked_one_by_one_and_together() {
    let with = |upstream: &str| {
        let text = two_endpoints().replace("urls = [\"http://10.0.0.1:5000\", \"http://10.0.0.2:5000\"]", upstream);
        fields(load(&text).unwrap_err())
    };
    assert_eq!(with("url = \"http://a:1\"\nurls = [\"http://b:2\"]"), ["upstream.urls"]);
    assert_eq!(with("urls = []"), ["upstream.urls"]);
    assert_eq!(
        with("urls = [\"http://a:1\", \"http://b:2/api\", \"ftp://c:3\"]"),
        ["upstream.urls[1]", "upstream.urls[2]"]
    );
    assert_eq!(with("urls = [\"http://a:1\", \"https://b:2\"]"), ["upstream.urls"]);
    assert_eq!(with("urls = [\"http://a:1\", \"http://A:1\"]"), ["upstream.urls[1]"]);
    assert_eq!(
        with("urls = [\"http://a:1\", \"http://b:2\"]\nbalance = \"random\"\neject_after = 0\neject_for = \"0s\""),
        ["upstream.balance", "upstream.eject_after", "upstream.eject_for"]
    );
    assert_eq!(with(""), ["upstream.url"]);
}

#[test]
fn the_endpoints_and_their_health_settings_take_a_restart() {
    let running = load(&two_endpoints()).unwrap().boot;
    let changed = load(&two_endpoints().replace(
        "\"http://10.0.0.2:5000\"]",
        "\"http://10.0.0.3:5000\"]\nbalance = \"least_outstanding\"\neject_after = 2\neject_for = \"1s\"",
    ))
    .unwrap()
    .boot;
    assert_eq!(
        fields(ConfigErrors(boot_changes(&running, &changed))),
        [
            "upstream.urls",
            "upstream.balance",
            "upstream.eject_after",
            "upstream.eject_for"
        ]
    );
    let single = load(MINIMAL).unwrap().boot;
    let moved = load(&MINIMAL.replace(":5000", ":5001")).unwrap().boot;
    assert_eq!(
        fields(ConfigErrors(boot_changes(&single, &moved))),
        ["upstream.url", "cache.namespace"]
    );
}

#[test]
fn the_example_configs_are_valid() {
    let examples = [
        (
            "oidc-keycloak.toml",
            include_str!("../../../deploy/examples/oidc-keycloak.toml"),
        ),
        (
            "public-content.toml",
            include_str!("../../../deploy/examples/public-content.toml"),
        ),
    ];
    for (name, text) in examples {
        let overrides = Overrides {
            jwt_secret: Some("an-example-secret-of-thirty-two-bytes!".into()),
            ..Overrides::default()
        };
        if let Err(errors) = Config::load(text, overrides, Path::new(".")) {
            panic!("deploy/examples/{name}:\n{errors}");
        }
    }
}

#[test]
fn the_request_id_header_cannot_stand_in_for_one_that_means_something() {
    for taken in [
        "X-Auth-Subject",
        "x_auth_role",
        "X-Forwarded-For",
        "authorization",
        "cache-control",
        "traceparent",
    ] {
        let text = format!("[log]\nrequest_id_header = \"{taken}\"\n{MINIMAL}");
        assert_eq!(fields(load(&text).unwrap_err()), ["log.request_id_header"], "{taken}");
    }
    let text = format!("[log]\nrequest_id_header = \"X-Correlation-Id\"\n{MINIMAL}");
    let config = load(&text).unwrap();
    assert_eq!(config.runtime.log.request_id_header, "x-correlation-id");
}

#[test]
fn statuses_206_and_304_cannot_be_stored() {
    for status in [206, 304] {
        let text = format!(
            "{MINIMAL}\n[[routes]]\nname = \"items\"\npath = \"/items\"\nmethods = [\"GET\"]\n\
             access = \"public\"\ncache = {{ statuses = [200, {status}] }}\n"
        );
        assert_eq!(
            fields(load(&text).unwrap_err()),
            ["routes[1].cache.statuses[1]"],
            "{status}"
        );
    }
}

#[test]
fn limits_are_checked_named_and_inherited() {
    let routes = r#"
[server]
trusted_proxies = ["10.0.0.0/8", "192.168.1.1"]

[limits]
default = [{ key = "ip", rate = "100/s" }]

[[routes]]
name = "open"
path = "/open"
methods = ["GET"]
access = "public"

[[routes]]
name = "twice"
path = "/twice"
methods = ["POST"]
access = "authenticated"
limits = [
  { key = "ip", rate = "10/s" },
  { key = "ip", rate = "1000/h", burst = 50 },
  { key = "body:/username", rate = "10/min" },
]
"#;
    let overrides = Overrides {
        jwt_secret: Some(SECRET.into()),
        ..Overrides::default()
    };
    let text = format!("{routes}\n[upstream]\nurl = \"http://127.0.0.1:5000\"\n");
    let cfg = Config::load(&text, overrides, Path::new(".")).unwrap();
    let open = cfg.runtime.routes.by_name("open").unwrap();
    assert_eq!(open.limits.len(), 1, "a route without limits takes the default");
    let twice = cfg.runtime.routes.by_name("twice").unwrap();
    let labels: Vec<&str> = twice.limits.iter().map(|l| &*l.label).collect();
    assert_eq!(labels, ["ip 10/1s", "ip 1000/3600s", "body:/username"]);
    assert!(twice.limits.read_body());
    assert_eq!(cfg.boot.server.client_ip.trusted_proxies.len(), 2);

    let bad = r#"
[server]
trusted_proxies = ["not-a-network"]

[limits]
instances = 0

[revocation]
when_unavailable = "maybe"

[[routes]]
name = "public"
path = "/p"
methods = ["GET"]
access = "public"
limits = [
  { key = "subject", rate = "10/s" },
  { key = "ip", rate = "2000000/s" },
  { key = "ip", rate = "1/d", burst = 4000000000 },
  { key = "user", rate = "10/s" },
  { key = "route", rate = "ten a second" },
  { key = "route", rate = "1/s", burst = 0 },
  { key = "body:/name", rate = "1/s" },
]
"#;
    let errors = fields(load(bad).unwrap_err());
    for field in [
        "server.trusted_proxies[0]",
        "limits.instances",
        "revocation.when_unavailable",
        "routes[0].limits[0].key",
        "routes[0].limits[1].rate",
        "routes[0].limits[2].burst",
        "routes[0].limits[3].key",
        "routes[0].limits[4].rate",
        "routes[0].limits[5].burst",
        "routes[0].limits[6].key",
    ] {
        assert!(errors.iter().any(|e| e == field), "{field} not reported: {errors:?}");
    }
}
