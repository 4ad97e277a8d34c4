//! Command line: `ringress edge` (more roles come with the agent).

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "ringress",
    version,
    about = "Self-hosted, ngrok-compatible HTTP/S edge and agent"
)]
pub struct Cli {
    /// Log level or filter (e.g. info, debug, ringress=trace); RUST_LOG wins.
    #[arg(long, global = true, default_value = "info")]
    pub log_level: String,
    /// Log format.
    #[arg(long, global = true, value_enum, default_value = "text")]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the edge: public HTTP listener, routing, traffic policy, proxying.
    Edge(EdgeArgs),
}

#[derive(Debug, Args)]
pub struct EdgeArgs {
    /// Edge config file (TOML). Without it: no endpoints, defaults only.
    #[arg(long, short = 'c', env = "RINGRESS_CONFIG")]
    pub config: Option<PathBuf>,
    /// Worker threads, one per core (overrides `workers`).
    #[arg(long)]
    pub workers: Option<usize>,
    /// Public HTTP listener address (overrides `listen.http`).
    #[arg(long)]
    pub listen_http: Option<SocketAddr>,
    /// Public HTTPS listener address (overrides `listen.https`).
    #[arg(long)]
    pub listen_https: Option<SocketAddr>,
    /// Development mode: loopback listeners (8080/8443), a local CA in the
    /// data dir, base domain ringress.localhost.
    #[arg(long)]
    pub dev: bool,
    /// Where state and certificates live (default /var/lib/ringress, or
    /// ~/.local/share/ringress with --dev).
    #[arg(long, env = "RINGRESS_DATA_DIR")]
    pub data_dir: Option<std::path::PathBuf>,
    /// Validate the config and exit.
    #[arg(long)]
    pub check: bool,
}
