//! Builds the HTTP application (routes and one ordered layer stack), starts the
//! background tasks, and serves until shutdown, letting in-flight requests and
//! streams finish within the grace period.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::body::Body;
use axum::extract::Request;
use axum::middleware;
use axum::response::Response;
use axum::routing::future::RouteFuture;
use axum::routing::{get, post};
use futures_util::future::Either;
use http::Method;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tower::Service;

use crate::access::{self, AccessFuture, AccessLayer};
use crate::api::openai::RoutedFuture;
use crate::api::{AppState, admin, auth as api_auth, docs, openai};
use crate::auth::{self, Auth, EnvSource};
use crate::body::{discard_unused_body, reject};
use crate::config::{Config, EnvMap};
use crate::error::{Error, StartupError};
use crate::metrics::Metrics;
use crate::routing::{Dispatcher, Endpoint, models};
use crate::supervisor::Supervisor;
use crate::upstream::UpstreamClient;

/// The first model discovery may delay start-up by at most this long.
const FIRST_DISCOVERY_TIMEOUT: Duration = Duration::from_secs(5);

/// A router ready to serve: configuration loaded, first model discovery done,
/// background tasks running.
pub struct App {
    state: Arc<AppState>,
    supervisor: Supervisor,
}

impl App {
    /// Builds the shared state and runs the first discovery round (bounded).
    /// Key reloads read the process environment over `./.env`.
    pub async fn build(config: Config) -> Result<Self, StartupError> {
        let source: EnvSource = Arc::new(|| {
            let cwd = std::env::current_dir()
                .map_err(|e| format!("cannot read the working directory: {e}"))?;
            EnvMap::from_process_and_dotenv(&cwd)
        });
        Self::build_with_env_source(config, source).await
    }

    /// Like [`App::build`], with key reloads reading `env_source` (tests, `demo`).
    pub async fn build_with_env_source(
        config: Config,
        env_source: EnvSource,
    ) -> Result<Self, StartupError> {
        let client = UpstreamClient::new()?;
        let dispatcher = Dispatcher::new(&config, client, Arc::new(Metrics::new()))?;
        let auth = Arc::new(Auth::new(
            &config.auth,
            config.config_file.clone(),
            env_source,
            dispatcher.shared.clone(),
        ));
        warn_about_auth(&config, &auth);
        let state = Arc::new(AppState {
            config: Arc::new(config),
            dispatcher,
            auth,
            started_at: SystemTime::now(),
            ready: AtomicBool::new(false),
        });
        let _ = tokio::time::timeout(
            FIRST_DISCOVERY_TIMEOUT,
            models::refresh_all(
                &state.dispatcher.client,
                &state.dispatcher.services,
                FIRST_DISCOVERY_TIMEOUT,
            ),
        )
        .await;
        let supervisor = Supervisor::new();
        let refresher = Arc::clone(&state);
        supervisor.spawn("model-discovery", async move {
            let interval = refresher.config.model_refresh_interval;
            loop {
                tokio::time::sleep(interval).await;
                let d = &refresher.dispatcher;
                models::refresh_all(
                    &d.client,
                    &d.services,
                    interval.min(FIRST_DISCOVERY_TIMEOUT * 6),
                )
                .await;
            }
        });
        if let Some(shared) = state.dispatcher.shared.clone() {
            let names = state
                .dispatcher
                .services
                .iter()
                .map(|s| s.name().to_owned())
                .collect();
            let (for_cooldowns, for_totals) = (Arc::clone(&state), Arc::clone(&state));
            let apply = move |i: usize, left: Duration| {
                if let Some(service) = for_cooldowns.dispatcher.services.get(i) {
                    service.cooldown.extend(tokio::time::Instant::now(), left);
                }
            };
            let totals = move || {
                let s = &for_totals.dispatcher.stats;
                [
                    &s.total_requests,
                    &s.total_failovers,
                    &s.total_rate_limit_skips,
                    &s.total_ejection_skips,
                ]
                .map(|c| c.load(Ordering::Relaxed))
            };
            supervisor.spawn("shared-state", shared.run(names, apply, totals));
        }
        if state.config.health.failure_threshold > 0 {
            let prober = Arc::clone(&state);
            supervisor.spawn("health-probes", async move {
                let interval = prober.config.health.probe_interval;
                loop {
                    tokio::time::sleep(interval).await;
                    prober.dispatcher.probe_ejected().await;
                }
            });
        }
        #[cfg(unix)]
        {
            let reloader = Arc::clone(&state);
            supervisor.spawn("sighup-key-reload", async move {
                use tokio::signal::unix::{SignalKind, signal};
                let Ok(mut hangups) = signal(SignalKind::hangup()) else {
                    tracing::warn!(
                        "cannot listen for SIGHUP; keys reload only through POST /auth/reload-keys"
                    );
                    return;
                };
                while hangups.recv().await.is_some() {
                    if let Err(e) = reloader.auth.reload_off_runtime().await {
                        tracing::warn!(error = %e, "SIGHUP key reload refused");
                    }
                }
            });
        }
        state.ready.store(true, Ordering::Relaxed);
        Ok(Self { state, supervisor })
    }

