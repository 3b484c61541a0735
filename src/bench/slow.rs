//! `slow-subscribers`: S subscribers that never read while large events are published;
//! the relay's memory while they are connected and after they are gone (issue 9: three of
//! them once took the relay to 748 MB, and 644 MB stayed after they left).

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

use crate::client::{auth_frame, Client};
use crate::protocol::frame::Subscribe;
use crate::protocol::{Filter, Frame};

use super::gen::{run_nonce, sign_all, Draft};
use super::stats::{figure, Metrics, Report};
use super::{CliResult, Target};

/// The shape of a slow-subscribers run.
#[derive(Debug, Clone)]
pub struct SlowParams {
    /// Subscribers that never read.
    pub subscribers: usize,
    /// Events published while they do not read.
    pub events: usize,
    /// Content size of each event.
    pub content_bytes: usize,
    /// Seconds to wait after the subscribers left before reading the memory again.
    pub settle_secs: f64,
}

/// The one-line summary of a slow-subscribers run.
pub fn summarize(metrics: &Metrics) -> String {
    format!(
        "slow-subscribers: relay RSS {} MiB at rest, {} MiB with {} never-reading subscribers (peak {} MiB), \
         {} MiB after they left",
        figure(metrics.get("rss_before_mib")),
        figure(metrics.get("rss_loaded_mib")),
        metrics.get("subscribers"),
        figure(metrics.get("rss_peak_mib")),
        figure(metrics.get("rss_after_mib")),
    )
}

type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Connects, authenticates and subscribes to `topic`'s kind; returns once EOSE arrived.
async fn never_reading(url: &str, relay_url: &str, key: &ed25519_dalek::SigningKey, kind: u16) -> CliResult<Socket> {
    let (mut socket, _) = tokio_tungstenite::connect_async(url).await?;
    let nonce = loop {
        match socket.next().await {
            Some(Ok(Message::Binary(bytes))) => match Frame::decode_slice(&bytes)? {
                Frame::Challenge { nonce } => break nonce,
                other => return Err(format!("expected CHALLENGE, got {other:?}").into()),
            },
            Some(Ok(_)) => continue,
            _ => return Err("the relay closed before CHALLENGE".into()),
        }
    };
    socket.send(Message::Binary(auth_frame(key, &nonce, relay_url).encode())).await?;
    let filter = Filter { kinds: Some(vec![kind]), limit: Some(0), ..Filter::default() };
    let subscribe = Subscribe { sub_id: "slow".into(), filters: vec![filter], after_seq: None };
    socket.send(Message::Binary(Frame::Subscribe(subscribe).encode())).await?;
    loop {
        match socket.next().await {
            Some(Ok(Message::Binary(bytes))) => match Frame::decode_slice(&bytes)? {
                Frame::Eose { .. } => return Ok(socket),
                Frame::Error(error) => return Err(format!("subscribing failed: {}", error.message).into()),
                _ => continue,
            },
            Some(Ok(_)) => continue,
            _ => return Err("the relay closed before EOSE".into()),
        }
    }
}

/// One slow-subscribers run against the Axon target.
pub async fn run(target: &Target, params: &SlowParams) -> CliResult<Report> {
    let keys = target.keys(1);
    let relay = target.start(&keys, &[]).await?;
    let kind = 1000;
    let nonce = run_nonce();
    let events = tokio::task::spawn_blocking({
        let keys = keys.clone();
        let (count, size) = (params.events, params.content_bytes);
        move || {
            sign_all(count, &keys, |index| Draft {
                key: 0,
                created_at: crate::relay::unix_now(),
                kind,
                content: format!("{nonce} {index} {}", "x".repeat(size)).into_bytes(),
                tags: Vec::new(),
            })
        }
    })
    .await
    .map_err(|error| format!("signing failed: {error}"))??;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = relay.rss_kib();
    let mut subscribers = Vec::with_capacity(params.subscribers);
    for _ in 0..params.subscribers {
        subscribers.push(never_reading(&relay.url, &relay.relay_url, &keys[0], kind).await?);
    }
    let publisher = Client::connect(&relay.url, &relay.relay_url, &keys[0]).await?;
    for event in &events {
        publisher.publish(event).await?;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let loaded = relay.rss_kib();
    let peak = relay.peak_rss_kib();
    drop(subscribers);
    tokio::time::sleep(Duration::from_secs_f64(params.settle_secs)).await;
    let after = relay.rss_kib();
    drop(publisher);
    let (Some(before), Some(loaded), Some(after)) = (before, loaded, after) else {
        return Err("the relay's memory cannot be read: use --spawn, or give --relay-pid with --url".into());
    };
    let mib = |kib: u64| kib as f64 / 1024.0;
    let mut metrics = Metrics::default();
    metrics.set("rss_before_mib", mib(before));
    metrics.set("rss_loaded_mib", mib(loaded));
    metrics.set("rss_peak_mib", mib(peak.unwrap_or(loaded)));
    metrics.set("rss_after_mib", mib(after));
    metrics.set("subscribers", params.subscribers as f64);
    let details = vec![format!(
        "{} events of {} bytes published to {} subscribers that never read; memory read {:.1} s after they left",
        params.events, params.content_bytes, params.subscribers, params.settle_secs
    )];
    relay.stop().await?;
    Ok(Report { metrics, details, summarize })
}
