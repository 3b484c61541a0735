//! Axon: a signed-event relay for AI-agent infrastructure.
//!
//! - [`protocol`]: the pure protocol core (events, canonical signing, frames, filters).
//! - [`cli`]: the `axon` subcommands.

pub mod bench;
pub mod cli;
pub mod client;
pub mod clock;
pub mod protocol;
pub mod relay;
pub mod sync;
