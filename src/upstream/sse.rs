//! Server-sent events, relayed: forward each complete upstream event the moment
//! it is complete, keep an unfinished tail back, and on a failure end the stream
//! with an OpenAI-shaped error event written at an event boundary.
//!
//! Holding back an unfinished tail delays nothing a client can use (its SSE
//! parser cannot act on half an event), and it is what lets the router append an
//! error event without ever splicing it into an upstream event.

use std::convert::Infallible;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::{Stream, StreamExt};

/// Finds event boundaries (a blank line: `\n\n`, `\r\n\r\n`, `\r\r`, or mixed)
/// across chunk borders.
#[derive(Debug, Clone, Copy)]
pub struct SseFramer {
    /// No character since the last line terminator.
    at_line_start: bool,
    /// The previous byte was `\r`, so a `\n` now belongs to the same terminator.
    last_cr: bool,
}

impl Default for SseFramer {
    fn default() -> Self {
        Self {
            at_line_start: true,
            last_cr: false,
        }
    }
}

impl SseFramer {
    /// Feeds `chunk`; returns the length of its prefix that ends at the last event
    /// boundary in it (`None` if it completes no event).
    pub fn feed(&mut self, chunk: &[u8]) -> Option<usize> {
        let mut end = None;
        for (i, &b) in chunk.iter().enumerate() {
            match b {
                b'\n' if self.last_cr => self.last_cr = false,
                b'\n' | b'\r' => {
                    if self.at_line_start {
                        end = Some(i + 1);
                    }
                    self.at_line_start = true;
                    self.last_cr = b == b'\r';
                }
                _ => {
                    self.at_line_start = false;
                    self.last_cr = false;
                }
            }
        }
        // A `\n` completing a `\r\n` blank line belongs with the event it ends.
        if let Some(e) = end
            && chunk.get(e) == Some(&b'\n')
            && chunk.get(e - 1) == Some(&b'\r')
        {
            end = Some(e + 1);
        }
        end
    }
}

/// True when `bytes` holds a `data:` field (the start of real content).
pub fn has_data_field(bytes: &[u8]) -> bool {
    bytes.windows(5).any(|w| w == b"data:")
}

/// Why a stream ended early, after its first event was sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MidStreamFailure {
    /// The upstream connection failed or closed with an error.
    Broken(String),
    /// No chunk within the idle limit.
    Idle(Duration),
}

impl MidStreamFailure {
    /// The final SSE event the client receives.
    pub fn event(&self) -> Bytes {
        let (message, kind) = match self {
            MidStreamFailure::Broken(why) => {
                (format!("upstream stream failed: {why}"), "upstream_error")
            }
            MidStreamFailure::Idle(d) => (
                format!(
                    "upstream stream stalled: no data for {:.1} s",
                    d.as_secs_f64()
                ),
                "timeout",
            ),
        };
        let body = crate::error::error_body(&message, kind, Some(kind), None);
        let mut event = Vec::with_capacity(body.len() + 8);
        event.extend_from_slice(b"data: ");
        event.extend_from_slice(&body);
        event.extend_from_slice(b"\n\n");
        Bytes::from(event)
    }
}

/// The upstream side of a stream: chunks or transport errors (already described).
pub type ChunkStream = std::pin::Pin<Box<dyn Stream<Item = Result<Bytes, String>> + Send>>;

struct Relay<F> {
    upstream: ChunkStream,
    framer: SseFramer,
    /// Complete events read before the response head went out, then the
    /// unfinished tail of the latest chunk.
    pending: BytesMut,
    /// Bytes of `pending` that form complete events (only before the first yield).
    ready: usize,
    idle: Duration,
    on_failure: Option<F>,
    done: bool,
}

