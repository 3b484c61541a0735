//! One connection's bounded outbound queue: at most `capacity` frames and `byte_capacity`
//! bytes (a frame always fits into an empty queue, so no frame is refused for its size).
//!
//! Fan-out uses [`Outbound::try_push`], which fails when the queue is full so the
//! subscription can end with an overflow error instead of growing memory. Replies and
//! stored events use [`Outbound::push`], which waits for room (backpressure on the
//! connection's own requests). Errors and closes use [`Outbound::push_always`]: a few
//! frames past the bound, so an overflow error can follow the events before it in order.
//!
//! A full queue is not by itself a subscriber that cannot keep up: the fan-out stage
//! delivers a whole commit at once (up to the writer's batch of events), faster than the
//! socket writer, a task on the busy runtime, drains it. So the fan-out stage asks
//! [`Outbound::wait_for_room`] before ending a subscription: it waits while the socket
//! still takes bytes, and gives up at once when the kernel's send buffer is full (the peer
//! is not reading as fast as the relay writes), when the queue is closed, or at a deadline.
//! The bounds themselves never move: a queue never holds more than its frames and bytes.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use super::memory::OutboundBytes;

/// What the socket writer sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutFrame {
    /// A binary message holding one encoded frame.
    Binary(Vec<u8>),
    /// A keep-alive ping.
    Ping,
    /// A close frame; the writer stops after it.
    Close(u16, String),
}

impl OutFrame {
    /// The bytes this frame holds in the queue (counted against the byte bound).
    pub fn weight(&self) -> usize {
        match self {
            OutFrame::Binary(bytes) => bytes.len(),
            OutFrame::Ping => 0,
            OutFrame::Close(_, reason) => reason.len(),
        }
    }
}

struct State {
    frames: VecDeque<OutFrame>,
    /// Sum of the queued frames' weights.
    bytes: usize,
    closed: bool,
    /// Threads blocked in [`Outbound::wait_for_room`].
    waiting: usize,
}

/// How often a thread waiting for room looks at the socket again (its send buffer may
/// fill without the queue changing).
const RECHECK: Duration = Duration::from_millis(1);

/// The queue: many producers, one socket writer.
pub struct Outbound {
    state: Mutex<State>,
    capacity: usize,
    byte_capacity: usize,
    /// The relay-wide count of queued bytes, if this queue reports into one.
    total: Option<Arc<OutboundBytes>>,
    frame_ready: Notify,
    space_ready: Notify,
    /// Wakes threads in [`Outbound::wait_for_room`] when a frame leaves.
    space_freed: Condvar,
    /// True while the socket's send buffer is full, if this queue feeds a socket.
    socket_blocked: Option<Arc<AtomicBool>>,
}

/// The queue is at capacity (or closed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Full;

impl Outbound {
    /// A queue holding at most `capacity` frames for fan-out, of any total size.
    pub fn new(capacity: usize) -> Outbound {
        Outbound::bounded(capacity, usize::MAX, None)
    }

    /// A queue holding at most `capacity` frames and `byte_capacity` bytes, reporting its
    /// queued bytes into `total`.
    pub fn bounded(capacity: usize, byte_capacity: usize, total: Option<Arc<OutboundBytes>>) -> Outbound {
        Outbound {
            state: Mutex::new(State {
                frames: VecDeque::with_capacity(capacity.min(64)),
                bytes: 0,
                closed: false,
                waiting: 0,
            }),
            capacity,
            byte_capacity,
            total,
            frame_ready: Notify::new(),
            space_ready: Notify::new(),
            space_freed: Condvar::new(),
            socket_blocked: None,
        }
    }

    /// This queue feeds a socket whose send buffer is full while `blocked` is true
    /// ([`super::rewind::Rewind::write_blocked`]).
    pub fn watching_socket(mut self, blocked: Arc<AtomicBool>) -> Outbound {
        self.socket_blocked = Some(blocked);
        self
    }

    /// True while the socket's send buffer is full: the peer is not reading as fast as
    /// the relay writes.
    pub fn socket_blocked(&self) -> bool {
        self.socket_blocked.as_ref().is_some_and(|blocked| blocked.load(Ordering::Relaxed))
    }

    /// Adds `frame` to the queue (the caller decided it may go in).
    fn enqueue(&self, state: &mut State, frame: OutFrame) {
        let weight = frame.weight();
        state.bytes += weight;
        state.frames.push_back(frame);
        if let Some(total) = &self.total {
            total.add(weight);
        }
    }

    /// True if `weight` more bytes and one more frame fit.
    fn has_room(&self, state: &State, weight: usize) -> bool {
        state.frames.len() < self.capacity
            && (state.frames.is_empty() || state.bytes.saturating_add(weight) <= self.byte_capacity)
    }

