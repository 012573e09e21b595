//! Prometheus metrics and request ids (the "operable in production" issue).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use futures_util::StreamExt;
use serde_json::json;
use support::*;

const KEY: &str = "sk-metrics-test-key-0000001";

/// The value of the sample `series` (name and labels exactly as exposed).
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        l.strip_prefix(series)
            .and_then(|rest| rest.strip_prefix(' '))
            .map(|v| v.trim().parse().unwrap())
    })
}

fn assert_sample(text: &str, series: &str, expected: f64) {
    assert_eq!(sample(text, series), Some(expected), "{series} in:\n{text}");
}

#[tokio::test]
async fn metrics_count_a_scripted_mix_exactly() {
    let (a, b) = (
        MockUpstream::start("A").await,
        MockUpstream::start("B").await,
    );
    a.then(Reply::Ok).then(error(500, "A hiccup"));
    let router = TestRouter::start_with(
        vec![
            svc_with(
                &a,
                json!({"rate_limit_requests": 2, "rate_limit_window": 60}),
            ),
            svc_with(&b, json!({"priority": 1})),
        ],
        &[("ENABLE_AUTH", "true"), ("AUTH_KEY", KEY)],
    )
    .await;
    let chat = chat_request("test-model", json!({}));
    for _ in 0..3 {
        // A answers; A fails and B answers; A's window is full and B answers
        assert_eq!(
            router
                .post_with_key("/v1/chat/completions", &chat, KEY)
                .await
                .status(),
            200
        );
    }
    assert_eq!(
        router
            .post_with_key(
                "/v1/chat/completions",
                &chat_request("gpt-9", json!({})),
                KEY
            )
            .await
            .status(),
        404
    );
    let bad = router
        .request(reqwest::Method::POST, "/v1/chat/completions")
        .bearer_auth(KEY)
        .body("{oops")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    assert_eq!(
        router.post("/v1/chat/completions", &chat).await.status(),
        401
    );

    let r = router.get_with_key("/metrics", KEY).await;
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let text = r.text().await.unwrap();
    let route = r#"route="/v1/chat/completions""#;
    assert_sample(
        &text,
        &format!(
            r#"llm_router_requests_total{{{route},service="A",model="test-model",status_class="2xx"}}"#
        ),
        1.0,
    );
    assert_sample(
        &text,
        &format!(
            r#"llm_router_requests_total{{{route},service="B",model="test-model",status_class="2xx"}}"#
        ),
        2.0,
    );
    assert_sample(
        &text,
        &format!(
            r#"llm_router_requests_total{{{route},service="none",model="other",status_class="4xx"}}"#
        ),
        1.0,
    );
    assert_sample(
        &text,
        &format!(
            r#"llm_router_requests_total{{{route},service="none",model="none",status_class="4xx"}}"#
        ),
        2.0,
    );
    assert_sample(
        &text,
        r#"llm_router_upstream_attempts_total{service="A",outcome="success"}"#,
        1.0,
    );
    assert_sample(
        &text,
        r#"llm_router_upstream_attempts_total{service="A",outcome="failure"}"#,
        1.0,
    );
    assert_sample(
        &text,
        r#"llm_router_upstream_attempts_total{service="B",outcome="success"}"#,
        2.0,
    );
    assert_sample(&text, r#"llm_router_failovers_total{service="A"}"#, 1.0);
    assert_sample(
        &text,
        r#"llm_router_rate_limit_skips_total{service="A"}"#,
        1.0,
    );
    assert_sample(
        &text,
        r#"llm_router_auth_failures_total{reason="missing_api_key"}"#,
        1.0,
    );
    assert_sample(
        &text,
        r#"llm_router_upstream_ttfb_seconds_count{service="A"}"#,
        2.0,
    );
    assert_sample(
        &text,
        r#"llm_router_upstream_ttfb_seconds_count{service="B"}"#,
        2.0,
    );
    assert_sample(
        &text,
        &format!(r#"llm_router_request_duration_seconds_count{{{route},service="B"}}"#),
        2.0,
    );
    assert_sample(
        &text,
        &format!(r#"llm_router_request_duration_seconds_count{{{route},service="none"}}"#),
        3.0,
    );
    assert_sample(
        &text,
        r#"llm_router_rate_limit_remaining{service="A"}"#,
        0.0,
    );
    assert_sample(
        &text,
        r#"llm_router_service_status{service="A",status="degraded"}"#,
        1.0,
    );
    assert_sample(
        &text,
        r#"llm_router_service_status{service="A",status="healthy"}"#,
        0.0,
    );
    assert_sample(
        &text,
        r#"llm_router_service_status{service="B",status="healthy"}"#,
        1.0,
    );
    assert_sample(&text, "llm_router_in_flight_requests", 1.0); // the scrape itself
    assert_sample(&text, "llm_router_open_streams", 0.0);
    assert!(
        text.contains("# TYPE llm_router_requests counter")
            && text.contains("# TYPE llm_router_upstream_ttfb_seconds histogram")
    );
    assert!(!text.contains(KEY));
}

#[tokio::test]
async fn metrics_need_a_key_unless_public() {
    let a = MockUpstream::start("A").await;
    let keyed =
        TestRouter::start_with(vec![svc(&a)], &[("ENABLE_AUTH", "true"), ("AUTH_KEY", KEY)]).await;
    assert_error(keyed.get("/metrics").await, 401, "missing_api_key").await;
    let public = TestRouter::start_with(
        vec![svc(&a)],
        &[
            ("ENABLE_AUTH", "true"),
            ("AUTH_KEY", KEY),
            ("METRICS_PUBLIC", "true"),
        ],
    )
    .await;
    assert_eq!(public.get("/metrics").await.status(), 200);
    let om = public
        .request(reqwest::Method::GET, "/metrics")
        .header("accept", "application/openmetrics-text; version=1.0.0")
        .send()
        .await
        .unwrap();
    assert!(
        om.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/openmetrics-text")
    );
    assert!(om.text().await.unwrap().trim_end().ends_with("# EOF"));
}

#[tokio::test]
async fn open_streams_are_counted_while_they_run() {
    let a = MockUpstream::start("A").await;
    a.set(sse_chat("s", 5, Duration::from_millis(150)));
    let router = TestRouter::start(vec![svc(&a)]).await;
    let r = router.chat("test-model", json!({"stream": true})).await;
    let mut body = r.bytes_stream();
    body.next().await.unwrap().unwrap();
    let during = router.get("/metrics").await.text().await.unwrap();
    assert_sample(&during, "llm_router_open_streams", 1.0);
    while body.next().await.is_some() {}
    let after = router.get("/metrics").await.text().await.unwrap();
    assert_sample(&after, "llm_router_open_streams", 0.0);
}

#[tokio::test]
async fn a_client_request_id_is_returned_and_sent_upstream() {
    let a = MockUpstream::start("A").await;
    let router = TestRouter::start(vec![svc(&a)]).await;
    let r = router
        .request(reqwest::Method::POST, "/v1/chat/completions")
        .header("x-request-id", "req-abc-123")
        .json(&chat_request("test-model", json!({})))
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-request-id"], "req-abc-123");
    assert_eq!(a.last_post().headers["x-request-id"], "req-abc-123");
    // without one (or with a silly one), the router makes one up, different each time
    let r1 = router.get("/health").await.headers()["x-request-id"].clone();
    let r2 = router
        .request(reqwest::Method::GET, "/nope")
        .header("x-request-id", "has space")
        .send()
        .await
        .unwrap();
    assert_eq!(r2.status(), 404);
    let r2 = r2.headers()["x-request-id"].clone();
    assert!(r1.len() >= 16 && r1 != r2 && r2 != "has space");
}