/// Relays `upstream` to the client. `head` holds what was read before the
/// response started (complete events first, then possibly a partial tail, whose
/// framer state is `framer`); `on_failure` runs once if the stream ends early.
pub fn relay<F>(
    head: BytesMut,
    ready: usize,
    framer: SseFramer,
    upstream: ChunkStream,
    idle: Duration,
    on_failure: F,
) -> impl Stream<Item = Result<Bytes, Infallible>> + Send
where
    F: FnOnce(&MidStreamFailure) + Send + 'static,
{
    let state = Relay {
        upstream,
        framer,
        pending: head,
        ready,
        idle,
        on_failure: Some(on_failure),
        done: false,
    };
    futures_util::stream::unfold(state, |mut r| async move {
        if r.done {
            return None;
        }
        if r.ready > 0 {
            let out = r.pending.split_to(r.ready).freeze();
            r.ready = 0;
            return Some((Ok(out), r));
        }
        let failure = loop {
            match tokio::time::timeout(r.idle, r.upstream.next()).await {
                Ok(Some(Ok(chunk))) => {
                    let Some(n) = r.framer.feed(&chunk) else {
                        r.pending.extend_from_slice(&chunk);
                        continue;
                    };
                    let out = if r.pending.is_empty() {
                        // The common case: whole events in one read, forwarded without a copy.
                        if n == chunk.len() {
                            chunk
                        } else {
                            r.pending.extend_from_slice(&chunk[n..]);
                            chunk.slice(..n)
                        }
                    } else {
                        r.pending.extend_from_slice(&chunk[..n]);
                        let out = r.pending.split().freeze();
                        r.pending.extend_from_slice(&chunk[n..]);
                        out
                    };
                    return Some((Ok(out), r));
                }
                Ok(None) => {
                    // A clean end: whatever the upstream sent last is passed on as is.
                    r.done = true;
                    if r.pending.is_empty() {
                        return None;
                    }
                    let rest = r.pending.split().freeze();
                    return Some((Ok(rest), r));
                }
                Ok(Some(Err(why))) => break MidStreamFailure::Broken(why),
                Err(_) => break MidStreamFailure::Idle(r.idle),
            }
        };
        r.done = true;
        r.pending.clear(); // an unfinished upstream event is dropped, never spliced
        if let Some(f) = r.on_failure.take() {
            f(&failure);
        }
        Some((Ok(failure.event()), r))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn boundaries(chunks: &[&[u8]]) -> Vec<Option<usize>> {
        let mut f = SseFramer::default();
        chunks.iter().map(|c| f.feed(c)).collect()
    }

    #[test]
    fn finds_lf_crlf_and_cr_boundaries() {
        assert_eq!(boundaries(&[b"data: a\n\n"]), [Some(9)]);
        assert_eq!(boundaries(&[b"data: a\r\n\r\n"]), [Some(11)]);
        assert_eq!(boundaries(&[b"data: a\r\rdata: b"]), [Some(9)]);
        assert_eq!(boundaries(&[b"data: a\n\ndata: b\n\ndata: c"]), [Some(18)]);
    }

    #[test]
    fn boundaries_split_across_chunks() {
        assert_eq!(boundaries(&[b"data: a\n", b"\n"]), [None, Some(1)]);
        assert_eq!(boundaries(&[b"data: a\r\n\r", b"\n"]), [Some(10), None]);
        assert_eq!(
            boundaries(&[b"da", b"ta: a", b"\n\n"]),
            [None, None, Some(2)]
        );
        assert_eq!(
            boundaries(&[b": comment\n", b"\ndata: x\n\n"]),
            [None, Some(10)]
        );
    }

    #[test]
    fn data_field_detection() {
        assert!(has_data_field(b": hi\n\ndata: {}\n\n"));
        assert!(!has_data_field(b": keep-alive\n\n"));
    }

    fn stream_of(items: Vec<Result<&'static [u8], &'static str>>) -> ChunkStream {
        Box::pin(futures_util::stream::iter(
            items
                .into_iter()
                .map(|i| i.map(Bytes::from_static).map_err(str::to_owned)),
        ))
    }

    async fn collect(s: impl Stream<Item = Result<Bytes, Infallible>>) -> Vec<Bytes> {
        s.map(|r| match r {
            Ok(b) => b,
            Err(never) => match never {},
        })
        .collect()
        .await
    }

    #[tokio::test]
    async fn relays_events_whole_and_holds_back_partial_tails() {
        let up = stream_of(vec![
            Ok(b"data: 2\n\ndata: 3"),
            Ok(b"x\n\n"),
            Ok(b"data: [DONE]\n\n"),
        ]);
        let out = collect(relay(
            BytesMut::from(&b"data: 1\n\n"[..]),
            9,
            SseFramer::default(),
            up,
            Duration::from_secs(5),
            |_| {},
        ))
        .await;
        assert_eq!(
            out,
            [
                &b"data: 1\n\n"[..],
                b"data: 2\n\n",
                b"data: 3x\n\n",
                b"data: [DONE]\n\n"
            ]
        );
    }

    #[tokio::test]
    async fn failure_mid_event_drops_the_partial_event_and_appends_an_error_event() {
        let up = stream_of(vec![
            Ok(b"data: 2\n\ndata: {\"trunc"),
            Err("connection reset"),
        ]);
        let failed = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = failed.clone();
        let out = collect(relay(
            BytesMut::new(),
            0,
            SseFramer::default(),
            up,
            Duration::from_secs(5),
            move |f| {
                assert!(matches!(f, MidStreamFailure::Broken(_)));
                flag.store(true, std::sync::atomic::Ordering::SeqCst);
            },
        ))
        .await;
        assert_eq!(out.len(), 2);
        assert_eq!(out[0], &b"data: 2\n\n"[..]);
        let text = std::str::from_utf8(&out[1]).unwrap();
        assert!(
            text.starts_with("data: {\"error\":") && text.ends_with("\n\n"),
            "{text}"
        );
        assert!(!text.contains("trunc"));
        assert!(failed.load(std::sync::atomic::Ordering::SeqCst));
    }

    #[tokio::test(start_paused = true)]
    async fn idle_upstream_ends_with_a_timeout_event() {
        let up: ChunkStream = Box::pin(futures_util::stream::pending());
        let out = collect(relay(
            BytesMut::new(),
            0,
            SseFramer::default(),
            up,
            Duration::from_secs(2),
            |_| {},
        ))
        .await;
        assert_eq!(out.len(), 1);
        assert!(
            std::str::from_utf8(&out[0])
                .unwrap()
                .contains("\"type\":\"timeout\"")
        );
    }
}
