//! One upstream's task (spec §17): fetch its info document, connect and AUTH, subscribe
//! with `after_seq` = the stored cursor, copy in batches, and reconnect with backoff.

use std::sync::Arc;
use std::time::Duration;

use ed25519_dalek::SigningKey;
use futures_util::FutureExt;
use tokio::sync::watch;

use super::backoff::{Backoff, Failure};
use super::copy::{classify, Skip, Verdict};
use super::info::{fetch_relay_url, InfoError};
use super::metrics::MirrorMetrics;
use super::MirrorConfig;
use crate::client::{Client, ClientError, SubItem, Subscription};
use crate::protocol::frame::ErrorMessage;
use crate::protocol::{Filter, RawEvent};
use crate::relay::store::{MirrorBatch, StoreError, UpstreamCursor};
use crate::relay::RelayState;

/// How long connecting and AUTH may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Events taken from the subscription per batch at most.
const BATCH: usize = 512;
/// The subscription id used upstream.
const SUB_ID: &str = "axon-mirror";

/// Why a session with the upstream ended.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// The info document could not be read.
    #[error(transparent)]
    Info(#[from] InfoError),
    /// Connecting, AUTH, or the connection failed.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The upstream ended the subscription or sent an ERROR.
    #[error("upstream error {}: {}", .0.code, .0.message)]
    Upstream(ErrorMessage),
    /// Storing copied events failed (nothing of the batch was stored).
    #[error("storage: {0}")]
    Store(#[from] StoreError),
    /// The relay is shutting down or the mirror was removed.
    #[error("stopped")]
    Stopped,
}

impl SessionError {
    /// The `code` label of the errors metric: the relay's error code, or a word.
    pub fn code(&self) -> String {
        match self {
            SessionError::Info(_) => "info".into(),
            SessionError::Client(ClientError::Rejected { code, .. }) => code.to_string(),
            SessionError::Client(ClientError::Connect { .. }) => "connect".into(),
            SessionError::Client(ClientError::Closed) => "closed".into(),
            SessionError::Client(ClientError::Protocol(_)) => "protocol".into(),
            SessionError::Upstream(error) => error.code.to_string(),
            SessionError::Store(_) => "storage".into(),
            SessionError::Stopped => "stopped".into(),
        }
    }

    fn failure(&self) -> Failure {
        let (code, hint) = match self {
            SessionError::Client(error) => (error.code(), error.retry_after()),
            SessionError::Upstream(error) => (Some(error.code), error.retry_after_ms.map(Duration::from_millis)),
            _ => (None, None),
        };
        match (code, hint) {
            (Some(401 | 403), _) => Failure::Refused,
            (_, Some(hint)) => Failure::Hinted(hint),
            _ => Failure::Other,
        }
    }
}

/// Everything one upstream task needs.
pub struct Upstream {
    /// The entry from relay.yaml.
    pub config: MirrorConfig,
    /// Its key, read when the configuration was applied.
    pub key: SigningKey,
    /// Its wire filters.
    pub filters: Vec<Filter>,
    /// The relay.
    pub state: Arc<RelayState>,
    /// Turns true when the mirror is removed or replaced.
    pub stop: watch::Receiver<bool>,
}

/// Waits until `stop` or the relay's shutdown turns true.
async fn stopped(mut stop: watch::Receiver<bool>, mut shutdown: watch::Receiver<bool>) {
    tokio::select! {
        _ = stop.wait_for(|stop| *stop) => {}
        _ = shutdown.wait_for(|down| *down) => {}
    }
}

impl Upstream {
    fn metrics(&self) -> &MirrorMetrics {
        &self.state.metrics.mirrors
    }

    fn url(&self) -> &str {
        &self.config.url
    }

    /// Runs sessions until stopped, waiting between them as spec §15/§17 say.
    pub async fn run(self) {
        let mut backoff = Backoff::new(
            Duration::from_millis(self.config.retry_min_ms),
            Duration::from_millis(self.config.retry_max_ms),
        );
        let url = self.url().to_owned();
        if let Ok(cursor) = self.state.store.upstream_cursor(&url).await {
            self.metrics().last_seq.with_label_values(&[&url]).set(cursor as i64);
        }
        loop {
            self.metrics().attempts.with_label_values(&[&url]).inc();
            let mut healthy = false;
            let outcome = tokio::select! {
                outcome = self.session(&mut healthy) => outcome,
                _ = stopped(self.stop.clone(), self.state.shutdown_signal()) => Err(SessionError::Stopped),
            };
            let error = match outcome {
                // Removed or shutting down: leave the (possibly forgotten) series alone.
                Err(SessionError::Stopped) => return,
                Err(error) => error,
                Ok(()) => SessionError::Client(ClientError::Closed),
            };
            self.metrics().connected.with_label_values(&[&url]).set(0);
            if healthy {
                backoff.reset();
            }
            let delay = backoff.delay(error.failure());
            self.report(&error, delay);
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = stopped(self.stop.clone(), self.state.shutdown_signal()) => return,
            }
        }
    }

    fn report(&self, error: &SessionError, delay: Duration) {
        let code = error.code();
        self.metrics().errors.with_label_values(&[self.url(), &code]).inc();
        let delay_ms = delay.as_millis() as u64;
        if matches!(error.failure(), Failure::Refused) {
            tracing::error!(
                upstream = %self.url(), %error, delay_ms,
                key = %hex::encode(self.key.verifying_key().to_bytes()),
                "mirror refused by upstream: the upstream must allow this relay's mirror key; retrying slowly"
            );
        } else {
            tracing::warn!(upstream = %self.url(), %error, delay_ms, "mirror disconnected; reconnecting");
        }
    }

    /// One connection: returns when it ends. `healthy` turns true once the upstream
    /// accepted the subscription and sent its stored events.
    async fn session(&self, healthy: &mut bool) -> Result<(), SessionError> {
        let relay_url = fetch_relay_url(self.url()).await?;
        let client = tokio::time::timeout(CONNECT_TIMEOUT, Client::connect(self.url(), &relay_url, &self.key))
            .await
            .map_err(|_| ClientError::Connect { url: self.url().into(), reason: "timed out".into() })??;
        let cursor = self.state.store.upstream_cursor(self.url()).await?;
        let mut subscription = client.subscribe(SUB_ID, self.filters.clone(), Some(cursor)).await?;
        self.metrics().connected.with_label_values(&[self.url()]).set(1);
        tracing::info!(upstream = %self.url(), after_seq = cursor, "mirror connected");
        let head = probe_head(&client, &self.filters).await.unwrap_or(cursor);
        let mut progress = Progress { cursor, head: head.max(cursor), last_created_at: None };
        self.publish_progress(&mut progress, crate::relay::unix_now());
        loop {
            let first = tokio::select! {
                item = subscription.next() => item,
                error = client.next_error() => match error {
                    Some(error) => return Err(SessionError::Upstream(error)),
                    None => subscription.next().await,
                },
            };
            let Some(first) = first else { return Err(closed(&client)) };
            let (items, end) = gather(first, &mut subscription);
            self.copy(&items, &mut progress).await?;
            match end {
                End::More => {}
                End::Eose => *healthy = true,
                End::Ended(error) => return Err(SessionError::Upstream(error)),
                End::Closed => return Err(closed(&client)),
            }
        }
    }

    /// Stores a batch with its cursor in one transaction and fans out ephemeral events.
    async fn copy(&self, items: &[(RawEvent, u64)], progress: &mut Progress) -> Result<(), SessionError> {
        let url = self.url();
        let now = crate::relay::unix_now();
        let mut events = Vec::new();
        let mut last_seq = progress.cursor;
        for (raw, seq) in items {
            match classify(raw, &self.state, self.config.any_author, now) {
                Verdict::Ephemeral(accepted) => {
                    self.state.fanout.dispatch_ephemeral(&accepted.event, &accepted.raw);
                    continue;
                }
                Verdict::Store(accepted) => {
                    progress.note(*seq, accepted.event.created_at);
                    events.push(accepted);
                }
                Verdict::Skip(reason) => self.skipped(reason, *seq),
            }
            last_seq = last_seq.max(*seq);
        }
        if last_seq == progress.cursor && events.is_empty() {
            return Ok(());
        }
        let batch = MirrorBatch { events, cursor: UpstreamCursor { upstream: url.to_owned(), last_seq } };
        let outcomes = self.state.store.submit_mirrored(batch).await?.wait().await?;
        let copied = outcomes.iter().filter(|outcome| outcome.is_some()).count();
        let duplicates = outcomes.len() - copied;
        self.metrics().copied.with_label_values(&[url]).inc_by(copied as u64);
        if duplicates > 0 {
            self.metrics().skipped.with_label_values(&[url, "duplicate"]).inc_by(duplicates as u64);
        }
        progress.cursor = last_seq;
        self.publish_progress(progress, now);
        Ok(())
    }

    fn skipped(&self, reason: Skip, seq: u64) {
        self.metrics().skipped.with_label_values(&[self.url(), reason.label()]).inc();
        tracing::debug!(upstream = %self.url(), seq, reason = reason.label(), "mirror skipped an event");
    }

    fn publish_progress(&self, progress: &mut Progress, now: u64) {
        let url = self.url();
        let metrics = self.metrics();
        progress.head = progress.head.max(progress.cursor);
        let lag = progress.head - progress.cursor;
        metrics.last_seq.with_label_values(&[url]).set(progress.cursor as i64);
        metrics.lag_events.with_label_values(&[url]).set(lag as i64);
        let seconds = match progress.last_created_at {
            Some(created_at) if lag > 0 => now.saturating_sub(created_at),
            _ => 0,
        };
        metrics.lag_seconds.with_label_values(&[url]).set(seconds as i64);
    }
}

