//! SPEC 5 and 6: the information endpoints with the Python router's field names,
//! and OpenAI-shaped errors for every way a request can be wrong.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use serde_json::{Value, json};
use support::*;

#[tokio::test]
async fn malformed_requests_are_400_invalid_request_error() {
    let a = MockUpstream::start("A").await;
    let router = TestRouter::start(vec![svc(&a)]).await;
    for body in [
        "{not json",
        "[]",
        r#"{"messages": []}"#,
        r#"{"model": "test-model"}"#,
        r#"{"model": 3, "messages": []}"#,
    ] {
        let e = assert_error(
            router.post_raw("/v1/chat/completions", body).await,
            400,
            "invalid_request_error",
        )
        .await;
        assert!(!e["message"].as_str().unwrap().is_empty());
    }
    assert_eq!(a.post_count(), 0);
    assert_eq!(router.stats().await["total_requests"], 0);
}

#[tokio::test]
async fn oversized_bodies_are_413_with_or_without_content_length() {
    let a = MockUpstream::start("A").await;
    let router = TestRouter::start_with(vec![svc(&a)], &[("MAX_REQUEST_BODY_BYTES", "1000")]).await;
    let big = format!(
        r#"{{"model": "test-model", "messages": [{{"role": "user", "content": "{}"}}]}}"#,
        "x".repeat(2000)
    );
    assert_error(
        router.post_raw("/v1/chat/completions", big.clone()).await,
        413,
        "invalid_request_error",
    )
    .await;
    let chunked = reqwest::Body::wrap_stream(futures_util::stream::iter(
        big.into_bytes()
            .chunks(100)
            .map(|c| Ok::<_, std::io::Error>(c.to_vec()))
            .collect::<Vec<_>>(),
    ));
    assert_error(
        router.post_raw("/v1/chat/completions", chunked).await,
        413,
        "invalid_request_error",
    )
    .await;
    assert_eq!(a.post_count(), 0);
}

#[tokio::test]
async fn unknown_paths_and_methods_get_openai_errors() {
    let router = TestRouter::start(vec![svc(&MockUpstream::start("A").await)]).await;
    assert_error(router.get("/v1/nope").await, 404, "invalid_request_error").await;
    assert_error(
        router.get("/v1/chat/completions").await,
        405,
        "invalid_request_error",
    )
    .await;
}

/// The routed POSTs skip axum's router (server.rs, `Routes`): each is served on
/// exactly its path, counted under its own route, and every near miss is left
/// to the route table.
#[tokio::test]
async fn routed_posts_are_served_on_their_exact_paths_only() {
    let a = MockUpstream::start("A").await;
    let router = TestRouter::start(vec![svc(&a)]).await;
    let body = chat_request("test-model", json!({}));
    for path in [
        "/v1/chat/completions?trace=1",
        "/v1/completions",
        "/v1/embeddings",
    ] {
        let r = router.post(path, &body).await;
        assert_eq!(r.status(), 200, "{path}");
        assert_eq!(r.headers()["x-llm-router-service"], "A", "{path}");
        assert!(r.headers().contains_key("x-request-id"), "{path}");
    }
    let forwarded: Vec<String> = a.posts().into_iter().map(|p| p.path).collect();
    assert_eq!(
        forwarded,
        ["/v1/chat/completions", "/v1/completions", "/v1/embeddings"]
    );
    for path in [
        "/v1/chat/completions/",
        "/V1/chat/completions",
        "/v1/embeddings/x",
    ] {
        assert_error(router.post(path, &body).await, 404, "invalid_request_error").await;
    }
    let put = router
        .request(reqwest::Method::PUT, "/v1/completions")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_error(put, 405, "invalid_request_error").await;
    assert_eq!(a.post_count(), 3);

    let text = router.get("/metrics").await.text().await.unwrap();
    for route in ["/v1/chat/completions", "/v1/completions", "/v1/embeddings"] {
        let series = format!(
            r#"llm_router_requests_total{{route="{route}",service="A",model="test-model",status_class="2xx"}} 1"#
        );
        assert!(text.contains(&series), "{series} in:\n{text}");
    }
    let near_misses = r#"llm_router_requests_total{route="unmatched",service="none",model="none",status_class="4xx"} 3"#;
    assert!(text.contains(near_misses), "{near_misses} in:\n{text}");
}

#[tokio::test]
async fn health_is_liveness_json() {
    let a = MockUpstream::start("A").await;
    a.set(error(500, "down"));
    let router = TestRouter::start(vec![svc(&a)]).await;
    router.chat("test-model", json!({})).await;
    let r = router.get("/health").await;
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json")
    );
    assert_eq!(r.json::<Value>().await.unwrap()["status"], "healthy");
}

