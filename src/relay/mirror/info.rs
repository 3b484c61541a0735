//! Reads an upstream's info document (spec §11, §17): the same host and path as its
//! WebSocket URL, over http (ws://) or https (wss://), for the `relay_url` AUTH signs.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long fetching the info document may take.
const TIMEOUT: Duration = Duration::from_secs(10);
/// The largest response read.
const MAX_RESPONSE: u64 = 1024 * 1024;

/// Why the info document could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InfoError {
    /// The URL is not ws:// or wss://host[:port][/path].
    #[error("bad upstream url {0:?}")]
    Url(String),
    /// Connecting, TLS, or reading failed.
    #[error("cannot fetch the info document: {0}")]
    Fetch(String),
    /// Not a 200 answer with a JSON document holding `relay_url`.
    #[error("bad info document: {0}")]
    Document(String),
}

/// The parts of a ws(s) URL an HTTP request needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// https (wss) or http (ws).
    pub tls: bool,
    /// Host name or address (IPv6 without brackets).
    pub host: String,
    /// Port (default 80/443).
    pub port: u16,
    /// `Host:` header value.
    pub authority: String,
    /// Path and query, at least `/`.
    pub path: String,
}

/// Splits a ws:// or wss:// URL.
pub fn target(url: &str) -> Result<Target, InfoError> {
    let bad = || InfoError::Url(url.to_owned());
    let (tls, rest) = match url.split_once("://") {
        Some(("ws", rest)) => (false, rest),
        Some(("wss", rest)) => (true, rest),
        _ => return Err(bad()),
    };
    let (authority, path) = match rest.find(['/', '?']) {
        Some(at) if rest[at..].starts_with('/') => (&rest[..at], rest[at..].to_owned()),
        Some(at) => (&rest[..at], format!("/{}", &rest[at..])),
        None => (rest, "/".to_owned()),
    };
    let default_port = if tls { 443 } else { 80 };
    let (host, port) = if let Some(inner) = authority.strip_prefix('[') {
        let (host, after) = inner.split_once(']').ok_or_else(bad)?;
        let port = match after.strip_prefix(':') {
            Some(port) => port.parse().map_err(|_| bad())?,
            None if after.is_empty() => default_port,
            None => return Err(bad()),
        };
        (host.to_owned(), port)
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) => (host.to_owned(), port.parse().map_err(|_| bad())?),
            None => (authority.to_owned(), default_port),
        }
    };
    if host.is_empty() {
        return Err(bad());
    }
    Ok(Target { tls, host, port, authority: authority.to_owned(), path })
}

/// Fetches the info document of the relay at `url` (ws:// or wss://).
pub async fn fetch_document(url: &str) -> Result<serde_json::Value, InfoError> {
    let target = target(url)?;
    let body = tokio::time::timeout(TIMEOUT, get(&target))
        .await
        .map_err(|_| InfoError::Fetch(format!("no answer within {} s", TIMEOUT.as_secs())))??;
    serde_json::from_slice(&body).map_err(|error| InfoError::Document(error.to_string()))
}

/// Fetches the info document of the relay at `url` and returns its `relay_url`.
pub async fn fetch_relay_url(url: &str) -> Result<String, InfoError> {
    let document = fetch_document(url).await?;
    document
        .get("relay_url")
        .and_then(|value| value.as_str())
        .map(str::to_owned)
        .ok_or_else(|| InfoError::Document("no relay_url".into()))
}

async fn get(target: &Target) -> Result<Vec<u8>, InfoError> {
    let fetch = |error: std::io::Error| InfoError::Fetch(error.to_string());
    let stream = TcpStream::connect((target.host.as_str(), target.port)).await.map_err(fetch)?;
    if !target.tls {
        return exchange(stream, target).await;
    }
    let name = rustls::pki_types::ServerName::try_from(target.host.clone())
        .map_err(|_| InfoError::Url(format!("{} is not a TLS server name", target.host)))?;
    let stream = tls_connector().connect(name, stream).await.map_err(fetch)?;
    exchange(stream, target).await
}

/// A TLS client that trusts the Mozilla roots (webpki-roots), as the WebSocket client does.
fn tls_connector() -> tokio_rustls::TlsConnector {
    let roots = rustls::RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
    let config = rustls::ClientConfig::builder().with_root_certificates(roots).with_no_client_auth();
    tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
}

/// Sends the GET and returns the body of a 200 answer. HTTP/1.0, so the answer is never
/// chunked (a proxy in front of the upstream would otherwise be free to chunk it).
async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S, target: &Target) -> Result<Vec<u8>, InfoError> {
    let request = format!(
        "GET {} HTTP/1.0\r\nHost: {}\r\nAccept: application/json\r\nConnection: close\r\nUser-Agent: axon-mirror\r\n\r\n",
        target.path, target.authority
    );
    let fetch = |error: std::io::Error| InfoError::Fetch(error.to_string());
    stream.write_all(request.as_bytes()).await.map_err(fetch)?;
    let mut response = Vec::new();
    (&mut stream).take(MAX_RESPONSE).read_to_end(&mut response).await.map_err(fetch)?;
    let end = response
        .windows(4)
        .position(|window| window == b"\r\n\r\n")
        .ok_or_else(|| InfoError::Document("no HTTP response head".into()))?;
    let head = String::from_utf8_lossy(&response[..end]);
    let status = head.split(' ').nth(1).unwrap_or_default();
    if !head.starts_with("HTTP/1.") || status != "200" {
        return Err(InfoError::Document(format!("HTTP status {status}")));
    }
    Ok(response[end + 4..].to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_https_fetch_reaches_the_tls_handshake() {
        // A plain TCP peer that hangs up: the fetch must fail with an error (before the
        // crypto provider was enabled, building the TLS client panicked).
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        tokio::spawn(async move { drop(listener.accept().await) });
        let target = target(&format!("wss://localhost:{port}/")).expect("valid");
        assert!(matches!(get(&target).await, Err(InfoError::Fetch(_))));
    }

    #[test]
    fn urls_map_to_http_targets() {
        let plain = target("ws://127.0.0.1:8080").expect("valid");
        assert_eq!((plain.tls, plain.host.as_str(), plain.port, plain.path.as_str()), (false, "127.0.0.1", 8080, "/"));
        let secure = target("wss://relay.example/axon/").expect("valid");
        assert_eq!((secure.tls, secure.port, secure.path.as_str()), (true, 443, "/axon/"));
        let v6 = target("ws://[::1]:9/x").expect("valid");
        assert_eq!((v6.host.as_str(), v6.port, v6.authority.as_str()), ("::1", 9, "[::1]:9"));
        assert!(target("http://x").is_err());
        assert!(target("ws://:80").is_err());
    }
}
