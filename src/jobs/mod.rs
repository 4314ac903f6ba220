//! The training job queue. [`Jobs`] owns it: submissions are validated and stored as queued
//! jobs, worker threads claim them in order and run the engine with an observer that records
//! progress, writes checkpoints and listens for cancellation, and every change is published
//! as a [`JobEvent`] for streams.

mod cluster;
mod datasets;
mod observer;
mod worker;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use tokio::sync::broadcast;

pub use datasets::{DatasetError, DatasetInfo, Datasets, Upload};

use crate::engine::observer::EpochMetrics;
use crate::engine::spec::{DataShape, Limits, TrainingSpec};
use crate::engine::EngineError;
use crate::store::{
    new_id, now_millis, Claim, JobPage, JobProgress, JobRecord, JobStatus, JobStore, ModelStore,
    StoreError,
};

/// Failures of job operations.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error("job {0:?} not found")]
    NotFound(String),
    /// The spec is invalid; `field` names the offending setting.
    #[error("invalid {field}: {message}")]
    Invalid { field: String, message: String },
    #[error("{0}")]
    QueueFull(String),
    #[error("{0}")]
    Conflict(String),
    #[error("the server is shutting down")]
    ShuttingDown,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A change to a job, published to every subscriber (of every replica sharing the store).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum JobEvent {
    /// The job's status changed (queued, running, …, or back to queued on shutdown).
    Status {
        job: String,
        status: JobStatus,
    },
    Progress {
        job: String,
        progress: JobProgress,
    },
    Epoch {
        job: String,
        metrics: EpochMetrics,
    },
    /// Cancelling was asked while the job runs (perhaps on another replica).
    CancelRequested {
        job: String,
    },
}

impl JobEvent {
    pub fn job(&self) -> &str {
        match self {
            JobEvent::Status { job, .. }
            | JobEvent::Progress { job, .. }
            | JobEvent::Epoch { job, .. }
            | JobEvent::CancelRequested { job } => job,
        }
    }
}

/// Settings of the queue.
#[derive(Debug, Clone)]
pub struct QueueConfig {
    /// Jobs this process trains at once; 0 for a replica that only serves the API.
    pub workers: usize,
    /// Threads each job computes with.
    pub train_threads: usize,
    pub capacity: usize,
    pub limits: Limits,
    /// Estimated memory a job may need, in bytes.
    pub max_memory: u64,
    /// How often the leases of running jobs are renewed and their cancel flags read.
    pub heartbeat: Duration,
}

/// The queue: a cheap handle to shared state (the store, the wake-up signal, the cancel flags
/// of running jobs and the event channel). Cloned into HTTP state and worker threads.
#[derive(Clone)]
pub struct Jobs {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<dyn JobStore>,
    models: Arc<dyn ModelStore>,
    datasets: Datasets,
    config: QueueConfig,
    events: broadcast::Sender<JobEvent>,
    /// The flags of the jobs running now.
    running: Arc<Running>,
    /// Signalled when work arrives or shutdown begins.
    wake: (Mutex<()>, Condvar),
    shutdown: AtomicBool,
    workers_alive: AtomicUsize,
    /// Jobs that ended on a panic caught at the worker boundary.
    panics: AtomicU64,
    /// Examples per second of the latest training progress (f64 bits), for metrics.
    examples_per_sec: AtomicU64,
    /// Events to and from the other replicas, when the store is shared.
    relay: Option<cluster::Relay>,
    /// Stops the heartbeat and the relay's listener.
    stop_background: Arc<AtomicBool>,
    /// When the heartbeat last got through to the store.
    renewed: Mutex<std::time::Instant>,
}

/// Test builds only (feature `fault-injection`): a job of this name panics in its observer
/// at the end of its second epoch, after its first checkpoint.
#[cfg(feature = "fault-injection")]
pub const INJECT_PANIC: &str = "fault-injection:panic";