#[tokio::test]
async fn root_describes_mode_and_services() {
    let (a, b) = (
        MockUpstream::start("A").await,
        MockUpstream::start("B").await,
    );
    let router = TestRouter::start(vec![
        svc(&a),
        svc_with(&b, json!({"priority": 5, "backend_type": "ollama"})),
    ])
    .await;
    let root = router.get_json("/").await;
    assert_eq!(root["mode"], "router");
    assert!(root["docs"].as_str().unwrap().contains("/docs"));
    assert!(!root["version"].as_str().unwrap().is_empty());
    assert!(root["message"].is_string());
    assert_eq!(
        root["services"],
        json!([{"name": "A", "type": "custom", "priority": 0}, {"name": "B", "type": "ollama", "priority": 5}])
    );
    let single = TestRouter::start(vec![svc(&a)]).await;
    assert_eq!(single.get_json("/").await["mode"], "single_service");
}

#[tokio::test]
async fn backend_info_masks_keys() {
    let a = MockUpstream::start("A").await;
    let secret = "sk-backend-info-secret-0123456789";
    let router = TestRouter::start(vec![svc_with(
        &a,
        json!({"api_key": secret, "rate_limit_requests": 5}),
    )])
    .await;
    let text = router.get("/backend/info").await.text().await.unwrap();
    assert!(!text.contains(secret) && !text.contains(&secret[6..secret.len() - 4]));
    let info: Value = serde_json::from_str(&text).unwrap();
    let s = &info["services"][0];
    assert_eq!(s["name"], "A");
    assert_eq!(s["base_url"], a.url());
    assert_eq!(s["api_key"], "sk-b...6789");
    assert_eq!(
        s["rate_limit_config"],
        json!({"max_requests": 5, "window_seconds": 60})
    );
    assert_eq!(s["models"], json!(["test-model"]));
}

#[tokio::test]
async fn router_health_reports_each_service() {
    let (a, b) = (
        MockUpstream::start("A").await,
        MockUpstream::start("B").await,
    );
    a.set(error(500, "down"));
    let router = TestRouter::start(vec![
        svc_with(
            &a,
            json!({"rate_limit_requests": 50, "rate_limit_window": 60}),
        ),
        svc_with(
            &b,
            json!({"priority": 1, "rate_limit_requests": 20, "rate_limit_window": 30}),
        ),
    ])
    .await;
    let before = router.get_json("/router/health").await;
    assert_eq!(
        before["overall_status"], "healthy",
        "no traffic yet means healthy"
    );
    for _ in 0..2 {
        assert_eq!(router.chat("test-model", json!({})).await.status(), 200);
    }
    let h = router.get_json("/router/health").await;
    let (sa, sb) = (&h["services"]["A"], &h["services"]["B"]);
    // two consecutive failures, below the ejection threshold of 3 (SPEC 9.1 rule 5)
    assert_eq!(sa["status"], "degraded");
    assert_eq!(
        (
            sa["consecutive_failures"].as_u64(),
            sa["ejections"].as_u64()
        ),
        (Some(2), Some(0))
    );
    assert!(sa["ejected_until"].is_null());
    assert_eq!(sb["status"], "healthy");
    assert_eq!(h["overall_status"], "degraded");
    assert_eq!(
        (
            sa["requests"].as_u64(),
            sa["failures"].as_u64(),
            sa["failure_rate"].as_f64()
        ),
        (Some(2), Some(2), Some(100.0))
    );
    assert_eq!(sa["backend_type"], "custom");
    assert_eq!(sa["base_url"], a.url());
    assert_eq!(sa["has_api_key"], true);
    assert_eq!(sa["rate_limited_events"], 0);
    assert_eq!(sa["is_currently_rate_limited"], false);
    assert_eq!(
        sb["rate_limit_config"],
        json!({"max_requests": 20, "window_seconds": 30})
    );
}

#[tokio::test]
async fn reset_stats_zeroes_every_counter() {
    let (a, b) = (
        MockUpstream::start("A").await,
        MockUpstream::start("B").await,
    );
    a.then(error(500, "hiccup"));
    let router = TestRouter::start(vec![svc(&a), svc_with(&b, json!({"priority": 1}))]).await;
    for _ in 0..3 {
        router.chat("test-model", json!({})).await;
    }
    assert_eq!(
        router
            .post("/router/reset-stats", &json!({}))
            .await
            .status(),
        200
    );
    let st = router.stats().await;
    for key in [
        "total_requests",
        "total_failovers",
        "total_rate_limit_skips",
    ] {
        assert_eq!(st[key], 0, "{key}");
    }
    assert_eq!(
        st["service_stats"]["A"],
        json!({"requests": 0, "failures": 0, "rate_limited": 0, "failure_rate": 0.0, "ejection_skips": 0,
               "in_flight": 0, "latency_ewma_ms": st["service_stats"]["A"]["latency_ewma_ms"]})
    );
    assert_eq!(st["total_ejection_skips"], 0);
    assert_eq!(st["configured_services"], 2);
    router.chat("test-model", json!({})).await;
    assert_eq!(router.stats().await["total_requests"], 1);
}

