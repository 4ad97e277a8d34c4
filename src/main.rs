//! The `ringress` binary: argument parsing, logging, and dispatch.

use std::io::IsTerminal;

use clap::Parser;
use mimalloc::MiMalloc;
use tracing_subscriber::EnvFilter;

use ringress::cli::{Cli, Command, LogFormat};
use ringress::runtime::edge::{self, EdgeOptions, Overrides};

#[global_allocator]
static GLOBAL: MiMalloc = MiMalloc;

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&cli.log_level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match cli.log_format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
    let result = match cli.command {
        Command::Edge(args) => edge::run(EdgeOptions {
            config: args.config,
            dev: args.dev,
            overrides: Overrides {
                workers: args.workers,
                listen_http: args.listen_http,
                listen_https: args.listen_https,
                listen_tunnel: args.listen_tunnel,
                data_dir: args.data_dir,
            },
            check: args.check,
            upgrade: args.upgrade,
            upgrade_socket: args.upgrade_socket,
        })
        .map_err(|e| e.to_string()),
        Command::Http(args) => ringress::agent::cli::http(args).map_err(|e| e.to_string()),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("ringress: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
