//! Shared state in Redis for several replicas (SPEC 8): exact sliding windows
//! across replicas (one atomic server-side script per admission, timed by the
//! Redis server's clock), cool-downs that reach every replica within a second,
//! a replica registry with cluster totals, and a breaker: every call is bounded
//! by `REDIS_TIMEOUT_MS`; after three consecutive failures the replica is
//! degraded, stops calling Redis on the request path, decides limits by
//! `REDIS_FAILURE_MODE`, and probes Redis in the background until it answers.
//!
//! Only limited services touch Redis on the request path; everything else here
//! runs in one background task.

use std::collections::HashMap;
use std::future::Future;
use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use arc_swap::ArcSwap;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{IntoConnectionInfo, Script};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::config::{FailureMode, RateLimit, RedisConfig, Secret};
use crate::error::StartupError;
use crate::metrics::Metrics;
use crate::ratelimit::{Admission, SlidingWindow, WindowState};

/// Consecutive failed calls that make the replica degraded.
const BREAKER_THRESHOLD: u32 = 3;
/// A replica is live while its heartbeat is younger than this.
const REPLICA_TTL_MS: u64 = 5000;
/// Background cadence: cool-down sync every tick, heartbeat every other.
const TICK: Duration = Duration::from_millis(500);

/// Check-and-admit for a batch of `ARGV[4]` admissions made on this replica in
/// one turn of its scheduler: as many as the window has room for are admitted,
/// in order, all at the server's `TIME`; the rest learn when the first slot
/// frees. Returns {admitted, now, µs until a slot frees (0 if all admitted)}.
const ADMIT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local limit = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local asked = tonumber(ARGV[4])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
local n = math.min(asked, limit - redis.call('ZCARD', KEYS[1]))
if n > 0 then
  local args = {}
  for i = 1, n do
    args[2 * i - 1] = now
    args[2 * i] = ARGV[3] .. i
  end
  redis.call('ZADD', KEYS[1], unpack(args))
  redis.call('PEXPIRE', KEYS[1], math.ceil(window / 1000) + 1000)
end
if n == asked then return {n, now, 0} end
if n < 0 then n = 0 end
local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return {n, now, tonumber(oldest[2]) + window - now}
";

const PEEK: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local window = tonumber(ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
local n = redis.call('ZCARD', KEYS[1])
if n == 0 then return {0, 0} end
local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return {n, tonumber(oldest[2]) + window - now}
";

const COOLDOWN: &str = r"
local ms = tonumber(ARGV[1])
if redis.call('PTTL', KEYS[1]) < ms then redis.call('SET', KEYS[1], '1', 'PX', ms) end
return 1
";

const HEARTBEAT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[6])
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('HSET', KEYS[2], 'r', ARGV[2], 'f', ARGV[3], 's', ARGV[4], 'e', ARGV[5])
redis.call('PEXPIRE', KEYS[2], ttl)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - ttl)
local out = {}
for _, id in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  local v = redis.call('HMGET', ARGV[7] .. id, 'r', 'f', 's', 'e')
  table.insert(out, {id, v[1] or '0', v[2] or '0', v[3] or '0', v[4] or '0'})
end
return out
";

/// Totals over the live replicas, as last read from Redis.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClusterView {
    pub replicas: u32,
    pub total_requests: u64,
    pub total_failovers: u64,
    pub total_rate_limit_skips: u64,
    pub total_ejection_skips: u64,
}

/// This replica's own totals, reported in its heartbeat.
pub type Totals = [u64; 4];

