//! The access layer, outermost: the request id and the request's span, a guard
//! that turns a panicking handler into a 500, then one log line and one set of
//! metric updates per request, written after the response head from what the
//! handlers left in the response extensions (service, model, attempts, error
//! label).
//!
//! It is a hand-written tower [`Layer`] with a future of its own, not an axum
//! `from_fn` layer plus tower-http's `CatchPanicLayer`: those cost, per request,
//! a clone of the inner service, a boxed future and two boxings of the response
//! body (docs/benchmarks.md, profile).

use std::any::Any;
use std::convert::Infallible;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::{Arc, LazyLock};
use std::task::{Context, Poll};
use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, Method, Uri};
use prometheus_client::metrics::gauge::Gauge;
use tower::{Layer, Service};
use tracing::Span;

use crate::api::AppState;
use crate::api::openai::RouteInfo;
use crate::error::{Error, ErrorLabel};
use crate::metrics::{Label, ReasonLabels, RequestLabels, RouteServiceLabels, status_class};
use crate::request_id;

static NONE: LazyLock<Label> = LazyLock::new(|| Label::from("none"));
static OTHER: LazyLock<Label> = LazyLock::new(|| Label::from("other"));

/// Every route the router serves (the OpenAPI test checks the document covers
/// them). Route labels come from this table, so a scan of random paths cannot
/// grow the label set.
pub const ROUTES: &[&str] = &[
    "/v1/chat/completions",
    "/v1/completions",
    "/v1/embeddings",
    "/v1/models",
    "/v1/models/{*model_id}",
    "/",
    "/health",
    "/ready",
    "/metrics",
    "/backend/info",
    "/router/stats",
    "/router/health",
    "/router/rate-limits",
    "/router/reset-stats",
    "/auth/status",
    "/auth/metrics",
    "/auth/reload-keys",
    "/auth/reset-metrics",
    "/openapi.json",
    "/docs",
    "/docs/swagger-ui.css",
    "/docs/swagger-ui-bundle.js",
    "/redoc",
    "/redoc/redoc.standalone.js",
];

fn route_label(matched: Option<&MatchedPath>) -> &'static str {
    matched
        .and_then(|m| ROUTES.iter().find(|r| **r == m.as_str()).copied())
        .unwrap_or("unmatched")
}

/// Decrements the in-flight gauge however the request ends (even by panic, or
/// by the client going away mid-request).
struct InFlight(Gauge);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Wraps every route (axum applies a `Router` layer per route and to the
/// fallbacks, so the matched path is known here).
#[derive(Clone)]
pub struct AccessLayer {
    state: Arc<AppState>,
}

impl AccessLayer {
    pub fn new(state: Arc<AppState>) -> Self {
        Self { state }
    }
}

impl<S> Layer<S> for AccessLayer {
    type Service = Access<S>;

    fn layer(&self, inner: S) -> Access<S> {
        Access {
            inner,
            state: Arc::clone(&self.state),
        }
    }
}

#[derive(Clone)]
pub struct Access<S> {
    inner: S,
    state: Arc<AppState>,
}

impl<S> Service<Request> for Access<S>
where
    S: Service<Request, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = AccessFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let route = route_label(request.extensions().get::<MatchedPath>());
        let inner = &mut self.inner;
        wrap(&self.state, route, request, |request| inner.call(request))
    }
}

