//! SPEC 3.1, 5, 6, 7 and the authentication issue: client keys, the admin role,
//! per-key limits, metrics and reloads, through real HTTP.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};
use support::*;

const KEY1: &str = "sk-alpha-0123456789-wxyz";
const KEY2: &str = "sk-bravo-9876543210-klmn";
const ADMIN: &str = "sk-admin-5555555555-root";

async fn keyed(up: &MockUpstream, extra: &[(&str, &str)]) -> TestRouter {
    let mut env = vec![
        ("ENABLE_AUTH", "true"),
        ("AUTH_KEY_01", KEY1),
        ("AUTH_KEY_02", KEY2),
    ];
    env.extend_from_slice(extra);
    TestRouter::start_with(vec![svc(up)], &env).await
}

fn chat() -> Value {
    chat_request("test-model", json!({}))
}

fn temp_file(tag: &str, text: &str) -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!("llm-router-auth-{tag}-{}", std::process::id()));
    std::fs::write(&path, text).unwrap();
    path
}

#[tokio::test]
async fn a_missing_key_is_401_missing_api_key_and_never_reaches_upstream() {
    let a = MockUpstream::start("A").await;
    let router = keyed(&a, &[]).await;
    let e = assert_error(
        router.post("/v1/chat/completions", &chat()).await,
        401,
        "missing_api_key",
    )
    .await;
    assert_eq!(e["type"], "authentication_error");
    assert_eq!(a.post_count(), 0);
    assert_eq!(
        router
            .post_with_key("/v1/chat/completions", &chat(), KEY1)
            .await
            .status(),
        200
    );
}

#[tokio::test]
async fn a_wrong_key_is_401_invalid_api_key_without_echoing_it() {
    let a = MockUpstream::start("A").await;
    let router = keyed(&a, &[]).await;
    let wrong = "sk-not-the-right-key-42424242";
    let r = router
        .post_with_key("/v1/chat/completions", &chat(), wrong)
        .await;
    assert_eq!(r.headers()["www-authenticate"], "Bearer");
    let e = assert_error(r, 401, "invalid_api_key").await;
    assert!(!e.to_string().contains(wrong) && !e.to_string().contains("right-key"));
    assert_eq!(a.post_count(), 0);
}

#[tokio::test]
async fn numbered_keys_stop_at_the_first_gap_and_auth_key_wins() {
    let a = MockUpstream::start("A").await;
    let router = keyed(&a, &[("AUTH_KEY_04", "sk-after-the-gap-00000000")]).await;
    assert_eq!(router.get_with_key("/v1/models", KEY2).await.status(), 200);
    assert_error(
        router
            .get_with_key("/v1/models", "sk-after-the-gap-00000000")
            .await,
        401,
        "invalid_api_key",
    )
    .await;
    let only = keyed(&a, &[("AUTH_KEY", "sk-the-only-key-000000000")]).await;
    assert_eq!(
        only.get_with_key("/v1/models", "sk-the-only-key-000000000")
            .await
            .status(),
        200
    );
    assert_error(
        only.get_with_key("/v1/models", KEY1).await,
        401,
        "invalid_api_key",
    )
    .await;
}

#[tokio::test]
async fn bearer_and_bare_forms_are_both_accepted() {
    let a = MockUpstream::start("A").await;
    let router = keyed(&a, &[]).await;
    for value in [
        format!("Bearer {KEY1}"),
        format!("bearer {KEY1}"),
        KEY1.to_owned(),
        format!("  {KEY1} "),
    ] {
        let r = router
            .request(Method::GET, "/v1/models")
            .header("authorization", &value)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{value:?}");
    }
}

#[tokio::test]
async fn only_the_configured_header_is_read() {
    let a = MockUpstream::start("A").await;
    let router = keyed(&a, &[("AUTH_HEADER_NAME", "X-API-Key")]).await;
    assert_error(
        router.get_with_key("/v1/models", KEY1).await,
        401,
        "missing_api_key",
    )
    .await;
    let r = router
        .request(Method::GET, "/v1/models")
        .header("x-api-key", KEY1)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        router.get_with_key("/auth/status", KEY1).await.status(),
        401
    );
    let st: Value = router
        .request(Method::GET, "/auth/status")
        .header("x-api-key", KEY1)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(st["auth_header"], "X-Api-Key");
}