/// The Redis side of shared state.
pub struct RedisBackend {
    config: RedisConfig,
    /// For one-off connections (`reachable`), which report why they failed.
    client: redis::Client,
    conn: ConnectionManager,
    admit: Script,
    peek: Script,
    cooldown: Script,
    heartbeat: Script,
    replica_id: String,
    /// Numbers this replica's admission batches, for unique window members.
    batches: AtomicU64,
    consecutive_failures: AtomicU32,
    degraded: AtomicBool,
    /// Live replicas last seen (1 until Redis was reached), for `local` mode.
    live_replicas: AtomicU32,
    cluster: ArcSwap<ClusterView>,
    metrics: Arc<Metrics>,
    cooldown_tx: mpsc::UnboundedSender<(String, Duration)>,
    cooldown_rx: std::sync::Mutex<Option<mpsc::UnboundedReceiver<(String, Duration)>>>,
}

impl RedisBackend {
    /// Connects lazily: a Redis that is down at start-up does not stop the router.
    pub fn new(config: RedisConfig, metrics: Arc<Metrics>) -> Result<Self, StartupError> {
        let url_error = |e: redis::RedisError| {
            StartupError::Client(format!("REDIS_URL ({}): {e}", config.display_url()))
        };
        let info = config
            .url
            .expose()
            .into_connection_info()
            .map_err(url_error)?;
        let client = match &config.ca {
            // The bundle replaces the public web roots for this connection only.
            Some(ca) => redis::Client::build_with_tls(
                info,
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(ca.pem.clone()),
                },
            )
            .map_err(|e| {
                StartupError::Client(format!("REDIS_CA_FILE ({}): {e}", ca.path.display()))
            })?,
            None => redis::Client::open(info).map_err(url_error)?,
        };
        // No response timeout in the client: every call is bounded by `call` (or by
        // the probe's own timeout), and a second timer per call would cost a
        // timer-wheel entry and a wake-up of the I/O driver on each admission.
        let manager_config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(1).max(config.timeout)))
            .set_response_timeout(None)
            .set_max_delay(Duration::from_secs(1));
        let conn = ConnectionManager::new_lazy_with_config(client.clone(), manager_config)
            .map_err(url_error)?;
        // Random per process (std's randomly keyed hasher), plus a counter so that
        // several routers in one process (tests) are distinct replicas too.
        static INSTANCES: AtomicU64 = AtomicU64::new(0);
        let instance = INSTANCES.fetch_add(1, Relaxed);
        let replica_id = format!(
            "{:016x}-{instance}",
            RandomState::new().hash_one(std::process::id())
        );
        let (cooldown_tx, cooldown_rx) = mpsc::unbounded_channel();
        metrics.state_backend_up.set(1);
        Ok(Self {
            config,
            client,
            conn,
            admit: Script::new(ADMIT),
            peek: Script::new(PEEK),
            cooldown: Script::new(COOLDOWN),
            heartbeat: Script::new(HEARTBEAT),
            replica_id,
            batches: AtomicU64::new(0),
            consecutive_failures: AtomicU32::new(0),
            degraded: AtomicBool::new(false),
            live_replicas: AtomicU32::new(1),
            cluster: ArcSwap::from_pointee(ClusterView {
                replicas: 1,
                ..ClusterView::default()
            }),
            metrics,
            cooldown_tx,
            cooldown_rx: std::sync::Mutex::new(Some(cooldown_rx)),
        })
    }

    pub fn config(&self) -> &RedisConfig {
        &self.config
    }

    pub fn is_degraded(&self) -> bool {
        self.degraded.load(Relaxed)
    }

    pub fn cluster(&self) -> ClusterView {
        **self.cluster.load()
    }

    /// `{prefix:service}:window`: one hash tag per service (Redis Cluster safe).
    pub fn window_key(&self, service: &str) -> String {
        format!("{{{}:{service}}}:window", self.config.key_prefix)
    }

    /// `{prefix:client-key:DIGEST}:key-window`: a client key's window, named by the
    /// first 128 bits of SHA-256 over the prefix and the key, so Redis (and whoever
    /// reads it) never holds a key. The suffix differs from a service's, so no
    /// service name can collide with it.
    pub fn client_key_window_key(&self, key: &Secret) -> String {
        let prefix = &self.config.key_prefix;
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        ctx.update(prefix.as_bytes());
        ctx.update(b"\0");
        ctx.update(key.expose().as_bytes());
        let digest = ctx.finish();
        let hex: String = digest.as_ref()[..16]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        format!("{{{prefix}:client-key:{hex}}}:key-window")
    }

    fn cooldown_key(&self, service: &str) -> String {
        format!("{{{}:{service}}}:cooldown", self.config.key_prefix)
    }

    /// Runs one Redis call within the timeout, feeding the breaker.
    async fn call<T>(&self, fut: impl Future<Output = redis::RedisResult<T>>) -> Option<T> {
        match tokio::time::timeout(self.config.timeout, fut).await {
            Ok(Ok(v)) => {
                if self.consecutive_failures.load(Relaxed) != 0 {
                    self.consecutive_failures.store(0, Relaxed);
                }
                Some(v)
            }
            Ok(Err(e)) => {
                self.failed(&e.to_string());
                None
            }
            Err(_) => {
                self.failed(&format!(
                    "no answer within {} ms",
                    self.config.timeout.as_millis()
                ));
                None
            }
        }
    }

    fn failed(&self, why: &str) {
        let n = self.consecutive_failures.fetch_add(1, Relaxed) + 1;
        if n >= BREAKER_THRESHOLD && !self.degraded.swap(true, Relaxed) {
            self.metrics.state_backend_up.set(0);
            tracing::warn!(
                redis = %self.config.display_url(),
                reason = %self.config.scrub(why),
                mode = self.config.failure_mode.as_str(),
                "Redis unreachable: shared limits are decided by REDIS_FAILURE_MODE until it answers again"
            );
        }
    }

    /// Check-and-admit for `count` admissions on the shared window, in one
    /// script; `None` when Redis could not decide.
    async fn admit_batch(
        &self,
        key: &str,
        limit: u32,
        window: Duration,
        count: usize,
    ) -> Option<BatchDecision> {
        if self.is_degraded() {
            return None;
        }
        // Unique members: this replica, this batch, then the script's 1..=n.
        let members = format!(
            "{}-{}:",
            self.replica_id,
            self.batches.fetch_add(1, Relaxed)
        );
        let mut conn = self.conn.clone();
        let mut invocation = self.admit.key(key);
        invocation
            .arg(limit)
            .arg(micros(window))
            .arg(members)
            .arg(count);
        let (admitted, at, retry_us): (i64, i64, i64) =
            self.call(invocation.invoke_async(&mut conn)).await?;
        Some(BatchDecision {
            admitted: usize::try_from(admitted).unwrap_or(0),
            at: u64::try_from(at).unwrap_or(0),
            retry_after: Duration::from_micros(u64::try_from(retry_us).unwrap_or(0)),
        })
    }

    async fn peek_shared(&self, key: &str, window: Duration) -> Option<(u32, Duration)> {
        if self.is_degraded() {
            return None;
        }
        let mut conn = self.conn.clone();
        let mut invocation = self.peek.key(key);
        invocation.arg(micros(window));
        let (n, reset_us): (i64, i64) = self.call(invocation.invoke_async(&mut conn)).await?;
        Some((
            u32::try_from(n).unwrap_or(u32::MAX),
            Duration::from_micros(u64::try_from(reset_us).unwrap_or(0)),
        ))
    }

    /// Shares a cool-down learned from an upstream 429 (written in the background).
    pub fn share_cooldown(&self, service: &str, for_: Duration) {
        let _ = self.cooldown_tx.send((service.to_owned(), for_));
    }

    /// The background loop: cool-downs out and in, heartbeat and cluster
    /// totals, and probing while degraded. `services` are the service names,
    /// `apply` extends a local cool-down, `totals` reads this replica's counters.
    pub async fn run(
        self: Arc<Self>,
        services: Vec<String>,
        apply: impl Fn(usize, Duration) + Send,
        totals: impl Fn() -> Totals + Send,
    ) {
        let Some(mut outgoing) = self.cooldown_rx.lock().ok().and_then(|mut rx| rx.take()) else {
            return;
        };
        let keys: Vec<String> = services.iter().map(|s| self.cooldown_key(s)).collect();
        let mut ticker = tokio::time::interval(TICK);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut tick: u64 = 0;
        loop {
            tokio::select! {
                Some((service, for_)) = outgoing.recv() => {
                    if !self.is_degraded() {
                        let mut conn = self.conn.clone();
                        let mut invocation = self.cooldown.key(self.cooldown_key(&service));
                        invocation.arg(u64::try_from(for_.as_millis()).unwrap_or(u64::MAX).max(1));
                        let _: Option<i64> = self.call(invocation.invoke_async(&mut conn)).await;
                    }
                }
                _ = ticker.tick() => {
                    tick += 1;
                    if self.is_degraded() {
                        if tick.is_multiple_of(2) {
                            self.probe().await;
                        }
                        continue;
                    }
                    self.sync_cooldowns(&keys, &apply).await;
                    // Every second, starting at once, so a new replica is counted quickly.
                    if tick % 2 == 1 {
                        self.beat(totals()).await;
                    }
                }
            }
        }
    }

    /// Recovery: a first `PING` may take a reconnect (up to a second); the replica
    /// leaves the degraded state only when a second one answers within
    /// `REDIS_TIMEOUT_MS`, as requests' calls must, so that a Redis that answers
    /// but too slowly does not flap between degraded and not.
    async fn probe(&self) {
        let mut conn = self.conn.clone();
        let ping = redis::cmd("PING");
        let reconnect = ping.query_async::<String>(&mut conn);
        let reconnect_wait = Duration::from_secs(1).max(self.config.timeout);
        if !matches!(
            tokio::time::timeout(reconnect_wait, reconnect).await,
            Ok(Ok(_))
        ) {
            return;
        }
        let answer = ping.query_async::<String>(&mut conn);
        if let Ok(Ok(_)) = tokio::time::timeout(self.config.timeout, answer).await {
            self.consecutive_failures.store(0, Relaxed);
            self.degraded.store(false, Relaxed);
            self.metrics.state_backend_up.set(1);
            tracing::info!(redis = %self.config.display_url(), "Redis answers again: shared limits resumed");
        }
    }

    async fn sync_cooldowns(&self, keys: &[String], apply: &impl Fn(usize, Duration)) {
        if keys.is_empty() {
            return;
        }
        let mut pipe = redis::pipe();
        for k in keys {
            pipe.cmd("PTTL").arg(k);
        }
        let mut conn = self.conn.clone();
        if let Some(ttls) = self.call(pipe.query_async::<Vec<i64>>(&mut conn)).await {
            for (i, ttl) in ttls.into_iter().enumerate() {
                if ttl > 0 {
                    apply(i, Duration::from_millis(u64::try_from(ttl).unwrap_or(0)));
                }
            }
        }
    }

    async fn beat(&self, totals: Totals) {
        let prefix = &self.config.key_prefix;
        let registry = format!("{{{prefix}}}:replicas");
        let hash_prefix = format!("{{{prefix}}}:replica:");
        let mut conn = self.conn.clone();
        let mut invocation = self.heartbeat.key(&registry);
        invocation
            .key(format!("{hash_prefix}{}", self.replica_id))
            .arg(&self.replica_id);
        for t in totals {
            invocation.arg(t);
        }
        invocation.arg(REPLICA_TTL_MS).arg(&hash_prefix);
        let Some(rows) = self
            .call(invocation.invoke_async::<Vec<(String, u64, u64, u64, u64)>>(&mut conn))
            .await
        else {
            return;
        };
        let mut view = ClusterView::default();
        let mut seen = HashMap::new();
        for (id, r, f, s, e) in rows {
            if seen.insert(id, ()).is_none() {
                view.replicas += 1;
                view.total_requests += r;
                view.total_failovers += f;
                view.total_rate_limit_skips += s;
                view.total_ejection_skips += e;
            }
        }
        view.replicas = view.replicas.max(1);
        self.live_replicas.store(view.replicas, Relaxed);
        self.cluster.store(Arc::new(view));
    }

    /// Whether Redis answers a PING within `wait` (for `llm-router check`).
    pub async fn reachable(&self, wait: Duration) -> Result<(), String> {
        // A connection of its own, not the managed one: that one retries a failed
        // connect in the background, so a refused password or certificate would
        // only show as a timeout here. Without the client's own connect and reply
        // timeouts (1 s, 500 ms): `wait` is the bound.
        let unbounded = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(None)
            .set_response_timeout(None);
        let ping = async {
            let mut conn = self
                .client
                .get_multiplexed_async_connection_with_config(&unbounded)
                .await?;
            redis::cmd("PING").query_async::<String>(&mut conn).await
        };
        match tokio::time::timeout(wait, ping).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(self.config.scrub(&e.to_string())),
            Err(_) => Err(format!("no answer within {} ms", wait.as_millis())),
        }
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1)
}

