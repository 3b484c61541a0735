//! Plain HTTP on the relay's port (spec §11): `/health`, the info document, and the
//! request-head reading that decides between HTTP and a WebSocket upgrade.

use bytes::Bytes;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::config::RelayConfig;
use super::RelayState;
use crate::protocol::kind::KIND_RANGES;

/// The largest request head accepted.
const MAX_HEAD_BYTES: usize = 16 * 1024;
/// After refusing a request, how long and how much of the rest of it is read and dropped
/// before closing, so the close is a FIN the client sees after the answer, not a reset.
const LINGER: std::time::Duration = std::time::Duration::from_secs(2);
const LINGER_BYTES: usize = 1024 * 1024;

/// Why no request head could be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadError {
    /// The peer closed or the socket failed: nothing to answer.
    Gone,
    /// The request line alone is longer than the head limit (answer 414).
    UriTooLong,
    /// The head is longer than the limit (answer 431).
    HeadTooLarge,
    /// Not an HTTP/1 request head (answer 400).
    Malformed,
}

impl HeadError {
    /// The answer to send before closing, if any.
    pub fn response(self) -> Option<Response> {
        let (status, body) = match self {
            HeadError::Gone => return None,
            HeadError::UriTooLong => {
                (414, format!("invalid: the request line is longer than {MAX_HEAD_BYTES} bytes\n"))
            }
            HeadError::HeadTooLarge => {
                (431, format!("invalid: the request head is longer than {MAX_HEAD_BYTES} bytes\n"))
            }
            HeadError::Malformed => (400, "invalid: not an HTTP/1.1 request\n".to_owned()),
        };
        Some(Response { status, content_type: "text/plain; charset=utf-8", body })
    }
}

/// A parsed request head.
#[derive(Debug)]
pub struct RequestHead {
    /// e.g. `GET`.
    pub method: String,
    /// e.g. `/health`.
    pub path: String,
    /// Header names lowercased.
    pub headers: Vec<(String, String)>,
}

impl RequestHead {
    /// The first value of a header.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(key, _)| key == name).map(|(_, value)| value.as_str())
    }

    /// True for a WebSocket upgrade request.
    pub fn is_websocket(&self) -> bool {
        self.header("upgrade").is_some_and(|value| value.eq_ignore_ascii_case("websocket"))
    }
}

/// Reads a request head; returns it and every byte read (to replay to the WebSocket
/// handshake), or why there is none: a head over the limit or not HTTP gets an answer
/// ([`HeadError::response`], sent with [`refuse`]) instead of a silent close or a reset.
pub async fn read_head(stream: &mut TcpStream) -> Result<(RequestHead, Bytes), HeadError> {
    let mut buffer = Vec::with_capacity(1024);
    let mut chunk = [0u8; 2048];
    loop {
        let read = stream.read(&mut chunk).await.map_err(|_| HeadError::Gone)?;
        if read == 0 {
            return Err(HeadError::Gone);
        }
        // Only the new bytes (and 3 before them) can complete the blank line.
        let searched = buffer.len().saturating_sub(3);
        buffer.extend_from_slice(&chunk[..read]);
        if let Some(end) = buffer[searched..].windows(4).position(|window| window == b"\r\n\r\n") {
            let head = parse_head(&buffer[..searched + end]).ok_or(HeadError::Malformed)?;
            return Ok((head, Bytes::from(buffer)));
        }
        if buffer.len() > MAX_HEAD_BYTES {
            let request_line_ended = buffer.windows(2).any(|window| window == b"\r\n");
            return Err(if request_line_ended { HeadError::HeadTooLarge } else { HeadError::UriTooLong });
        }
    }
}

/// Sends `response` and closes, first reading and dropping what the client still sends
/// (bounded by [`LINGER`] and [`LINGER_BYTES`]): closing a socket with unread input makes
/// the kernel send a reset, which can destroy the answer before the client reads it.
pub async fn refuse(stream: &mut TcpStream, response: Response) -> std::io::Result<()> {
    respond(stream, response).await?;
    let mut chunk = [0u8; 4096];
    let mut drained = 0;
    let deadline = tokio::time::Instant::now() + LINGER;
    while drained < LINGER_BYTES {
        match tokio::time::timeout_at(deadline, stream.read(&mut chunk)).await {
            Ok(Ok(read)) if read > 0 => drained += read,
            _ => break,
        }
    }
    Ok(())
}

fn parse_head(bytes: &[u8]) -> Option<RequestHead> {
    let text = std::str::from_utf8(bytes).ok()?;
    let mut lines = text.split("\r\n");
    let mut request = lines.next()?.split(' ');
    let method = request.next()?.to_owned();
    let path = request.next()?.to_owned();
    let version = request.next()?;
    let token = |word: &str| {
        !word.is_empty() && word.bytes().all(|byte| byte.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&byte))
    };
    if !token(&method) || path.is_empty() || !version.starts_with("HTTP/1.") || request.next().is_some() {
        return None;
    }
    let headers = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_owned()))
        .collect();
    Some(RequestHead { method, path, headers })
}