/// What tells a running job to stop.
#[derive(Debug, Clone, Default)]
pub(crate) struct RunFlags {
    /// Cancelling was asked: the job ends `cancelled`.
    pub cancel: Arc<AtomicBool>,
    /// Another replica took the job over: this one stops without recording its end.
    pub lost: Arc<AtomicBool>,
}

/// The runs in this process, by claim, with their flags. A job can have two entries for a
/// moment: a run that lost its claim and has not noticed yet, and the run of the new claim.
#[derive(Debug, Default)]
pub(crate) struct Running(Mutex<HashMap<Claim, RunFlags>>);

impl Running {
    pub fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Claim, RunFlags>> {
        // Each entry is whole: a panic elsewhere cannot leave the map torn.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn claims(&self) -> Vec<Claim> {
        self.lock().keys().cloned().collect()
    }

    /// Tells every run of the job here to stop and end cancelled.
    pub fn flag_cancel(&self, id: &str) {
        for (claim, flags) in self.lock().iter() {
            if claim.job == id {
                flags.cancel.store(true, Ordering::SeqCst);
            }
        }
    }

    /// Tells the run of `claim`, if it runs here, to stop without recording its end; true if
    /// it had not been told yet.
    pub fn flag_lost(&self, claim: &Claim) -> bool {
        self.lock()
            .get(claim)
            .is_some_and(|flags| !flags.lost.swap(true, Ordering::SeqCst))
    }
}

impl Jobs {
    /// The queue over `store`. Jobs left running by a previous process are requeued (in a
    /// shared store: those whose lease has lapsed are counted, and the next claim takes them).
    pub fn new(
        store: Arc<dyn JobStore>,
        models: Arc<dyn ModelStore>,
        datasets: Datasets,
        config: QueueConfig,
    ) -> Result<Self, JobError> {
        let requeued = store.recover(now_millis())?;
        if requeued > 0 {
            tracing::info!("{requeued} interrupted jobs to take up again");
        }
        let (events, _) = broadcast::channel(1024);
        let stop_background = Arc::new(AtomicBool::new(false));
        let running = Arc::new(Running::default());
        let relay = store.relay().map(|r| {
            cluster::Relay::start(r, events.clone(), running.clone(), stop_background.clone())
        });
        Ok(Jobs {
            inner: Arc::new(Inner {
                store,
                models,
                datasets,
                config,
                events,
                running,
                wake: (Mutex::new(()), Condvar::new()),
                shutdown: AtomicBool::new(false),
                workers_alive: AtomicUsize::new(0),
                panics: AtomicU64::new(0),
                examples_per_sec: AtomicU64::new(0),
                relay,
                stop_background,
                renewed: Mutex::new(std::time::Instant::now()),
            }),
        })
    }

    /// Starts the worker threads (none for an API-only replica) and the heartbeat of the jobs
    /// they run.
    pub fn start_workers(&self) -> Vec<std::thread::JoinHandle<()>> {
        if self.inner.config.workers == 0 {
            return Vec::new();
        }
        cluster::start_heartbeat(self.clone());
        (0..self.inner.config.workers)
            .map(|i| {
                let jobs = self.clone();
                self.inner.workers_alive.fetch_add(1, Ordering::SeqCst);
                std::thread::Builder::new()
                    .name(format!("train-worker-{i}"))
                    .spawn(move || {
                        let _alive = AliveGuard(&jobs.inner.workers_alive);
                        worker::run(&jobs);
                    })
                    .expect("spawning a worker thread")
            })
            .collect()
    }

