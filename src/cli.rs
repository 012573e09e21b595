//! Command line: `serve` (default), `check`, `demo`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::config::Overrides;

#[derive(Debug, Parser)]
#[command(
    name = "llm-router",
    version,
    about = "OpenAI-compatible LLM gateway: priority failover, model-aware routing, rate limits, streaming",
    long_about = "llm-router speaks the OpenAI HTTP API and forwards each request to one of several \
OpenAI-compatible services (OpenAI, Cerebras, DeepInfra, Ollama, any custom URL), with priority \
failover, model-aware routing and per-service sliding-window rate limits.\n\n\
Configuration comes from flags, the environment, a .env file in the working directory and an \
optional TOML file (--config or LLM_ROUTER_CONFIG), in that order of precedence."
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Flags accepted before or after the subcommand.
#[derive(Debug, Clone, Args)]
pub struct GlobalArgs {
    /// TOML configuration file (overrides LLM_ROUTER_CONFIG).
    #[arg(long, short = 'c', global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Address to listen on (overrides HOST).
    #[arg(long, global = true, value_name = "ADDR")]
    pub host: Option<String>,
    /// Port to listen on (overrides PORT).
    #[arg(long, short = 'p', global = true, value_name = "PORT")]
    pub port: Option<u16>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Start the router (the default when no subcommand is given).
    Serve,
    /// Load and validate the configuration, print the services in routing order
    /// (keys masked), and exit non-zero on any error.
    Check,
    /// Start the router with built-in simulated providers on loopback (no API keys
    /// needed), to see routing, failover, streaming and rate limits at work.
    Demo,
}

impl GlobalArgs {
    pub fn overrides(&self) -> Overrides {
        Overrides {
            config_file: self.config.clone(),
            host: self.host.clone(),
            port: self.port,
        }
    }
}
