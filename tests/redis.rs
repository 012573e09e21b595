//! SPEC 8: several replicas sharing one real Redis — exact limits across
//! replicas, shared cool-downs, restarts, and what happens when Redis fails.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use serde_json::{Value, json};
use support::redis::RedisServer;
use support::*;

/// `n` routers sharing `redis` (and a key prefix unique to the test).
async fn replicas(
    n: usize,
    services: Vec<Value>,
    redis: &RedisServer,
    extra: &[(&str, &str)],
) -> Vec<TestRouter> {
    let prefix = format!(
        "test-{}",
        std::process::id() as u64 * 1000 + u64::from(redis.port)
    );
    let url = redis.url();
    let mut env: Vec<(&str, &str)> = vec![("REDIS_URL", &url), ("REDIS_KEY_PREFIX", &prefix)];
    env.extend_from_slice(extra);
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(TestRouter::start_with(services.clone(), &env).await);
    }
    out
}

async fn chat(r: &TestRouter) -> reqwest::Response {
    r.chat("test-model", json!({})).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_replicas_ninety_concurrent_requests_limit_twenty_admit_exactly_twenty() {
    let redis = RedisServer::start();
    let a = MockUpstream::start("A").await;
    let routers = replicas(
        3,
        vec![svc_with(
            &a,
            json!({"rate_limit_requests": 20, "rate_limit_window": 60}),
        )],
        &redis,
        &[],
    )
    .await;
    let answers = join_all((0..90).map(|i| chat(&routers[i % 3]))).await;
    let ok = answers.iter().filter(|r| r.status() == 200).count();
    let limited: Vec<_> = answers.iter().filter(|r| r.status() == 429).collect();
    assert_eq!((ok, limited.len()), (20, 70));
    assert!(
        limited
            .iter()
            .all(|r| r.headers().contains_key("retry-after"))
    );
    assert_eq!(a.post_count(), 20);
    // every replica shows the same shared window
    for r in &routers {
        let w = &r.get_json("/router/rate-limits").await["rate_limiting"]["A"];
        assert_eq!(
            (
                w["current_requests"].as_u64(),
                w["remaining_quota"].as_u64()
            ),
            (Some(20), Some(0))
        );
    }
}

/// SPEC 8.2: requests to a service without a limit never call Redis. The
/// limited service beside it shows that the count would see their calls.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn only_limited_services_call_redis_on_the_request_path() {
    let redis = RedisServer::start();
    let a = MockUpstream::start("A").await;
    let b = MockUpstream::start("B").await;
    let unlimited = replicas(1, vec![svc(&a)], &redis, &[]).await;
    let limited = replicas(
        1,
        vec![svc_with(&b, json!({"rate_limit_requests": 1000}))],
        &redis,
        &[],
    )
    .await;
    let mut calls = Vec::new();
    for router in [&unlimited[0], &limited[0]] {
        let (before, started) = (redis.script_calls(), Instant::now());
        for _ in 0..50 {
            assert_eq!(chat(router).await.status(), 200);
        }
        calls.push((redis.script_calls() - before, started.elapsed()));
    }
    // The only scripts besides admissions: each replica's heartbeat, once a second.
    let (unlimited_calls, took) = calls[0];
    let heartbeats = 2 * (took.as_secs() + 2);
    assert!(
        unlimited_calls <= heartbeats,
        "50 requests to a service without a limit made {unlimited_calls} script calls in {took:?}"
    );
    assert!(
        calls[1].0 >= 50,
        "50 sequential requests to a limited service made {} script calls",
        calls[1].0
    );
    assert_eq!((a.post_count(), b.post_count()), (50, 50));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_client_keys_own_limit_holds_across_replicas_and_redis_never_sees_the_key() {
    const KEY: &str = "sk-client-key-shared-0001";
    const OTHER: &str = "sk-client-key-shared-0002";
    let redis = RedisServer::start();
    let a = MockUpstream::start("A").await;
    let routers = replicas(
        3,
        vec![svc(&a)],
        &redis,
        &[
            ("ENABLE_AUTH", "true"),
            ("AUTH_KEY_01", KEY),
            ("AUTH_KEY_02", OTHER),
            ("AUTH_KEY_RATE_LIMIT", "20/60"),
        ],
    )
    .await;
    let body = chat_request("test-model", json!({}));
    let answers =
        join_all((0..90).map(|i| routers[i % 3].post_with_key("/v1/chat/completions", &body, KEY)))
            .await;
    let ok = answers.iter().filter(|r| r.status() == 200).count();
    let limited = answers.iter().filter(|r| r.status() == 429).count();
    assert_eq!(
        (ok, limited),
        (20, 70),
        "one window for the key, not one per replica"
    );
    assert_eq!(a.post_count(), 20);
    // Another key has its own window.
    let other = routers[1]
        .post_with_key("/v1/chat/completions", &body, OTHER)
        .await;
    assert_eq!(other.status(), 200);
    let keys = redis.keys();
    let windows: Vec<_> = keys.iter().filter(|k| k.contains("client-key")).collect();
    assert_eq!(windows.len(), 2, "one shared window per key: {keys:?}");
    assert!(
        keys.iter().all(|k| !k.contains("sk-client")),
        "a client key reached Redis: {keys:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_window_slides_across_replicas() {
    let redis = RedisServer::start();
    let a = MockUpstream::start("A").await;
    let r = replicas(
        3,
        vec![svc_with(
            &a,
            json!({"rate_limit_requests": 2, "rate_limit_window": 0.8}),
        )],
        &redis,
        &[],
    )
    .await;
    assert_eq!(chat(&r[0]).await.status(), 200);
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(chat(&r[1]).await.status(), 200);
    assert_eq!(chat(&r[2]).await.status(), 429);
    tokio::time::sleep(Duration::from_millis(450)).await; // the first admission has left, not the second
    assert_eq!(chat(&r[2]).await.status(), 200);
    assert_eq!(chat(&r[0]).await.status(), 429);
    assert_eq!(a.post_count(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cooldown_learned_by_one_replica_reaches_the_others_within_a_second() {
    let redis = RedisServer::start();
    let (a, b) = (
        MockUpstream::start("A").await,
        MockUpstream::start("B").await,
    );
    a.then(rate_limited(5));
    let r = replicas(
        2,
        vec![svc(&a), svc_with(&b, json!({"priority": 1}))],
        &redis,
        &[],
    )
    .await;
    assert_eq!(content(chat(&r[0]).await).await, "reply from B");
    let learned = Instant::now();
    let shared = wait_for(Duration::from_secs(2), || true).await; // let the write land
    assert!(shared);
    let mut reached = false;
    while learned.elapsed() < Duration::from_secs(1) {
        if r[1].get_json("/router/rate-limits").await["rate_limiting"]["A"]["is_rate_limited"]
            == true
        {
            reached = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(reached, "replica 2 did not learn the cool-down within 1 s");
    assert_eq!(content(chat(&r[1]).await).await, "reply from B");
    assert_eq!(
        a.post_count(),
        1,
        "the cooling service was called by the other replica"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_restarted_replica_keeps_the_window() {
    let redis = RedisServer::start();
    let a = MockUpstream::start("A").await;
    let services = vec![svc_with(
        &a,
        json!({"rate_limit_requests": 2, "rate_limit_window": 60}),
    )];
    let first = replicas(1, services.clone(), &redis, &[]).await;
    for _ in 0..2 {
        assert_eq!(chat(&first[0]).await.status(), 200);
    }
    for r in first {
        r.stop().await;
    }
    let again = replicas(1, services, &redis, &[]).await;
    assert_eq!(chat(&again[0]).await.status(), 429);
    assert_eq!(a.post_count(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killing_redis_under_load_loses_no_request_and_recovery_is_automatic() {
    let mut redis = RedisServer::start();
    let a = MockUpstream::start("A").await;
    let r = replicas(
        2,
        vec![svc_with(
            &a,
            json!({"rate_limit_requests": 10000, "rate_limit_window": 60}),
        )],
        &redis,
        &[("REDIS_TIMEOUT_MS", "50")],
    )
    .await;
    let r = Arc::new(r);
    let load = {
        let r = Arc::clone(&r);
        tokio::spawn(async move {
            let mut worst = Duration::ZERO;
            let mut statuses = Vec::new();
            for i in 0..120 {
                let t0 = Instant::now();
                statuses.push(chat(&r[i % 2]).await.status().as_u16());
                worst = worst.max(t0.elapsed());
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            (statuses, worst)
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    redis.kill();
    let (statuses, worst) = load.await.unwrap();
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    assert!(
        worst < Duration::from_millis(50 + 150),
        "a request waited {worst:?}"
    );
    let h = r[0].get_json("/router/health").await;
    assert_eq!(
        h["state_backend"],
        json!({"type": "redis", "status": "degraded", "url": redis.url(), "failure_mode": "local"})
    );
    assert_eq!(r[0].get("/health").await.status(), 200);
    assert_eq!(r[0].get("/ready").await.status(), 200);
    let metrics = r[0].get("/metrics").await.text().await.unwrap();
    assert!(
        metrics.contains("llm_router_state_backend_up 0"),
        "{metrics}"
    );
    redis.restart();
    let recovered = async {
        for _ in 0..100 {
            if r[0].get_json("/router/health").await["state_backend"]["status"] == "ok" {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        false
    };
    assert!(recovered.await, "no recovery within 10 s");
    assert_eq!(chat(&r[0]).await.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hung_redis_delays_no_request_beyond_the_timeout() {
    let redis = RedisServer::start();
    let a = MockUpstream::start("A").await;
    let r = replicas(
        1,
        vec![svc_with(&a, json!({"rate_limit_requests": 1000}))],
        &redis,
        &[("REDIS_TIMEOUT_MS", "50")],
    )
    .await;
    assert_eq!(chat(&r[0]).await.status(), 200);
    redis.pause();
    let mut worst = Duration::ZERO;
    for _ in 0..10 {
        let t0 = Instant::now();
        assert_eq!(chat(&r[0]).await.status(), 200);
        worst = worst.max(t0.elapsed());
    }
    assert!(
        worst < Duration::from_millis(50 + 150),
        "a request waited {worst:?}"
    );
    assert_eq!(
        r[0].get_json("/router/health").await["state_backend"]["status"],
        "degraded"
    );
    redis.resume();
    let mut ok = false;
    for _ in 0..100 {
        if r[0].get_json("/router/health").await["state_backend"]["status"] == "ok" {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ok, "no recovery after SIGCONT");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn failure_modes_decide_limits_while_redis_is_down() {
    for (mode, expected_ok) in [("open", 5), ("closed", 0), ("local", 2)] {
        let mut redis = RedisServer::start();
        let a = MockUpstream::start("A").await;
        // two replicas seen live, limit 4: local mode allows ⌈4/2⌉ = 2 per replica
        let r = replicas(
            2,
            vec![svc_with(
                &a,
                json!({"rate_limit_requests": 4, "rate_limit_window": 60}),
            )],
            &redis,
            &[("REDIS_FAILURE_MODE", mode)],
        )
        .await;
        tokio::time::sleep(Duration::from_millis(1300)).await; // heartbeats: both replicas seen
        assert_eq!(r[0].stats().await["replicas"], 2, "{mode}");
        redis.kill();
        let mut ok = 0;
        for _ in 0..5 {
            let resp = chat(&r[0]).await;
            if resp.status() == 200 {
                ok += 1;
            } else {
                assert_eq!(resp.status(), 429, "{mode}");
                if mode == "closed" {
                    assert_eq!(resp.headers()["retry-after"], "1");
                }
            }
        }
        assert_eq!(ok, expected_ok, "mode {mode}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replica_starts_while_redis_is_down_and_joins_when_it_comes_up() {
    let mut redis = RedisServer::start();
    let port_url = redis.url();
    redis.kill();
    let a = MockUpstream::start("A").await;
    let r = TestRouter::start_with(
        vec![svc_with(&a, json!({"rate_limit_requests": 3}))],
        &[("REDIS_URL", &port_url)],
    )
    .await;
    for _ in 0..4 {
        chat(&r).await;
    }
    assert_eq!(
        r.get_json("/router/health").await["state_backend"]["status"],
        "degraded"
    );
    assert_eq!(
        a.post_count(),
        3,
        "local mode with one replica keeps the full limit"
    );
    redis.restart();
    let mut ok = false;
    for _ in 0..100 {
        if r.get_json("/router/health").await["state_backend"]["status"] == "ok" {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ok);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cluster_totals_and_replicas_are_reported() {
    let redis = RedisServer::start();
    let a = MockUpstream::start("A").await;
    let r = replicas(2, vec![svc(&a)], &redis, &[]).await;
    for i in 0..5 {
        chat(&r[i % 2]).await;
    }
    tokio::time::sleep(Duration::from_millis(2100)).await; // cluster totals are at most 2 s old
    let st = r[0].stats().await;
    assert_eq!(st["replicas"], 2);
    assert_eq!(st["cluster"]["total_requests"], 5);
    assert_eq!(
        st["total_requests"], 3,
        "per-replica fields stay per replica"
    );
    assert_eq!(r[1].get_json("/router/health").await["replicas"], 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_redis_password_is_masked_everywhere() {
    let redis = RedisServer::with_password("hunter2-very-secret");
    let a = MockUpstream::start("A").await;
    let r = replicas(
        1,
        vec![svc_with(&a, json!({"rate_limit_requests": 5}))],
        &redis,
        &[],
    )
    .await;
    assert_eq!(chat(&r[0]).await.status(), 200);
    let mut blob = String::new();
    for path in [
        "/router/health",
        "/router/stats",
        "/backend/info",
        "/metrics",
        "/",
    ] {
        blob.push_str(&r[0].get(path).await.text().await.unwrap());
    }
    assert!(blob.contains(":****@127.0.0.1"), "{blob}");
    assert!(!blob.contains("hunter2"), "the password leaked");
    assert_eq!(
        r[0].get_json("/router/health").await["state_backend"]["status"],
        "ok",
        "auth with the password works"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn memory_mode_reports_one_replica_and_itself_as_the_cluster() {
    let a = MockUpstream::start("A").await;
    let r = TestRouter::start(vec![svc(&a)]).await;
    chat(&r).await;
    let st = r.stats().await;
    assert_eq!(
        (
            st["replicas"].as_u64(),
            st["cluster"]["total_requests"].as_u64()
        ),
        (Some(1), Some(1))
    );
    assert_eq!(
        r.get_json("/router/health").await["state_backend"],
        json!({"type": "memory", "status": "ok"})
    );
}

mod invariant {
    use super::*;
    use futures_util::FutureExt;
    use llm_router::config::{FailureMode, RateLimit, RedisConfig, Secret};
    use llm_router::metrics::Metrics;
    use llm_router::ratelimit::Admission;
    use llm_router::shared::{RedisBackend, SharedWindow};
    use proptest::prelude::*;
    use std::num::NonZeroU32;

    /// A service's shared window on `redis_url` (a fresh key prefix each time).
    fn shared_window(redis_url: &str, limit: u32, window: Duration) -> SharedWindow {
        let cfg = RedisConfig {
            url: Secret::new(redis_url),
            key_prefix: format!("prop-{}", fastrand::u64(..)),
            timeout: Duration::from_secs(5),
            failure_mode: FailureMode::Closed,
            ca: None,
        };
        let backend = Arc::new(RedisBackend::new(cfg, Arc::new(Metrics::new())).unwrap());
        SharedWindow::new(
            Arc::clone(&backend),
            backend.window_key("svc"),
            RateLimit {
                requests: NonZeroU32::new(limit).unwrap(),
                window,
            },
        )
    }

    /// Admission times (Redis server µs) of concurrent callers with random gaps.
    async fn run(redis_url: &str, limit: u32, window_ms: u64, gaps: Vec<Vec<u64>>) -> Vec<u64> {
        // The callers share one window, as a replica's requests do, so that
        // callers arriving together are decided in one batch.
        let shared = Arc::new(shared_window(
            redis_url,
            limit,
            Duration::from_millis(window_ms),
        ));
        let tasks = gaps.into_iter().map(|caller| {
            let shared = Arc::clone(&shared);
            async move {
                let mut admitted = Vec::new();
                for gap in caller {
                    tokio::time::sleep(Duration::from_millis(gap)).await;
                    match shared.admit_shared().await.expect("redis answers") {
                        (Admission::Admitted, at) => admitted.push(at),
                        (Admission::Full { .. }, _) => {}
                    }
                }
                admitted
            }
        });
        let mut all: Vec<u64> = join_all(tasks).await.into_iter().flatten().collect();
        all.sort_unstable();
        all
    }

    /// Admissions made together on one replica are decided together, in one
    /// script call, and still exactly: the first `limit` callers are admitted at
    /// one server time, the rest are told when the first slot frees.
    #[tokio::test(flavor = "current_thread")]
    async fn admissions_made_together_share_one_script_call_and_stay_exact() {
        let redis = RedisServer::start();
        let window = Duration::from_secs(10);
        let shared = shared_window(&redis.url(), 20, window);
        let before = redis.script_calls();
        let decisions = join_all((0..60).map(|_| shared.admit_shared())).await;
        // One batch; a first call may also meet NOSCRIPT and be sent again.
        let calls = redis.script_calls() - before;
        assert!(calls <= 2, "60 admissions took {calls} script calls");
        let decisions: Vec<_> = decisions
            .into_iter()
            .map(|d| d.expect("redis answers"))
            .collect();
        let admitted: Vec<u64> = decisions
            .iter()
            .filter(|(a, _)| matches!(a, Admission::Admitted))
            .map(|&(_, at)| at)
            .collect();
        assert_eq!(admitted.len(), 20);
        assert!(admitted.iter().all(|&at| at == admitted[0] && at > 0));
        // In arrival order: the first 20 callers were the admitted ones.
        assert!(
            decisions[..20]
                .iter()
                .all(|(a, _)| matches!(a, Admission::Admitted))
        );
        for (decision, _) in &decisions[20..] {
            match decision {
                Admission::Full { retry_after } => {
                    assert!(
                        *retry_after > window - Duration::from_secs(1) && *retry_after <= window,
                        "{retry_after:?}"
                    )
                }
                Admission::Admitted => panic!("admitted over the limit"),
            }
        }
        // The window holds exactly the 20, as one more caller finds.
        assert!(matches!(
            shared.admit_shared().await,
            Some((Admission::Full { .. }, _))
        ));
    }

    /// More attempts at once than one script call takes (1,000) are split into
    /// calls sent in arrival order: still exactly the limit, to the first callers.
    #[tokio::test(flavor = "current_thread")]
    async fn a_batch_larger_than_one_script_call_is_split_and_stays_exact() {
        let redis = RedisServer::start();
        let shared = shared_window(&redis.url(), 1200, Duration::from_secs(30));
        // Load the script first, so that the count below is of admission calls only.
        assert!(matches!(
            shared.admit_shared().await,
            Some((Admission::Admitted, _))
        ));
        let before = redis.script_calls();
        let decisions = join_all((0..2500).map(|_| shared.admit_shared())).await;
        assert_eq!(
            redis.script_calls() - before,
            3,
            "2,500 attempts: calls of 1,000, 1,000 and 500"
        );
        let admitted: Vec<bool> = decisions
            .into_iter()
            .map(|d| matches!(d.expect("redis answers"), (Admission::Admitted, _)))
            .collect();
        assert_eq!(admitted.iter().filter(|&&a| a).count(), 1199);
        assert!(
            admitted[..1199].iter().all(|&a| a),
            "the first callers get the slots"
        );
    }

    /// A caller that goes away before its batch is sent (a client that
    /// disconnected) takes no slot.
    #[tokio::test(flavor = "current_thread")]
    async fn callers_gone_before_the_call_take_no_slot() {
        let redis = RedisServer::start();
        let shared = shared_window(&redis.url(), 10, Duration::from_secs(30));
        // Each is polled once (queued), then dropped before its flush runs.
        for _ in 0..3 {
            assert!(shared.admit_shared().now_or_never().is_none());
        }
        let live = join_all((0..2).map(|_| shared.admit_shared())).await;
        assert!(
            live.iter()
                .all(|d| matches!(d, Some((Admission::Admitted, _))))
        );
        assert_eq!(shared.state(tokio::time::Instant::now()).await.current, 2);
    }

    /// A flush that never runs (its runtime was dropped first) must not leave
    /// the window's queue stuck: the callers queued behind it learn that Redis
    /// did not decide, and the next runtime's callers are decided again.
    #[test]
    fn a_flush_dropped_unrun_does_not_leave_the_queue_stuck() {
        let redis = RedisServer::start();
        let first = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let shared =
            first.block_on(async { shared_window(&redis.url(), 10, Duration::from_secs(30)) });
        // Queued, and its flush spawned; block_on returns before that task runs.
        first.block_on(async { assert!(shared.admit_shared().now_or_never().is_none()) });
        drop(first);
        let second = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let decided = second.block_on(async {
            tokio::time::timeout(Duration::from_secs(5), shared.admit_shared()).await
        });
        assert!(
            matches!(decided, Ok(Some((Admission::Admitted, _)))),
            "{decided:?}"
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

        /// The script's invariant on the real server: never more than `limit`
        /// admissions in any interval of the window's length.
        #[test]
        fn never_more_than_limit_in_any_window_on_a_real_redis(
            limit in 1u32..6,
            window_ms in 30u64..250,
            gaps in proptest::collection::vec(proptest::collection::vec(0u64..40, 5..25), 2..5),
        ) {
            let redis = RedisServer::start();
            let rt = tokio::runtime::Runtime::new().unwrap();
            let admitted = rt.block_on(run(&redis.url(), limit, window_ms, gaps));
            prop_assert!(!admitted.is_empty());
            let window_us = window_ms * 1000;
            for (i, &t) in admitted.iter().enumerate() {
                let in_window = admitted[i..].iter().take_while(|&&u| u - t < window_us).count();
                prop_assert!(in_window <= limit as usize, "{in_window} admissions within {window_ms} ms (limit {limit})");
            }
        }
    }
}

/// `rediss://` to a server whose certificate comes from a private CA: trusted
/// through `REDIS_CA_FILE`, refused (degraded, requests still served) without it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rediss_with_a_private_ca_is_verified_against_redis_ca_file() {
    let dir = std::env::temp_dir().join(format!("llm-router-redis-tls-{}", std::process::id()));
    let (redis, ca) = RedisServer::with_private_ca(&dir);
    let a = MockUpstream::start("A").await;
    let limited = vec![svc_with(&a, json!({"rate_limit_requests": 3}))];
    let ca = ca.to_str().unwrap().to_owned();
    // A generous timeout: the first calls pay for a TLS handshake on a busy machine.
    let trusted = replicas(
        2,
        limited.clone(),
        &redis,
        &[("REDIS_CA_FILE", &ca), ("REDIS_TIMEOUT_MS", "2000")],
    )
    .await;
    assert!(redis.url().starts_with("rediss://"));
    let mut statuses = Vec::new();
    for i in 0..8 {
        statuses.push(chat(&trusted[i % 2]).await.status().as_u16());
    }
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        3,
        "the two replicas share one window of 3 over TLS: {statuses:?}"
    );
    assert_eq!(a.post_count(), 3);
    for r in &trusted {
        assert_eq!(
            r.get_json("/router/health").await["state_backend"]["status"],
            "ok"
        );
    }
    // The same server without the CA: its certificate is not trusted, so Redis
    // counts as unreachable and the failure mode decides; requests are served.
    let b = MockUpstream::start("B").await;
    let untrusted = replicas(
        1,
        vec![svc_with(&b, json!({"rate_limit_requests": 3}))],
        &redis,
        &[],
    )
    .await;
    for _ in 0..4 {
        chat(&untrusted[0]).await;
    }
    assert_eq!(b.post_count(), 3, "local mode keeps the limit");
    let health = untrusted[0].get_json("/router/health").await;
    assert_eq!(health["state_backend"]["status"], "degraded", "{health}");
    let _ = std::fs::remove_dir_all(&dir);
}