/// What one admission script decided for a batch.
#[derive(Debug, Clone, Copy)]
struct BatchDecision {
    /// The first `admitted` callers of the batch are admitted...
    admitted: usize,
    /// ...at this Redis server time (µs)...
    at: u64,
    /// ...and the others may retry when the first slot frees.
    retry_after: Duration,
}

/// A caller's answer: the decision and, when admitted, the server time (µs).
type Decision = Option<(Admission, u64)>;

/// Largest batch in one script call (`unpack` in Redis's Lua takes < 8000 values).
const MAX_BATCH: usize = 1000;

/// A service's limiter on the shared backend, with the in-memory window used
/// while Redis cannot decide (`local` mode: ⌈N / R⌉ per replica).
pub struct SharedWindow {
    queue: Arc<AdmitQueue>,
    local: SlidingWindow,
}

/// Admissions waiting for their batch. The first caller of a batch spawns its
/// flush; that task runs after the tasks already runnable, so the admissions
/// they make join the same script call. A lone request is not delayed, and
/// under load one Redis round trip decides many requests.
struct AdmitQueue {
    backend: Arc<RedisBackend>,
    key: String,
    limit: u32,
    window: Duration,
    waiting: std::sync::Mutex<Vec<oneshot::Sender<Decision>>>,
}

