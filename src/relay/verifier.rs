//! The verifier stage (spec §3's signature rule, off the I/O tasks): connections hand it
//! events whose id already checked out, the publishes a connection read in one go as one
//! job (one hand-over and one answer per burst, not per event: [`Verifier::submit_all`]);
//! verifier threads take what is queued, up to [`MAX_BATCH`] events at a time, and answer
//! each job through its own channel.
//!
//! - **Bursts are batched, a lone event is not.** A thread takes one event (waiting for
//!   it), then whatever else is already queued. One event is checked singly at once, so an
//!   idle relay's latency does not grow; a burst is checked as one random linear
//!   combination per [`MAX_BATCH`] ([`BatchVerifier`]), the same verdict for every event.
//!   While a burst goes on (the previous pass took more than one event) a thread lingers
//!   up to [`LINGER`] for its batch to fill, as long as events keep arriving: a
//!   combination has a fixed part (the basepoint and each author's key), so batches of a
//!   few events save little, and under load the events otherwise arrive a few at a time.
//!   The linger adds at most [`LINGER`] to an OK that already waits for a commit under
//!   load, and nothing to an idle relay's.
//! - **Bad signatures cost no more than single checks.** [`BatchVerifier`] backs off to
//!   single checks after a failed batch and then probes each batch with a single check
//!   until batches pass again, and a batch is at most [`MAX_BATCH`]: a stream of invalid
//!   signatures is verified one by one.
//!   After a pass that found a bad signature a thread neither lingers nor takes more than
//!   [`FAILING_BATCH`], so those refusals are not held back behind a long run of singles.
//! - **Order.** The stage answers each event separately; a connection keeps its replies in
//!   the order it received the events ([`super::pipeline`]), whatever order answers
//!   arrive in.
//! - **Backpressure.** The queue is bounded: when every thread is busy and the queue is
//!   full, connections wait to hand over more, and so stop reading their sockets.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};

use super::keys::KeyCache;
use super::metrics::Metrics;
use crate::protocol::signature::{BatchVerifier, SignatureError, MAX_BATCH};
use crate::protocol::Event;

/// Events waiting for a verifier thread, over all connections.
const QUEUE: usize = 4096;

/// The most verifier threads (one per core up to this).
const MAX_THREADS: usize = 4;

/// How long a thread waits for a batch to fill while a burst goes on.
pub const LINGER: Duration = Duration::from_millis(2);

/// How often a lingering thread looks at the queue again.
const LINGER_STEP: Duration = Duration::from_micros(200);

/// The most events a thread takes at once right after a pass that found a bad signature.
/// Bad signatures are checked singly (the probe of [`BatchVerifier`] fails, or it backs
/// off), so a large batch would not save work, only hold back its replies: a few at a
/// time keeps both threads busy and the replies flowing.
const FAILING_BATCH: usize = 8;

/// How a thread takes its next jobs, from what its last pass saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pace {
    /// Idle, or a lone event: take what is queued.
    Queued,
    /// A burst of good signatures: wait up to [`LINGER`] for a full batch.
    Burst,
    /// Bad signatures: take at most [`FAILING_BATCH`], at once.
    Failing,
}

impl Pace {
    /// The pace after a pass over `verdicts`.
    fn after(verdicts: &[Result<(), SignatureError>]) -> Pace {
        if verdicts.iter().any(Result::is_err) {
            Pace::Failing
        } else if verdicts.len() > 1 {
            Pace::Burst
        } else {
            Pace::Queued
        }
    }
}

/// An event and its signature's verdict under spec §3.
pub type Verified = (Event, Result<(), SignatureError>);

/// The verifier stage has stopped (the relay is shutting down).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the verifier has stopped")]
pub struct Stopped;

/// Events one connection handed to the stage together, and where their verdicts go (in
/// the same order).
struct Job {
    events: Vec<Event>,
    reply: oneshot::Sender<Vec<Verified>>,
}

/// The verdict for one event, still to come.
pub struct PendingVerdict(oneshot::Receiver<Vec<Verified>>);

impl PendingVerdict {
    /// Waits for the verdict.
    pub async fn wait(self) -> Result<Verified, Stopped> {
        self.0.await.ok().and_then(|verdicts| verdicts.into_iter().next()).ok_or(Stopped)
    }
}

/// The handle connections use; the threads stop once every handle is dropped.
#[derive(Clone)]
pub struct Verifier {
    jobs: mpsc::Sender<Job>,
}

impl Verifier {
    /// Starts one verifier thread per core (at most [`MAX_THREADS`]), sharing `keys`,
    /// reporting batch sizes into `metrics`.
    pub fn start(keys: Arc<KeyCache>, metrics: Arc<Metrics>) -> std::io::Result<Verifier> {
        let threads = std::thread::available_parallelism().map_or(1, usize::from).clamp(1, MAX_THREADS);
        Verifier::with_threads(keys, metrics, threads)
    }

    /// Starts `threads` verifier threads (at least one), sharing `keys`.
    pub fn with_threads(keys: Arc<KeyCache>, metrics: Arc<Metrics>, threads: usize) -> std::io::Result<Verifier> {
        let (jobs, receiver) = mpsc::channel(QUEUE);
        let receiver = Arc::new(Mutex::new(receiver));
        for index in 0..threads.max(1) {
            let receiver = receiver.clone();
            let (keys, metrics) = (keys.clone(), metrics.clone());
            std::thread::Builder::new()
                .name(format!("axon-verify-{index}"))
                .spawn(move || run(&receiver, &keys, &metrics))?;
        }
        Ok(Verifier { jobs })
    }

