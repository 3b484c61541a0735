//! `axon relay`: runs the relay until SIGINT/SIGTERM, then drains and exits 0.

use std::path::PathBuf;

use clap::Args;

use super::CliResult;
use crate::relay::config::RelayConfig;

/// Arguments of `axon relay`.
#[derive(Args)]
pub struct RelayArgs {
    /// relay.yaml to read (spec §10). Without this flag, ./relay.yaml is read if it
    /// exists, else the built-in defaults apply.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Also allow this hex pubkey (repeatable; added to relay.yaml's allowlist).
    #[arg(long = "allow", value_name = "PUBKEY", env = "AXON_ALLOW", value_delimiter = ',')]
    pub allow: Vec<String>,
    /// Also make this hex pubkey an admin (repeatable).
    #[arg(long = "admin", value_name = "PUBKEY", env = "AXON_ADMIN", value_delimiter = ',')]
    pub admin: Vec<String>,
    /// Override the listen address.
    #[arg(long)]
    pub addr: Option<String>,
    /// Override the relay URL bound into AUTH signatures.
    #[arg(long)]
    pub relay_url: Option<String>,
    /// Override the SQLite file.
    #[arg(long)]
    pub db: Option<PathBuf>,
}

/// Loads the config and applies the command-line overrides.
pub fn load_config(args: &RelayArgs) -> Result<RelayConfig, Box<dyn std::error::Error + Send + Sync>> {
    let default_path = PathBuf::from("relay.yaml");
    let mut config = match &args.config {
        Some(path) => RelayConfig::load(path)?,
        None if default_path.exists() => RelayConfig::load(&default_path)?,
        None => RelayConfig::default(),
    };
    config.allowlist.extend(args.allow.iter().cloned());
    config.admins.extend(args.admin.iter().cloned());
    if let Some(addr) = &args.addr {
        config.addr = addr.clone();
    }
    if let Some(relay_url) = &args.relay_url {
        config.relay_url = relay_url.clone();
    }
    if let Some(db) = &args.db {
        config.db = db.clone();
    }
    config.validate()?;
    Ok(config)
}

/// Runs the relay.
pub fn run(args: RelayArgs) -> CliResult {
    init_logging();
    let config = load_config(&args)?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async move {
        if config.admins.is_empty() && config.allowlist.is_empty() {
            tracing::warn!(
                "no admins and an empty allowlist: nobody can connect (see README: axon keygen, then --allow)"
            );
        }
        let relay_url = config.relay_url.clone();
        let db = config.db.clone();
        // Handlers first: a SIGHUP that arrives once "listening on" is out must reload,
        // not take the default action (terminate).
        let signals = Signals::install()?;
        let handle = crate::relay::start(config).await?;
        tracing::info!(addr = %handle.local_addr, %relay_url, db = %db.display(), "relay listening");
        println!("listening on {}", handle.local_addr);
        signals.serve_until_stopped(&handle, &args).await;
        tracing::info!("shutting down");
        handle.shutdown().await;
        tracing::info!("stopped");
        Ok(())
    })
}

/// Logs to stderr, filtered by `RUST_LOG` (default `info`); ANSI colour only when stderr
/// is a terminal (and `NO_COLOR` is unset), so a log written to a file or a pipe carries
/// no escape codes.
pub fn init_logging() {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none())
        .try_init();
}

/// The relay's signal handlers, installed before it starts listening.
struct Signals {
    terminate: tokio::signal::unix::Signal,
    interrupt: tokio::signal::unix::Signal,
    hangup: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> std::io::Result<Self> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Signals {
            terminate: signal(SignalKind::terminate())?,
            interrupt: signal(SignalKind::interrupt())?,
            hangup: signal(SignalKind::hangup())?,
        })
    }

    /// Waits for SIGINT/SIGTERM; on SIGHUP re-reads the config (with the same command-line
    /// overrides) and applies it, keeping the old one if the new one is bad.
    async fn serve_until_stopped(mut self, handle: &crate::relay::RelayHandle, args: &RelayArgs) {
        loop {
            tokio::select! {
                _ = self.terminate.recv() => return,
                _ = self.interrupt.recv() => return,
                _ = self.hangup.recv() => reload(handle, args),
            }
        }
    }
}

fn reload(handle: &crate::relay::RelayHandle, args: &RelayArgs) {
    match load_config(args)
        .map_err(|error| error.to_string())
        .and_then(|config| handle.reload(config).map_err(|error| error.to_string()))
    {
        Ok(()) => tracing::info!("configuration reloaded"),
        Err(reason) => tracing::error!(%reason, "reload refused; the previous configuration stays in force"),
    }
}