/// The upstream's 401/403 that came just before a close, if any; else Closed.
fn closed(client: &Client) -> SessionError {
    match client.next_error().now_or_never().flatten() {
        Some(error) => SessionError::Upstream(error),
        None => SessionError::Client(ClientError::Closed),
    }
}

/// Where the copy stands in this session.
struct Progress {
    /// The stored cursor.
    cursor: u64,
    /// The highest upstream seq known (probed at connect, then seen).
    head: u64,
    /// created_at of the last event copied (lag in seconds while behind).
    last_created_at: Option<u64>,
}

impl Progress {
    fn note(&mut self, seq: u64, created_at: u64) {
        self.head = self.head.max(seq);
        self.last_created_at = Some(created_at);
    }
}

/// The upstream's highest seq among events the filters match: each filter's newest
/// event (limit 1), so the lag can be told while replaying. `None` if it cannot be read.
async fn probe_head(client: &Client, filters: &[Filter]) -> Option<u64> {
    const PROBE: &str = "axon-mirror-head";
    let probes = filters.iter().map(|filter| Filter { limit: Some(1), ..filter.clone() }).collect();
    let mut subscription = client.subscribe(PROBE, probes, None).await.ok()?;
    let stored = tokio::time::timeout(CONNECT_TIMEOUT, subscription.stored()).await.ok()?.ok()?;
    let _ = client.unsubscribe(PROBE).await;
    stored.iter().map(|(_, seq)| *seq).max()
}

/// How a gathered batch ended.
enum End {
    /// More may follow.
    More,
    /// The stored phase is over.
    Eose,
    /// The upstream ended the subscription.
    Ended(ErrorMessage),
    /// The connection is gone.
    Closed,
}

/// Takes `first` and whatever else is already waiting (up to [`BATCH`]), stopping at
/// EOSE or the end of the subscription.
fn gather(first: SubItem, subscription: &mut Subscription) -> (Vec<(RawEvent, u64)>, End) {
    let mut items = Vec::new();
    let mut next = Some(first);
    while let Some(item) = next.take() {
        match item {
            SubItem::Event { raw, seq, .. } => items.push((raw, seq)),
            SubItem::Eose => return (items, End::Eose),
            SubItem::Ended(error) => return (items, End::Ended(error)),
        }
        if items.len() >= BATCH {
            break;
        }
        next = match subscription.next().now_or_never() {
            Some(Some(item)) => Some(item),
            Some(None) => return (items, End::Closed),
            None => None,
        };
    }
    (items, End::More)
}