impl AdmitQueue {
    fn waiting(&self) -> std::sync::MutexGuard<'_, Vec<oneshot::Sender<Decision>>> {
        // Pushes and takes cannot panic halfway: a poisoned queue is still whole.
        self.waiting
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    async fn admit(self: &Arc<Self>) -> Decision {
        if self.backend.is_degraded() {
            return None;
        }
        let (tx, rx) = oneshot::channel();
        let first = {
            let mut waiting = self.waiting();
            waiting.push(tx);
            waiting.len() == 1
        };
        if first {
            let unflushed = Unflushed(Some(Arc::clone(self)));
            // Request-path work, not background work: the requests waiting on it
            // are themselves drained by shutdown, and it ends within the timeout.
            #[allow(clippy::disallowed_methods)]
            tokio::spawn(async move {
                if let Some(queue) = unflushed.defuse() {
                    queue.flush().await;
                }
            });
        }
        // A flush answers, or drops the sender: then Redis did not decide.
        rx.await.ok().flatten()
    }

    async fn flush(self: Arc<Self>) {
        let mut batch = std::mem::take(&mut *self.waiting());
        // Callers gone before the call (clients that disconnected) take no slot.
        batch.retain(|tx| !tx.is_closed());
        if batch.len() <= MAX_BATCH {
            return self.decide(batch).await;
        }
        let mut chunks = Vec::new();
        while batch.len() > MAX_BATCH {
            let rest = batch.split_off(MAX_BATCH);
            chunks.push(std::mem::replace(&mut batch, rest));
        }
        chunks.push(batch);
        futures_util::future::join_all(chunks.into_iter().map(|chunk| self.decide(chunk))).await;
    }

