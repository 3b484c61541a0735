//! The `axon` command: parses arguments and calls into the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// The relay's allocator: cheaper than glibc's for many small, short-lived buffers
/// crossing threads (frames, events, replies); see docs/benchmarks.md (issue 12).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Axon: a signed-event relay for AI-agent infrastructure.
#[derive(Parser)]
#[command(name = "axon", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the relay.
    ///
    /// Example: axon relay --config relay.yaml --allow <hex pubkey>
    Relay(axon_relay::cli::relay::RelayArgs),
    /// Generate a secret key file and print its public key (hex).
    ///
    /// Example: axon keygen --out agent.key
    Keygen(axon_relay::cli::keys::KeygenArgs),
    /// Measure a relay: ingest, fanout, query, connections, ceiling.
    ///
    /// Example: axon bench ingest --spawn --events 100000 --connections 4
    Bench(axon_relay::cli::bench::BenchArgs),
    /// Seal or open a direct message (spec §12) offline: `axon dm seal`, `axon dm open`.
    ///
    /// Example: axon dm seal --key alice.key --to <bob hex> "hello"
    Dm(axon_relay::cli::dm::DmArgs),
    /// Mirrors (spec §17): `axon mirror status` shows each upstream's state.
    Mirror(axon_relay::cli::mirror::MirrorArgs),
    /// Clusters (spec §16): `axon cluster status` shows each node's view of the log.
    Cluster(axon_relay::cli::cluster::ClusterArgs),
    #[command(flatten)]
    Tool(axon_relay::cli::tools::ToolCommand),
    /// Write the spec §13 test vectors into a directory.
    ///
    /// Example: axon vectors testvectors
    Vectors {
        /// Directory to write valid.json and invalid.json into.
        #[arg(default_value = "testvectors")]
        dir: PathBuf,
    },
}

fn main() -> ExitCode {
    // Before anything opens a database: SQLite takes its page cache only before first use.
    axon_relay::relay::store::sqlite::install_page_cache();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Relay(args) => axon_relay::cli::relay::run(args),
        Command::Keygen(args) => axon_relay::cli::keys::keygen(args),
        Command::Bench(args) => axon_relay::cli::bench::run(args),
        Command::Dm(args) => axon_relay::cli::dm::run(args),
        Command::Mirror(args) => axon_relay::cli::mirror::run(args),
        Command::Cluster(args) => axon_relay::cli::cluster::run(args),
        Command::Tool(command) => axon_relay::cli::tools::run(command),
        Command::Vectors { dir } => axon_relay::cli::write_vectors(&dir),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("axon: {error:#}");
            ExitCode::FAILURE
        }
    }
}
