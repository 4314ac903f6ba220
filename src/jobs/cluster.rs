//! What lets several replicas share one job store: the heartbeat that renews the leases of
//! the jobs running here (and learns of cancels and takeovers), and the relay that carries
//! job events between replicas so that a job's event stream works on any of them.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use super::{Inner, JobEvent, Jobs, Running};
use crate::store::{new_id, now_millis, EventRelay};

/// Events waiting to be sent; beyond this, progress events are dropped (the next ones
/// replace them) rather than slow training down.
const OUTBOX: usize = 4096;

/// One event on the wire, with the replica it came from.
#[derive(Serialize, Deserialize)]
struct Envelope {
    origin: String,
    event: JobEvent,
}

/// Sends this replica's events to the others and delivers theirs to this replica's
/// subscribers. Dropping it ends the sending thread.
pub(super) struct Relay {
    origin: String,
    outbox: SyncSender<String>,
}

impl Relay {
    /// Starts the threads: one sends, one listens (until `stop`). Events from elsewhere go to
    /// `events`; a cancel for a job running here also sets its flag in `running`.
    pub fn start(
        relay: Arc<dyn EventRelay>,
        events: broadcast::Sender<JobEvent>,
        running: Arc<Running>,
        stop: Arc<AtomicBool>,
    ) -> Self {
        let origin = new_id("replica");
        let (outbox, queued) = sync_channel::<String>(OUTBOX);
        let sender = relay.clone();
        let spawned = std::thread::Builder::new()
            .name("event-send".into())
            .spawn(move || {
                for payload in queued {
                    if let Err(e) = sender.send(&payload) {
                        tracing::warn!("sending a job event to the other replicas: {e}");
                    }
                }
            });
        if let Err(e) = spawned {
            tracing::error!("cannot start the event sender: {e}");
        }
        let me = origin.clone();
        relay.listen(
            Box::new(move |payload| {
                let envelope: Envelope = match serde_json::from_str(payload) {
                    Ok(e) => e,
                    Err(e) => {
                        tracing::warn!("ignoring a job event that does not parse: {e}");
                        return;
                    }
                };
                if envelope.origin == me {
                    return;
                }
                if let JobEvent::CancelRequested { job } = &envelope.event {
                    running.flag_cancel(job);
                }
                let _ = events.send(envelope.event);
            }),
            stop,
        );
        Relay { origin, outbox }
    }

    /// Queues `event` for the other replicas, without waiting.
    pub fn send(&self, event: &JobEvent) {
        let envelope = Envelope {
            origin: self.origin.clone(),
            event: event.clone(),
        };
        let Ok(payload) = serde_json::to_string(&envelope) else {
            return;
        };
        match self.outbox.try_send(payload) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                tracing::warn!("job event outbox full; an event for other replicas is dropped")
            }
            Err(TrySendError::Disconnected(_)) => {}
        }
    }
}

/// Beats a lease may miss before its jobs are stopped here: the lease lasts four beats, so the
/// jobs stop about one beat before another replica may take them.
const MISSED_BEATS: u32 = 3;

/// Starts the thread that, every `config.heartbeat`, renews the leases of the jobs running
/// here, flags those asked to cancel and stops those another replica has taken over. When the
/// store cannot be reached for [`MISSED_BEATS`] beats, a store with leases will soon hand the
/// jobs to another replica, so they stop here first. It ends with the queue (or when the
/// background work is told to stop).
pub(super) fn start_heartbeat(jobs: Jobs) {
    let every = beat_interval(&jobs.inner);
    let weak: Weak<Inner> = Arc::downgrade(&jobs.inner);
    drop(jobs);
    let spawned = std::thread::Builder::new()
        .name("job-heartbeat".into())
        .spawn(move || loop {
            std::thread::sleep(every);
            let Some(inner) = weak.upgrade() else { return };
            if inner.stop_background.load(Ordering::SeqCst) {
                return;
            }
            let started = Instant::now();
            if beat(&inner) {
                *inner.renewed.lock().unwrap_or_else(|p| p.into_inner()) = started;
            } else if lease_stale(&inner) {
                stop_all(&inner);
            }
        });
    if let Err(e) = spawned {
        tracing::error!("cannot start the job heartbeat: {e}");
    }
}

/// Whether the leases of the jobs running here may be about to lapse: the store has leases
/// and the last renewal that got through is [`MISSED_BEATS`] beats old. Also true in a
/// process that was frozen (SIGSTOP, a paused VM) past its leases, before its heartbeat has
/// run again: its jobs must not write a checkpoint meanwhile.
pub(super) fn lease_stale(inner: &Inner) -> bool {
    let renewed = *inner.renewed.lock().unwrap_or_else(|p| p.into_inner());
    inner.store.leases() && renewed.elapsed() >= beat_interval(inner) * MISSED_BEATS
}

fn beat_interval(inner: &Inner) -> Duration {
    inner.config.heartbeat.max(Duration::from_millis(50))
}

/// Stops every job running here without recording its end: its lease is about to lapse.
fn stop_all(inner: &Inner) {
    for claim in inner.running.claims() {
        if inner.running.flag_lost(&claim) {
            tracing::warn!(job = %claim.job, "the job store is out of reach; stopping before the lease lapses");
        }
    }
}

/// One heartbeat; false if the store could not be reached.
fn beat(inner: &Inner) -> bool {
    let claims = inner.running.claims();
    if claims.is_empty() {
        return true;
    }
    match inner.store.heartbeat(&claims, now_millis()) {
        Ok(beat) => {
            for id in &beat.cancel {
                inner.running.flag_cancel(id);
            }
            for claim in &beat.lost {
                if inner.running.flag_lost(claim) {
                    tracing::warn!(
                        job = %claim.job,
                        claim = claim.number,
                        "claim lost: the job was claimed again; stopping"
                    );
                }
            }
            true
        }
        Err(e) => {
            tracing::warn!("job heartbeat: {e}");
            false
        }
    }
}
