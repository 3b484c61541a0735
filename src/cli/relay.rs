//! `axon relay`: placeholder until the relay lands.

use clap::Args;

use super::CliResult;

/// Arguments of `axon relay`.
#[derive(Args)]
pub struct RelayArgs {}

/// Runs the relay.
pub fn run(_args: RelayArgs) -> CliResult {
    Err("the relay is not built yet".into())
}