    /// Validates `spec` and queues it.
    pub fn submit(&self, spec: TrainingSpec) -> Result<JobRecord, JobError> {
        if self.inner.shutdown.load(Ordering::SeqCst) {
            return Err(JobError::ShuttingDown);
        }
        let info = self
            .inner
            .datasets
            .info(&spec.dataset)?
            .ok_or_else(|| JobError::Invalid {
                field: "dataset".into(),
                message: if spec.dataset == datasets::MNIST {
                    "MNIST is not in this server's MNIST directory: run `dbn-serve mnist fetch` \
                     (or start the server with DBN_FETCH_MNIST=true), or upload a dataset"
                        .to_string()
                } else {
                    format!(
                        "no dataset {:?} (available: {})",
                        spec.dataset,
                        self.inner.datasets.names().join(", ")
                    )
                },
            })?;
        let shape = DataShape {
            n_inputs: info.n_inputs,
            classes: info.classes,
            examples: info.train_examples,
        };
        spec.check(shape, &self.inner.config.limits)
            .map_err(invalid)?;
        let need = memory_estimate(&spec, &info);
        if need > self.inner.config.max_memory {
            return Err(JobError::Invalid {
                field: "architecture.hidden".into(),
                message: format!(
                    "training needs about {} MiB of memory; the limit is {} MiB",
                    need >> 20,
                    self.inner.config.max_memory >> 20
                ),
            });
        }
        let job = JobRecord::queued(new_id("job"), spec, now_millis());
        self.inner
            .store
            .insert(&job, self.inner.config.capacity)
            .map_err(|e| match e {
                StoreError::Full(m) => JobError::QueueFull(m),
                other => other.into(),
            })?;
        self.publish(JobEvent::Status {
            job: job.id.clone(),
            status: JobStatus::Queued,
        });
        self.wake_workers();
        Ok(job)
    }

    pub fn get(&self, id: &str) -> Result<JobRecord, JobError> {
        self.inner
            .store
            .get(id)?
            .ok_or_else(|| JobError::NotFound(id.to_string()))
    }

    pub fn list(
        &self,
        status: Option<JobStatus>,
        limit: usize,
        before: Option<i64>,
    ) -> Result<JobPage, JobError> {
        Ok(self.inner.store.list(status, limit, before)?)
    }

    /// Cancels a queued job at once and a running one within one mini-batch. Cancelling a
    /// cancelled job changes nothing; a succeeded or failed one is a conflict.
    pub fn cancel(&self, id: &str) -> Result<JobRecord, JobError> {
        let job = self.get(id)?;
        match job.status {
            JobStatus::Cancelled => return Ok(job),
            JobStatus::Succeeded | JobStatus::Failed => {
                return Err(JobError::Conflict(format!(
                    "job {id} has already {}",
                    job.status.as_str()
                )))
            }
            JobStatus::Queued | JobStatus::Running => {}
        }
        if self.inner.store.cancel(id, now_millis())? {
            self.publish(JobEvent::Status {
                job: id.to_string(),
                status: JobStatus::Cancelled,
            });
        } else {
            // Whichever replica runs it stops it.
            self.publish(JobEvent::CancelRequested {
                job: id.to_string(),
            });
        }
        self.get(id)
    }