    /// One script call for `batch`, in arrival order.
    async fn decide(&self, batch: Vec<oneshot::Sender<Decision>>) {
        if batch.is_empty() {
            return;
        }
        let decision = self
            .backend
            .admit_batch(&self.key, self.limit, self.window, batch.len())
            .await;
        for (i, tx) in batch.into_iter().enumerate() {
            let answer = decision.map(|d| {
                if i < d.admitted {
                    (Admission::Admitted, d.at)
                } else {
                    (
                        Admission::Full {
                            retry_after: d.retry_after,
                        },
                        0,
                    )
                }
            });
            // The caller may have gone (client disconnected): nothing to tell.
            let _ = tx.send(answer);
        }
    }
}

/// A spawned flush that has not taken its queue yet. Dropped unrun (a runtime
/// shutting down drops the tasks it never polled), it empties the queue: its
/// callers learn that Redis did not decide, and the next one spawns a new flush
/// instead of queueing behind a flush that will never come.
struct Unflushed(Option<Arc<AdmitQueue>>);

impl Unflushed {
    fn defuse(mut self) -> Option<Arc<AdmitQueue>> {
        self.0.take()
    }
}

impl Drop for Unflushed {
    fn drop(&mut self) {
        if let Some(queue) = self.0.take() {
            let callers = std::mem::take(&mut *queue.waiting());
            drop(callers); // outside the lock
        }
    }
}

