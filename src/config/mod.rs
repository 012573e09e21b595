//! Configuration: every source (flags, environment, `.env`, TOML file, defaults)
//! turned into validated, typed values in one [`load`] that reports every problem
//! at once, each naming the variable or file field at fault.
//!
//! Nothing outside this module reads a raw environment string.

mod auth;
pub mod env;
mod file;
mod routing;
mod secret;
mod state;

use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::time::Duration;

use url::Url;

pub use auth::AuthConfig;
pub use env::{Env, EnvMap};
pub use routing::{Balancing, HealthConfig};
pub use secret::{Secret, mask};
pub use state::{FailureMode, RedisConfig, mask_url};

use file::{FileConfig, SERVICE_FIELDS, WireService};

/// The upstream flavours the Python router knew. They differ only in defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendType {
    OpenAi,
    Cerebras,
    DeepInfra,
    Ollama,
    Custom,
}

impl BackendType {
    pub const ALL: [BackendType; 5] = [
        BackendType::OpenAi,
        BackendType::Cerebras,
        BackendType::DeepInfra,
        BackendType::Ollama,
        BackendType::Custom,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            BackendType::OpenAi => "openai",
            BackendType::Cerebras => "cerebras",
            BackendType::DeepInfra => "deepinfra",
            BackendType::Ollama => "ollama",
            BackendType::Custom => "custom",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|b| b.as_str().eq_ignore_ascii_case(s.trim()))
    }
}

/// A per-service sliding-window limit: at most `requests` in any `window`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    pub requests: NonZeroU32,
    pub window: Duration,
}

/// One upstream service, validated.
#[derive(Debug, Clone)]
pub struct ServiceConfig {
    pub name: String,
    pub backend_type: BackendType,
    /// Without a trailing slash: endpoint paths are appended to it.
    pub base_url: Url,
    pub api_key: Option<Secret>,
    pub timeout: Duration,
    pub priority: i64,
    pub rate_limit: Option<RateLimit>,
    /// Share of the tier's traffic under `weighted` balancing (positive).
    pub weight: f64,
}

impl ServiceConfig {
    /// `base_url` as configured, without a trailing slash.
    pub fn base_url_str(&self) -> &str {
        self.base_url.as_str().trim_end_matches('/')
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// The whole validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub host: String,
    pub port: u16,
    /// In routing order: priority ascending, ties in configuration order.
    pub services: Vec<ServiceConfig>,
    pub request_timeout: Duration,
    pub max_request_body_bytes: usize,
    pub model_refresh_interval: Duration,
    pub shutdown_grace_period: Duration,
    pub log_level: String,
    pub log_format: LogFormat,
    pub auth: AuthConfig,
    pub health: HealthConfig,
    pub balancing: Balancing,
    /// Shared state in Redis (SPEC 8); `None`: memory, one replica.
    pub redis: Option<RedisConfig>,
    /// Where the services came from, for `check` and start-up logs.
    pub services_source: &'static str,
    /// Things accepted but worth saying (logged once logging is up).
    pub warnings: Vec<String>,
    /// The TOML file read, if any (re-read by `POST /auth/reload-keys`).
    pub config_file: Option<PathBuf>,
}

/// What the command line contributes (highest precedence).
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub config_file: Option<PathBuf>,
    pub host: Option<String>,
    pub port: Option<u16>,
}

/// Every problem found, one line each, naming the field.
#[derive(Debug, Clone, thiserror::Error)]
#[error("invalid configuration:\n  - {}", .0.join("\n  - "))]
pub struct ConfigError(pub Vec<String>);

/// Message for a configuration with no service at all.
pub const NO_SERVICES: &str = "no upstream service is configured: set ROUTER_SERVICES (a JSON array of services), \
or one of CEREBRAS_API_KEY, DEEPINFRA_TOKEN, OPENAI_API_KEY, OLLAMA_BASE_URL / OLLAMA_AUTH_KEY, \
or [[services]] in the TOML file given by --config / LLM_ROUTER_CONFIG; \
to try the router without any key, run `llm-router demo`";

