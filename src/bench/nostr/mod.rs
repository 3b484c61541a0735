//! The Nostr side of `--nostr ws://...`: the ingest, fan-out and query scenarios with the
//! same event count, content size, tag shape (t, p, e), connections and pipelining, spoken
//! as NIP-01 JSON with BIP-340 Schnorr signatures (k256), so Axon and a Nostr relay are
//! measured in one run on one machine. Built only with the `nostr-bench` feature.
//!
//! Differences that cannot be avoided: Nostr has no AUTH on these relays (connections are
//! anonymous), no `after_seq` replay (the replay query is skipped), and content is a
//! string, so the index/timestamp head is written as 32 hex characters.

mod client;
mod event;
mod scenario;

pub use client::NostrClient;
pub use event::{content, prepare_all, sign, tags, verify, NostrDraft, NostrEvent, NostrKey, NostrPrepared};
pub use scenario::{fanout, ingest, prepare_query, NostrQuerySession};
