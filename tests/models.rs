//! SPEC 4.2, 4.3 and 5: model discovery, model-aware routing, the `a|b|c`
//! fallback syntax and the model endpoints.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use serde_json::{Value, json};
use support::*;

#[tokio::test]
async fn a_service_whose_list_lacks_the_model_is_skipped() {
    let a = MockUpstream::with_models("A", Some(&["small"])).await;
    let b = MockUpstream::with_models("B", Some(&["large"])).await;
    let router = TestRouter::start(vec![svc(&a), svc_with(&b, json!({"priority": 1}))]).await;
    let r = router.chat("large", json!({})).await;
    assert_eq!(r.headers()["x-llm-router-attempts"], "1");
    assert_eq!(content(r).await, "reply from B");
    assert_eq!(a.post_count(), 0);
    assert_eq!(router.stats().await["total_rate_limit_skips"], 0);
}

#[tokio::test]
async fn a_service_with_an_unknown_list_is_assumed_to_serve_any_model() {
    let a = MockUpstream::with_models("A", None).await;
    let router = TestRouter::start(vec![svc(&a)]).await;
    assert_eq!(
        content(router.chat("whatever-model", json!({})).await).await,
        "reply from A"
    );
}

#[tokio::test]
async fn a_model_nobody_serves_is_404_model_not_found() {
    let a = MockUpstream::with_models("A", Some(&["small"])).await;
    let router = TestRouter::start(vec![svc(&a)]).await;
    let e = assert_error(
        router.chat("gpt-9", json!({})).await,
        404,
        "model_not_found",
    )
    .await;
    assert_eq!(e["code"], "model_not_found");
    assert_eq!(a.post_count(), 0);
}

#[tokio::test]
async fn fallback_syntax_sends_the_first_alternative_each_service_supports() {
    let a = MockUpstream::with_models("A", Some(&["m2"])).await;
    let b = MockUpstream::with_models("B", Some(&["m1", "m3"])).await;
    a.set(error(500, "A down"));
    let router = TestRouter::start(vec![svc(&a), svc_with(&b, json!({"priority": 1}))]).await;
    let raw = r#"{"model": "m1|m2|m3", "messages": [{"role": "user", "content": "hi"}], "temperature": 0.50}"#;
    assert_eq!(
        router.post_raw("/v1/chat/completions", raw).await.status(),
        200
    );
    assert_eq!(a.last_post().body, raw.replace("m1|m2|m3", "m2").as_bytes());
    assert_eq!(b.last_post().body, raw.replace("m1|m2|m3", "m1").as_bytes());
}

#[tokio::test]
async fn models_endpoint_lists_the_union_with_service_and_backend_type() {
    let a = MockUpstream::with_models("A", Some(&["shared", "meta-llama/Llama-3.1-8B"])).await;
    let b = MockUpstream::with_models("B", Some(&["shared", "only-b"])).await;
    let router = TestRouter::start(vec![
        svc(&a),
        svc_with(&b, json!({"priority": 1, "backend_type": "ollama"})),
    ])
    .await;
    let list = router.get_json("/v1/models").await;
    assert_eq!(list["object"], "list");
    let ids: Vec<&str> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["shared", "meta-llama/Llama-3.1-8B", "only-b"]);
    let only_b = &list["data"][2];
    assert_eq!(
        (
            only_b["object"].as_str(),
            only_b["service"].as_str(),
            only_b["backend_type"].as_str()
        ),
        (Some("model"), Some("B"), Some("ollama"))
    );
    assert_eq!(only_b["owned_by"], "B");
    assert_eq!(only_b["created"], 7);
}

#[tokio::test]
async fn a_model_id_with_a_slash_can_be_retrieved() {
    let a = MockUpstream::with_models("A", Some(&["meta-llama/Llama-3.1-8B"])).await;
    let router = TestRouter::start(vec![svc(&a)]).await;
    let m: Value = router.get_json("/v1/models/meta-llama/Llama-3.1-8B").await;
    assert_eq!(m["id"], "meta-llama/Llama-3.1-8B");
    assert_eq!(m["service"], "A");
    assert_error(
        router.get("/v1/models/nope/nope").await,
        404,
        "model_not_found",
    )
    .await;
}

#[tokio::test]
async fn discovery_happens_before_listening_and_not_on_the_request_path() {
    let a = MockUpstream::with_models("A", Some(&["m"])).await;
    let router = TestRouter::start(vec![svc(&a)]).await;
    assert_eq!(
        a.model_list_calls(),
        1,
        "first discovery did not run at start-up"
    );
    for _ in 0..3 {
        router.chat("m", json!({})).await;
    }
    assert_eq!(a.model_list_calls(), 1, "a request triggered discovery");
    assert_eq!(
        a.requests()[0].headers["authorization"],
        "Bearer upstream-key-A"
    );
}

#[tokio::test]
async fn discovery_is_refreshed_in_the_background() {
    let a = MockUpstream::with_models("A", Some(&["m"])).await;
    let _router = TestRouter::start_with(vec![svc(&a)], &[("MODEL_REFRESH_INTERVAL", "0.2")]).await;
    assert!(
        wait_for(std::time::Duration::from_secs(3), || a.model_list_calls()
            >= 3)
        .await
    );
}

#[tokio::test]
async fn a_failed_refresh_makes_the_list_unknown_again() {
    let a = MockUpstream::with_models("A", Some(&["small"])).await;
    let router = TestRouter::start_with(vec![svc(&a)], &[("MODEL_REFRESH_INTERVAL", "0.1")]).await;
    assert_eq!(router.chat("other", json!({})).await.status(), 404);
    a.set_models(None);
    let calls = a.model_list_calls();
    assert!(
        wait_for(std::time::Duration::from_secs(3), || a.model_list_calls()
            > calls + 1)
        .await
    );
    assert_eq!(
        content(router.chat("other", json!({})).await).await,
        "reply from A"
    );
}