impl Config {
    /// Fails with a message that says what to set when no service is configured.
    pub fn require_services(&self) -> Result<(), ConfigError> {
        if self.services.is_empty() {
            Err(ConfigError(vec![NO_SERVICES.to_owned()]))
        } else {
            Ok(())
        }
    }

    /// `single_service` with exactly one service, else `router` (the Python router's modes).
    pub fn mode(&self) -> &'static str {
        if self.services.len() == 1 {
            "single_service"
        } else {
            "router"
        }
    }
}

/// Loads the configuration from all sources, highest precedence first:
/// `overrides` > `env` (process environment over `.env`) > TOML file > defaults.
pub fn load(overrides: &Overrides, env: &dyn Env) -> Result<Config, ConfigError> {
    let mut errors = Vec::new();
    let mut warnings = Vec::new();

    let file_path = overrides
        .config_file
        .clone()
        .or_else(|| env.get("LLM_ROUTER_CONFIG").map(PathBuf::from));
    let file = match &file_path {
        Some(path) => read_file(path, env).unwrap_or_else(|mut e| {
            errors.append(&mut e);
            FileConfig::default()
        }),
        None => FileConfig::default(),
    };
    let file_auth = file.auth.as_ref();

    let host = overrides
        .host
        .clone()
        .or_else(|| env.get("HOST").map(str::to_owned))
        .or(file.host.clone())
        .unwrap_or_else(|| "0.0.0.0".to_owned());
    let port = overrides
        .port
        .or_else(|| {
            parse_env(
                env,
                "PORT",
                &mut errors,
                |s| s.parse::<u16>().ok(),
                "a port number (0-65535)",
            )
        })
        .or(file.port)
        .unwrap_or(8000);

    let request_timeout = seconds(
        env,
        "REQUEST_TIMEOUT",
        file.request_timeout,
        60.0,
        false,
        &mut errors,
    );
    let model_refresh_interval = seconds(
        env,
        "MODEL_REFRESH_INTERVAL",
        file.model_refresh_interval,
        300.0,
        false,
        &mut errors,
    );
    let shutdown_grace_period = seconds(
        env,
        "SHUTDOWN_GRACE_PERIOD",
        file.shutdown_grace_period,
        30.0,
        true,
        &mut errors,
    );
    let max_request_body_bytes = parse_env(
        env,
        "MAX_REQUEST_BODY_BYTES",
        &mut errors,
        |s| s.parse::<u64>().ok().filter(|n| *n > 0),
        "a positive number of bytes",
    )
    .or_else(|| {
        file.max_request_body_bytes.filter(|n| {
            let ok = *n > 0;
            if !ok {
                errors.push(
                    "max_request_body_bytes (config file): must be a positive number of bytes"
                        .to_owned(),
                );
            }
            ok
        })
    })
    .unwrap_or(10 * 1024 * 1024);
    let max_request_body_bytes = usize::try_from(max_request_body_bytes).unwrap_or(usize::MAX);

    let log_level = env
        .get("LOG_LEVEL")
        .map(str::to_owned)
        .or(file.log_level.clone())
        .unwrap_or_else(|| "info".to_owned());
    const LEVELS: [&str; 6] = ["trace", "debug", "info", "warn", "error", "off"];
    // A bare word must be a level (EnvFilter would read a typo as a target name);
    // anything with `=` or `,` is a full filter directive.
    let valid_level = if log_level.contains(['=', ',']) {
        tracing_subscriber::EnvFilter::try_new(&log_level).is_ok()
    } else {
        LEVELS
            .iter()
            .any(|l| l.eq_ignore_ascii_case(log_level.trim()))
    };
    if !valid_level {
        errors.push(format!(
            "LOG_LEVEL: `{log_level}` is not a log level ({}) or a filter directive",
            LEVELS.join(", ")
        ));
    }
    let log_format = match env
        .get("LOG_FORMAT")
        .map(str::to_owned)
        .or(file.log_format.clone())
    {
        None => LogFormat::Text,
        Some(f) if f.eq_ignore_ascii_case("text") => LogFormat::Text,
        Some(f) if f.eq_ignore_ascii_case("json") => LogFormat::Json,
        Some(f) => {
            errors.push(format!("LOG_FORMAT: `{f}` is not `text` or `json`"));
            LogFormat::Text
        }
    };

    // Services: ROUTER_SERVICES > [[services]] in the file > per-provider variables.
    let (wire, source): (Vec<(String, WireService)>, &'static str) =
        if let Some(json) = env.get("ROUTER_SERVICES") {
            (
                parse_router_services(json, &mut errors, &mut warnings),
                "ROUTER_SERVICES",
            )
        } else if let Some(services) = file.services {
            let origin = file_path
                .as_deref()
                .map(Path::display)
                .map(|d| d.to_string())
                .unwrap_or_default();
            let labelled = services
                .into_iter()
                .enumerate()
                .map(|(i, s)| (format!("{origin}: services[{i}]"), s))
                .collect();
            (labelled, "config file")
        } else {
            (auto_services(env), "provider variables")
        };
    let mut services = Vec::with_capacity(wire.len());
    for (label, w) in wire {
        if let Some(s) = validate_service(&label, w, request_timeout, &mut errors) {
            if services.iter().any(|o: &ServiceConfig| o.name == s.name) {
                errors.push(format!("{label}.name: duplicate service name `{}`", s.name));
            } else {
                services.push(s);
            }
        }
    }
    // Stable: ties keep configuration order.
    services.sort_by_key(|s| s.priority);

    let auth = auth::load(env, file_auth, &mut errors);
    let health = routing::load_health(env, file.health.as_ref(), &mut errors);
    let balancing = routing::load_balancing(env, file.routing.as_ref(), &mut errors);
    let redis = state::load(env, file.state.as_ref(), &mut errors);

    if !errors.is_empty() {
        return Err(ConfigError(errors));
    }
    Ok(Config {
        host,
        port,
        services,
        request_timeout,
        max_request_body_bytes,
        model_refresh_interval,
        shutdown_grace_period,
        log_level,
        log_format,
        auth,
        health,
        balancing,
        redis,
        services_source: source,
        warnings,
        config_file: file_path,
    })
}

/// `RUST_LOG` as given, for logging set up before the rest of the configuration.
pub fn rust_log(env: &dyn Env) -> Option<&str> {
    env.get("RUST_LOG")
}

/// More threads than this is a typo, not a machine: tokio would fail to spawn them.
const MAX_WORKER_THREADS: usize = 1024;

/// The number of runtime worker threads: `TOKIO_WORKER_THREADS` (tokio's own
/// variable, read here so that a bad value is an error rather than tokio's panic),
/// else the CPUs this process may run on (its affinity mask and cgroup CPU quota).
/// Read before the runtime starts, so before the rest of the configuration.
pub fn worker_threads(env: &dyn Env) -> Result<usize, ConfigError> {
    match env.get("TOKIO_WORKER_THREADS") {
        Some(raw) => match raw.trim().parse::<usize>() {
            Ok(n) if (1..=MAX_WORKER_THREADS).contains(&n) => Ok(n),
            _ => Err(ConfigError(vec![format!(
                "TOKIO_WORKER_THREADS: must be a whole number of threads from 1 to {MAX_WORKER_THREADS} (got {raw:?})"
            )])),
        },
        None => Ok(std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)),
    }
}