/// The info document (spec §11).
pub fn info_document(config: &RelayConfig) -> serde_json::Value {
    let kinds: Vec<_> = KIND_RANGES
        .iter()
        .map(|range| json!({"first": range.first, "last": range.last, "meaning": range.meaning, "behaviour": range.behaviour}))
        .collect();
    let limits = &config.limits;
    json!({
        "name": "axon",
        "description": "Axon signed-event relay for AI-agent infrastructure",
        "software": "axon-relay",
        "version": env!("CARGO_PKG_VERSION"),
        "protocol": "axon.v1",
        "relay_url": config.relay_url,
        "auth": "allowlist",
        "limits": {
            "max_frame_bytes": limits.max_frame_bytes,
            "max_content_bytes": limits.max_content_bytes,
            "max_tags": limits.max_tags,
            "max_tag_values": limits.max_tag_values,
            "max_tag_value_bytes": limits.max_tag_value_bytes,
            "max_subscriptions": limits.max_subscriptions,
            "max_filters": limits.max_filters,
            "max_filter_items": limits.max_filter_items,
            "max_filter_items_per_connection": limits.max_filter_items_per_connection,
            "max_limit": limits.max_limit,
            "auth_timeout_secs": limits.auth_timeout_secs,
            "ping_interval_secs": limits.ping_interval_secs,
            "max_future_skew_secs": limits.max_future_skew_secs,
            "outbound_queue": limits.outbound_queue,
            "outbound_bytes": limits.outbound_bytes,
            "publish_per_second": limits.publish_per_second,
            "publish_burst": limits.publish_burst,
            "max_connections": limits.max_connections,
            "max_connections_per_ip": limits.max_connections_per_ip,
            "max_connections_per_key": limits.max_connections_per_key,
            "handshakes_per_second_per_ip": limits.handshakes_per_second_per_ip,
            "drain_timeout_secs": limits.drain_timeout_secs,
        },
        "kinds": kinds,
        "retention": {
            "max_events": config.retention.max_events,
            "max_age": config.retention.max_age.iter().map(|rule| json!({"kinds": rule.kinds, "max_age_secs": rule.max_age_secs})).collect::<Vec<_>>(),
        },
    })
}

/// A response to a plain HTTP request.
pub struct Response {
    status: u16,
    content_type: &'static str,
    body: String,
}

impl Response {
    /// 503 with a short reason, for upgrades refused while draining.
    pub fn unavailable(reason: &str) -> Response {
        Response { status: 503, content_type: "text/plain; charset=utf-8", body: format!("error: {reason}\n") }
    }

    /// 429 with a short reason, for refused handshakes.
    pub fn too_many_requests(reason: &str) -> Response {
        Response { status: 429, content_type: "text/plain; charset=utf-8", body: format!("rate-limited: {reason}\n") }
    }
}

/// Routes a non-WebSocket request.
pub fn route(head: &RequestHead, state: &RelayState) -> Response {
    let config = state.config();
    let config = config.as_ref();
    let serving = state.is_serving();
    let text =
        |status, body: &str| Response { status, content_type: "text/plain; charset=utf-8", body: body.to_owned() };
    if head.method != "GET" {
        return text(405, "method not allowed\n");
    }
    let wants_json = head.header("accept").is_some_and(|accept| accept.contains("application/json"));
    match head.path.split('?').next().unwrap_or_default() {
        "/health" if serving => match (state.health.problem(), &state.cluster) {
            (None, None) => text(200, "ok"),
            (Some(problem), _) => text(503, &format!("unavailable: {problem}\n")),
            (None, Some(cluster)) => {
                let (status, body) = super::cluster::health(&cluster.status());
                text(status, &body)
            }
        },
        "/health" => text(503, "unavailable"),
        "/info" => json_response(config, state),
        "/metrics" => {
            state.metrics.outbound_bytes.set(state.outbound_bytes.queued() as i64);
            state.jobs.export(&state.metrics);
            if let Some(cluster) = &state.cluster {
                cluster.status(); // refreshes the cluster gauges
            }
            Response {
                status: 200,
                content_type: "text/plain; version=0.0.4",
                body: state.metrics.render(&config.db, state.fanout.len()),
            }
        }
        "/" if wants_json => json_response(config, state),
        "/" if super::console::wants_console(head.header("accept")) => {
            Response { status: 200, content_type: super::console::CONTENT_TYPE, body: super::console::HTML.to_owned() }
        }
        "/" => text(200, "Axon relay (axon.v1). Connect with a WebSocket; GET /info for details.\n"),
        _ => text(404, "not found\n"),
    }
}

fn json_response(config: &RelayConfig, state: &RelayState) -> Response {
    let mut document = info_document(config);
    // Spec §17: each upstream's url and state (never its key).
    document["mirrors"] = state.mirrors.info(&state.metrics.mirrors);
    if let Some(cluster) = &state.cluster {
        document["cluster"] = cluster.info();
    }
    Response { status: 200, content_type: "application/json", body: document.to_string() }
}

/// Writes a response and closes the connection.
pub async fn respond(stream: &mut TcpStream, response: Response) -> std::io::Result<()> {
    let reason = match response.status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        414 => "URI Too Long",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        _ => "Service Unavailable",
    };
    let head = format!(
        "HTTP/1.1 {} {reason}\r\ncontent-type: {}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        response.status,
        response.content_type,
        response.body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(response.body.as_bytes()).await?;
    stream.shutdown().await
}