/// The access layer around one call of a handler (`call`), for a request whose
/// route label is known: what [`Access`] does inside axum's router, and what the
/// routed POSTs get without it (server.rs, `Routes`).
pub fn wrap<F>(
    state: &Arc<AppState>,
    route: &'static str,
    mut request: Request,
    call: impl FnOnce(Request) -> F,
) -> AccessFuture<F> {
    let started = Instant::now();
    let id = request_id::assign(&mut request);
    let span = tracing::info_span!("request", request_id = id.to_str().unwrap_or("-"));
    let metrics = &state.dispatcher.metrics;
    metrics.in_flight.inc();
    let record = Record {
        state: Arc::clone(state),
        started,
        id,
        _in_flight: InFlight(metrics.in_flight.clone()),
        method: request.method().clone(),
        // A cheap clone (shared bytes); only its path is logged: a query string may carry a key.
        uri: request.uri().clone(),
        route,
    };
    let (inner, panicked) =
        span.in_scope(|| match catch_unwind(AssertUnwindSafe(|| call(request))) {
            Ok(future) => (Some(future), None),
            Err(panic) => (None, Some(panic_response(panic))),
        });
    AccessFuture {
        inner,
        panicked,
        span,
        record: Some(record),
    }
}

/// What the log line and the metrics need, taken when the request starts.
struct Record {
    state: Arc<AppState>,
    started: Instant,
    id: HeaderValue,
    _in_flight: InFlight,
    method: Method,
    uri: Uri,
    route: &'static str,
}

pin_project_lite::pin_project! {
    /// Polls the handler inside the request's span, catching a panic, then
    /// logs and counts the response. The handler's future is dropped inside the
    /// span too (a client that goes away mid-request drops it unfinished).
    pub struct AccessFuture<F> {
        #[pin]
        inner: Option<F>,
        panicked: Option<Response>,
        span: Span,
        record: Option<Record>,
    }

    impl<F> PinnedDrop for AccessFuture<F> {
        fn drop(this: Pin<&mut Self>) {
            let mut this = this.project();
            let _entered = this.span.enter();
            this.inner.set(None);
        }
    }
}

impl<F> Future for AccessFuture<F>
where
    F: Future<Output = Result<Response, Infallible>>,
{
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let _entered = this.span.enter();
        let response = match this.inner.as_mut().as_pin_mut() {
            // Finished or panicked, the handler's future is never polled again
            // and is dropped here, inside the span.
            Some(inner) => match catch_unwind(AssertUnwindSafe(|| inner.poll(cx))) {
                Ok(Poll::Pending) => return Poll::Pending,
                Ok(Poll::Ready(Ok(response))) => {
                    this.inner.set(None);
                    response
                }
                Err(panic) => {
                    this.inner.set(None);
                    panic_response(panic)
                }
            },
            None => this.panicked.take().unwrap_or_else(|| {
                Error::Internal("polled after completion".to_owned()).into_response()
            }),
        };
        Poll::Ready(Ok(match this.record.take() {
            Some(record) => record.finish(response),
            None => response,
        }))
    }
}

/// A panicking handler becomes a 500 with an OpenAI body; the process keeps
/// serving, and the panic message goes to the log only.
fn panic_response(panic: Box<dyn Any + Send + 'static>) -> Response {
    let detail = panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or("(no message)");
    tracing::error!(panic = detail, "request handler panicked");
    Error::Internal(detail.to_owned()).into_response()
}

