//! A training worker: claims the oldest queued job, trains it (resuming from its checkpoint
//! when it has one), stores the model and ends the job; sleeps when the queue is empty.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use super::observer::JobObserver;
use super::{JobEvent, Jobs, RunFlags};
use crate::engine::data::MnistSplit;
use crate::engine::dbn::{evaluated_card, train_model, Checkpoint, TrainOutcome};
use crate::engine::persist;
use crate::engine::EngineError;
use crate::store::{now_millis, Claim, JobFailure, JobRecord, JobStatus, StoreError};

/// How a job's run ended.
enum Ending {
    Succeeded(String),
    Failed(JobFailure),
    Cancelled,
    /// The server is stopping: back to the queue, to resume from the checkpoint.
    Interrupted,
}

pub(super) fn run(jobs: &Jobs) {
    let pool = match rayon::ThreadPoolBuilder::new()
        .num_threads(jobs.inner.config.train_threads.max(1))
        .thread_name(|i| format!("train-{i}"))
        .build()
    {
        Ok(pool) => pool,
        Err(e) => {
            tracing::error!("training thread pool: {e}");
            return;
        }
    };
    while !jobs.inner.shutdown.load(Ordering::SeqCst) {
        match jobs.inner.store.claim_next(now_millis()) {
            Ok(Some(job)) => {
                let claim = job.claim();
                // A panic in a job (the engine, the observer, a store) ends that job, not the
                // worker: the thread goes on taking jobs.
                let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    pool.install(|| run_job(jobs, job))
                }));
                if let Err(panic) = ran {
                    end_panicked(jobs, &claim, panic.as_ref());
                }
            }
            Ok(None) => wait_for_work(jobs),
            Err(e) => {
                tracing::error!("claiming a job: {e}");
                std::thread::sleep(Duration::from_secs(1));
            }
        }
    }
}

/// Ends the job whose run panicked: `failed` with an `internal` error that says nothing of the
/// panic (its message, which may name paths, goes to the log only). Unlike a finished job's,
/// its checkpoint is kept for whoever looks into it. The end applies only while the claim
/// holds, as every end does.
fn end_panicked(jobs: &Jobs, claim: &Claim, panic: &(dyn std::any::Any + Send)) {
    let what = panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".into());
    tracing::error!(job = %claim.job, claim = claim.number, "the job panicked: {what}");
    jobs.inner.panics.fetch_add(1, Ordering::Relaxed);
    jobs.lock_running().remove(claim);
    let failure = JobFailure {
        code: "internal".into(),
        message: "the job stopped on an internal error; it was logged".into(),
    };
    match jobs
        .inner
        .store
        .finish(claim, JobStatus::Failed, Some(&failure), None, now_millis())
    {
        Ok(true) => jobs.publish(JobEvent::Status {
            job: claim.job.clone(),
            status: JobStatus::Failed,
        }),
        Ok(false) => {}
        Err(e) => tracing::error!(job = %claim.job, "recording the panicked job's end: {e}"),
    }
}

fn wait_for_work(jobs: &Jobs) {
    let (lock, signal) = &jobs.inner.wake;
    let guard = lock.lock().unwrap_or_else(|p| p.into_inner());
    if jobs.inner.shutdown.load(Ordering::SeqCst) {
        return;
    }
    // A timeout too, so a job queued by another process is found.
    let _ = signal.wait_timeout(guard, Duration::from_millis(500));
}