    fn with_state<T>(&self, work: impl FnOnce(&mut State) -> T) -> T {
        work(&mut crate::sync::lock(&self.state))
    }

    /// Queues `frame` unless the queue is full or closed, handing it back if not.
    fn offer(&self, frame: OutFrame) -> Result<(), OutFrame> {
        let refused = self.with_state(|state| {
            if state.closed || !self.has_room(state, frame.weight()) {
                return Some(frame);
            }
            self.enqueue(state, frame);
            None
        });
        match refused {
            None => {
                self.frame_ready.notify_one();
                Ok(())
            }
            Some(frame) => Err(frame),
        }
    }

    /// Queues `frame` unless the queue is full or closed.
    pub fn try_push(&self, frame: OutFrame) -> Result<(), Full> {
        self.offer(frame).map_err(|_| Full)
    }

    /// Queues `frame` unless the queue is full or closed, handing it back if not.
    pub fn try_offer(&self, frame: OutFrame) -> Result<(), OutFrame> {
        self.offer(frame)
    }

    /// True if the queue may still make room: it is open and its socket takes bytes.
    pub fn can_catch_up(&self) -> bool {
        !self.is_closed() && !self.socket_blocked()
    }

    /// Blocks the calling thread (the fan-out stage's, never a runtime's) until a frame of
    /// `weight` bytes fits, and returns true. Returns false without waiting longer when the
    /// queue is closed or its socket's send buffer is full, and at `deadline`.
    pub fn wait_for_room(&self, weight: usize, deadline: Instant) -> bool {
        let mut state = crate::sync::lock(&self.state);
        loop {
            if state.closed || self.socket_blocked() {
                return false;
            }
            if self.has_room(&state, weight) {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            state.waiting += 1;
            state = self
                .space_freed
                .wait_timeout(state, (deadline - now).min(RECHECK))
                .map(|(state, _)| state)
                .unwrap_or_else(|poisoned| PoisonError::into_inner(poisoned).0);
            state.waiting -= 1;
        }
    }

    /// Queues `frame` even past capacity (errors and closes only; never for events).
    pub fn push_always(&self, frame: OutFrame) {
        let pushed = self.with_state(|state| {
            if !state.closed {
                self.enqueue(state, frame);
            }
            !state.closed
        });
        if pushed {
            self.frame_ready.notify_one();
        }
    }

    /// Queues `frame`, waiting for room. Returns false if the queue was closed.
    pub async fn push(&self, mut frame: OutFrame) -> bool {
        loop {
            let waiting = self.space_ready.notified();
            frame = match self.offer(frame) {
                Ok(()) => return true,
                Err(_) if self.is_closed() => return false,
                Err(frame) => frame,
            };
            waiting.await;
        }
    }

    /// The next frame for the socket writer; `None` once closed and drained.
    pub async fn pop(&self) -> Option<OutFrame> {
        loop {
            let waiting = self.frame_ready.notified();
            let (frame, closed) = self.with_state(|state| {
                let frame = state.frames.pop_front();
                if let Some(frame) = &frame {
                    let weight = frame.weight();
                    state.bytes -= weight;
                    if let Some(total) = &self.total {
                        total.sub(weight);
                    }
                }
                if state.frames.is_empty() && state.frames.capacity() > 64 {
                    // Give back the ring buffer a backlog grew (frames are freed as popped).
                    state.frames.shrink_to(64);
                }
                if frame.is_some() && state.waiting > 0 {
                    self.space_freed.notify_all();
                }
                (frame, state.closed)
            });
            if let Some(frame) = frame {
                self.space_ready.notify_one();
                return Some(frame);
            }
            if closed {
                return None;
            }
            waiting.await;
        }
    }

    /// Frames waiting to be written.
    pub fn len(&self) -> usize {
        self.with_state(|state| state.frames.len())
    }

    /// The most bytes queued for fan-out (a single frame may exceed it in an empty queue).
    pub fn byte_capacity(&self) -> usize {
        self.byte_capacity
    }

    /// Bytes waiting to be written.
    pub fn queued_bytes(&self) -> usize {
        self.with_state(|state| state.bytes)
    }

    /// True when nothing is waiting.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Stops accepting frames; the writer drains what is queued, then stops.
    pub fn close(&self) {
        self.with_state(|state| state.closed = true);
        self.frame_ready.notify_one();
        self.space_ready.notify_waiters();
        self.space_freed.notify_all();
    }

    /// True once [`Outbound::close`] was called.
    pub fn is_closed(&self) -> bool {
        self.with_state(|state| state.closed)
    }
}

impl Drop for Outbound {
    fn drop(&mut self) {
        // Frames never written (the peer went away) leave the relay-wide count too.
        if let Some(total) = &self.total {
            total.sub(self.with_state(|state| state.bytes));
        }
    }
}