fn read_file(path: &Path, env: &dyn Env) -> Result<FileConfig, Vec<String>> {
    let origin = path.display().to_string();
    let text =
        std::fs::read_to_string(path).map_err(|e| vec![format!("config file {origin}: {e}")])?;
    file::parse(&text, env, &origin)
}

fn parse_router_services(
    json: &str,
    errors: &mut Vec<String>,
    warnings: &mut Vec<String>,
) -> Vec<(String, WireService)> {
    let items: Vec<serde_json::Value> = match serde_json::from_str(json) {
        Ok(serde_json::Value::Array(items)) => items,
        Ok(_) => {
            errors.push("ROUTER_SERVICES: must be a JSON array of service objects".to_owned());
            return Vec::new();
        }
        Err(e) => {
            errors.push(format!("ROUTER_SERVICES: invalid JSON: {e}"));
            return Vec::new();
        }
    };
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.into_iter().enumerate() {
        let label = format!("ROUTER_SERVICES[{i}]");
        let serde_json::Value::Object(mut map) = item else {
            errors.push(format!("{label}: must be a JSON object"));
            continue;
        };
        // The Python router ignored unknown keys; keep accepting its files, but say so.
        let unknown: Vec<String> = map
            .keys()
            .filter(|k| !SERVICE_FIELDS.contains(&k.as_str()))
            .cloned()
            .collect();
        for key in unknown {
            warnings.push(format!("{label}: ignoring unknown field `{key}`"));
            map.remove(&key);
        }
        match serde_json::from_value::<WireService>(serde_json::Value::Object(map)) {
            Ok(w) => out.push((label, w)),
            Err(e) => errors.push(format!("{label}: {e}")),
        }
    }
    out
}