fn run_job(jobs: &Jobs, job: JobRecord) {
    let id = job.id.clone();
    let claim = job.claim();
    let flags = RunFlags::default();
    jobs.lock_running().insert(claim.clone(), flags.clone());
    // A cancel that raced with the claim is in the store; honour it.
    if let Ok(Some(current)) = jobs.inner.store.get(&id) {
        if current.cancel_requested {
            flags.cancel.store(true, Ordering::SeqCst);
        }
    }
    tracing::info!(job = %id, attempt = job.attempts, "training started");
    jobs.publish(JobEvent::Status {
        job: id.clone(),
        status: JobStatus::Running,
    });
    let ending = train(jobs, &job, flags.clone());
    jobs.lock_running().remove(&claim);
    if flags.lost.load(Ordering::SeqCst) {
        // A later claim holds the job now; its end is that claim's to record.
        tracing::warn!(job = %id, claim = claim.number, "stopped: the job was claimed again");
        return;
    }
    let store = &jobs.inner.store;
    let status = match &ending {
        Ending::Succeeded(_) => JobStatus::Succeeded,
        Ending::Failed(_) => JobStatus::Failed,
        Ending::Cancelled => JobStatus::Cancelled,
        Ending::Interrupted => JobStatus::Queued,
    };
    // A database that is briefly away gets a few tries; the lease is this run's meanwhile.
    let mut tries = 0;
    let recorded = loop {
        let now = now_millis();
        let result = match &ending {
            Ending::Succeeded(model) => store.finish(&claim, status, None, Some(model), now),
            Ending::Failed(failure) => store.finish(&claim, status, Some(failure), None, now),
            Ending::Cancelled => store.finish(&claim, status, None, None, now),
            Ending::Interrupted => store.requeue(&claim),
        };
        match result {
            Err(StoreError::Unavailable(e)) if tries < 3 && !flags.lost.load(Ordering::SeqCst) => {
                tries += 1;
                tracing::warn!(job = %id, "recording the end of the job, try {tries}: {e}");
                std::thread::sleep(Duration::from_secs(1 << tries));
            }
            other => break other,
        }
    };
    match recorded {
        Ok(true) => {}
        Ok(false) => {
            // Ended elsewhere, or taken over: nothing of it is this run's to change.
            tracing::warn!(job = %id, "the job was no longer this replica's to end");
            return;
        }
        Err(e) => {
            // The checkpoint stays: whoever takes the job up next resumes from it.
            tracing::error!(job = %id, "recording the end of the job: {e}");
            return;
        }
    }
    if status.is_terminal() {
        if let Err(e) = jobs.inner.models.delete_checkpoint(&id) {
            tracing::warn!(job = %id, "removing checkpoint: {e}");
        }
    }
    match &ending {
        Ending::Failed(f) => tracing::warn!(job = %id, code = %f.code, "job failed: {}", f.message),
        _ => tracing::info!(job = %id, "job {}", status.as_str()),
    }
    jobs.publish(JobEvent::Status { job: id, status });
}

fn failure(code: &str, message: impl Into<String>) -> Ending {
    Ending::Failed(JobFailure {
        code: code.into(),
        message: message.into(),
    })
}

fn train(jobs: &Jobs, job: &JobRecord, flags: RunFlags) -> Ending {
    let spec = &job.spec;
    // Only the examples the spec uses are loaded (the split takes a prefix).
    let data = match load_with_retries(jobs, job, MnistSplit::Train, spec.train_examples) {
        Ok(Some(d)) => d,
        Ok(None) => return failure("dataset_unavailable", "the dataset has no training split"),
        Err(Retry::Later) => return Ending::Interrupted,
        Err(Retry::Never(e)) => return failure("dataset_unavailable", public_message(&job.id, &e)),
    };
    let lost = flags.lost.clone();
    let mut observer = JobObserver::new(jobs, job.claim(), flags);
    #[cfg(feature = "fault-injection")]
    {
        observer.panic_at_epoch = spec.name.as_deref() == Some(super::INJECT_PANIC);
    }
    // Checked at submission against the dataset's description; checked once more against
    // the data as loaded, and the checked value is what the engine takes.
    let checked = match spec.check_for(&data, &jobs.inner.config.limits) {
        Ok(checked) => checked,
        Err(e) => return failure(engine_code(&e), public_message(&job.id, &e)),
    };
    let checkpoint = match jobs.inner.models.load_checkpoint(&job.id) {
        Ok(Some(bytes)) => match Checkpoint::from_bytes(&bytes) {
            Ok(cp) => Some(cp),
            Err(e) => {
                tracing::warn!(job = %job.id, "unusable checkpoint, starting over: {e}");
                None
            }
        },
        Ok(None) => None,
        Err(e) => {
            tracing::warn!(job = %job.id, "reading checkpoint, starting over: {e}");
            None
        }
    };
    if let Some(cp) = &checkpoint {
        tracing::info!(job = %job.id, at = %cp.position(), "resuming from checkpoint");
        observer.history = cp.history().to_vec();
    }
    let mut rng = crate::engine::rng_from_seed(spec.seed);
    let outcome = train_model(&checked, &data, &mut observer, &mut rng, checkpoint);
    let outcome = match outcome {
        Ok(o) => o,
        Err(EngineError::Cancelled) => {
            return if observer.cancel.load(Ordering::SeqCst) {
                Ending::Cancelled
            } else {
                Ending::Interrupted
            }
        }
        Err(e) => return failure(engine_code(&e), public_message(&job.id, &e)),
    };
    if observer.cancel.load(Ordering::SeqCst) {
        return Ending::Cancelled;
    }
    store_model(jobs, job, &data, outcome, &observer.cancel, &lost).unwrap_or_else(Ending::Failed)
}

