use std::time::Duration;

use super::verifier::Verified;
use super::*;
use crate::problem::Problem;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;

const SECRET: &[u8] = b"unit-test-secret-of-at-least-32-bytes";

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn verifier() -> JwtVerifier {
    JwtVerifier::new(
        Algorithm::HS256,
        KeySource::Secret(SECRET.to_vec()),
        Some("origin".into()),
        Some("api".into()),
        Duration::from_secs(30),
        "role".into(),
    )
    .unwrap()
}

fn sign(claims: Value) -> String {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(SECRET),
    )
    .unwrap()
}

fn good_claims() -> Value {
    json!({"sub": "u1", "role": "user", "exp": now() + 600, "iss": "origin", "aud": "api"})
}

fn headers(values: &[&str]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for v in values {
        h.append(AUTHORIZATION, v.parse().unwrap());
    }
    h
}

#[test]
fn a_valid_token_yields_subject_and_roles() {
    let token = sign(good_claims());
    let claims = authenticate(&headers(&[&format!("Bearer {token}")]), &verifier())
        .unwrap()
        .unwrap();
    assert_eq!(
        (claims.subject.as_str(), claims.roles.as_slice(), claims.jti.as_deref()),
        ("u1", &["user".to_owned()][..], None)
    );
}

#[test]
fn role_claims_may_be_arrays() {
    let mut c = good_claims();
    c["role"] = json!(["user", "admin", 7]);
    assert_eq!(verifier().verify(&sign(c)).unwrap().roles, ["user", "admin"]);
}

#[test]
fn the_role_claim_may_be_a_namespaced_name_a_dotted_path_or_a_json_pointer() {
    let roles_with = |claim: &str| {
        let verifier = JwtVerifier::new(
            Algorithm::HS256,
            KeySource::Secret(SECRET.to_vec()),
            Some("origin".into()),
            Some("api".into()),
            Duration::from_secs(30),
            claim.into(),
        )
        .unwrap();
        let mut c = good_claims();
        c["realm_access"] = json!({"roles": ["keycloak-role"]});
        c["https://example.com/roles"] = json!(["auth0-role"]);
        c["a.b"] = json!("dotted-name");
        verifier.verify(&sign(c)).unwrap().roles.clone()
    };
    assert_eq!(roles_with("realm_access.roles"), ["keycloak-role"]);
    assert_eq!(roles_with("/realm_access/roles"), ["keycloak-role"]);
    assert_eq!(roles_with("https://example.com/roles"), ["auth0-role"]);
    assert_eq!(roles_with("/https:~1~1example.com~1roles"), ["auth0-role"]);
    assert_eq!(roles_with("a.b"), ["dotted-name"], "an exact name wins over a path");
    assert!(roles_with("realm_access.missing").is_empty());
    assert!(roles_with("/realm_access").is_empty(), "an object is no role");
}

#[test]
fn no_header_is_no_claims_and_two_headers_are_refused() {
    assert_eq!(authenticate(&HeaderMap::new(), &verifier()), Ok(None));
    let token = sign(good_claims());
    let two = headers(&[&format!("Bearer {token}"), &format!("Bearer {token}")]);
    assert_eq!(authenticate(&two, &verifier()), Err(AuthError::MultipleAuthorization));
}

#[test]
fn other_schemes_and_empty_tokens_are_malformed() {
    for value in ["Basic dXNlcjpwYXNz", "Bearer", "Bearer   ", "token"] {
        assert_eq!(
            authenticate(&headers(&[value]), &verifier()),
            Err(AuthError::MalformedHeader),
            "{value}"
        );
    }
}