/// The Python router's auto-configuration: one service per provider variable set,
/// prioritised cerebras, deepinfra, openai, ollama.
fn auto_services(env: &dyn Env) -> Vec<(String, WireService)> {
    let mut out = Vec::new();
    let mut add =
        |label: &str, name: &str, backend: &str, url: &str, key: Option<&str>, priority: i64| {
            out.push((
                label.to_owned(),
                WireService {
                    name: Some(name.to_owned()),
                    backend_type: Some(backend.to_owned()),
                    base_url: Some(url.to_owned()),
                    api_key: key.map(str::to_owned),
                    priority: Some(priority),
                    ..WireService::default()
                },
            ));
        };
    if let Some(key) = env.get("CEREBRAS_API_KEY") {
        let url = env
            .get("CEREBRAS_BASE_URL")
            .unwrap_or("https://api.cerebras.ai/v1");
        add(
            "CEREBRAS_BASE_URL",
            "cerebras",
            "cerebras",
            url,
            Some(key),
            0,
        );
    }
    if let Some(key) = env.get("DEEPINFRA_TOKEN") {
        let url = env
            .get("DEEPINFRA_BASE_URL")
            .unwrap_or("https://api.deepinfra.com/v1/openai");
        add(
            "DEEPINFRA_BASE_URL",
            "deepinfra",
            "deepinfra",
            url,
            Some(key),
            1,
        );
    }
    if let Some(key) = env.get("OPENAI_API_KEY") {
        let url = env
            .get("OPENAI_BASE_URL")
            .unwrap_or("https://api.openai.com/v1");
        add("OPENAI_BASE_URL", "openai", "openai", url, Some(key), 2);
    }
    const OLLAMA_DEFAULT: &str = "http://localhost:11434/v1";
    let ollama_url = env.get("OLLAMA_BASE_URL");
    let ollama_key = env.get("OLLAMA_AUTH_KEY");
    if ollama_url.is_some_and(|u| u.trim_end_matches('/') != OLLAMA_DEFAULT) || ollama_key.is_some()
    {
        add(
            "OLLAMA_BASE_URL",
            "ollama",
            "ollama",
            ollama_url.unwrap_or(OLLAMA_DEFAULT),
            ollama_key,
            3,
        );
    }
    out
}

