//! SPEC 4.1, 4.5, 4.7 and 6: priority order, failover, pass-through and the
//! errors a client gets when no service answers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::*;

#[tokio::test]
async fn highest_priority_service_gets_every_request() {
    let (a, b) = (
        MockUpstream::start("A").await,
        MockUpstream::start("B").await,
    );
    let router = TestRouter::start(vec![svc_with(&b, json!({"priority": 1})), svc(&a)]).await;
    for _ in 0..3 {
        assert_eq!(
            content(router.chat("test-model", json!({})).await).await,
            "reply from A"
        );
    }
    assert_eq!((a.post_count(), b.post_count()), (3, 0));
}

#[tokio::test]
async fn equal_priorities_keep_configuration_order() {
    let (a, b) = (
        MockUpstream::start("A").await,
        MockUpstream::start("B").await,
    );
    let router = TestRouter::start(vec![svc(&b), svc(&a)]).await;
    assert_eq!(
        content(router.chat("test-model", json!({})).await).await,
        "reply from B"
    );
    assert_eq!(router.stats().await["service_order"], json!(["B", "A"]));
}

#[tokio::test]
async fn fails_over_on_every_failover_status() {
    for status in [401, 403, 404, 429, 500, 502, 503, 504] {
        let (a, b) = (
            MockUpstream::start("A").await,
            MockUpstream::start("B").await,
        );
        a.set(error(status, "A is unhappy"));
        let router = TestRouter::start(vec![svc(&a), svc_with(&b, json!({"priority": 1}))]).await;
        let r = router.chat("test-model", json!({})).await;
        assert_eq!(r.headers()["x-llm-router-service"], "B", "status {status}");
        assert_eq!(r.headers()["x-llm-router-attempts"], "2", "status {status}");
        assert_eq!(content(r).await, "reply from B", "status {status}");
        assert_eq!((a.post_count(), b.post_count()), (1, 1), "status {status}");
    }
}

#[tokio::test]
async fn client_errors_are_returned_unchanged_without_failover() {
    for status in [400, 413, 422] {
        let (a, b) = (
            MockUpstream::start("A").await,
            MockUpstream::start("B").await,
        );
        let body = json!({"error": {"message": format!("bad according to A ({status})"), "type": "invalid_request_error",
                                    "code": "bad_param", "param": "temperature"}});
        a.set(Reply::Json {
            status,
            body: body.to_string(),
            headers: vec![],
            delay: Duration::ZERO,
        });
        let router = TestRouter::start(vec![svc(&a), svc_with(&b, json!({"priority": 1}))]).await;
        let r = router.chat("test-model", json!({"temperature": 9})).await;
        assert_eq!(r.status().as_u16(), status);
        assert_eq!(r.json::<Value>().await.unwrap(), body);
        assert_eq!((a.post_count(), b.post_count()), (1, 0));
    }
}

#[tokio::test]
async fn connection_refused_fails_over_and_alone_gives_502() {
    let b = MockUpstream::start("B").await;
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://127.0.0.1:{}/v1", l.local_addr().unwrap().port())
    };
    let dead_svc = json!({"name": "dead", "backend_type": "custom", "base_url": dead});
    let router =
        TestRouter::start(vec![dead_svc.clone(), svc_with(&b, json!({"priority": 1}))]).await;
    assert_eq!(
        content(router.chat("test-model", json!({})).await).await,
        "reply from B"
    );

    let alone = TestRouter::start(vec![dead_svc]).await;
    assert_error(
        alone.chat("test-model", json!({})).await,
        502,
        "upstream_error",
    )
    .await;
}

#[tokio::test]
async fn connection_closed_without_answer_fails_over() {
    let (a, b) = (
        MockUpstream::start("A").await,
        MockUpstream::start("B").await,
    );
    a.set(Reply::Close);
    let router = TestRouter::start(vec![svc(&a), svc_with(&b, json!({"priority": 1}))]).await;
    assert_eq!(
        content(router.chat("test-model", json!({})).await).await,
        "reply from B"
    );
    assert_eq!((a.post_count(), b.post_count()), (1, 1));
}

#[tokio::test]
async fn a_hanging_service_costs_its_timeout_then_fails_over_and_is_cancelled() {
    let (a, b) = (
        MockUpstream::start("A").await,
        MockUpstream::start("B").await,
    );
    a.set(Reply::Hang);
    let router = TestRouter::start(vec![
        svc_with(&a, json!({"timeout": 0.5})),
        svc_with(&b, json!({"priority": 1})),
    ])
    .await;
    let t0 = Instant::now();
    assert_eq!(
        content(router.chat("test-model", json!({})).await).await,
        "reply from B"
    );
    let elapsed = t0.elapsed();
    assert!(
        elapsed >= Duration::from_millis(450) && elapsed < Duration::from_secs(3),
        "{elapsed:?}"
    );
    assert!(
        wait_for(Duration::from_secs(2), || a.posts()[0]
            .cancelled_at
            .is_some())
        .await,
        "A's request was not closed"
    );
}

#[tokio::test]
async fn only_timeouts_give_504_and_mixed_failures_give_503_with_the_last_message() {
    let (a, b) = (
        MockUpstream::start("A").await,
        MockUpstream::start("B").await,
    );
    a.set(Reply::Hang);
    let router = TestRouter::start(vec![svc_with(&a, json!({"timeout": 0.3}))]).await;
    assert_error(router.chat("test-model", json!({})).await, 504, "timeout").await;

    b.set(error(502, "second provider melted"));
    let router = TestRouter::start(vec![
        svc_with(&a, json!({"timeout": 0.3})),
        svc_with(&b, json!({"priority": 1})),
    ])
    .await;
    let e = assert_error(
        router.chat("test-model", json!({})).await,
        503,
        "service_unavailable",
    )
    .await;
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .contains("second provider melted"),
        "{e}"
    );
}

