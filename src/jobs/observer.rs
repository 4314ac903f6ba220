//! The engine observer of a job: records progress in the store (at most once a second and at
//! every epoch), publishes events, writes checkpoints, and stops training when the job is
//! cancelled or the server shuts down.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{JobEvent, Jobs, RunFlags};
use crate::engine::dbn::Checkpoint;
use crate::engine::observer::{Control, EpochMetrics, Observer, Progress};
use crate::store::{Claim, JobProgress};

/// How often progress is written to the store and published, at most.
const RECORD_EVERY: Duration = Duration::from_millis(1000);
const PUBLISH_EVERY: Duration = Duration::from_millis(250);

pub(super) struct JobObserver<'a> {
    pub jobs: &'a Jobs,
    pub id: String,
    /// The claim this run holds the job by: every write carries it.
    claim: Claim,
    pub cancel: Arc<AtomicBool>,
    /// Set when the claim no longer holds the job (a later claim, here or elsewhere).
    lost: Arc<AtomicBool>,
    pub history: Vec<EpochMetrics>,
    /// When this attempt started, and the fraction done then (for the ETA).
    started: Instant,
    start_fraction: Option<f64>,
    last_record: Instant,
    last_publish: Instant,
    /// Test builds only: panic at the end of the second epoch (after one checkpoint).
    #[cfg(feature = "fault-injection")]
    pub panic_at_epoch: bool,
}

impl<'a> JobObserver<'a> {
    pub fn new(jobs: &'a Jobs, claim: Claim, flags: RunFlags) -> Self {
        let past = Instant::now() - Duration::from_secs(3600);
        JobObserver {
            jobs,
            id: claim.job.clone(),
            claim,
            cancel: flags.cancel,
            lost: flags.lost,
            history: Vec::new(),
            started: Instant::now(),
            start_fraction: None,
            last_record: past,
            last_publish: past,
            #[cfg(feature = "fault-injection")]
            panic_at_epoch: false,
        }
    }

    /// Whether another replica holds, or may hold by now, the job.
    fn lost(&self) -> bool {
        if super::cluster::lease_stale(&self.jobs.inner) {
            self.lost.store(true, Ordering::SeqCst);
        }
        self.lost.load(Ordering::SeqCst)
    }

    fn control(&self) -> Control {
        if self.cancel.load(Ordering::SeqCst)
            || self.lost()
            || self.jobs.inner.shutdown.load(Ordering::SeqCst)
        {
            Control::Stop
        } else {
            Control::Continue
        }
    }

    fn job_progress(&mut self, p: &Progress) -> JobProgress {
        let start = *self.start_fraction.get_or_insert(p.fraction);
        let done = p.fraction - start;
        let elapsed = self.started.elapsed().as_secs_f64();
        let eta_seconds =
            (done > 1e-6 && elapsed > 1.0).then(|| elapsed * (1.0 - p.fraction) / done);
        self.jobs
            .inner
            .examples_per_sec
            .store(p.examples_per_sec.to_bits(), Ordering::Relaxed);
        JobProgress {
            progress: p.clone(),
            eta_seconds,
        }
    }

    fn record(&mut self, progress: &JobProgress, with_history: bool) {
        let history = with_history.then_some(self.history.as_slice());
        match self
            .jobs
            .inner
            .store
            .record_progress(&self.claim, progress, history)
        {
            Ok(true) => {}
            // A later claim holds the job: this run stops without writing more.
            Ok(false) => {
                self.lost.store(true, Ordering::SeqCst);
            }
            Err(e) => tracing::warn!(job = %self.id, "recording progress: {e}"),
        }
        self.last_record = Instant::now();
    }
}

impl Observer for JobObserver<'_> {
    fn on_batch(&mut self, p: &Progress) -> Control {
        let now = Instant::now();
        if now - self.last_publish >= PUBLISH_EVERY {
            let progress = self.job_progress(p);
            if now - self.last_record >= RECORD_EVERY {
                self.record(&progress, false);
            }
            self.last_publish = now;
            self.jobs.publish(JobEvent::Progress {
                job: self.id.clone(),
                progress,
            });
        }
        self.control()
    }

    fn on_epoch(&mut self, p: &Progress, metrics: &EpochMetrics) -> Control {
        #[cfg(feature = "fault-injection")]
        if self.panic_at_epoch && !self.history.is_empty() {
            panic!("injected fault: a panic in the observer at {}", file!());
        }
        self.history.push(metrics.clone());
        let progress = self.job_progress(p);
        self.record(&progress, true);
        self.jobs.publish(JobEvent::Epoch {
            job: self.id.clone(),
            metrics: metrics.clone(),
        });
        self.jobs.publish(JobEvent::Progress {
            job: self.id.clone(),
            progress,
        });
        self.control()
    }

    fn wants_checkpoints(&self) -> bool {
        true
    }

    fn on_checkpoint(&mut self, checkpoint: &Checkpoint) -> Control {
        if self.lost() {
            // The new owner's checkpoints are not this replica's to overwrite.
            return Control::Stop;
        }
        // The checkpoint lives in the model store: the claim is checked just before.
        match self.jobs.inner.store.holds(&self.claim) {
            Ok(true) => {}
            Ok(false) => {
                self.lost.store(true, Ordering::SeqCst);
                return Control::Stop;
            }
            Err(e) => {
                // Unconfirmed: no checkpoint this epoch; the lease check stops the run if
                // the store stays away.
                tracing::warn!(job = %self.id, "checking the claim before a checkpoint: {e}");
                return self.control();
            }
        }
        let saved = checkpoint
            .to_bytes()
            .map_err(|e| e.to_string())
            .and_then(|b| {
                self.jobs
                    .inner
                    .models
                    .save_checkpoint(&self.id, &b)
                    .map_err(|e| e.to_string())
            });
        if let Err(e) = saved {
            // Training goes on: a missing checkpoint only costs a restart from further back.
            tracing::warn!(job = %self.id, "writing checkpoint: {e}");
        }
        self.control()
    }
}
