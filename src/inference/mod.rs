//! Inference admission and dynamic batching, between the HTTP handlers and the engine.
//!
//! Every inference call waits in one bounded queue for a computation slot; only when that
//! queue is full is a call refused ([`InferenceError::Overloaded`], a 429 over HTTP). Calls
//! that classify with the same model and method (free energy or the discriminative net) are
//! merged: one task per (model, method) lane takes whatever is waiting, up to
//! [`BatchConfig::max_batch`] rows, computes it as one engine batch on the blocking pool and
//! answers each caller with its own rows. When nothing else computes, a lone call goes at
//! once; while the engine is busy with other work, a lane waits at most
//! [`BatchConfig::max_wait`] for its batch to fill. A caller that goes away (a deadline, a disconnect) before its batch starts
//! is dropped from the batch, so abandoned calls cost nothing.
//!
//! Other calls (sampling, Gibbs classification, features) are not batched: they take a slot
//! through [`Inference::slot`] and compute alone.
//!
//! Owner: the HTTP state holds one [`Inference`] handle; clones share the queue.

pub mod cost;
mod lane;
pub mod stats;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ndarray::Array2;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::engine::EngineError;
use crate::store::ModelEntry;
use lane::{Lane, Pending};
use stats::BatchStats;

/// How calls are admitted and merged.
#[derive(Debug, Clone)]
pub struct BatchConfig {
    /// Computations running at once (batches and unbatched calls together).
    pub slots: usize,
    /// Calls waiting for a slot, beyond which calls are refused.
    pub queue_capacity: usize,
    /// Most rows (images) merged into one engine batch. A call with more rows computes alone.
    pub max_batch: usize,
    /// Longest a lane waits for more calls while the engine is busy with other work.
    pub max_wait: Duration,
    /// The work one call, and all admitted calls together, may ask for.
    pub budget: cost::Budget,
}

/// The classifications that can be merged across calls: both are deterministic row by row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Classifier {
    /// p(label | x) from the top RBM's exact free energies.
    FreeEnergy,
    /// p(label | x) from the discriminatively fine-tuned net.
    Discriminative,
}

impl Classifier {
    pub fn as_str(self) -> &'static str {
        match self {
            Classifier::FreeEnergy => "free_energy",
            Classifier::Discriminative => "discriminative",
        }
    }

    fn run(
        self,
        model: &ModelEntry,
        x: ndarray::ArrayView2<f32>,
    ) -> Result<Array2<f32>, EngineError> {
        match self {
            Classifier::FreeEnergy => model.dbn.classify_free_energy(x),
            Classifier::Discriminative => model.dbn.classify_discriminative(x),
        }
    }
}

/// Why an inference call did not compute.
#[derive(Debug, thiserror::Error)]
pub enum InferenceError {
    #[error("{0} inference calls are already waiting; retry later")]
    Overloaded(usize),
    #[error(
        "this call needs about {work:.1e} multiply-adds of work; one call may ask for at most {budget:.1e} \
         (DBN_MAX_CALL_WORK): send fewer images, samples or steps"
    )]
    OverBudget { work: f64, budget: f64 },
    #[error("the calls in progress already use the work budget of {budget:.1e} multiply-adds (DBN_MAX_INFLIGHT_WORK); retry later")]
    Saturated { budget: f64 },
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// The computation panicked or the server is stopping.
    #[error("inference task: {0}")]
    Internal(String),
}

/// A computation slot, held while a call computes.
pub struct Slot {
    _permit: OwnedSemaphorePermit,
    _busy: BusyGuard,
}

/// Counts a computation as running for as long as it lives.
struct BusyGuard(Arc<Shared>);

impl Drop for BusyGuard {
    fn drop(&mut self) {
        self.0.busy.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The shared queue; see the module documentation.
#[derive(Clone)]
pub struct Inference {
    shared: Arc<Shared>,
}

struct Shared {
    config: BatchConfig,
    slots: Arc<Semaphore>,
    /// Calls admitted and not yet computing.
    waiting: AtomicUsize,
    /// Computations running now.
    busy: AtomicUsize,
    lanes: Mutex<HashMap<(String, Classifier), Arc<Lane>>>,
    stats: Mutex<BatchStats>,
    /// The work of the calls admitted and not finished.
    ledger: cost::Ledger,
}

impl Shared {
    /// Counts one more waiting call, or refuses it when the queue is full.
    fn admit(&self) -> Result<(), InferenceError> {
        let cap = self.config.queue_capacity.max(1);
        self.waiting
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |w| {
                (w < cap).then_some(w + 1)
            })
            .map(|_| ())
            .map_err(|_| InferenceError::Overloaded(cap))
    }

    fn leave_queue(&self, calls: usize) {
        self.waiting.fetch_sub(calls, Ordering::SeqCst);
    }

    async fn acquire(self: &Arc<Self>) -> Result<Slot, InferenceError> {
        let permit = self
            .slots
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| InferenceError::Internal("the inference queue is closed".into()))?;
        self.busy.fetch_add(1, Ordering::SeqCst);
        Ok(Slot {
            _permit: permit,
            _busy: BusyGuard(self.clone()),
        })
    }