#[tokio::test]
async fn every_client_endpoint_demands_a_key_and_health_does_not() {
    let a = MockUpstream::start("A").await;
    let router = keyed(&a, &[]).await;
    let endpoints = [
        (Method::GET, "/v1/models"),
        (Method::GET, "/v1/models/test-model"),
        (Method::GET, "/"),
        (Method::GET, "/backend/info"),
        (Method::GET, "/router/stats"),
        (Method::GET, "/router/health"),
        (Method::GET, "/router/rate-limits"),
        (Method::GET, "/auth/status"),
        (Method::GET, "/auth/metrics"),
        (Method::POST, "/router/reset-stats"),
        (Method::POST, "/auth/reset-metrics"),
        (Method::POST, "/auth/reload-keys"),
        (Method::POST, "/v1/chat/completions"),
        (Method::POST, "/v1/completions"),
        (Method::POST, "/v1/embeddings"),
    ];
    let body = json!({"model": "test-model", "prompt": "x", "input": "x", "messages": [{"role": "user", "content": "x"}]});
    for (method, path) in &endpoints {
        let r = router
            .request(method.clone(), path)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_error(r, 401, "missing_api_key").await;
        let r = router
            .request(method.clone(), path)
            .bearer_auth(KEY1)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert!(
            r.status().is_success(),
            "{method} {path} refused with a key: {}",
            r.status()
        );
    }
    for path in ["/health", "/ready"] {
        assert_eq!(router.get(path).await.status(), 200, "{path}");
    }
}

#[tokio::test]
async fn with_an_admin_key_mutating_endpoints_refuse_ordinary_keys() {
    let a = MockUpstream::start("A").await;
    let router = keyed(&a, &[("ADMIN_KEY", ADMIN)]).await;
    for path in [
        "/router/reset-stats",
        "/auth/reload-keys",
        "/auth/reset-metrics",
    ] {
        let e = assert_error(
            router.post_with_key(path, &json!({}), KEY1).await,
            403,
            "permission_error",
        )
        .await;
        assert!(!e.to_string().contains(KEY1));
        assert_eq!(
            router.post_with_key(path, &json!({}), ADMIN).await.status(),
            200,
            "{path}"
        );
    }
    assert_eq!(
        router.get_with_key("/router/stats", KEY1).await.status(),
        200
    );
    assert_eq!(
        router
            .post_with_key("/v1/chat/completions", &chat(), ADMIN)
            .await
            .status(),
        200
    );
}

#[tokio::test]
async fn without_an_admin_key_any_valid_key_may_reset() {
    let a = MockUpstream::start("A").await;
    let router = keyed(&a, &[]).await;
    assert_eq!(
        router
            .post_with_key("/router/reset-stats", &json!({}), KEY2)
            .await
            .status(),
        200
    );
}

#[tokio::test]
async fn reload_picks_up_a_changed_keys_file_and_the_environment() {
    let a = MockUpstream::start("A").await;
    let file = temp_file("reload", "# keys\nsk-file-key-one-000000000\n");
    let router = keyed(&a, &[("AUTH_KEYS_FILE", file.to_str().unwrap())]).await;
    assert_eq!(
        router
            .get_with_key("/v1/models", "sk-file-key-one-000000000")
            .await
            .status(),
        200
    );
    std::fs::write(&file, "sk-file-key-two-000000000\n").unwrap();
    router.set_env("AUTH_KEY_03", Some("sk-env-key-three-00000000"));
    let r: Value = router
        .post_with_key("/auth/reload-keys", &json!({}), KEY1)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(r["valid_keys_count"], 4);
    assert_eq!(
        router
            .get_with_key("/v1/models", "sk-file-key-two-000000000")
            .await
            .status(),
        200
    );
    assert_eq!(
        router
            .get_with_key("/v1/models", "sk-env-key-three-00000000")
            .await
            .status(),
        200
    );
    assert_error(
        router
            .get_with_key("/v1/models", "sk-file-key-one-000000000")
            .await,
        401,
        "invalid_api_key",
    )
    .await;
    std::fs::remove_file(file).unwrap();
}

