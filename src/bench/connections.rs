//! `connections`: K authenticated idle connections, one live subscription each; the
//! relay's memory per connection and the connect+auth rate.

use std::time::{Duration, Instant};

use futures_util::stream::{FuturesUnordered, StreamExt};

use crate::client::{Client, SubItem};
use crate::protocol::{Filter, TagFilter};

use super::gen::run_nonce;
use super::spawn::open_files_limit;
use super::stats::{figure, rate, thousands, Latency, Metrics, Report};
use super::{CliResult, Target};

/// The shape of a connections run.
#[derive(Debug, Clone)]
pub struct ConnectionsParams {
    /// Connections to open.
    pub count: usize,
    /// Handshakes (connect + AUTH) in progress at once.
    pub parallel: usize,
    /// Keys the connections authenticate with (spawned relay only).
    pub keys: usize,
}

/// The one-line summary of a connections run.
pub fn summarize(metrics: &Metrics) -> String {
    format!(
        "connections: {} KiB relay RSS per idle authenticated connection with 1 subscription, \
         {} connect+auth/s ({} connections, {} handshakes in parallel; relay RSS {} → {} MiB)",
        figure(metrics.get("kib_per_connection")),
        thousands(metrics.get("connects_per_s")),
        thousands(metrics.get("connections")),
        metrics.get("parallel"),
        figure(metrics.get("rss_before_mib")),
        figure(metrics.get("rss_after_mib")),
    )
}

/// Caps `count` to what this process's open-file limit allows, saying so.
pub fn capped_count(count: usize) -> usize {
    let Some(limit) = open_files_limit() else {
        return count;
    };
    let usable = limit.saturating_sub(64) as usize;
    if count > usable {
        eprintln!(
            "warning: the open-file limit is {limit} (ulimit -n); measuring {usable} connections instead of {count}. \
             Raise it with `ulimit -n {}` (the spawned relay inherits it).",
            count + 100
        );
        usable
    } else {
        count
    }
}

/// One connections run against the Axon target.
pub async fn run(target: &Target, params: &ConnectionsParams) -> CliResult<Report> {
    let count = capped_count(params.count).max(1);
    let keys = target.keys(params.keys.max(1));
    let relay = target.start(&keys, &[("max_connections", count as u64 + 100)]).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = relay.rss_kib();
    let topic = format!("idle-{}", run_nonce());

    // Phase 1: connect + AUTH, `parallel` at a time.
    let started = Instant::now();
    let mut clients = Vec::with_capacity(count);
    let mut handshake = Vec::with_capacity(count);
    let mut pending = FuturesUnordered::new();
    let mut next = 0;
    while clients.len() < count {
        while next < count && pending.len() < params.parallel.max(1) {
            let key = &keys[next % keys.len()];
            let (url, relay_url) = (&relay.url, &relay.relay_url);
            pending.push(async move {
                let begun = Instant::now();
                let client = Client::connect(url, relay_url, key).await;
                (begun.elapsed().as_nanos() as u64, client)
            });
            next += 1;
        }
        match pending.next().await {
            Some((elapsed, Ok(client))) => {
                handshake.push(elapsed);
                clients.push(client);
            }
            Some((_, Err(error))) => {
                return Err(format!("connection {} of {count} failed: {error}", clients.len() + 1).into())
            }
            None => break,
        }
    }
    drop(pending);
    let connect_elapsed = started.elapsed();

    // Phase 2: one live subscription each, confirmed by EOSE.
    let filter = Filter {
        kinds: Some(vec![1000]),
        tags: Some(vec![TagFilter { name: "t".into(), values: vec![topic] }]),
        limit: Some(0),
        ..Filter::default()
    };
    let subscribe_started = Instant::now();
    let mut subscriptions = Vec::with_capacity(count);
    let mut pending = FuturesUnordered::new();
    let mut index = 0;
    while subscriptions.len() < count {
        while index < count && pending.len() < params.parallel.max(1) {
            let client = &clients[index];
            let filter = filter.clone();
            pending.push(async move {
                let mut subscription = client.subscribe("idle", vec![filter], None).await?;
                match subscription.next().await {
                    Some(SubItem::Eose) => Ok(subscription),
                    Some(SubItem::Ended(error)) => Err(crate::client::ClientError::from(error)),
                    _ => Err(crate::client::ClientError::Closed),
                }
            });
            index += 1;
        }
        match pending.next().await {
            Some(Ok(subscription)) => subscriptions.push(subscription),
            Some(Err(error)) => return Err(format!("subscribing failed: {error}").into()),
            None => break,
        }
    }
    drop(pending);
    let subscribe_elapsed = subscribe_started.elapsed();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = relay.rss_kib();
    let peak = relay.peak_rss_kib();

    let latency = Latency::of(handshake);
    let mut metrics = Metrics::default();
    let (Some(before), Some(after)) = (before, after) else {
        return Err("the relay's memory cannot be read: use --spawn, or give --relay-pid with --url".into());
    };
    let per_connection = (after as f64 - before as f64) / count as f64;
    metrics.set("kib_per_connection", per_connection);
    metrics.set("connects_per_s", rate(count as u64, connect_elapsed));
    metrics.set("connections", count as f64);
    metrics.set("parallel", params.parallel as f64);
    metrics.set("rss_before_mib", before as f64 / 1024.0);
    metrics.set("rss_after_mib", after as f64 / 1024.0);
    metrics.set("subscribes_per_s", rate(count as u64, subscribe_elapsed));
    let details = vec![
        format!(
            "connect+auth: {} connections in {:.2} s; handshake latency {}",
            thousands(count as f64),
            connect_elapsed.as_secs_f64(),
            latency.describe()
        ),
        format!(
            "subscribe+EOSE: {} subscriptions in {:.2} s ({} /s)",
            thousands(count as f64),
            subscribe_elapsed.as_secs_f64(),
            thousands(metrics.get("subscribes_per_s"))
        ),
        format!(
            "relay RSS {:.1} MiB before, {:.1} MiB with the connections open (peak {:.1} MiB): {:.1} KiB per connection",
            before as f64 / 1024.0,
            after as f64 / 1024.0,
            peak.unwrap_or(after) as f64 / 1024.0,
            per_connection
        ),
    ];
    drop(subscriptions);
    drop(clients);
    relay.stop().await?;
    Ok(Report { metrics, details, summarize })
}
