//! `ringress api-key create`: makes an API key offline, in the data dir's
//! store (the edge must not hold it, or this waits for it), and prints the
//! secret once.
//!
//! Owns no long-lived state; never talks to a running edge.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Subcommand};

use super::plane::{Plane, PlaneConfig};
use super::store::{store_path, RedbStore, Store};

#[derive(Debug, Args)]
pub struct ApiKeyArgs {
    #[command(subcommand)]
    pub command: ApiKeyCommand,
}

#[derive(Debug, Subcommand)]
pub enum ApiKeyCommand {
    /// Create an API key in the store and print its secret (shown once).
    Create {
        /// The edge's data dir (default /var/lib/ringress, or
        /// ~/.local/share/ringress with --dev).
        #[arg(long, env = "RINGRESS_DATA_DIR")]
        data_dir: Option<PathBuf>,
        /// Use the --dev edge's default data dir.
        #[arg(long)]
        dev: bool,
        #[arg(long, default_value = "")]
        description: String,
        /// How long to wait for a running edge to release the store.
        #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
        wait: Duration,
    },
}

pub fn run(args: ApiKeyArgs) -> Result<(), String> {
    match args.command {
        ApiKeyCommand::Create {
            data_dir,
            dev,
            description,
            wait,
        } => {
            let dir = data_dir.unwrap_or_else(|| crate::config::file::default_data_dir(dev));
            let path = store_path(&dir);
            let store = RedbStore::open_with_retry(&path, wait).map_err(|e| {
                format!("{e} (stop the edge first: the store is one process at a time)")
            })?;
            let store: Arc<dyn Store> = Arc::new(store);
            let plane =
                Plane::new(store.clone(), PlaneConfig::default()).map_err(|e| e.to_string())?;
            let (rec, token) = plane
                .create_api_key(&description, "")
                .map_err(|e| e.to_string())?;
            store.close();
            eprintln!("created API key {} in {}", rec.id, path.display());
            println!("{token}");
            Ok(())
        }
    }
}
