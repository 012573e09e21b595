//! SPEC 4.6 and 4.1: streams are relayed event by event, fail over only before
//! the first byte, end with an error event after it, and are cancelled upstream
//! when the client leaves.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::{Value, json};
use support::*;

fn stream_req() -> Value {
    json!({"stream": true})
}

#[tokio::test]
async fn events_pass_through_unchanged_with_stream_headers() {
    let a = MockUpstream::start("A").await;
    a.set(sse_chat("tok", 3, Duration::ZERO));
    let router = TestRouter::start(vec![svc(&a)]).await;
    let r = router.chat("test-model", stream_req()).await;
    assert_eq!(r.status(), 200);
    let h = r.headers().clone();
    assert_eq!(h["content-type"], "text/event-stream");
    assert_eq!(h["cache-control"], "no-cache");
    assert_eq!(h["x-accel-buffering"], "no");
    assert_eq!(h["x-llm-router-service"], "A");
    assert_eq!(h["x-llm-router-attempts"], "1");
    let text = r.text().await.unwrap();
    let mut expected: String = (0..3).map(|i| chunk_event(&format!("tok{i} "))).collect();
    expected.push_str("data: [DONE]\n\n");
    assert_eq!(text, expected);
    assert_eq!(sse_data(&text).iter().filter(|e| *e == "[DONE]").count(), 1);
    assert_eq!(a.last_post().json()["stream"], true);
}

#[tokio::test]
async fn each_chunk_reaches_the_client_as_soon_as_the_upstream_sends_it() {
    let a = MockUpstream::start("A").await;
    a.set(sse_chat("slow", 4, Duration::from_millis(250)));
    let router = TestRouter::start(vec![svc(&a)]).await;
    let r = router.chat("test-model", stream_req()).await;
    let mut body = r.bytes_stream();
    let mut arrivals = Vec::new();
    let mut received = Vec::new();
    while let Some(chunk) = body.next().await {
        arrivals.push(Instant::now());
        received.extend_from_slice(&chunk.unwrap());
    }
    let sent = a.last_post().piece_times;
    assert_eq!(sent.len(), 5);
    assert!(
        arrivals.len() >= 5,
        "chunks were merged: {} reads",
        arrivals.len()
    );
    // Each event is readable within a few milliseconds of being written upstream
    // (Nagle + delayed ACK would show as ~40 ms; buffering as ~250 ms).
    for (i, written) in sent.iter().enumerate() {
        let lag = arrivals[i].saturating_duration_since(*written);
        assert!(
            lag < Duration::from_millis(30),
            "event {i} arrived {lag:?} after the upstream wrote it"
        );
    }
    assert_eq!(sse_data(std::str::from_utf8(&received).unwrap()).len(), 5);
}

#[tokio::test]
async fn events_split_anywhere_arrive_whole_and_in_order() {
    let a = MockUpstream::start("A").await;
    let full = "data: {\"choices\":[{\"delta\":{\"content\":\"h\u{e9}llo \u{2713}\"}}]}\r\n\r\n: keep-alive\r\n\r\ndata: {\"n\":2}\n\ndata: [DONE]\n\n";
    let bytes = full.as_bytes();
    // split mid-field, mid-JSON, inside the two-byte é and the three-byte ✓, and between \r and \n
    let e_acute = full.find('\u{e9}').unwrap() + 1;
    let check = full.find('\u{2713}').unwrap() + 2;
    let cr = full.find("\r\n\r\n").unwrap() + 1;
    let cuts = [3, 20, e_acute, check, cr, cr + 2, full.len() - 5];
    let mut pieces = Vec::new();
    let mut last = 0;
    for c in cuts {
        pieces.push(bytes[last..c].to_vec());
        last = c;
    }
    pieces.push(bytes[last..].to_vec());
    a.set(sse_pieces(pieces, Duration::from_millis(5)));
    let router = TestRouter::start(vec![svc(&a)]).await;
    let text = router
        .chat("test-model", stream_req())
        .await
        .text()
        .await
        .unwrap();
    assert_eq!(text, full);
}

#[tokio::test]
async fn fails_over_when_the_upstream_answers_200_then_drops_before_any_data() {
    let (a, b) = (
        MockUpstream::start("A").await,
        MockUpstream::start("B").await,
    );
    a.set(Reply::Sse {
        pieces: vec![b": ping\n\n".to_vec(), chunk_event("never").into_bytes()],
        gap: Duration::ZERO,
        first_delay: Duration::ZERO,
        drop_after: Some(1),
    });
    b.set(sse_chat("b", 2, Duration::ZERO));
    let router = TestRouter::start(vec![svc(&a), svc_with(&b, json!({"priority": 1}))]).await;
    let r = router.chat("test-model", stream_req()).await;
    assert_eq!(r.headers()["x-llm-router-service"], "B");
    let text = r.text().await.unwrap();
    assert!(
        !text.contains("ping") && text.contains("b0 ") && text.ends_with("data: [DONE]\n\n"),
        "{text}"
    );
    assert_eq!((a.post_count(), b.post_count()), (1, 1));
}

