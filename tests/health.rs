//! SPEC 9: ejecting failing services, bringing them back by probing, and
//! balancing within a priority tier.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::{Duration, Instant};

use futures_util::future::join_all;
use serde_json::{Value, json};
use support::*;

fn served_by(r: &reqwest::Response) -> String {
    r.headers()["x-llm-router-service"]
        .to_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn with_a_hanging_primary_only_threshold_requests_wait_for_its_timeout() {
    let (a, b) = (
        MockUpstream::start("A").await,
        MockUpstream::start("B").await,
    );
    a.set(Reply::Hang);
    let router = TestRouter::start_with(
        vec![
            svc_with(&a, json!({"timeout": 0.3})),
            svc_with(&b, json!({"priority": 1})),
        ],
        &[
            ("HEALTH_FAILURE_THRESHOLD", "3"),
            ("HEALTH_EJECT_SECONDS", "60"),
            ("HEALTH_PROBE_INTERVAL", "60"),
        ],
    )
    .await;
    let mut slow = 0;
    for _ in 0..10 {
        let t0 = Instant::now();
        let r = router.chat("test-model", json!({})).await;
        assert_eq!(served_by(&r), "B");
        if t0.elapsed() >= Duration::from_millis(250) {
            slow += 1;
        }
    }
    assert_eq!(slow, 3, "requests that waited for the hanging primary");
    assert_eq!(a.post_count(), 3);
    let st = router.stats().await;
    assert_eq!(
        (
            st["total_ejection_skips"].as_u64(),
            st["service_stats"]["A"]["ejection_skips"].as_u64()
        ),
        (Some(7), Some(7))
    );
    let h = router.get_json("/router/health").await;
    let sa = &h["services"]["A"];
    assert_eq!(
        (sa["status"].as_str(), sa["ejections"].as_u64()),
        (Some("unhealthy"), Some(1))
    );
    assert!(sa["ejected_until"].as_str().unwrap().ends_with('Z'));
    assert_eq!(h["overall_status"], "degraded");
    let metrics = router.get("/metrics").await.text().await.unwrap();
    assert!(
        metrics.contains("llm_router_ejections_total{service=\"A\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("llm_router_ejection_skips_total{service=\"A\"} 7"));
}

#[tokio::test]
async fn a_successful_probe_makes_it_half_open_and_a_good_trial_brings_it_back() {
    let (a, b) = (
        MockUpstream::start("A").await,
        MockUpstream::start("B").await,
    );
    a.set(error(500, "A broken"));
    let router = TestRouter::start_with(
        vec![
            svc_with(&a, json!({"rate_limit_requests": 100})),
            svc_with(&b, json!({"priority": 1})),
        ],
        &[
            ("HEALTH_FAILURE_THRESHOLD", "2"),
            ("HEALTH_EJECT_SECONDS", "60"),
            ("HEALTH_PROBE_INTERVAL", "0.2"),
        ],
    )
    .await;
    for _ in 0..2 {
        router.chat("test-model", json!({})).await;
    }
    assert_eq!(
        router.get_json("/router/health").await["services"]["A"]["status"],
        "unhealthy"
    );
    let probes_before = a.model_list_calls();
    a.set(Reply::Ok);
    assert!(
        wait_for(Duration::from_secs(3), || a.model_list_calls()
            > probes_before)
        .await,
        "no probe while ejected"
    );
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(
        router.get_json("/router/health").await["services"]["A"]["status"],
        "degraded",
        "half-open after the probe"
    );
    let r = router.chat("test-model", json!({})).await;
    assert_eq!(served_by(&r), "A", "the trial request goes to A");
    let h = router.get_json("/router/health").await;
    assert_eq!(h["services"]["A"]["status"], "healthy");
    assert!(h["services"]["A"]["ejected_until"].is_null());
    // probing stopped, and probes never used A's window
    let probes = a.model_list_calls();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        a.model_list_calls(),
        probes,
        "probing went on after recovery"
    );
    let window = &router.get_json("/router/rate-limits").await["rate_limiting"]["A"];
    assert_eq!(
        window["current_requests"], 3,
        "2 failed calls + 1 trial; probes are not counted"
    );
}

#[tokio::test]
async fn half_open_admits_exactly_one_request_at_a_time() {
    let (a, b) = (
        MockUpstream::start("A").await,
        MockUpstream::start("B").await,
    );
    a.then(error(500, "x"));
    a.set(slow_ok("A", Duration::from_millis(400)));
    let router = TestRouter::start_with(
        vec![svc(&a), svc_with(&b, json!({"priority": 1}))],
        &[
            ("HEALTH_FAILURE_THRESHOLD", "1"),
            ("HEALTH_EJECT_SECONDS", "0.2"),
            ("HEALTH_PROBE_INTERVAL", "60"),
        ],
    )
    .await;
    router.chat("test-model", json!({})).await; // A fails once: ejected for 0.2 s
    tokio::time::sleep(Duration::from_millis(250)).await;
    let before = a.post_count();
    let answers = join_all((0..5).map(|_| router.chat("test-model", json!({})))).await;
    let by_a = answers.iter().filter(|r| served_by(r) == "A").count();
    assert_eq!((by_a, a.post_count() - before), (1, 1));
}

#[tokio::test]
async fn a_failed_trial_ejects_again_for_twice_as_long() {
    let (a, b) = (
        MockUpstream::start("A").await,
        MockUpstream::start("B").await,
    );
    a.set(error(503, "still broken"));
    let router = TestRouter::start_with(
        vec![svc(&a), svc_with(&b, json!({"priority": 1}))],
        &[
            ("HEALTH_FAILURE_THRESHOLD", "1"),
            ("HEALTH_EJECT_SECONDS", "0.4"),
            ("HEALTH_PROBE_INTERVAL", "60"),
        ],
    )
    .await;
    router.chat("test-model", json!({})).await; // ejected for 0.4 s
    tokio::time::sleep(Duration::from_millis(450)).await;
    router.chat("test-model", json!({})).await; // the trial fails: ejected for 0.8 s
    assert_eq!(a.post_count(), 2);
    let h = router.get_json("/router/health").await;
    assert_eq!(h["services"]["A"]["ejections"], 2);
    tokio::time::sleep(Duration::from_millis(500)).await; // 0.5 s into the 0.8 s ejection
    router.chat("test-model", json!({})).await;
    assert_eq!(
        a.post_count(),
        2,
        "called before the doubled ejection ended"
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    router.chat("test-model", json!({})).await;
    assert_eq!(a.post_count(), 3);
}

#[tokio::test]
async fn when_every_service_is_ejected_they_are_tried_anyway() {
    let a = MockUpstream::start("A").await;
    a.then(error(500, "blip"));
    let router = TestRouter::start_with(
        vec![svc(&a)],
        &[
            ("HEALTH_FAILURE_THRESHOLD", "1"),
            ("HEALTH_EJECT_SECONDS", "60"),
            ("HEALTH_PROBE_INTERVAL", "60"),
        ],
    )
    .await;
    assert_eq!(router.chat("test-model", json!({})).await.status(), 503);
    assert_eq!(
        router.get_json("/router/health").await["services"]["A"]["status"],
        "unhealthy"
    );
    assert_eq!(
        content(router.chat("test-model", json!({})).await).await,
        "reply from A"
    );
    assert_eq!(
        router.get_json("/router/health").await["services"]["A"]["status"],
        "healthy"
    );
    assert_eq!(router.stats().await["total_ejection_skips"], 0);
}

#[tokio::test]
async fn client_errors_and_429_neither_count_nor_eject_and_threshold_zero_never_ejects() {
    let (a, b) = (
        MockUpstream::start("A").await,
        MockUpstream::start("B").await,
    );
    a.set(error(400, "bad"));
    let router = TestRouter::start_with(
        vec![svc(&a), svc_with(&b, json!({"priority": 1}))],
        &[("HEALTH_FAILURE_THRESHOLD", "2")],
    )
    .await;
    for _ in 0..4 {
        assert_eq!(router.chat("test-model", json!({})).await.status(), 400);
    }
    a.set(Reply::Json {
        status: 429,
        body: "{}".into(),
        headers: vec![],
        delay: Duration::ZERO,
    });
    for _ in 0..4 {
        router.chat("test-model", json!({})).await;
    }
    let h = router.get_json("/router/health").await;
    assert_eq!(
        (
            h["services"]["A"]["status"].as_str(),
            h["services"]["A"]["consecutive_failures"].as_u64()
        ),
        (Some("healthy"), Some(0))
    );
    assert_eq!(a.post_count(), 8);

    let c = MockUpstream::start("C").await;
    c.set(error(500, "down"));
    let off = TestRouter::start_with(vec![svc(&c)], &[("HEALTH_FAILURE_THRESHOLD", "0")]).await;
    for _ in 0..5 {
        off.chat("test-model", json!({})).await;
    }
    assert_eq!(c.post_count(), 5);
    assert_eq!(
        off.get_json("/router/health").await["services"]["C"]["ejections"],
        0
    );
}

#[tokio::test]
async fn round_robin_rotates_the_first_attempt_and_the_failover_order() {
    let (a, b, c) = (
        MockUpstream::start("A").await,
        MockUpstream::start("B").await,
        MockUpstream::start("C").await,
    );
    let router = TestRouter::start_with(
        vec![svc(&a), svc(&b), svc_with(&c, json!({"priority": 1}))],
        &[("LOAD_BALANCING", "round_robin")],
    )
    .await;
    let mut order = Vec::new();
    for _ in 0..4 {
        order.push(served_by(&router.chat("test-model", json!({})).await));
    }
    assert_eq!(order, ["A", "B", "A", "B"]);
    b.set(error(500, "B down"));
    a.set(error(500, "A down"));
    let r = router.chat("test-model", json!({})).await; // starts at A, then B, then the next tier
    assert_eq!(
        (
            served_by(&r),
            r.headers()["x-llm-router-attempts"]
                .to_str()
                .unwrap()
                .to_owned()
        ),
        ("C".into(), "3".into())
    );
    assert!(a.last_post().at < b.last_post().at);
    assert_eq!(c.post_count(), 1);
}

#[tokio::test]
async fn weighted_shares_follow_the_weights() {
    let (a, b) = (
        MockUpstream::start("A").await,
        MockUpstream::start("B").await,
    );
    let router = TestRouter::start_with(
        vec![
            svc_with(&a, json!({"weight": 3})),
            svc_with(&b, json!({"weight": 1})),
        ],
        &[("LOAD_BALANCING", "weighted")],
    )
    .await;
    for _ in 0..200 {
        router.chat("test-model", json!({})).await;
    }
    let share = a.post_count() as f64 / 200.0;
    assert!(
        (0.62..=0.88).contains(&share),
        "A got {share} of the traffic with weight 3:1"
    );
}

#[tokio::test]
async fn least_busy_prefers_the_service_with_fewer_calls_in_flight() {
    let (a, b) = (
        MockUpstream::start("A").await,
        MockUpstream::start("B").await,
    );
    a.set(slow_ok("A", Duration::from_millis(600)));
    let router =
        TestRouter::start_with(vec![svc(&a), svc(&b)], &[("LOAD_BALANCING", "least_busy")]).await;
    let slow = router.chat("test-model", json!({}));
    let quick = async {
        tokio::time::sleep(Duration::from_millis(150)).await;
        let stats = router.stats().await;
        assert_eq!(stats["service_stats"]["A"]["in_flight"], 1);
        served_by(&router.chat("test-model", json!({})).await)
    };
    let (first, second) = tokio::join!(slow, quick);
    assert_eq!(
        (served_by(&first), second),
        ("A".to_owned(), "B".to_owned())
    );
}

#[tokio::test]
async fn latency_balancing_sends_most_traffic_to_the_faster_service() {
    let (a, b) = (
        MockUpstream::start("A").await,
        MockUpstream::start("B").await,
    );
    a.set(slow_ok("A", Duration::from_millis(60)));
    let router =
        TestRouter::start_with(vec![svc(&a), svc(&b)], &[("LOAD_BALANCING", "latency")]).await;
    for _ in 0..30 {
        router.chat("test-model", json!({})).await;
    }
    assert!(
        b.post_count() >= 24,
        "B (fast) got {} of 30",
        b.post_count()
    );
    let st: Value = router.stats().await;
    let (la, lb) = (
        st["service_stats"]["A"]["latency_ewma_ms"]
            .as_f64()
            .unwrap(),
        st["service_stats"]["B"]["latency_ewma_ms"]
            .as_f64()
            .unwrap(),
    );
    assert!(la > lb && la >= 40.0, "A {la} ms, B {lb} ms");
}