#[test]
fn bad_claims_are_rejected() {
    let v = verifier();
    let with = |f: &dyn Fn(&mut Value)| {
        let mut c = good_claims();
        f(&mut c);
        v.verify(&sign(c))
    };
    assert!(
        with(&|c| c["exp"] = json!(now() - 120)).is_err(),
        "expired beyond leeway"
    );
    assert!(with(&|c| c["exp"] = json!(now() - 10)).is_ok(), "expired within leeway");
    assert!(with(&|c| c["nbf"] = json!(now() + 120)).is_err(), "not yet valid");
    assert!(with(&|c| c["iss"] = json!("elsewhere")).is_err(), "issuer");
    assert!(with(&|c| c["aud"] = json!("other")).is_err(), "audience");
    assert!(
        with(&|c| {
            c.as_object_mut().unwrap().remove("exp");
        })
        .is_err(),
        "exp required"
    );
    assert!(
        with(&|c| {
            c.as_object_mut().unwrap().remove("sub");
        })
        .is_err(),
        "sub required"
    );
    assert!(with(&|c| c["sub"] = json!(5)).is_err(), "sub must be a string");
}

#[test]
fn unsigned_and_wrongly_signed_tokens_are_rejected() {
    let v = verifier();
    let token = sign(good_claims());
    let (head_payload, _) = token.rsplit_once('.').unwrap();
    assert!(v.verify(&format!("{head_payload}.")).is_err(), "stripped signature");
    let none_header = base64_url(br#"{"alg":"none","typ":"JWT"}"#);
    let payload = head_payload.split_once('.').unwrap().1;
    assert!(v.verify(&format!("{none_header}.{payload}.")).is_err(), "alg none");
    let other = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &good_claims(),
        &EncodingKey::from_secret(b"another-unit-test-secret-32-bytes"),
    )
    .unwrap();
    assert!(v.verify(&other).is_err(), "wrong secret");
    let hs512 = jsonwebtoken::encode(
        &Header::new(Algorithm::HS512),
        &good_claims(),
        &EncodingKey::from_secret(SECRET),
    )
    .unwrap();
    assert!(v.verify(&hs512).is_err(), "algorithm is pinned");
}

#[test]
fn tokens_with_critical_header_extensions_are_rejected() {
    let mut header = Header::new(Algorithm::HS256);
    header.crit = Some(vec!["exp".into()]);
    let token = jsonwebtoken::encode(&header, &good_claims(), &EncodingKey::from_secret(SECRET)).unwrap();
    let v = verifier();
    assert!(matches!(v.verify(&token), Err(AuthError::InvalidToken(_))));
    assert!(v.verified.get(token.as_str()).is_none(), "never remembered");
}

#[test]
fn roles_and_subjects_that_would_change_in_a_header_are_rejected() {
    let v = verifier();
    let with = |f: &dyn Fn(&mut Value)| {
        let mut c = good_claims();
        f(&mut c);
        v.verify(&sign(c))
    };
    for (label, edit) in [
        (
            "comma in a role",
            &(|c: &mut Value| c["role"] = json!("user,admin")) as &dyn Fn(&mut Value),
        ),
        ("comma in an array role", &|c| c["role"] = json!(["user,admin"])),
        ("comma after a good role", &|c| c["role"] = json!(["user", "x,admin"])),
        ("leading space", &|c| c["role"] = json!(["user", " admin"])),
        ("trailing space", &|c| c["role"] = json!("admin ")),
        ("control character", &|c| c["role"] = json!("ad\nmin")),
        ("tab", &|c| c["role"] = json!("ad\tmin")),
        ("subject with a newline", &|c| {
            c["sub"] = json!("u1\r\nx-auth-role: admin")
        }),
        ("subject with a trailing space", &|c| c["sub"] = json!("admin ")),
    ] {
        assert!(matches!(with(edit), Err(AuthError::InvalidToken(_))), "{label}");
    }
    assert_eq!(
        with(&|c| c["role"] = json!(["power user", "résumé-editor"]))
            .unwrap()
            .roles,
        ["power user", "résumé-editor"],
        "inner spaces and non-ASCII survive a header intact"
    );
}