#[tokio::test]
async fn an_html_error_page_is_a_failure_and_never_reaches_the_client() {
    let a = MockUpstream::start("A").await;
    a.set(Reply::Raw {
        status: 502,
        content_type: "text/html".into(),
        body: "<html><body>Bad Gateway</body></html>".into(),
    });
    let router = TestRouter::start(vec![svc(&a)]).await;
    let r = router.chat("test-model", json!({})).await;
    assert_eq!(r.headers()["content-type"], "application/json");
    let e = assert_error(r, 503, "service_unavailable").await;
    assert!(!e["message"].as_str().unwrap().contains("<html>"));
}

#[tokio::test]
async fn request_body_is_forwarded_byte_for_byte() {
    let a = MockUpstream::start("A").await;
    let router = TestRouter::start(vec![svc(&a)]).await;
    let raw = r#"{"model":"test-model","messages":[{"role":"user","content":"héllo ✓"}],"tools":[{"type":"function","function":{"name":"f","parameters":{"type":"object"}}}],"temperature":0.70,"x_vendor":{"n":[1,{"a":null}]},"logprobs":true}"#;
    assert_eq!(
        router.post_raw("/v1/chat/completions", raw).await.status(),
        200
    );
    assert_eq!(a.last_post().body, raw.as_bytes());
}

#[tokio::test]
async fn response_body_is_returned_unchanged() {
    let a = MockUpstream::start("A").await;
    let upstream = json!({"id": "x", "object": "chat.completion", "choices": [{"index": 0, "message": {"role": "assistant", "content": null,
        "tool_calls": [{"id": "c", "type": "function", "function": {"name": "f", "arguments": "{\"a\":1}"}}]}, "finish_reason": "tool_calls"}],
        "x_vendor_trace": {"ms": 12.5}});
    a.set(json_ok(upstream.clone()));
    let router = TestRouter::start(vec![svc(&a)]).await;
    let r = router.chat("test-model", json!({})).await;
    assert_eq!(r.json::<Value>().await.unwrap(), upstream);
}

#[tokio::test]
async fn service_key_replaces_the_client_credential() {
    let (a, b) = (
        MockUpstream::start("A").await,
        MockUpstream::start("B").await,
    );
    let mut no_key = svc_with(&b, json!({"priority": 1}));
    no_key.as_object_mut().unwrap().remove("api_key");
    a.set(error(500, "down"));
    let router = TestRouter::start(vec![
        svc_with(&a, json!({"api_key": "sk-upstream-A"})),
        no_key,
    ])
    .await;
    let r = router
        .http
        .post(format!("{}/v1/chat/completions", router.url))
        .header("authorization", "Bearer sk-client-secret")
        .json(&chat_request("test-model", json!({})))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        a.last_post().headers["authorization"],
        "Bearer sk-upstream-A"
    );
    let b_headers = b.last_post().headers;
    assert!(!b_headers.contains_key("authorization"), "{b_headers:?}");
    assert!(!b_headers.values().any(|v| v.contains("sk-client-secret")));
}

#[tokio::test]
async fn completions_and_embeddings_are_routed_like_chat() {
    let (a, b) = (
        MockUpstream::start("A").await,
        MockUpstream::start("B").await,
    );
    a.set(error(503, "A overloaded"));
    let router = TestRouter::start(vec![svc(&a), svc_with(&b, json!({"priority": 1}))]).await;
    let r = router
        .post(
            "/v1/completions",
            &json!({"model": "test-model", "prompt": "Say hi"}),
        )
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(b.last_post().path, "/v1/completions");
    let r = router
        .post(
            "/v1/embeddings",
            &json!({"model": "test-model", "input": "x"}),
        )
        .await;
    assert_eq!(r.json::<Value>().await.unwrap()["x_upstream"], "B");
    assert_eq!(b.last_post().path, "/v1/embeddings");
}

#[tokio::test]
async fn failovers_and_requests_are_counted() {
    let (a, b) = (
        MockUpstream::start("A").await,
        MockUpstream::start("B").await,
    );
    a.then(error(500, "hiccup"));
    let router = TestRouter::start(vec![svc(&a), svc_with(&b, json!({"priority": 1}))]).await;
    for _ in 0..4 {
        assert_eq!(router.chat("test-model", json!({})).await.status(), 200);
    }
    let st = router.stats().await;
    assert_eq!(st["total_requests"], 4);
    assert_eq!(st["total_failovers"], 1);
    assert_eq!(st["failover_rate"], 25.0);
    assert_eq!(st["service_stats"]["A"]["requests"], 4);
    assert_eq!(st["service_stats"]["A"]["failures"], 1);
    assert_eq!(st["service_stats"]["B"]["requests"], 1);
}

#[tokio::test]
async fn upstream_connections_are_reused() {
    let a = MockUpstream::start("A").await;
    let router = TestRouter::start(vec![svc(&a)]).await;
    for _ in 0..20 {
        assert_eq!(router.chat("test-model", json!({})).await.status(), 200);
    }
    // one connection for discovery at most, one for the 20 sequential calls
    assert!(
        a.connections() <= 2,
        "{} connections for 20 sequential requests",
        a.connections()
    );
}