#[tokio::test]
async fn a_reload_that_would_leave_no_key_is_refused_and_the_old_keys_stay() {
    let a = MockUpstream::start("A").await;
    let router = keyed(&a, &[]).await;
    router.set_env("AUTH_KEY_01", None);
    router.set_env("AUTH_KEY_02", None);
    let e = assert_error(
        router
            .post_with_key("/auth/reload-keys", &json!({}), KEY1)
            .await,
        409,
        "reload_refused",
    )
    .await;
    assert!(e["message"].as_str().unwrap().contains("no client key"));
    assert_eq!(router.get_with_key("/v1/models", KEY2).await.status(), 200);
    assert_eq!(
        router
            .get_with_key("/auth/status", KEY1)
            .await
            .json::<Value>()
            .await
            .unwrap()["valid_keys_count"],
        2
    );
}

#[tokio::test]
async fn a_key_over_its_own_limit_gets_429_and_never_reaches_an_upstream() {
    let a = MockUpstream::start("A").await;
    let router = keyed(&a, &[("AUTH_KEY_RATE_LIMIT", "2/60")]).await;
    for _ in 0..2 {
        assert_eq!(
            router
                .post_with_key("/v1/chat/completions", &chat(), KEY1)
                .await
                .status(),
            200
        );
    }
    let r = router
        .post_with_key("/v1/chat/completions", &chat(), KEY1)
        .await;
    let retry: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry));
    assert_error(r, 429, "rate_limit_exceeded").await;
    assert_eq!(a.post_count(), 2);
    assert_eq!(
        router
            .post_with_key("/v1/chat/completions", &chat(), KEY2)
            .await
            .status(),
        200,
        "keys share a limit"
    );
    assert_eq!(
        router.get_with_key("/router/stats", KEY1).await.status(),
        200,
        "the limit applies to routed calls only"
    );
}

#[tokio::test]
async fn metrics_count_per_masked_key_and_never_show_a_raw_key() {
    let a = MockUpstream::start("A").await;
    let router = keyed(&a, &[]).await;
    for _ in 0..3 {
        router
            .post_with_key("/v1/chat/completions", &chat(), KEY1)
            .await;
    }
    router
        .post_with_key(
            "/v1/chat/completions",
            &json!({"model": "test-model"}),
            KEY1,
        )
        .await; // a 400
    router
        .post_with_key(
            "/v1/chat/completions",
            &chat(),
            "sk-wrong-key-abcdefghijkl-9999",
        )
        .await;
    let text = router
        .get_with_key("/auth/metrics", KEY2)
        .await
        .text()
        .await
        .unwrap();
    let m: Value = serde_json::from_str(&text).unwrap();
    let k1 = &m["keys_metrics"]["sk-a...wxyz"];
    assert_eq!(
        (
            k1["requests_count"].as_u64(),
            k1["success_count"].as_u64(),
            k1["error_count"].as_u64()
        ),
        (Some(4), Some(3), Some(1))
    );
    assert_eq!(k1["success_rate"], 75.0);
    assert!(k1["first_request"].as_str().unwrap().ends_with('Z') && k1["last_request"].is_string());
    assert_eq!(
        m["keys_metrics"]["sk-b...klmn"]["requests_count"], 0,
        "the metrics call is counted after it answers"
    );
    assert_eq!(
        (
            m["valid_keys_count"].as_u64(),
            m["active_keys"].as_u64(),
            m["total_requests"].as_u64()
        ),
        (Some(2), Some(1), Some(4))
    );
    let mut blob = text;
    for path in ["/auth/status", "/backend/info", "/router/stats", "/"] {
        blob.push_str(&router.get_with_key(path, KEY1).await.text().await.unwrap());
    }
    for raw in [KEY1, KEY2, "sk-wrong-key-abcdefghijkl-9999"] {
        assert!(
            !blob.contains(raw) && !blob.contains(&raw[4..raw.len() - 4]),
            "{raw} leaked"
        );
    }
    assert_eq!(
        router
            .post_with_key("/auth/reset-metrics", &json!({}), KEY1)
            .await
            .status(),
        200
    );
    let m: Value = router
        .get_with_key("/auth/metrics", KEY1)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        m["keys_metrics"]["sk-a...wxyz"]["requests_count"], 1,
        "only the reset call itself"
    );
}

