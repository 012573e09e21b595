//! Entry point: parse the command line, load the configuration, bind, serve.

use std::process::ExitCode;

use clap::Parser;
use llm_router::cli::{Cli, Command};
use llm_router::config::{self, Config, EnvMap};
use llm_router::error::StartupError;
use llm_router::{App, check, demo, logging, server};

/// jemalloc instead of glibc malloc: the request path allocates many small, short-lived
/// buffers and futures, and the profile in docs/benchmarks.md put glibc's malloc/free
/// at 12 % of the router's CPU. jemalloc beat mimalloc there on speed and kept memory
/// per open stream at glibc's level, where mimalloc took 1.5x more. Its built-in
/// settings (a larger thread cache) come from `.cargo/config.toml`.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let cwd = std::env::current_dir().unwrap_or_else(|_| ".".into());
    let runtime = EnvMap::from_process_and_dotenv(&cwd)
        .map_err(|e| StartupError::from(config::ConfigError(vec![e])))
        .and_then(|env| Ok((build_runtime(config::worker_threads(&env)?)?, env)));
    let (runtime, env) = match runtime {
        Ok(pair) => pair,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    // Everything runs as a task, not inside `block_on`'s own future: with several
    // workers the accept loop then shares the workers' I/O driver, and a new
    // connection is accepted and spawned without waking another thread.
    let program = runtime.spawn(run(cli, env));
    match runtime.block_on(program) {
        Ok(Ok(())) => ExitCode::SUCCESS,
        Ok(Err(e)) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("error: the router stopped unexpectedly: {e}");
            ExitCode::FAILURE
        }
    }
}

/// One worker thread: tokio's current-thread scheduler, run by the main thread.
/// On one core it costs about 10 % less CPU per request than the work-stealing
/// scheduler with one worker (docs/benchmarks.md), which pays for cross-thread
/// queues and wake-ups that have no other thread to serve. More workers: the
/// work-stealing scheduler with that many.
fn build_runtime(workers: usize) -> Result<tokio::runtime::Runtime, StartupError> {
    let mut builder = if workers == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        builder.worker_threads(workers);
        builder
    };
    builder
        .enable_all()
        .build()
        .map_err(|e| StartupError::Runtime(e.to_string()))
}

async fn run(cli: Cli, env: EnvMap) -> Result<(), StartupError> {
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
            print!("{}", check::report(&config).await?);
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
    // As built by `build_runtime`, read back from the runtime itself.
    let runtime = tokio::runtime::Handle::current();
    let workers = runtime.metrics().num_workers();
    let scheduler = match runtime.runtime_flavor() {
        tokio::runtime::RuntimeFlavor::CurrentThread => "current-thread",
        _ => "multi-thread",
    };
    tracing::info!(%addr, services = ?names, mode = state.config.mode(), workers, scheduler, "llm-router listening");
    server::run(listener, app, server::shutdown_signal()).await
}