#[test]
fn hmac_secrets_shorter_than_the_hash_are_a_config_error() {
    let build = |alg, len: usize| {
        JwtVerifier::new(
            alg,
            KeySource::Secret(vec![b'k'; len]),
            None,
            None,
            Duration::ZERO,
            "role".into(),
        )
    };
    let err = build(Algorithm::HS256, 31).unwrap_err();
    assert_eq!(err.field, "JWT_SECRET_KEY");
    assert!(err.message.contains("at least 32"), "{}", err.message);
    assert!(build(Algorithm::HS256, 0).is_err());
    assert!(build(Algorithm::HS256, 32).is_ok());
    assert!(build(Algorithm::HS384, 47).is_err());
    assert!(build(Algorithm::HS384, 48).is_ok());
    assert!(build(Algorithm::HS512, 63).is_err());
    assert!(build(Algorithm::HS512, 64).is_ok());
}

#[test]
fn the_bearer_parser_takes_one_bearer_header_only() {
    assert_eq!(bearer(&HeaderMap::new()), Ok(None));
    assert_eq!(bearer(&headers(&["bearer  abc "])), Ok(Some("abc")));
    assert_eq!(bearer(&headers(&["Basic abc"])), Err(AuthError::MalformedHeader));
    assert_eq!(
        bearer(&headers(&["Bearer a", "Bearer b"])),
        Err(AuthError::MultipleAuthorization)
    );
}

#[test]
fn audience_is_only_checked_when_configured() {
    let v = JwtVerifier::new(
        Algorithm::HS256,
        KeySource::Secret(SECRET.to_vec()),
        None,
        None,
        Duration::ZERO,
        "role".into(),
    )
    .unwrap();
    let mut c = good_claims();
    c["aud"] = json!("anything");
    c["iss"] = json!("anyone");
    assert!(v.verify(&sign(c)).is_ok());
}

#[test]
fn a_remembered_token_still_expires() {
    let v = verifier();
    let mut c = good_claims();
    // Valid now (within leeway), expired 31 s from now.
    c["exp"] = json!(now() - 29);
    let token = sign(c);
    assert!(v.verify(&token).is_ok());
    assert!(v.verify(&token).is_ok(), "served from the cache");
    let known = v.verified.get(token.as_str()).expect("remembered");
    assert!(known.exp + v.leeway >= now());
    // Rewind the remembered bound to simulate the passing of time.
    v.verified.insert(
        Arc::from(token.as_str()),
        Arc::new(Verified {
            claims: known.claims.clone(),
            exp: now() - 31,
            nbf: None,
            losses: 0,
        }),
    );
    assert!(v.verify(&token).is_err());
}

#[test]
fn a_rejected_token_is_never_remembered() {
    let v = verifier();
    let mut c = good_claims();
    c["iss"] = json!("elsewhere");
    let token = sign(c);
    assert!(v.verify(&token).is_err());
    assert!(v.verified.get(token.as_str()).is_none());
    assert!(v.verify(&token).is_err());
}