impl Record {
    /// Logs and counts the response, and returns it with its request id.
    fn finish(self, mut response: Response) -> Response {
        let metrics = &self.state.dispatcher.metrics;
        let elapsed = self.started.elapsed();
        let status = response.status().as_u16();
        let info = response.extensions().get::<RouteInfo>();
        let service = info
            .and_then(|i| i.service.clone())
            .unwrap_or_else(|| NONE.clone());
        let model = match info {
            Some(i) => i.model.clone().unwrap_or_else(|| OTHER.clone()),
            None => NONE.clone(),
        };
        let error = response.extensions().get::<ErrorLabel>().map(|e| e.0);
        if let Some(reason) = error.filter(|e| ErrorLabel::is_auth(e)) {
            metrics
                .auth_failures
                .get_or_create(&ReasonLabels { reason })
                .inc();
        }
        tracing::info!(
            method = %self.method,
            path = self.uri.path(),
            status,
            service = &*service,
            model = &*model,
            attempts = info.map_or(0, |i| i.attempts),
            latency_ms = elapsed.as_secs_f64() * 1000.0,
            error = error.unwrap_or("-"),
            "request"
        );
        let route = self.route;
        metrics
            .request_duration
            .get_or_create(&RouteServiceLabels {
                route,
                service: Arc::clone(&service),
            })
            .observe(elapsed);
        metrics
            .requests
            .get_or_create(&RequestLabels {
                route,
                service,
                model,
                status_class: status_class(status),
            })
            .inc();
        response.headers_mut().insert(request_id::HEADER, self.id);
        response
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use axum::Router;
    use axum::body::Body;
    use tower::ServiceExt;

    use super::*;
    use crate::config::{self, EnvMap, Overrides};

    async fn state() -> Arc<AppState> {
        let env = EnvMap::from_pairs([
            (
                "ROUTER_SERVICES",
                r#"[{"name":"a","backend_type":"custom","base_url":"http://127.0.0.1:9/v1"}]"#,
            ),
            ("ENABLE_AUTH", "false"),
        ]);
        let config = config::load(&Overrides::default(), &env).unwrap();
        let source: crate::auth::EnvSource = Arc::new(|| Ok(EnvMap::from_pairs::<&str, &str>([])));
        let app = crate::App::build_with_env_source(config, source)
            .await
            .unwrap();
        Arc::clone(app.state())
    }

    async fn boom() -> &'static str {
        panic!("handler exploded with secret detail")
    }

    /// A service whose `call` itself panics, before any future exists.
    #[derive(Clone)]
    struct PanicsOnCall;

