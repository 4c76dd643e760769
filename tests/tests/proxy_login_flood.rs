//! Login protection (issue 15): the shipped config limits `/login` per
//! client address and per account, so a flood of guesses at one account
//! costs the origin a handful of bcrypt checks, and other users still log
//! in meanwhile.

use std::time::Instant;

use e2e::{client_from, Stack};
use futures_util::future::join_all;
use reqwest::StatusCode;
use serde_json::json;

#[tokio::test]
async fn two_hundred_guesses_at_one_account_reach_the_origin_a_few_times_while_others_log_in() {
    let stack = Stack::start().await;
    let login = format!("{}/login", stack.proxy.base_url());
    let register = format!("{}/register", stack.proxy.base_url());
    let attacker = client_from("127.0.0.1");
    let colleague = client_from("127.0.0.2");
    for (client, name) in [(&attacker, "victim"), (&colleague, "colleague")] {
        let body =
            json!({"username": name, "email": format!("{name}@example.com"), "password": format!("{name}-password")});
        let created = client.post(&register).json(&body).send().await.unwrap();
        assert_eq!(created.status(), StatusCode::CREATED);
    }
    let forwarded_before = stack
        .proxy
        .metric(r#"proxy_upstream_duration_seconds_count{rule="login"}"#)
        .await;

    let started = Instant::now();
    let guesses = (0..200).map(|i| {
        let request = attacker
            .post(&login)
            .json(&json!({"username": "victim", "password": format!("guess-{i}")}));
        async move { request.send().await.unwrap().status() }
    });
    let meanwhile = async {
        let body = json!({"email": "colleague@example.com", "password": "colleague-password"});
        colleague.post(&login).json(&body).send().await.unwrap()
    };
    let (statuses, legitimate) = tokio::join!(join_all(guesses), meanwhile);
    let elapsed = started.elapsed().as_secs_f64();

    assert_eq!(
        legitimate.status(),
        StatusCode::OK,
        "another client logs in during the flood"
    );
    assert!(
        statuses
            .iter()
            .all(|s| *s == StatusCode::UNAUTHORIZED || *s == StatusCode::TOO_MANY_REQUESTS),
        "every guess is refused, by the origin or the proxy: {statuses:?}"
    );
    let reached = statuses.iter().filter(|s| **s == StatusCode::UNAUTHORIZED).count();
    let forwarded = stack
        .proxy
        .metric(r#"proxy_upstream_duration_seconds_count{rule="login"}"#)
        .await
        - forwarded_before;
    assert_eq!(
        forwarded as usize,
        reached + 1,
        "the guesses answered by the origin, and the colleague's login"
    );
    // The account's limit: a burst of 5, then 10 a minute (one per 6 s),
    // over the time measured; each costs the origin one bcrypt check.
    let bound = 5 + (elapsed / 6.0).ceil() as usize + 1;
    assert!(
        (1..=bound).contains(&reached),
        "{reached} guesses reached the origin in {elapsed:.2} s (at most {bound})"
    );
    assert!(
        stack
            .proxy
            .metric(r#"proxy_rate_limited_total{rule="login",key="body:/username"}"#)
            .await
            >= (200 - bound) as u64
    );
}
