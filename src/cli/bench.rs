//! `axon bench`: load scenarios against a relay (filled in by the benchmark work).

use clap::Args;

use super::CliResult;

/// Arguments of `axon bench`.
#[derive(Args)]
pub struct BenchArgs {}

/// Runs a benchmark scenario.
pub fn run(_args: BenchArgs) -> CliResult {
    Err("not built yet".into())
}
