//! `llm-router check`: what the configuration resolves to (services in routing
//! order, keys masked, auth and state settings) and whether Redis answers.

use std::sync::Arc;
use std::time::Duration;

use crate::config::Config;
use crate::error::StartupError;
use crate::metrics::Metrics;
use crate::shared::RedisBackend;

/// The whole report. An unreachable Redis is a warning, not an error: the
/// router would start degraded.
pub async fn report(config: &Config) -> Result<String, StartupError> {
    let mut out = describe(config);
    match &config.redis {
        Some(redis) => {
            let backend = RedisBackend::new(redis.clone(), Arc::new(Metrics::new()))?;
            out.push_str(&match backend.reachable(Duration::from_secs(2)).await {
                Ok(()) => format!("state: redis at {} is reachable\n", redis.display_url()),
                Err(why) => format!(
                    "warning: redis at {} is unreachable ({why}); the router would start degraded (REDIS_FAILURE_MODE={})\n",
                    redis.display_url(),
                    redis.failure_mode.as_str()
                ),
            });
        }
        None => out.push_str("state: memory (one replica)\n"),
    }
    Ok(out)
}

/// The configuration part of the report: services in routing order, keys masked.
fn describe(config: &Config) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "configuration OK: {} service(s) from {}",
        config.services.len(),
        config.services_source
    );
    let _ = writeln!(out, "routing order:");
    for (i, s) in config.services.iter().enumerate() {
        let key = s
            .api_key
            .as_ref()
            .map_or_else(|| "none".to_owned(), |k| k.masked());
        let limit = s.rate_limit.map_or_else(
            || "unlimited".to_owned(),
            |r| format!("{}/{}s", r.requests, r.window.as_secs_f64()),
        );
        let _ = writeln!(
            out,
            "  {}. {} [{}] priority={} url={} key={} timeout={}s rate_limit={}",
            i + 1,
            s.name,
            s.backend_type.as_str(),
            s.priority,
            s.base_url_str(),
            key,
            s.timeout.as_secs_f64(),
            limit
        );
    }
    let _ = writeln!(out, "listen: {}:{}", config.host, config.port);
    let auth = &config.auth;
    let state = match (
        auth.enabled,
        auth.keys.is_empty() && auth.admin_key.is_none(),
    ) {
        (false, _) => "disabled (ENABLE_AUTH=false)",
        (true, true) => "OFF: ENABLE_AUTH is true but no client key is configured",
        (true, false) => "enabled",
    };
    let limit = auth.key_rate_limit.map_or_else(String::new, |r| {
        format!(", per-key limit {}/{}s", r.requests, r.window.as_secs_f64())
    });
    let admin = if auth.admin_key.is_some() {
        "admin key set"
    } else {
        "no admin key"
    };
    let _ = writeln!(
        out,
        "client auth: {state} ({} key(s), header {}, {admin}{limit})",
        auth.keys.len(),
        auth.header_name
    );
    for w in &config.warnings {
        let _ = writeln!(out, "warning: {w}");
    }
    out
}
