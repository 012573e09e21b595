//! SPEC 4.4, 4.5 and 6: per-service sliding windows, atomic under concurrency,
//! the all-limited 429 with `Retry-After`, and upstream `429` cool-downs.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use futures_util::future::join_all;
use serde_json::json;
use support::*;

#[tokio::test]
async fn rate_limited_service_is_skipped_without_being_called() {
    let (a, b) = (
        MockUpstream::start("A").await,
        MockUpstream::start("B").await,
    );
    let router = TestRouter::start(vec![
        svc_with(
            &a,
            json!({"rate_limit_requests": 2, "rate_limit_window": 60}),
        ),
        svc_with(&b, json!({"priority": 1})),
    ])
    .await;
    let mut served_by = Vec::new();
    for _ in 0..3 {
        served_by.push(
            router.chat("test-model", json!({})).await.headers()["x-llm-router-service"]
                .to_str()
                .unwrap()
                .to_owned(),
        );
    }
    assert_eq!(served_by, ["A", "A", "B"]);
    assert_eq!((a.post_count(), b.post_count()), (2, 1));
    let st = router.stats().await;
    assert_eq!(st["total_rate_limit_skips"], 1);
    assert_eq!(st["service_stats"]["A"]["rate_limited"], 1);
    assert_eq!(st["total_failovers"], 0, "a skip is not a failover");
}

#[tokio::test]
async fn every_service_limited_gives_429_with_retry_after() {
    let a = MockUpstream::start("A").await;
    let router = TestRouter::start(vec![svc_with(
        &a,
        json!({"rate_limit_requests": 1, "rate_limit_window": 30}),
    )])
    .await;
    assert_eq!(router.chat("test-model", json!({})).await.status(), 200);
    let r = router.chat("test-model", json!({})).await;
    let retry_after: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        (29..=30).contains(&retry_after),
        "Retry-After {retry_after}"
    );
    assert_eq!(r.headers().get("x-llm-router-attempts"), None);
    assert_error(r, 429, "rate_limit_exceeded").await;
    assert_eq!(a.post_count(), 1);
}

#[tokio::test]
async fn a_hundred_concurrent_requests_admit_exactly_the_limit() {
    let (a, b) = (
        MockUpstream::start("A").await,
        MockUpstream::start("B").await,
    );
    a.set(slow_ok("A", Duration::from_millis(20)));
    let router = TestRouter::start(vec![
        svc_with(
            &a,
            json!({"rate_limit_requests": 10, "rate_limit_window": 60}),
        ),
        svc_with(&b, json!({"priority": 1})),
    ])
    .await;
    let statuses = join_all((0..100).map(|_| router.chat("test-model", json!({})))).await;
    assert!(statuses.iter().all(|r| r.status() == 200));
    assert_eq!(a.post_count(), 10);
    assert_eq!(b.post_count(), 90);
}

#[tokio::test]
async fn without_another_service_the_rest_get_429() {
    let a = MockUpstream::start("A").await;
    let router = TestRouter::start(vec![svc_with(
        &a,
        json!({"rate_limit_requests": 10, "rate_limit_window": 60}),
    )])
    .await;
    let responses = join_all((0..100).map(|_| router.chat("test-model", json!({})))).await;
    let ok = responses.iter().filter(|r| r.status() == 200).count();
    let limited: Vec<_> = responses.iter().filter(|r| r.status() == 429).collect();
    assert_eq!((ok, limited.len()), (10, 90));
    assert!(
        limited
            .iter()
            .all(|r| r.headers().contains_key("retry-after"))
    );
    assert_eq!(a.post_count(), 10);
}

#[tokio::test]
async fn the_window_slides() {
    let a = MockUpstream::start("A").await;
    let router = TestRouter::start(vec![svc_with(
        &a,
        json!({"rate_limit_requests": 2, "rate_limit_window": 0.6}),
    )])
    .await;
    assert_eq!(router.chat("test-model", json!({})).await.status(), 200);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(router.chat("test-model", json!({})).await.status(), 200);
    assert_eq!(router.chat("test-model", json!({})).await.status(), 429);
    tokio::time::sleep(Duration::from_millis(350)).await; // the first admission has left, not the second
    assert_eq!(router.chat("test-model", json!({})).await.status(), 200);
    assert_eq!(router.chat("test-model", json!({})).await.status(), 429);
    assert_eq!(a.post_count(), 3);
}

#[tokio::test]
async fn upstream_429_with_retry_after_cools_the_service_down() {
    let (a, b) = (
        MockUpstream::start("A").await,
        MockUpstream::start("B").await,
    );
    a.then(rate_limited(1));
    let router = TestRouter::start(vec![svc(&a), svc_with(&b, json!({"priority": 1}))]).await;
    assert_eq!(
        content(router.chat("test-model", json!({})).await).await,
        "reply from B"
    );
    assert_eq!(
        content(router.chat("test-model", json!({})).await).await,
        "reply from B"
    );
    assert_eq!(a.post_count(), 1, "the cooling service was called");
    let limits = router.get_json("/router/rate-limits").await;
    assert_eq!(limits["rate_limiting"]["A"]["is_rate_limited"], true);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(
        content(router.chat("test-model", json!({})).await).await,
        "reply from A"
    );
}

#[tokio::test]
async fn rate_limits_endpoint_reports_the_window() {
    let (a, b) = (
        MockUpstream::start("A").await,
        MockUpstream::start("B").await,
    );
    let router = TestRouter::start(vec![
        svc_with(
            &a,
            json!({"rate_limit_requests": 3, "rate_limit_window": 60}),
        ),
        svc_with(&b, json!({"priority": 1})),
    ])
    .await;
    for _ in 0..2 {
        router.chat("test-model", json!({})).await;
    }
    let body = router.get_json("/router/rate-limits").await;
    let w = &body["rate_limiting"]["A"];
    assert_eq!(w["rate_limit"], "3/60s");
    assert_eq!(
        (
            w["current_requests"].as_u64(),
            w["remaining_quota"].as_u64()
        ),
        (Some(2), Some(1))
    );
    assert_eq!(w["is_rate_limited"], false);
    let reset = w["window_reset_in"].as_f64().unwrap();
    assert!(reset > 0.0 && reset <= 60.0);
    assert_eq!(body["rate_limiting"]["B"]["rate_limit"], "unlimited");
    assert!(
        body.get("total_rate_limit_skips").is_some() && body.get("rate_limit_skip_rate").is_some()
    );
    router.chat("test-model", json!({})).await;
    let w = &router.get_json("/router/rate-limits").await["rate_limiting"]["A"];
    assert_eq!(
        (
            w["current_requests"].as_u64(),
            w["remaining_quota"].as_u64(),
            w["is_rate_limited"].as_bool()
        ),
        (Some(3), Some(0), Some(true))
    );
}
