//! Axon: a signed-event relay for AI-agent infrastructure.
//!
//! - [`protocol`]: the pure protocol core (events, canonical signing, frames, filters).
//! - [`client`]: an async client (connect + AUTH, publish, subscribe).
//! - `relay`, `cli`, `bench` (feature `relay`, on by default): the server, its SQLite
//!   store, the `axon` subcommands and the benchmark.
//!
//! A client-only build: `cargo build --no-default-features --lib` (no SQLite, no server).

#[cfg(feature = "relay")]
pub mod bench;
#[cfg(feature = "relay")]
pub mod cli;
pub mod client;
pub mod clock;
pub mod protocol;
#[cfg(feature = "relay")]
pub mod relay;
pub mod sync;
