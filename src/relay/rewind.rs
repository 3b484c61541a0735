//! A TCP stream that first replays the bytes already read while deciding between plain
//! HTTP and a WebSocket upgrade (the request head), then reads on from the socket.
//!
//! It also records whether its last write found the kernel's send buffer full
//! ([`Rewind::write_blocked`]): the peer is not reading as fast as the relay writes. The
//! fan-out stage reads that flag to tell a subscriber that cannot keep up from a socket
//! writer that is merely behind a burst (see [`super::outbound`]).

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// A TCP stream that first replays bytes already read (the request head).
pub struct Rewind {
    prefix: Bytes,
    inner: TcpStream,
    /// True while the last write found the socket's send buffer full.
    write_blocked: Arc<AtomicBool>,
}

impl Rewind {
    /// Replays `prefix`, then reads from `inner`.
    pub fn new(prefix: Bytes, inner: TcpStream) -> Rewind {
        Rewind { prefix, inner, write_blocked: Arc::new(AtomicBool::new(false)) }
    }

    /// A flag that is true while the socket's send buffer is full (the last write could
    /// not proceed), false once a write goes through again.
    pub fn write_blocked(&self) -> Arc<AtomicBool> {
        self.write_blocked.clone()
    }
}

impl AsyncRead for Rewind {
    fn poll_read(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buffer: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if !self.prefix.is_empty() {
            let count = self.prefix.len().min(buffer.remaining());
            buffer.put_slice(&self.prefix[..count]);
            self.prefix.advance(count);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(context, buffer)
    }
}

impl AsyncWrite for Rewind {
    fn poll_write(mut self: Pin<&mut Self>, context: &mut Context<'_>, bytes: &[u8]) -> Poll<std::io::Result<usize>> {
        let written = Pin::new(&mut self.inner).poll_write(context, bytes);
        // Pending from a TCP stream means the kernel's send buffer is full.
        self.write_blocked.store(written.is_pending(), Ordering::Relaxed);
        written
    }

    fn poll_flush(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(context)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(context)
    }
}