    impl Service<Request> for PanicsOnCall {
        type Response = Response;
        type Error = Infallible;
        type Future = std::future::Ready<Result<Response, Infallible>>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, _: Request) -> Self::Future {
            panic!("call exploded with secret detail")
        }
    }

    /// Captures this thread's log lines (a `tokio::test` runs on one thread).
    fn capture_logs() -> (Arc<Mutex<Vec<u8>>>, tracing::subscriber::DefaultGuard) {
        #[derive(Clone)]
        struct Sink(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Sink {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(buf);
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let sink = Sink(Arc::new(Mutex::new(Vec::new())));
        let bytes = Arc::clone(&sink.0);
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_writer(move || sink.clone())
            .finish();
        (bytes, tracing::subscriber::set_default(subscriber))
    }

    fn logged(bytes: &Mutex<Vec<u8>>) -> String {
        String::from_utf8_lossy(&bytes.lock().unwrap()).into_owned()
    }

    /// A line with `message` was logged inside the span of request `id`.
    fn assert_logged_in_span(bytes: &Mutex<Vec<u8>>, message: &str, id: &str) {
        let out = logged(bytes);
        let line = out
            .lines()
            .find(|l| l.contains(message))
            .unwrap_or_else(|| panic!("no line with {message:?} in {out}"));
        assert!(line.contains(id), "outside the request's span: {line}");
    }

    fn get(path: &str, id: &str) -> Request {
        Request::get(path)
            .header("x-request-id", id)
            .body(Body::empty())
            .unwrap()
    }

    async fn assert_internal_error(response: Response, id: &str) {
        assert_eq!(response.status(), http::StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(response.headers()[&request_id::HEADER], id);
        let body = axum::body::to_bytes(response.into_body(), 4096)
            .await
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["error"]["type"], "internal_error");
        assert!(!String::from_utf8_lossy(&body).contains("secret detail"));
    }

    #[tokio::test]
    async fn a_panicking_handler_becomes_an_openai_500_logged_in_its_span_and_the_service_keeps_serving()
     {
        let state = state().await;
        let (logs, _guard) = capture_logs();
        let served = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&served);
        let app = Router::new()
            .route("/boom", axum::routing::get(boom))
            .route(
                "/fine",
                axum::routing::get(move || async move {
                    counter.fetch_add(1, Ordering::Relaxed);
                    "ok"
                }),
            )
            .layer(AccessLayer::new(Arc::clone(&state)));
        let response = app.clone().oneshot(get("/boom", "req-poll")).await.unwrap();
        assert_internal_error(response, "req-poll").await;
        let out = logged(&logs);
        assert!(out.contains("request handler panicked"), "{out}");
        for line in out.lines() {
            assert!(
                line.contains("req-poll"),
                "a line outside the request's span: {line}"
            );
        }
        assert_eq!(state.dispatcher.metrics.in_flight.get(), 0);
        let again = app.oneshot(get("/fine", "req-fine")).await.unwrap();
        assert_eq!(again.status(), http::StatusCode::OK);
        assert_eq!(again.headers()[&request_id::HEADER], "req-fine");
        assert_eq!(served.load(Ordering::Relaxed), 1);
    }

    #[tokio::test]
    async fn a_panic_in_the_inner_services_call_becomes_an_openai_500_logged_in_its_span() {
        let state = state().await;
        let (logs, _guard) = capture_logs();
        // Straight on the layer: under a `Router`, axum's `Route::call` defers the
        // inner call into its future, so the panic would happen in `poll`.
        let service = AccessLayer::new(Arc::clone(&state)).layer(PanicsOnCall);
        let response = service.oneshot(get("/x", "req-call")).await.unwrap();
        assert_internal_error(response, "req-call").await;
        assert_logged_in_span(&logs, "request handler panicked", "req-call");
        assert_eq!(state.dispatcher.metrics.in_flight.get(), 0);
    }

    /// Logs when dropped, as a handler's guard might.
    struct LogsOnDrop;

    impl Drop for LogsOnDrop {
        fn drop(&mut self) {
            tracing::warn!("handler dropped");
        }
    }

    #[tokio::test]
    async fn a_request_dropped_midway_is_uncounted_in_flight_and_dropped_inside_its_span() {
        let state = state().await;
        let (logs, _guard) = capture_logs();
        let app = Router::new()
            .route(
                "/hang",
                axum::routing::get(|| async {
                    let _guard = LogsOnDrop;
                    std::future::pending::<()>().await;
                    "never"
                }),
            )
            .layer(AccessLayer::new(Arc::clone(&state)));
        let gone = tokio::time::timeout(
            std::time::Duration::from_millis(50),
            app.oneshot(get("/hang", "req-gone")),
        )
        .await;
        assert!(gone.is_err(), "the handler never answers");
        assert_eq!(state.dispatcher.metrics.in_flight.get(), 0);
        assert_logged_in_span(&logs, "handler dropped", "req-gone");
    }

    /// Answers at once, counting how often its future is polled.
    #[derive(Clone)]
    struct CountsPolls(Arc<AtomicUsize>);

    impl Service<Request> for CountsPolls {
        type Response = Response;
        type Error = Infallible;
        type Future = std::future::PollFn<
            Box<dyn FnMut(&mut Context<'_>) -> Poll<Result<Response, Infallible>> + Send>,
        >;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, _: Request) -> Self::Future {
            let polls = Arc::clone(&self.0);
            std::future::poll_fn(Box::new(move |_| {
                polls.fetch_add(1, Ordering::Relaxed);
                Poll::Ready(Ok(Response::new(Body::empty())))
            }))
        }
    }

    #[tokio::test]
    async fn a_finished_handler_is_not_polled_again() {
        let state = state().await;
        let polls = Arc::new(AtomicUsize::new(0));
        let mut service =
            AccessLayer::new(Arc::clone(&state)).layer(CountsPolls(Arc::clone(&polls)));
        let mut future = std::pin::pin!(service.call(get("/x", "req-twice")));
        let mut cx = Context::from_waker(std::task::Waker::noop());
        assert!(future.as_mut().poll(&mut cx).is_ready());
        let _ = future.as_mut().poll(&mut cx);
        assert_eq!(polls.load(Ordering::Relaxed), 1);
    }
}