fn validate_service(
    label: &str,
    w: WireService,
    default_timeout: Duration,
    errors: &mut Vec<String>,
) -> Option<ServiceConfig> {
    let before = errors.len();
    let name = match w.name.as_deref().map(str::trim) {
        Some(n) if !n.is_empty() => n.to_owned(),
        _ => {
            errors.push(format!("{label}.name: required"));
            String::new()
        }
    };
    let backend_type = match w.backend_type.as_deref() {
        None => {
            errors.push(format!(
                "{label}.backend_type: required (one of {})",
                backend_list()
            ));
            BackendType::Custom
        }
        Some(b) => BackendType::parse(b).unwrap_or_else(|| {
            errors.push(format!(
                "{label}.backend_type: unknown backend type `{b}` (expected one of {})",
                backend_list()
            ));
            BackendType::Custom
        }),
    };
    let base_url = match w.base_url.as_deref() {
        None => {
            errors.push(format!("{label}.base_url: required"));
            None
        }
        Some(raw) => match Url::parse(raw.trim()) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => Some(u),
            Ok(_) => {
                errors.push(format!(
                    "{label}.base_url: `{raw}` is not an http(s) URL with a host"
                ));
                None
            }
            Err(e) => {
                errors.push(format!("{label}.base_url: `{raw}` is not a URL ({e})"));
                None
            }
        },
    };
    let timeout = match w.timeout {
        None => default_timeout,
        Some(t) => positive_duration(t).unwrap_or_else(|| {
            errors.push(format!(
                "{label}.timeout: must be a positive number of seconds, got {t}"
            ));
            default_timeout
        }),
    };
    let rate_limit = match w.rate_limit_requests {
        None => None,
        Some(n) => {
            let requests = u32::try_from(n).ok().and_then(NonZeroU32::new);
            if requests.is_none() {
                errors.push(format!(
                    "{label}.rate_limit_requests: must be a positive whole number, got {n}"
                ));
            }
            let window = match w.rate_limit_window {
                None => Some(Duration::from_secs(60)),
                Some(s) => {
                    let d = positive_duration(s);
                    if d.is_none() {
                        errors.push(format!("{label}.rate_limit_window: must be a positive number of seconds, got {s}"));
                    }
                    d
                }
            };
            requests
                .zip(window)
                .map(|(requests, window)| RateLimit { requests, window })
        }
    };
    if rate_limit.is_none()
        && let Some(s) = w
            .rate_limit_window
            .filter(|s| positive_duration(*s).is_none())
    {
        errors.push(format!(
            "{label}.rate_limit_window: must be a positive number of seconds, got {s}"
        ));
    }
    let api_key = w.api_key.filter(|k| !k.is_empty()).map(Secret::new);
    let weight = match w.weight {
        None => 1.0,
        Some(x) if x.is_finite() && x > 0.0 => x,
        Some(x) => {
            errors.push(format!(
                "{label}.weight: must be a positive number, got {x}"
            ));
            1.0
        }
    };
    if errors.len() > before {
        return None;
    }
    Some(ServiceConfig {
        name,
        backend_type,
        base_url: base_url?,
        api_key,
        timeout,
        priority: w.priority.unwrap_or(0),
        rate_limit,
        weight,
    })
}

fn backend_list() -> String {
    BackendType::ALL.map(BackendType::as_str).join(", ")
}

/// Booleans as pydantic read them.
pub(crate) fn parse_bool(v: &str) -> Option<bool> {
    match v.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "t" | "yes" | "y" | "on" => Some(true),
        "0" | "false" | "f" | "no" | "n" | "off" => Some(false),
        _ => None,
    }
}

fn positive_duration(secs: f64) -> Option<Duration> {
    (secs.is_finite() && secs > 0.0).then(|| Duration::from_secs_f64(secs.min(1e9)))
}

fn parse_env<T>(
    env: &dyn Env,
    name: &str,
    errors: &mut Vec<String>,
    parse: impl Fn(&str) -> Option<T>,
    expected: &str,
) -> Option<T> {
    let raw = env.get(name)?;
    let parsed = parse(raw.trim());
    if parsed.is_none() {
        errors.push(format!("{name}: `{raw}` is not {expected}"));
    }
    parsed
}

/// A duration in seconds from `name` (environment) or the file, else `default`.
/// Zero is allowed only where it means something (`allow_zero`); anything else
/// invalid is an error naming the source, never a silent default.
fn seconds(
    env: &dyn Env,
    name: &str,
    file: Option<f64>,
    default: f64,
    allow_zero: bool,
    errors: &mut Vec<String>,
) -> Duration {
    let valid = |f: f64| {
        (f.is_finite() && (f > 0.0 || (allow_zero && f == 0.0)))
            .then(|| Duration::from_secs_f64(f.min(1e9)))
    };
    let expected = if allow_zero {
        "a number of seconds (0 or more)"
    } else {
        "a positive number of seconds"
    };
    if env.get(name).is_some() {
        if let Some(d) = parse_env(
            env,
            name,
            errors,
            |s| s.parse::<f64>().ok().and_then(valid),
            expected,
        ) {
            return d;
        }
    } else if let Some(f) = file {
        match valid(f) {
            Some(d) => return d,
            None => errors.push(format!(
                "{} (config file): must be {expected}, got {f}",
                name.to_ascii_lowercase()
            )),
        }
    }
    Duration::from_secs_f64(default)
}

#[cfg(test)]
mod tests;