fn base64_url(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn key(name: &str) -> Vec<u8> {
    std::fs::read(format!("{}/../tests/keys/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

fn pem_verifier(alg: Algorithm, public: &str) -> JwtVerifier {
    JwtVerifier::new(
        alg,
        KeySource::Pem(key(public)),
        None,
        None,
        Duration::ZERO,
        "role".into(),
    )
    .unwrap()
}

fn sign_with(alg: Algorithm, key: EncodingKey, kid: Option<&str>) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, &good_claims(), &key).unwrap()
}

#[test]
fn asymmetric_algorithms_verify_with_pem_public_keys() {
    let rsa = || EncodingKey::from_rsa_pem(&key("rsa-private.pem")).unwrap();
    for alg in [
        Algorithm::RS256,
        Algorithm::RS384,
        Algorithm::RS512,
        Algorithm::PS256,
        Algorithm::PS512,
    ] {
        assert!(
            pem_verifier(alg, "rsa-public.pem")
                .verify(&sign_with(alg, rsa(), None))
                .is_ok(),
            "{alg:?}"
        );
    }
    let es256 = EncodingKey::from_ec_pem(&key("ec256-private.pem")).unwrap();
    assert!(pem_verifier(Algorithm::ES256, "ec256-public.pem")
        .verify(&sign_with(Algorithm::ES256, es256, None))
        .is_ok());
    let es384 = EncodingKey::from_ec_pem(&key("ec384-private.pem")).unwrap();
    assert!(pem_verifier(Algorithm::ES384, "ec384-public.pem")
        .verify(&sign_with(Algorithm::ES384, es384, None))
        .is_ok());
    let ed = EncodingKey::from_ed_pem(&key("ed25519-private.pem")).unwrap();
    assert!(pem_verifier(Algorithm::EdDSA, "ed25519-public.pem")
        .verify(&sign_with(Algorithm::EdDSA, ed, None))
        .is_ok());
}

#[test]
fn an_hs256_token_signed_with_the_public_key_is_rejected_when_rs256_is_configured() {
    let forged = sign_with(Algorithm::HS256, EncodingKey::from_secret(&key("rsa-public.pem")), None);
    assert!(pem_verifier(Algorithm::RS256, "rsa-public.pem")
        .verify(&forged)
        .is_err());
}

#[test]
fn a_key_of_the_wrong_family_is_a_config_error() {
    let err = JwtVerifier::new(
        Algorithm::ES256,
        KeySource::Pem(key("rsa-public.pem")),
        None,
        None,
        Duration::ZERO,
        "role".into(),
    )
    .unwrap_err();
    assert_eq!(err.field, "jwt.public_key_file");
}

#[test]
fn jwks_selects_the_key_by_kid() {
    let v = JwtVerifier::new(
        Algorithm::RS256,
        KeySource::Jwks(key("jwks.json")),
        None,
        None,
        Duration::ZERO,
        "role".into(),
    )
    .unwrap();
    let rsa = || EncodingKey::from_rsa_pem(&key("rsa-private.pem")).unwrap();
    assert!(v.verify(&sign_with(Algorithm::RS256, rsa(), Some("test-key"))).is_ok());
    assert!(
        v.verify(&sign_with(Algorithm::RS256, rsa(), Some("other-key")))
            .is_err(),
        "wrong key for this kid"
    );
    assert!(v.verify(&sign_with(Algorithm::RS256, rsa(), Some("unknown"))).is_err());
    assert!(v.verify(&sign_with(Algorithm::RS256, rsa(), None)).is_err(), "no kid");
}

/// The test JWKS with `test-key` (the one `rsa-private.pem` signs for)
/// edited by `f`.
fn jwks_with(f: impl Fn(&mut Value)) -> Result<JwtVerifier, Problem> {
    let mut set: Value = serde_json::from_slice(&key("jwks.json")).unwrap();
    let test_key = set["keys"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|k| k["kid"] == "test-key")
        .unwrap();
    f(test_key);
    JwtVerifier::new(
        Algorithm::RS256,
        KeySource::Jwks(serde_json::to_vec(&set).unwrap()),
        None,
        None,
        Duration::ZERO,
        "role".into(),
    )
}

#[test]
fn jwks_keys_not_meant_for_verifying_signatures_are_ignored() {
    let token = sign_with(
        Algorithm::RS256,
        EncodingKey::from_rsa_pem(&key("rsa-private.pem")).unwrap(),
        Some("test-key"),
    );
    let verifies = |f: &dyn Fn(&mut Value)| jwks_with(f).unwrap().verify(&token).is_ok();
    assert!(verifies(&|_| {}));
    assert!(verifies(&|k| k["key_ops"] = json!(["verify"])));
    assert!(verifies(&|k| {
        k.as_object_mut().unwrap().remove("use");
    }));
    assert!(!verifies(&|k| k["use"] = json!("enc")), "use: enc");
    assert!(
        !verifies(&|k| k["key_ops"] = json!(["encrypt", "wrapKey"])),
        "key_ops without verify"
    );
}

#[test]
fn a_jwks_with_duplicate_kids_is_a_config_error() {
    let err = jwks_with(|k| k["kid"] = json!("other-key")).unwrap_err();
    assert_eq!(err.field, "jwt.jwks_file");
    assert!(err.message.contains("other-key"), "{}", err.message);
}