    fn stats(&self) -> std::sync::MutexGuard<'_, BatchStats> {
        self.stats.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A snapshot for the metrics endpoint.
pub struct Snapshot {
    pub waiting: usize,
    pub computing: usize,
    /// Multiply-adds admitted and not finished.
    pub admitted_work: u64,
    pub stats: BatchStats,
}

impl Inference {
    pub fn new(config: BatchConfig) -> Self {
        Inference {
            shared: Arc::new(Shared {
                slots: Arc::new(Semaphore::new(config.slots.max(1))),
                config,
                waiting: AtomicUsize::new(0),
                busy: AtomicUsize::new(0),
                lanes: Mutex::new(HashMap::new()),
                stats: Mutex::new(BatchStats::default()),
                ledger: cost::Ledger::default(),
            }),
        }
    }

    pub fn config(&self) -> &BatchConfig {
        &self.shared.config
    }

    /// Admits a call that asks for `work` multiply-adds (see [`cost`]), before it waits or
    /// computes: refused when it alone is over the per-call budget, or when the calls
    /// already admitted leave no room for it. The work is returned when the reservation drops.
    pub fn reserve(&self, work: u64) -> Result<cost::Reservation, InferenceError> {
        self.shared
            .ledger
            .reserve(work, self.shared.config.budget)
            .map_err(|refusal| match refusal {
                cost::Refusal::TooCostly { work, budget } => InferenceError::OverBudget {
                    work: work as f64,
                    budget: budget as f64,
                },
                cost::Refusal::Saturated { budget } => InferenceError::Saturated {
                    budget: budget as f64,
                },
            })
    }

    /// Waits in the queue for a computation slot (refused at once when the queue is full).
    /// Dropping the future while it waits leaves the queue.
    pub async fn slot(&self) -> Result<Slot, InferenceError> {
        self.shared.admit()?;
        let shared = self.shared.clone();
        // Leaves the queue whether the slot comes or the caller gives up.
        let _left = scopeguard(move || shared.leave_queue(1));
        let started = std::time::Instant::now();
        let slot = self.shared.acquire().await?;
        self.shared
            .stats()
            .observe_wait(started.elapsed().as_secs_f64());
        Ok(slot)
    }

    /// p(label | x) for the rows of `x` ([rows, n_inputs] → [rows, classes]), computed in a
    /// batch with the other waiting calls of the same model and method.
    pub async fn classify(
        &self,
        model: Arc<ModelEntry>,
        how: Classifier,
        x: Array2<f32>,
    ) -> Result<Array2<f32>, InferenceError> {
        self.shared.admit()?;
        let (reply, answer) = tokio::sync::oneshot::channel();
        let lane = {
            let mut lanes = self.shared.lanes.lock().unwrap_or_else(|p| p.into_inner());
            lanes
                .entry((model.id.clone(), how))
                .or_insert_with(|| Arc::new(Lane::default()))
                .clone()
        };
        let start_runner = lane.push(Pending::new(model, x, reply));
        if start_runner {
            tokio::spawn(lane::run(self.shared.clone(), lane, how));
        }
        answer
            .await
            .map_err(|_| InferenceError::Internal("the batch ended without an answer".into()))?
    }

    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            waiting: self.shared.waiting.load(Ordering::SeqCst),
            computing: self.shared.busy.load(Ordering::SeqCst),
            admitted_work: self.shared.ledger.admitted(),
            stats: self.shared.stats().clone(),
        }
    }
}

/// Runs `f` when dropped.
fn scopeguard<F: FnOnce()>(f: F) -> impl Drop {
    struct Guard<F: FnOnce()>(Option<F>);
    impl<F: FnOnce()> Drop for Guard<F> {
        fn drop(&mut self) {
            if let Some(f) = self.0.take() {
                f();
            }
        }
    }
    Guard(Some(f))
}

#[cfg(test)]
mod tests;