    /// A receiver of every job's events from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<JobEvent> {
        self.inner.events.subscribe()
    }

    /// Jobs in each status.
    pub fn counts(&self) -> Result<Vec<(JobStatus, u64)>, JobError> {
        Ok(self.inner.store.counts()?)
    }

    /// Whether the queue can work: the store answers, the model store can be written (a full
    /// or read-only data directory is not ready) and, in a replica that trains, the workers
    /// are alive.
    pub fn healthy(&self) -> bool {
        self.workers_ok()
            && self.inner.store.counts().is_ok()
            && self.inner.models.check_writable().is_ok()
    }

    /// Whether the training workers are alive (true for a replica that runs none).
    pub fn workers_ok(&self) -> bool {
        self.inner.config.workers == 0 || self.inner.workers_alive.load(Ordering::SeqCst) > 0
    }

    /// Training examples per second last reported by a running job.
    /// Jobs that ended `failed` on a panic caught at the worker boundary, since start.
    pub fn panics(&self) -> u64 {
        self.inner.panics.load(Ordering::Relaxed)
    }

    pub fn examples_per_sec(&self) -> f64 {
        f64::from_bits(self.inner.examples_per_sec.load(Ordering::Relaxed))
    }

    pub fn datasets(&self) -> &Datasets {
        &self.inner.datasets
    }

    /// Stops taking work and asks running jobs to stop; they checkpoint at their last epoch
    /// and return to the queue, to resume at the next start. Waits up to `grace` for the
    /// workers to finish.
    pub fn shutdown(&self, workers: Vec<std::thread::JoinHandle<()>>, grace: Duration) {
        self.begin_shutdown();
        let deadline = std::time::Instant::now() + grace;
        for w in workers {
            while !w.is_finished() && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            if w.is_finished() {
                let _ = w.join();
            } else {
                tracing::warn!("a training worker did not stop within {grace:?}");
            }
        }
        self.inner.stop_background.store(true, Ordering::SeqCst);
    }

    /// Stops taking work and tells running jobs to stop, without waiting.
    pub fn begin_shutdown(&self) {
        self.inner.shutdown.store(true, Ordering::SeqCst);
        self.wake_workers();
    }

    /// Publishes to this process's subscribers and, through the relay, to the other replicas'.
    fn publish(&self, event: JobEvent) {
        if let Some(relay) = &self.inner.relay {
            relay.send(&event);
        }
        if let JobEvent::CancelRequested { job } = &event {
            self.inner.running.flag_cancel(job);
        }
        // No subscribers is fine: nobody is watching.
        let _ = self.inner.events.send(event);
    }

    fn wake_workers(&self) {
        let _guard = self.inner.wake.0.lock();
        self.inner.wake.1.notify_all();
    }

    fn lock_running(&self) -> std::sync::MutexGuard<'_, HashMap<Claim, RunFlags>> {
        self.inner.running.lock()
    }
}

struct AliveGuard<'a>(&'a AtomicUsize);

impl Drop for AliveGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

fn invalid(e: EngineError) -> JobError {
    match e {
        EngineError::Invalid { field, message } => JobError::Invalid { field, message },
        other => JobError::Invalid {
            field: "spec".into(),
            message: other.to_string(),
        },
    }
}

/// Bytes a run of `spec` holds at its peak, roughly: the data and its labels, the inputs of
/// the layer in training and the outputs it passes up (f32 each), and four copies of the
/// largest layer's weights (weights, increments, statistics, checkpoint).
fn memory_estimate(spec: &TrainingSpec, info: &DatasetInfo) -> u64 {
    let n = spec
        .train_examples
        .map_or(info.train_examples, |t| t.min(info.train_examples)) as u64;
    let hidden = &spec.architecture.hidden;
    let widest = hidden.iter().copied().max().unwrap_or(0) as u64;
    let data = n * (info.n_inputs + info.classes) as u64;
    let activations = 2 * n * (widest + info.classes as u64);
    // The largest layer's weights, a sequence model's conditioning weights included.
    let weights = (0..hidden.len())
        .map(|i| spec.layer_parameters(i, info.n_inputs, info.classes) as u64)
        .max()
        .unwrap_or(0);
    if let Some(seq) = &spec.sequence {
        // The data twice (loaded and split), the frames made from it twice (as made and
        // standardised), the next layer's frames, the test frames scored at the end, and the
        // largest layer's weights with the conditioning weights about six times (parameters,
        // increments, statistics, and a checkpoint's copy and its serialised bytes).
        let frames = match seq.moving {
            Some(_) => n * seq.length as u64,
            None => n,
        };
        let inputs = spec.model_inputs(info.n_inputs) as u64;
        let test_frames = (crate::engine::crbm::MAX_TEST_SEQUENCES * seq.length) as u64 * inputs;
        return 4 * (2 * data + 2 * frames * inputs + frames * widest + test_frames + 6 * weights);
    }
    4 * (data + activations + 4 * weights)
}