impl std::fmt::Debug for SharedWindow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedWindow")
            .field("key", &self.queue.key)
            .field("limit", &self.queue.limit)
            .finish()
    }
}

impl SharedWindow {
    /// The window stored under `key` (see [`RedisBackend::window_key`] and
    /// [`RedisBackend::client_key_window_key`]).
    pub fn new(backend: Arc<RedisBackend>, key: String, limit: RateLimit) -> Self {
        let (limit, window) = (limit.requests.get(), limit.window);
        Self {
            queue: Arc::new(AdmitQueue {
                backend,
                key,
                limit,
                window,
                waiting: std::sync::Mutex::new(Vec::new()),
            }),
            local: SlidingWindow::new(limit, window),
        }
    }

    fn backend(&self) -> &RedisBackend {
        &self.queue.backend
    }

    fn local_limit(&self) -> u32 {
        let replicas = self.backend().live_replicas.load(Relaxed).max(1);
        self.queue.limit.div_ceil(replicas)
    }

    /// The shared decision alone, with the Redis server's time of an admission
    /// (µs; tests check the invariant on it); `None` when Redis could not decide.
    pub async fn admit_shared(&self) -> Option<(Admission, u64)> {
        self.queue.admit().await
    }

    pub async fn admit(&self, now: Instant) -> Admission {
        if let Some((decision, _)) = self.admit_shared().await {
            return decision;
        }
        self.backend().metrics.state_fallbacks.inc();
        match self.backend().config.failure_mode {
            FailureMode::Local => self.local.try_admit_within(now, self.local_limit()),
            FailureMode::Open => Admission::Admitted,
            FailureMode::Closed => Admission::Full {
                retry_after: Duration::from_secs(1),
            },
        }
    }

    pub async fn state(&self, now: Instant) -> WindowState {
        match self
            .backend()
            .peek_shared(&self.queue.key, self.queue.window)
            .await
        {
            Some((current, reset_in)) => WindowState {
                limit: self.queue.limit,
                window: self.queue.window,
                current,
                reset_in,
            },
            None => {
                let mut local = self.local.state(now);
                local.limit = match self.backend().config.failure_mode {
                    FailureMode::Local => self.local_limit(),
                    FailureMode::Open | FailureMode::Closed => self.queue.limit,
                };
                local
            }
        }
    }
}