    /// Queues `event` (waiting for room) and returns its pending verdict.
    pub async fn submit(&self, event: Event) -> Result<PendingVerdict, Stopped> {
        let (reply, receiver) = oneshot::channel();
        self.submit_all(vec![event], reply).await?;
        Ok(PendingVerdict(receiver))
    }

    /// Queues a connection's `events` as one job (waiting for room): one hand-over for a
    /// burst instead of one per event. `reply` gets their verdicts in the same order; it is
    /// dropped unanswered if the stage has stopped.
    pub async fn submit_all(&self, events: Vec<Event>, reply: oneshot::Sender<Vec<Verified>>) -> Result<(), Stopped> {
        self.jobs.send(Job { events, reply }).await.map_err(|_| Stopped)
    }
}

/// One verifier thread: takes a job (waiting), then what is queued up to [`MAX_BATCH`],
/// verifies them and answers each; ends when the queue closes.
fn run(receiver: &Mutex<mpsc::Receiver<Job>>, keys: &KeyCache, metrics: &Metrics) {
    let mut verifier = BatchVerifier::new();
    let mut jobs: Vec<Job> = Vec::with_capacity(MAX_BATCH);
    let mut pace = Pace::Queued;
    while take(receiver, &mut jobs, pace) {
        let verdicts = verify(keys, &mut verifier, &jobs);
        metrics.verify_batch_size.observe(verdicts.len() as f64);
        pace = Pace::after(&verdicts);
        let mut verdicts = verdicts.into_iter();
        for job in jobs.drain(..) {
            let answers = job.events.into_iter().zip(verdicts.by_ref()).collect();
            // A connection that went away no longer wants its answers.
            let _ = job.reply.send(answers);
        }
    }
}

/// Events in `jobs`.
fn events_in(jobs: &[Job]) -> usize {
    jobs.iter().map(|job| job.events.len()).sum()
}

/// Fills `jobs` with one job (waiting for it) and more that are already queued (until
/// they hold [`MAX_BATCH`] events, or [`FAILING_BATCH`] at the [`Pace::Failing`] pace: the
/// last job taken may go past it, by less than one job of [`super::pipeline::GATHER`]), or that arrive
/// within [`LINGER`] at the [`Pace::Burst`] pace if the burst goes on (the first job was
/// already waiting). The queue stays locked
/// meanwhile, so another thread does not take the rest of the batch in small pieces.
/// False once the queue is closed and empty.
fn take(receiver: &Mutex<mpsc::Receiver<Job>>, jobs: &mut Vec<Job>, pace: Pace) -> bool {
    let mut receiver = crate::sync::lock(receiver);
    // Only a thread that found work waiting lingers: after a pause the burst is over.
    let (first, waiting) = match receiver.try_recv() {
        Ok(job) => (job, true),
        Err(_) => match receiver.blocking_recv() {
            Some(job) => (job, false),
            None => return false,
        },
    };
    let linger = pace == Pace::Burst && waiting;
    let limit = if pace == Pace::Failing { FAILING_BATCH } else { MAX_BATCH };
    jobs.push(first);
    let deadline = Instant::now() + LINGER;
    let mut before = 0;
    let mut count = events_in(jobs);
    loop {
        while count < limit {
            match receiver.try_recv() {
                Ok(job) => {
                    count += job.events.len();
                    jobs.push(job);
                }
                Err(_) => break,
            }
        }
        // Linger while events keep coming: a step with no new one means the clients are
        // waiting for answers (a pipelined client sends more only as OKs come back).
        let arriving = count > before;
        if !linger || !arriving || count >= limit || Instant::now() >= deadline {
            return true;
        }
        before = count;
        std::thread::sleep(LINGER_STEP);
    }
}

/// The verdict for each event of `jobs`, in order: singly for one, else through `verifier`.
fn verify(keys: &KeyCache, verifier: &mut BatchVerifier, jobs: &[Job]) -> Vec<Result<(), SignatureError>> {
    let events: Vec<&Event> = jobs.iter().flat_map(|job| &job.events).collect();
    if let [only] = events[..] {
        return vec![keys.verify(only)];
    }
    keys.verify_batch(verifier, &events)
}

#[cfg(test)]
mod tests {
    use ed25519_dalek::SigningKey;

    use super::*;

    #[test]
    fn a_pass_with_a_bad_signature_stops_lingering() {
        assert_eq!(Pace::after(&[Ok(())]), Pace::Queued, "a lone event");
        assert_eq!(Pace::after(&[Ok(()), Ok(())]), Pace::Burst);
        assert_eq!(Pace::after(&[Ok(()), Err(SignatureError::Equation)]), Pace::Failing);
        assert_eq!(Pace::after(&[Err(SignatureError::NonCanonicalS)]), Pace::Failing);
    }

    #[tokio::test]
    async fn verdicts_match_single_checks_and_come_back_with_their_event() {
        let keys = Arc::new(KeyCache::default());
        let verifier = Verifier::with_threads(keys.clone(), Arc::new(Metrics::new()), 2).expect("start");
        let key = SigningKey::from_bytes(&[7; 32]);
        let mut pending = Vec::new();
        for index in 0..300u64 {
            let mut event = Event::sign(&key, 1000 + index, 1, vec![index as u8], vec![]).expect("sign");
            if index % 3 == 0 {
                event.sig[40] ^= 1; // S stays below ℓ: only the equation fails
            }
            pending.push((event.id, keys.verify(&event), verifier.submit(event).await.expect("queued")));
        }
        for (id, single, verdict) in pending {
            let (event, verdict) = verdict.wait().await.expect("answered");
            assert_eq!(event.id, id, "each verdict comes back with its own event");
            assert_eq!(verdict, single);
        }
    }
}