    pub fn state(&self) -> &Arc<AppState> {
        &self.state
    }
}

fn warn_about_auth(config: &Config, auth: &Auth) {
    if config.auth.enabled && !auth.enforced() {
        tracing::warn!(
            "ENABLE_AUTH is true but no client key is configured (AUTH_KEY, AUTH_KEY_01.., AUTH_KEYS_FILE, ADMIN_KEY): \
             client authentication is OFF; set a key, or ENABLE_AUTH=false to silence this warning"
        );
    } else if auth.enforced() && !auth.has_admin() {
        tracing::warn!(
            "ADMIN_KEY is not set: any valid client key may reset statistics, reset metrics and reload keys"
        );
    }
}

/// Binds `host:port` (port 0: any free port).
pub async fn bind(host: &str, port: u16) -> Result<TcpListener, StartupError> {
    let addr = format!("{host}:{port}");
    TcpListener::bind(&addr)
        .await
        .map_err(|source| StartupError::Bind { addr, source })
}

/// Routes and layers. Client endpoints carry the auth layer; `/health` and
/// `/ready` do not.
pub fn router(state: Arc<AppState>) -> Router {
    // Calls that cost money: the handlers check the client key, then its own
    // limit, before routing (`auth::check_client_key`).
    // `Routes` serves their POSTs before this router sees them (same handlers);
    // here they give the route table its paths (a GET on them is a 405).
    let routed = Router::new()
        .route(CHAT_ROUTE, post(openai::chat_completions))
        .route(COMPLETIONS_ROUTE, post(openai::completions))
        .route(EMBEDDINGS_ROUTE, post(openai::embeddings));
    // Mutating endpoints: the admin key only, when one is configured.
    let admin_only = Router::new()
        .route("/router/reset-stats", post(admin::reset_stats))
        .route("/auth/reload-keys", post(api_auth::reload_keys))
        .route("/auth/reset-metrics", post(api_auth::reset_metrics))
        .route_layer(middleware::from_fn_with_state(
            Arc::clone(&state.auth),
            auth::require_admin,
        ));
    // Endpoints that take no body: whatever a client sends is drained first, so
    // its keep-alive connection stays usable.
    // /metrics needs a key unless METRICS_PUBLIC says otherwise.
    let metrics_route = Router::new().route("/metrics", get(admin::metrics));
    let (keyed_metrics, public_metrics) = if state.config.auth.metrics_public {
        (Router::new(), metrics_route)
    } else {
        (metrics_route, Router::new())
    };
    let bodiless = Router::new()
        .merge(admin_only)
        .merge(keyed_metrics)
        .route("/v1/models", get(openai::list_models))
        .route("/v1/models/{*model_id}", get(openai::get_model))
        .route("/", get(admin::root))
        .route("/backend/info", get(admin::backend_info))
        .route("/router/stats", get(admin::router_stats))
        .route("/router/health", get(admin::router_health))
        .route("/router/rate-limits", get(admin::rate_limits))
        .route("/auth/status", get(api_auth::status))
        .route("/auth/metrics", get(api_auth::metrics))
        .route_layer(middleware::from_fn(discard_unused_body))
        // Client keys are checked here and on `routed` (innermost layers run after it).
        .route_layer(middleware::from_fn_with_state(
            Arc::clone(&state.auth),
            auth::require_client_key,
        ));
    let client_routes = Router::new().merge(routed).merge(bodiless);
    let public_routes = Router::new()
        .merge(public_metrics)
        .route("/openapi.json", get(docs::openapi_json))
        .route("/docs", get(docs::swagger_ui))
        .route("/docs/swagger-ui.css", get(docs::swagger_ui_css))
        .route("/docs/swagger-ui-bundle.js", get(docs::swagger_ui_js))
        .route("/redoc", get(docs::redoc))
        .route("/redoc/redoc.standalone.js", get(docs::redoc_js))
        .route("/health", get(admin::health))
        .route("/ready", get(admin::ready))
        .route_layer(middleware::from_fn(discard_unused_body));

    client_routes
        .merge(public_routes)
        .fallback(unknown_route)
        .method_not_allowed_fallback(method_not_allowed)
        // Request id (taken or made, returned, a span around everything below), a
        // panicking handler turned into a 500 with an OpenAI body, then one log line
        // and the request metrics (path without query string: it may carry keys).
        .layer(AccessLayer::new(Arc::clone(&state)))
        .with_state(state)
}

