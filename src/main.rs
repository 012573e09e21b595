//! Entry point: parse the command line, load the configuration, bind, serve.

use std::process::ExitCode;

use clap::Parser;
use llm_router::cli::{Cli, Command};
use llm_router::config::{self, Config, EnvMap};
use llm_router::error::StartupError;
use llm_router::metrics::Metrics;
use llm_router::shared::RedisBackend;
use llm_router::{App, demo, logging, server};
use std::sync::Arc;
use std::time::Duration;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<(), StartupError> {
    let cwd = std::env::current_dir().unwrap_or_else(|_| ".".into());
    let env = EnvMap::from_process_and_dotenv(&cwd).map_err(|e| config::ConfigError(vec![e]))?;
    let overrides = cli.global.overrides();
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => {
            let config = config::load(&overrides, &env)?;
            config.require_services()?;
            init_logging(&config, &env);
            serve(config).await
        }
        Command::Check => {
            let config = config::load(&overrides, &env)?;
            config.require_services()?;
            print!("{}", describe(&config));
            if let Some(redis) = &config.redis {
                // Unreachable is a warning, not an error: the router starts degraded.
                let backend = RedisBackend::new(redis.clone(), Arc::new(Metrics::new()))?;
                match backend.reachable(Duration::from_secs(2)).await {
                    Ok(()) => println!("state: redis at {} is reachable", redis.display_url()),
                    Err(why) => println!(
                        "warning: redis at {} is unreachable ({why}); the router would start degraded (REDIS_FAILURE_MODE={})",
                        redis.display_url(),
                        redis.failure_mode.as_str()
                    ),
                }
            } else {
                println!("state: memory (one replica)");
            }
            Ok(())
        }
        Command::Demo => demo::run(&overrides, &env).await,
    }
}

fn init_logging(config: &Config, env: &EnvMap) {
    logging::init(&config.log_level, config::rust_log(env), config.log_format);
    for w in &config.warnings {
        tracing::warn!("{w}");
    }
}

async fn serve(config: Config) -> Result<(), StartupError> {
    let addr = format!("{}:{}", config.host, config.port);
    let (host, port) = (config.host.clone(), config.port);
    // Discovery first: the listener opens once the first round is done (SPEC 4.2).
    let app = App::build(config).await?;
    let listener = server::bind(&host, port).await?;
    let state = app.state();
    let names: Vec<&str> = state.dispatcher.services.iter().map(|s| s.name()).collect();
    tracing::info!(%addr, services = ?names, mode = state.config.mode(), "llm-router listening");
    server::run(listener, app, server::shutdown_signal()).await
}

/// The `check` report: services in routing order, keys masked.
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