#[tokio::test]
async fn the_client_credential_is_never_forwarded_upstream() {
    let a = MockUpstream::start("A").await;
    let router = keyed(&a, &[("AUTH_HEADER_NAME", "X-API-Key")]).await;
    let r = router
        .request(Method::POST, "/v1/chat/completions")
        .header("x-api-key", KEY1)
        .json(&chat())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let sent = a.last_post().headers;
    assert!(!sent.values().any(|v| v.contains(KEY1)), "{sent:?}");
    assert_eq!(sent["authorization"], "Bearer upstream-key-A");
    assert_eq!(
        sent["host"],
        format!("127.0.0.1:{}", a.port),
        "the service's own Host"
    );
}

#[tokio::test]
async fn enabled_auth_without_any_key_stays_open_like_the_python_router() {
    let a = MockUpstream::start("A").await;
    let router = TestRouter::start_with(vec![svc(&a)], &[("ENABLE_AUTH", "true")]).await;
    assert_eq!(
        router.post("/v1/chat/completions", &chat()).await.status(),
        200
    );
    let st = router.get_json("/auth/status").await;
    assert_eq!(
        (st["enabled"].as_bool(), st["valid_keys_count"].as_u64()),
        (Some(false), Some(0))
    );
}

#[tokio::test]
async fn a_reload_keeps_the_counters_of_keys_that_stay() {
    let a = MockUpstream::start("A").await;
    let router = keyed(&a, &[]).await;
    router
        .post_with_key("/v1/chat/completions", &chat(), KEY1)
        .await;
    router
        .post_with_key("/auth/reload-keys", &json!({}), KEY2)
        .await;
    tokio::time::sleep(Duration::from_millis(10)).await;
    let m: Value = router
        .get_with_key("/auth/metrics", KEY2)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(m["keys_metrics"]["sk-a...wxyz"]["requests_count"], 1);
}

#[tokio::test]
async fn an_admin_key_guards_mutating_endpoints_even_with_authentication_off() {
    let a = MockUpstream::start("A").await;
    let router = TestRouter::start_with(
        vec![svc(&a)],
        &[("ENABLE_AUTH", "false"), ("ADMIN_KEY", ADMIN)],
    )
    .await;
    assert_eq!(
        router.post("/v1/chat/completions", &chat()).await.status(),
        200,
        "client calls stay open"
    );
    assert_error(
        router.post("/router/reset-stats", &json!({})).await,
        401,
        "missing_api_key",
    )
    .await;
    assert_error(
        router
            .post_with_key("/router/reset-stats", &json!({}), KEY1)
            .await,
        403,
        "permission_error",
    )
    .await;
    assert_eq!(
        router
            .post_with_key("/router/reset-stats", &json!({}), ADMIN)
            .await
            .status(),
        200
    );
}

#[tokio::test]
async fn a_reload_that_adds_the_first_key_turns_checking_on() {
    let a = MockUpstream::start("A").await;
    let router = TestRouter::start_with(
        vec![svc(&a)],
        &[("ENABLE_AUTH", "true"), ("AUTH_KEY", "   ")],
    )
    .await;
    assert_eq!(
        router.post("/v1/chat/completions", &chat()).await.status(),
        200,
        "a blank key is no key"
    );
    router.set_env("AUTH_KEY", Some(KEY1));
    let r: Value = router
        .post("/auth/reload-keys", &json!({}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(r["valid_keys_count"], 1);
    assert_error(
        router.post("/v1/chat/completions", &chat()).await,
        401,
        "missing_api_key",
    )
    .await;
    assert_eq!(
        router
            .post_with_key("/v1/chat/completions", &chat(), KEY1)
            .await
            .status(),
        200
    );
}