#[tokio::test]
async fn upstream_keys_never_reach_clients() {
    let (a, b) = (
        MockUpstream::start("A").await,
        MockUpstream::start("B").await,
    );
    let (ka, kb) = (
        "sk-upstream-secret-AAAA-1234567890",
        "sk-upstream-secret-BBBB-0987654321",
    );
    a.set(error(500, "A fails"));
    b.set(error(503, "B fails too"));
    let router = TestRouter::start(vec![
        svc_with(&a, json!({"api_key": ka})),
        svc_with(&b, json!({"priority": 1, "api_key": kb})),
    ])
    .await;
    let mut blob = router
        .chat("test-model", json!({}))
        .await
        .text()
        .await
        .unwrap();
    for path in [
        "/",
        "/backend/info",
        "/router/stats",
        "/router/health",
        "/router/rate-limits",
        "/v1/models",
    ] {
        blob.push_str(&router.get(path).await.text().await.unwrap());
    }
    assert!(blob.contains("B fails too"));
    for k in [ka, kb] {
        assert!(!blob.contains(&k[8..k.len() - 4]), "a key leaked");
    }
}

#[tokio::test]
async fn ready_is_200_while_serving_and_503_once_not_ready() {
    let router = TestRouter::start(vec![svc(&MockUpstream::start("A").await)]).await;
    let r = router.get("/ready").await;
    assert_eq!(r.status(), 200);
    router
        .state
        .ready
        .store(false, std::sync::atomic::Ordering::Relaxed);
    assert_error(router.get("/ready").await, 503, "service_unavailable").await;
}

/// Sends `head` + `body` on one connection, the body after a pause (so the
/// router answers before it has arrived), and returns the status line read.
async fn exchange(sock: &mut tokio::net::TcpStream, head: &str, body: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    sock.write_all(head.as_bytes()).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    sock.write_all(body.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    let mut tmp = [0u8; 4096];
    // read one full response: head + content-length body
    loop {
        let n = tokio::time::timeout(std::time::Duration::from_secs(3), sock.read(&mut tmp))
            .await
            .unwrap()
            .unwrap();
        assert!(
            n > 0,
            "connection closed; got so far: {}",
            String::from_utf8_lossy(&buf)
        );
        buf.extend_from_slice(&tmp[..n]);
        let text = String::from_utf8_lossy(&buf).to_string();
        if let Some(end) = text.find("\r\n\r\n") {
            let len: usize = text[..end]
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse().unwrap())
                })
                .unwrap_or(0);
            if buf.len() >= end + 4 + len {
                return text.lines().next().unwrap().to_owned();
            }
        }
    }
}

#[tokio::test]
async fn a_connection_stays_usable_after_answers_that_ignore_the_body() {
    let a = MockUpstream::start("A").await;
    let router = TestRouter::start_with(
        vec![svc(&a)],
        &[
            ("ENABLE_AUTH", "true"),
            ("AUTH_KEY", "sk-keepalive-key-000000"),
        ],
    )
    .await;
    let addr = router.url.trim_start_matches("http://").to_owned();
    let mut sock = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let body = r#"{"model":"test-model","messages":[{"role":"user","content":"hi"}]}"#;
    let req = |method: &str, path: &str, auth: bool| {
        let key = if auth {
            "authorization: Bearer sk-keepalive-key-000000\r\n"
        } else {
            ""
        };
        format!(
            "{method} {path} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n{key}content-length: {}\r\n\r\n",
            body.len()
        )
    };
    // an auth rejection, a body-less GET with a body, a POST admin call, an unknown path, then real work
    assert!(
        exchange(&mut sock, &req("POST", "/v1/chat/completions", false), body)
            .await
            .contains("401")
    );
    assert!(
        exchange(&mut sock, &req("GET", "/v1/models", true), body)
            .await
            .contains("200")
    );
    assert!(
        exchange(&mut sock, &req("POST", "/router/reset-stats", true), body)
            .await
            .contains("200")
    );
    assert!(
        exchange(&mut sock, &req("GET", "/nowhere", true), body)
            .await
            .contains("404")
    );
    assert!(
        exchange(&mut sock, &req("POST", "/v1/chat/completions", true), body)
            .await
            .contains("200")
    );
    assert_eq!(a.post_count(), 1);
}

#[tokio::test]
async fn clients_speak_http_1_1_and_http2_prior_knowledge_is_refused() {
    let a = MockUpstream::start("A").await;
    let router = TestRouter::start(vec![svc(&a)]).await;
    let r = router.get("/health").await;
    assert_eq!(r.version(), reqwest::Version::HTTP_11);
    let h2 = reqwest::Client::builder()
        .no_proxy()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let refused = h2.get(format!("{}/health", router.url)).send().await;
    assert!(refused.is_err(), "an h2c request was answered: {refused:?}");
}
