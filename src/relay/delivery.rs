//! The fan-out stage: a thread of its own delivers committed events to live
//! subscriptions, so the writer thread only writes.
//!
//! The commit hook hands each commit's events over in commit order ([`Delivery::committed`])
//! after marking them committed ([`Fanout::mark_committed`]), then the commit's answers
//! ([`Delivery::answer`]); the thread delivers the events in that order
//! ([`Fanout::dispatch_committed`]), so live events keep seq order, and sends the answers
//! after them, so an OK never overtakes the delivery of its event (a subscriber on the
//! publisher's own connection sees the EVENT first). The fan-out module's registration
//! rule keeps exactly-once across EOSE. The queue is bounded in commits: a fan-out that
//! falls that far behind holds up the writer (backpressure on publishing) instead of
//! growing memory.

use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::Arc;

use super::fanout::Fanout;
use super::store::{Answers, Committed};

/// Commits the stage may be behind before the writer waits for it.
const QUEUE: usize = 256;

/// What the writer hands to the stage, in commit order.
enum Handoff {
    /// A commit's events, to deliver.
    Events(Vec<Committed>),
    /// A commit's answers, to send once its events are delivered.
    Answers(Answers),
}

/// The writer's end of the fan-out stage; the thread stops once it is dropped.
pub struct Delivery {
    fanout: Arc<Fanout>,
    handoffs: SyncSender<Handoff>,
}

impl Delivery {
    /// Starts the fan-out thread for `fanout`.
    pub fn start(fanout: Arc<Fanout>) -> std::io::Result<Delivery> {
        let (handoffs, receiver) = sync_channel(QUEUE);
        let delivering = fanout.clone();
        std::thread::Builder::new().name("axon-fanout".into()).spawn(move || run(&delivering, &receiver))?;
        Ok(Delivery { fanout, handoffs })
    }

    /// Marks a commit's events (in seq order) committed and hands them to the stage.
    pub fn committed(&self, events: &[Committed]) {
        let Some(last) = events.last() else {
            return;
        };
        self.fanout.mark_committed(last.seq);
        self.hand_over(Handoff::Events(events.to_vec()));
    }

    /// Sends a commit's answers once the stage has delivered its events.
    pub fn answer(&self, answers: Answers) {
        self.hand_over(Handoff::Answers(answers));
    }

    fn hand_over(&self, handoff: Handoff) {
        if let Err(unsent) = self.handoffs.send(handoff) {
            // The thread is gone (it cannot fail on its own, but be safe): do it here.
            perform(&self.fanout, unsent.0);
        }
    }
}

fn run(fanout: &Fanout, handoffs: &Receiver<Handoff>) {
    while let Ok(handoff) = handoffs.recv() {
        perform(fanout, handoff);
    }
}

fn perform(fanout: &Fanout, handoff: Handoff) {
    match handoff {
        Handoff::Events(batch) => fanout.dispatch_committed(&batch),
        Handoff::Answers(answers) => answers(),
    }
}