const CHAT_ROUTE: &str = "/v1/chat/completions";
const COMPLETIONS_ROUTE: &str = "/v1/completions";
const EMBEDDINGS_ROUTE: &str = "/v1/embeddings";

/// The HTTP service of a connection. The routed POSTs, nearly every request a
/// router serves, go straight to their handler inside the access layer, as the
/// router would send them; every other request goes through axum's router.
/// axum's routing, its per-route layer and its futures around the handler
/// cost about 3,000 instructions a request (docs/benchmarks.md, Change 12).
#[derive(Clone)]
struct Routes {
    state: Arc<AppState>,
    router: Router,
}

impl Routes {
    /// The endpoint and route label of a routed POST, matched on the exact path
    /// as axum matches it (no trailing slash, no decoding).
    fn routed(request: &http::Request<Incoming>) -> Option<(Endpoint, &'static str)> {
        if request.method() != Method::POST {
            return None;
        }
        match request.uri().path() {
            CHAT_ROUTE => Some((Endpoint::ChatCompletions, CHAT_ROUTE)),
            COMPLETIONS_ROUTE => Some((Endpoint::Completions, COMPLETIONS_ROUTE)),
            EMBEDDINGS_ROUTE => Some((Endpoint::Embeddings, EMBEDDINGS_ROUTE)),
            _ => None,
        }
    }
}

impl hyper::service::Service<http::Request<Incoming>> for Routes {
    type Response = Response;
    type Error = Infallible;
    type Future = Either<AccessFuture<RoutedFuture>, RouteFuture<Infallible>>;

    fn call(&self, request: http::Request<Incoming>) -> Self::Future {
        let routed = Self::routed(&request);
        let request = request.map(Body::new);
        match routed {
            Some((endpoint, route)) => {
                Either::Left(access::wrap(&self.state, route, request, |request| {
                    openai::serve_routed(Arc::clone(&self.state), endpoint, request)
                }))
            }
            // axum's `Router` is always ready: no `poll_ready` is owed before `call`.
            None => Either::Right(self.router.clone().call(request)),
        }
    }
}

async fn unknown_route(request: Request) -> Response {
    let error = Error::UnknownRoute {
        method: request.method().to_string(),
        path: request.uri().path().to_owned(),
    };
    reject(request, error).await
}

async fn method_not_allowed(request: Request) -> Response {
    let error = Error::MethodNotAllowed {
        method: request.method().to_string(),
        path: request.uri().path().to_owned(),
    };
    reject(request, error).await
}

/// How long a client may take to send a request head (slow-header clients are
/// closed instead of holding a connection open forever).
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Serves `app` on `listener` until `shutdown` resolves, then stops accepting and
/// lets in-flight requests (streams included) finish for up to the grace period.
pub async fn run(
    listener: TcpListener,
    app: App,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), StartupError> {
    let App { state, supervisor } = app;
    let grace = state.config.shutdown_grace_period;
    let readiness = Arc::clone(&state);
    let service = Routes {
        router: router(Arc::clone(&state)),
        state,
    };
    // HTTP/1.1 only. The OpenAI SDKs, curl and load balancers speak HTTP/1.1 to a
    // plaintext upstream; detecting HTTP/2 prior knowledge (hyper-util's `auto`)
    // replays the sniffed bytes as a tiny first read, after which hyper's read
    // buffer grows to 16 KiB per connection instead of 8 (measured with heaptrack).
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (tcp, _peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    // Out of file descriptors or a reset during accept: back off, keep serving.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // Small SSE chunks must not wait for Nagle + delayed ACK (~40 ms on Linux).
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "could not set TCP_NODELAY on an accepted socket");
        }
        let conn = builder.serve_connection(TokioIo::new(tcp), service.clone());
        let conn = graceful.watch(conn);
        // Connection tasks are owned by `graceful`, which shutdown waits on below.
        #[allow(clippy::disallowed_methods)]
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
    // Not ready first, so a probe on a kept-alive connection sees 503, then stop accepting.
    readiness.ready.store(false, Ordering::Relaxed);
    drop(listener);
    tracing::info!(
        grace_s = grace.as_secs_f64(),
        "shutting down: no new connections; letting in-flight requests finish"
    );
    tokio::select! {
        () = graceful.shutdown() => tracing::info!("all connections closed"),
        () = tokio::time::sleep(grace) => tracing::warn!("grace period over; closing the remaining connections"),
    }
    supervisor.shutdown().await;
    Ok(())
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}
