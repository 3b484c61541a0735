//! The fan-out stage: a thread of its own delivers committed events to live
//! subscriptions, so the writer thread only writes.
//!
//! The commit hook hands each commit's events over in commit order ([`Delivery::committed`])
//! after marking them committed ([`Fanout::mark_committed`]); the thread delivers them in
//! that order ([`Fanout::dispatch_committed`]), so live events keep seq order, and the
//! fan-out module's registration rule keeps exactly-once across EOSE. The queue is bounded
//! in commits: a fan-out that falls that far behind holds up the writer (backpressure on
//! publishing) instead of growing memory.

use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::Arc;

use super::fanout::Fanout;
use super::store::Committed;

/// Commits the stage may be behind before the writer waits for it.
const QUEUE: usize = 256;

/// The writer's end of the fan-out stage; the thread stops once it is dropped.
pub struct Delivery {
    fanout: Arc<Fanout>,
    batches: SyncSender<Vec<Committed>>,
}

impl Delivery {
    /// Starts the fan-out thread for `fanout`.
    pub fn start(fanout: Arc<Fanout>) -> std::io::Result<Delivery> {
        let (batches, receiver) = sync_channel(QUEUE);
        let delivering = fanout.clone();
        std::thread::Builder::new().name("axon-fanout".into()).spawn(move || run(&delivering, &receiver))?;
        Ok(Delivery { fanout, batches })
    }

    /// Marks a commit's events (in seq order) committed and hands them to the stage.
    pub fn committed(&self, events: &[Committed]) {
        let Some(last) = events.last() else {
            return;
        };
        self.fanout.mark_committed(last.seq);
        if let Err(unsent) = self.batches.send(events.to_vec()) {
            // The thread is gone (it cannot fail on its own, but be safe): deliver here.
            self.fanout.dispatch_committed(&unsent.0);
        }
    }
}

fn run(fanout: &Fanout, batches: &Receiver<Vec<Committed>>) {
    while let Ok(batch) = batches.recv() {
        fanout.dispatch_committed(&batch);
    }
}
