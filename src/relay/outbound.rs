//! One connection's bounded outbound queue.
//!
//! Fan-out uses [`Outbound::try_push`], which fails when the queue is full so the
//! subscription can end with an overflow error instead of growing memory. Replies and
//! stored events use [`Outbound::push`], which waits for room (backpressure on the
//! connection's own requests). Errors and closes use [`Outbound::push_always`]: a few
//! frames past the bound, so an overflow error can follow the events before it in order.

use std::collections::VecDeque;
use std::sync::Mutex;

use tokio::sync::Notify;

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

struct State {
    frames: VecDeque<OutFrame>,
    closed: bool,
}

/// The queue: many producers, one socket writer.
pub struct Outbound {
    state: Mutex<State>,
    capacity: usize,
    frame_ready: Notify,
    space_ready: Notify,
}

/// The queue is at capacity (or closed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Full;

impl Outbound {
    /// A queue holding at most `capacity` frames for fan-out.
    pub fn new(capacity: usize) -> Outbound {
        Outbound {
            state: Mutex::new(State { frames: VecDeque::with_capacity(capacity.min(64)), closed: false }),
            capacity,
            frame_ready: Notify::new(),
            space_ready: Notify::new(),
        }
    }

    fn with_state<T>(&self, work: impl FnOnce(&mut State) -> T) -> T {
        work(&mut crate::sync::lock(&self.state))
    }

    /// Queues `frame` unless the queue is full or closed, handing it back if not.
    fn offer(&self, frame: OutFrame) -> Result<(), OutFrame> {
        let refused = self.with_state(|state| {
            if state.closed || state.frames.len() >= self.capacity {
                return Some(frame);
            }
            state.frames.push_back(frame);
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

    /// Queues `frame` even past capacity (errors and closes only; never for events).
    pub fn push_always(&self, frame: OutFrame) {
        let pushed = self.with_state(|state| {
            if !state.closed {
                state.frames.push_back(frame);
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
            let (frame, closed) = self.with_state(|state| (state.frames.pop_front(), state.closed));
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

    /// True when nothing is waiting.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Stops accepting frames; the writer drains what is queued, then stops.
    pub fn close(&self) {
        self.with_state(|state| state.closed = true);
        self.frame_ready.notify_one();
        self.space_ready.notify_waiters();
    }

    /// True once [`Outbound::close`] was called.
    pub fn is_closed(&self) -> bool {
        self.with_state(|state| state.closed)
    }
}
