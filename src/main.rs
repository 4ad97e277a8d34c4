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
    let (log_level, log_format) = match &cli.command {
        Command::Start(a) => {
            ringress::agent::start::log_settings(a, &cli.log_level, cli.log_format)
        }
        _ => (cli.log_level.clone(), cli.log_format),
    };
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&log_level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match log_format {
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
                listen_api: args.listen_api,
                data_dir: args.data_dir,
            },
            check: args.check,
            upgrade: args.upgrade,
            upgrade_socket: args.upgrade_socket,
        })
        .map_err(|e| e.to_string()),
        Command::Http(args) => ringress::agent::cli::http(args).map_err(|e| e.to_string()),
        Command::ApiKey(args) => ringress::control::cli::run(args),
        Command::Api(args) => ringress::cli::api::run(args).map_err(|e| e.to_string()),
        Command::Start(args) => ringress::agent::start::start(args).map_err(|e| e.to_string()),
        Command::Config(args) => ringress::agent::start::config(args).map_err(|e| e.to_string()),
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