/// Why a dataset did not load: for now (its shared store is out of reach), or for good.
enum Retry {
    Later,
    Never(crate::jobs::DatasetError),
}

/// Pauses between tries to load a dataset whose shared store is out of reach; after the last,
/// the job goes back to the queue.
const DATASET_RETRIES: [Duration; 3] = [
    Duration::from_secs(1),
    Duration::from_secs(2),
    Duration::from_secs(4),
];

/// Loads a split of the job's dataset, trying again with backoff while the shared store is
/// out of reach (`Retry::Later` once the tries are spent, or the server is stopping).
fn load_with_retries(
    jobs: &Jobs,
    job: &JobRecord,
    split: MnistSplit,
    limit: Option<usize>,
) -> Result<Option<crate::engine::data::Dataset>, Retry> {
    let mut pauses = DATASET_RETRIES.iter();
    loop {
        match jobs.inner.datasets.load(&job.spec.dataset, split, limit) {
            Ok(data) => return Ok(data),
            Err(crate::jobs::DatasetError::Store(StoreError::Unavailable(e))) => {
                let Some(pause) = pauses.next() else {
                    return Err(Retry::Later);
                };
                if jobs.inner.shutdown.load(Ordering::SeqCst) {
                    return Err(Retry::Later);
                }
                tracing::warn!(job = %job.id, "loading the dataset: {e}; trying again in {pause:?}");
                std::thread::sleep(*pause);
            }
            Err(e) => return Err(Retry::Never(e)),
        }
    }
}

/// What a client may read of a job's failure: the error's message, except that a file the
/// server could not read or write is not named (its path is logged instead).
fn public_message(job: &str, e: &(dyn std::error::Error + 'static)) -> String {
    use crate::engine::DataError;
    use crate::jobs::DatasetError;
    let source = match e.downcast_ref::<DatasetError>() {
        Some(DatasetError::Engine(inner)) => return public_message(job, inner),
        Some(DatasetError::Store(inner)) => return public_message(job, inner),
        None => match (
            e.downcast_ref::<EngineError>(),
            e.downcast_ref::<StoreError>(),
        ) {
            (Some(EngineError::Io { source, .. }), _)
            | (_, Some(StoreError::Io { source, .. })) => source.to_string(),
            (Some(EngineError::Data(DataError::Io { message, .. })), _) => message.clone(),
            _ => return e.to_string(),
        },
    };
    tracing::warn!(job, "{e}");
    format!("a file of the server could not be read or written: {source}")
}

/// The stable code of an engine failure.
fn engine_code(e: &EngineError) -> &'static str {
    match e {
        EngineError::Data(_) => "dataset_invalid",
        EngineError::Invalid { .. } | EngineError::Shape(_) => "invalid_spec",
        EngineError::Diverged(_) => "diverged",
        EngineError::Io { .. } => "io_error",
        EngineError::Model(_) => "checkpoint_invalid",
        EngineError::Cancelled => "cancelled",
    }
}