#[tokio::test]
async fn fails_over_on_an_error_status_before_streaming() {
    let (a, b) = (
        MockUpstream::start("A").await,
        MockUpstream::start("B").await,
    );
    a.set(error(503, "busy"));
    b.set(sse_chat("b", 1, Duration::ZERO));
    let router = TestRouter::start(vec![svc(&a), svc_with(&b, json!({"priority": 1}))]).await;
    let r = router.chat("test-model", stream_req()).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-llm-router-attempts"], "2");
    assert!(r.text().await.unwrap().contains("b0 "));
}

#[tokio::test]
async fn a_drop_mid_stream_ends_with_one_error_event_and_no_failover() {
    let (a, b) = (
        MockUpstream::start("A").await,
        MockUpstream::start("B").await,
    );
    let mut pieces: Vec<Vec<u8>> = (0..4)
        .map(|i| chunk_event(&format!("a{i}")).into_bytes())
        .collect();
    pieces[2] = b"data: {\"choices\": [{\"delta\": {\"con".to_vec(); // an unfinished event, then the drop
    a.set(Reply::Sse {
        pieces,
        gap: Duration::from_millis(20),
        first_delay: Duration::ZERO,
        drop_after: Some(3),
    });
    let router = TestRouter::start(vec![svc(&a), svc_with(&b, json!({"priority": 1}))]).await;
    let r = router.chat("test-model", stream_req()).await;
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    let events = sse_data(&text);
    assert_eq!(events.len(), 3, "{text}");
    let err: Value = serde_json::from_str(&events[2]).unwrap();
    assert_eq!(err["error"]["type"], "upstream_error");
    assert!(
        !text.contains("\"delta\": {\"con") && !text.contains("[DONE]"),
        "{text}"
    );
    assert!(text.ends_with("\n\n"));
    assert_eq!(b.post_count(), 0);
    assert_eq!(router.stats().await["service_stats"]["A"]["failures"], 1);
}

#[tokio::test]
async fn an_idle_stream_ends_with_a_timeout_event() {
    let a = MockUpstream::start("A").await;
    a.set(sse_chat("x", 3, Duration::from_secs(3)));
    let router = TestRouter::start(vec![svc_with(&a, json!({"timeout": 0.5}))]).await;
    let t0 = Instant::now();
    let text = router
        .chat("test-model", stream_req())
        .await
        .text()
        .await
        .unwrap();
    assert!(t0.elapsed() < Duration::from_secs(2));
    let events = sse_data(&text);
    assert_eq!(events.len(), 2, "{text}");
    let err: Value = serde_json::from_str(&events[1]).unwrap();
    assert_eq!(err["error"]["type"], "timeout");
}

#[tokio::test]
async fn a_client_that_goes_away_cancels_the_upstream_request() {
    let a = MockUpstream::start("A").await;
    a.set(sse_chat("long", 100, Duration::from_millis(100)));
    let router = TestRouter::start(vec![svc(&a)]).await;
    let r = router.chat("test-model", stream_req()).await;
    let mut body = r.bytes_stream();
    body.next().await.unwrap().unwrap();
    drop(body);
    let left = Instant::now();
    assert!(
        wait_for(Duration::from_secs(2), || a
            .last_post()
            .cancelled_at
            .is_some())
        .await,
        "upstream kept streaming"
    );
    let cancelled = a.last_post().cancelled_at.unwrap();
    assert!(cancelled.saturating_duration_since(left) < Duration::from_millis(500));
    assert!(a.last_post().piece_times.len() < 10);
}

#[tokio::test]
async fn a_stream_may_outlive_the_service_timeout_while_chunks_keep_coming() {
    let a = MockUpstream::start("A").await;
    a.set(sse_chat("t", 8, Duration::from_millis(200)));
    let router = TestRouter::start(vec![svc_with(&a, json!({"timeout": 0.6}))]).await;
    let text = router
        .chat("test-model", stream_req())
        .await
        .text()
        .await
        .unwrap();
    assert_eq!(sse_data(&text).len(), 9, "{text}");
}

#[tokio::test]
async fn a_json_answer_to_a_stream_request_is_relayed_whole() {
    let a = MockUpstream::start("A").await;
    let router = TestRouter::start(vec![svc(&a)]).await;
    let r = router.chat("test-model", stream_req()).await;
    assert_eq!(r.headers()["content-type"], "application/json");
    assert_eq!(content(r).await, "reply from A");
}
