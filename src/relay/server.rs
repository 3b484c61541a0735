//! The accept loop: HTTP or WebSocket per connection, the expiry pruner, and graceful
//! shutdown (stop accepting, let connections finish, bounded by the drain timeout).

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use super::http::{read_head, refuse, respond, route, Response as HttpResponse};
use super::rewind::Rewind;
use super::store::{Prune, StoreError};
use super::{connection, RelayState};
use crate::clock::unix_now;

/// The WebSocket subprotocol a client may offer; the relay echoes it.
pub const SUBPROTOCOL: &str = "axon.v1";
/// How often expired events are deleted.
const PRUNE_INTERVAL: Duration = Duration::from_secs(30);

/// Serves until shutdown, then drains.
pub async fn run(listener: TcpListener, state: Arc<RelayState>) {
    let mut shutdown = state.shutdown_signal();
    let mut tasks = JoinSet::new();
    let pruner = tokio::spawn(prune_expired(state.clone()));
    let trimmer =
        tokio::spawn(super::memory::trim_task(state.outbound_bytes.clone(), state.metrics.connections.clone()));
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    tasks.spawn(handle(stream, peer, state.clone()));
                }
                Err(error) => {
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            _ = shutdown.changed() => break,
        }
    }
    state.serving.store(false, Ordering::Relaxed);
    pruner.abort();
    trimmer.abort();
    drain(listener, tasks, &state).await;
}

/// Waits for every connection to finish, bounded by the drain timeout. The listener stays
/// open meanwhile so `/health` can answer 503; new WebSocket upgrades are refused (503).
async fn drain(listener: TcpListener, mut tasks: JoinSet<()>, state: &Arc<RelayState>) {
    let deadline = tokio::time::sleep(Duration::from_secs(state.config().limits.drain_timeout_secs));
    tokio::pin!(deadline);
    tracing::info!(connections = tasks.len(), "draining");
    while !tasks.is_empty() {
        tokio::select! {
            accepted = listener.accept() => {
                if let Ok((stream, peer)) = accepted {
                    tasks.spawn(handle(stream, peer, state.clone()));
                }
            }
            _ = tasks.join_next() => {}
            _ = &mut deadline => {
                tracing::warn!(left = tasks.len(), "drain timeout; closing the remaining connections");
                tasks.abort_all();
                return;
            }
        }
    }
}

async fn handle(mut stream: TcpStream, peer: SocketAddr, state: Arc<RelayState>) {
    let config = state.config();
    let _ = stream.set_nodelay(true);
    let head_timeout = Duration::from_secs(config.limits.auth_timeout_secs);
    let (head, bytes) = match tokio::time::timeout(head_timeout, read_head(&mut stream)).await {
        Ok(Ok(head)) => head,
        Ok(Err(refusal)) => {
            if let Some(response) = refusal.response() {
                let _ = refuse(&mut stream, response).await;
            }
            return;
        }
        Err(_) => return,
    };
    if !head.is_websocket() {
        let _ = respond(&mut stream, route(&head, &state)).await;
        return;
    }
    if !state.is_serving() {
        let _ = respond(&mut stream, HttpResponse::unavailable("the relay is shutting down")).await;
        return;
    }
    if let Some(reason) = refuse_handshake(&state, peer) {
        tracing::debug!(%peer, reason, "handshake refused");
        let _ = respond(&mut stream, HttpResponse::too_many_requests(reason)).await;
        return;
    }
    let ws_config = WebSocketConfig {
        max_message_size: Some(config.limits.max_frame_bytes),
        max_frame_size: Some(config.limits.max_frame_bytes),
        ..WebSocketConfig::default()
    };
    match tokio_tungstenite::accept_hdr_async_with_config(Rewind::new(bytes, stream), echo_subprotocol, Some(ws_config))
        .await
    {
        Ok(socket) => connection::serve(socket, state, peer).await,
        Err(error) => tracing::debug!(%peer, %error, "WebSocket handshake failed"),
    }
}

/// Per-IP connection cap and handshake rate, checked before the upgrade (HTTP 429).
fn refuse_handshake(state: &RelayState, peer: SocketAddr) -> Option<&'static str> {
    let limits = state.config().limits.clone();
    let per_ip = limits.max_connections_per_ip;
    if per_ip > 0 && state.connections.count_for_ip(peer.ip()) >= per_ip {
        return Some("too many connections from this address");
    }
    let rate = limits.handshakes_per_second_per_ip;
    if !state.handshake_rate.allow(peer.ip(), rate, 0, std::time::Instant::now()) {
        return Some("too many handshakes from this address");
    }
    None
}

/// Handshake callback: echoes the `axon.v1` subprotocol when the client offers it.
// The error type is fixed by tungstenite's `Callback` trait.
#[allow(clippy::result_large_err)]
fn echo_subprotocol(request: &Request, mut response: Response) -> Result<Response, ErrorResponse> {
    let offered = request.headers().get_all("sec-websocket-protocol").iter().filter_map(|value| value.to_str().ok());
    if offered.flat_map(|value| value.split(',')).any(|protocol| protocol.trim() == SUBPROTOCOL) {
        response.headers_mut().insert("sec-websocket-protocol", HeaderValue::from_static(SUBPROTOCOL));
    }
    Ok(response)
}

async fn prune_expired(state: Arc<RelayState>) {
    // First run one interval after start, not at once: startup stays quick.
    let mut interval = tokio::time::interval_at(tokio::time::Instant::now() + PRUNE_INTERVAL, PRUNE_INTERVAL);
    loop {
        interval.tick().await;
        if let Err(error) = enforce_retention(&state).await {
            tracing::warn!(%error, "pruning failed");
        }
    }
}

/// Deletes expired events, then applies the `retention` rules in force. Returns how many
/// events were deleted.
pub async fn enforce_retention(state: &RelayState) -> Result<usize, StoreError> {
    let now = unix_now();
    let retention = state.config().retention.clone();
    let mut rules = vec![Prune::Expired { now }];
    rules.extend(retention.max_age.iter().map(|rule| Prune::OlderThan {
        first: rule.kinds[0],
        last: rule.kinds[1],
        before: now.saturating_sub(rule.max_age_secs),
    }));
    if retention.max_events > 0 {
        rules.push(Prune::Beyond { keep: retention.max_events });
    }
    let mut total = 0;
    for rule in rules {
        let deleted = state.store.prune(rule).await?;
        if deleted > 0 {
            tracing::info!(deleted, ?rule, "pruned events");
        }
        total += deleted;
    }
    if total > 0 {
        state.jobs.forget_deleted(&state.store).await?;
    }
    Ok(total)
}