/// Measures the test error (when the dataset has a test split) and stores the model under an
/// id derived from the job's, so a retried job never stores two. A cancel that arrives before
/// the write begins is honoured (`Cancelled`); from the write on, the job is committed. A
/// model store out of reach sends the job back to the queue (`Interrupted`): from its last
/// checkpoint it then only evaluates and stores again.
fn store_model(
    jobs: &Jobs,
    job: &JobRecord,
    data: &crate::engine::data::Dataset,
    outcome: TrainOutcome,
    cancel: &AtomicBool,
    lost: &AtomicBool,
) -> Result<Ending, JobFailure> {
    let fail = |code: &str, e: &(dyn std::error::Error + 'static)| JobFailure {
        code: code.into(),
        message: public_message(&job.id, e),
    };
    let model_id = job.id.replacen("job-", "model-", 1);
    let test = match load_with_retries(jobs, job, MnistSplit::Test, None) {
        Ok(test) => test,
        Err(Retry::Later) => return Ok(Ending::Interrupted),
        Err(Retry::Never(e)) => return Err(fail("dataset_unavailable", &e)),
    };
    // The slow log-probability measurement is skipped once a cancel has come; the check
    // below decides.
    let card = evaluated_card(
        &job.spec,
        &outcome,
        data,
        test.as_ref(),
        rayon::current_num_threads(),
        !cancel.load(Ordering::SeqCst),
    )
    .map_err(|e| fail("evaluation_failed", &e))?;
    let bytes =
        persist::to_bytes(&outcome.dbn, &card).map_err(|e| fail("model_write_failed", &e))?;
    // The model lives in the model store: the claim is checked just before the write. A
    // later claim holds the job: the model is that claim's to store.
    match jobs.inner.store.holds(&job.claim()) {
        Ok(true) => {}
        Ok(false) => {
            lost.store(true, Ordering::SeqCst);
            return Ok(Ending::Cancelled);
        }
        Err(e) => return Ok(back_to_queue(job, "checking the claim", &e)),
    }
    // Cancelled before the write: nothing is stored, unless an earlier attempt that died
    // before recording its end already stored this model (then the job is committed).
    if lost.load(Ordering::SeqCst)
        || (cancel.load(Ordering::SeqCst) && jobs.inner.models.get(&model_id).is_err())
    {
        return Ok(Ending::Cancelled);
    }
    let stored = jobs
        .inner
        .models
        .insert(&model_id, &bytes, outcome.dbn, card);
    match stored {
        // Stored by an earlier attempt that died before recording its end.
        Ok(_) | Err(StoreError::Conflict(_)) => {}
        Err(StoreError::Unavailable(e)) => return Ok(back_to_queue(job, "storing the model", &e)),
        Err(e) => return Err(fail("model_write_failed", &e)),
    }
    // The spec's alias moves once the model is stored; a retry after a store outage finds the
    // model stored and moves it then.
    if let Some(alias) = &job.spec.alias {
        match jobs.inner.models.set_alias(alias, &model_id) {
            Ok(()) => tracing::info!(job = %job.id, "alias {alias} now points at {model_id}"),
            Err(StoreError::Unavailable(e)) => {
                return Ok(back_to_queue(job, "moving the alias", &e))
            }
            Err(e) => return Err(fail("alias_failed", &e)),
        }
    }
    Ok(Ending::Succeeded(model_id))
}

/// A model store out of reach: the job goes back to the queue after a pause.
fn back_to_queue(job: &JobRecord, doing: &str, e: &dyn std::fmt::Display) -> Ending {
    tracing::warn!(job = %job.id, "{doing}: {e}; back to the queue");
    std::thread::sleep(Duration::from_secs(5));
    Ending::Interrupted
}
