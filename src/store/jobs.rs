//! The persisted form of a training job and the trait of stores that keep them.

use serde::{Deserialize, Serialize};

use super::Result;
use crate::engine::observer::{EpochMetrics, Progress};
use crate::engine::spec::TrainingSpec;

/// A value as the JSON text a job store keeps in a column.
pub(crate) fn json<T: Serialize>(value: &T) -> Result<String> {
    serde_json::to_string(value).map_err(|e| super::StoreError::Database(e.to_string()))
}

/// Where a job is in its life: `queued → running → succeeded | failed | cancelled`; a running
/// job goes back to `queued` only when the server stops or dies under it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    Queued,
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

impl JobStatus {
    pub const ALL: [JobStatus; 5] = [
        JobStatus::Queued,
        JobStatus::Running,
        JobStatus::Succeeded,
        JobStatus::Failed,
        JobStatus::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Queued => "queued",
            JobStatus::Running => "running",
            JobStatus::Succeeded => "succeeded",
            JobStatus::Failed => "failed",
            JobStatus::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// Whether the job has ended for good.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            JobStatus::Succeeded | JobStatus::Failed | JobStatus::Cancelled
        )
    }
}

/// The engine's progress plus the time estimate the job adds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobProgress {
    #[serde(flatten)]
    pub progress: Progress,
    /// Estimated seconds until the run ends, from the pace so far.
    pub eta_seconds: Option<f64>,
}

/// Why a job failed: a stable code and a message for people.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobFailure {
    pub code: String,
    pub message: String,
}

/// One training job as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct JobRecord {
    pub id: String,
    pub status: JobStatus,
    pub spec: TrainingSpec,
    /// Milliseconds since the Unix epoch.
    pub created_at: u64,
    pub started_at: Option<u64>,
    pub finished_at: Option<u64>,
    pub progress: Option<JobProgress>,
    /// Metrics of every finished epoch.
    pub history: Vec<EpochMetrics>,
    pub error: Option<JobFailure>,
    pub model_id: Option<String>,
    /// Times a worker has started the job (more than one after a restart).
    pub attempts: u32,
    pub cancel_requested: bool,
}

/// One claim of a job by a worker: the job's id and its claim number, the `attempts` count
/// that the claim set. The number is the claim's fencing token: every claim raises it, and a
/// store applies a claim's writes (progress, end, requeue) only while the number is still the
/// job's, so a run that lost its job (a lapsed lease, a second claim) changes nothing.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Claim {
    pub job: String,
    pub number: u32,
}

impl JobRecord {
    /// The claim this record (as `claim_next` returned it) stands for.
    pub fn claim(&self) -> Claim {
        Claim {
            job: self.id.clone(),
            number: self.attempts,
        }
    }

    /// A new queued job.
    pub fn queued(id: String, spec: TrainingSpec, now: u64) -> Self {
        JobRecord {
            id,
            status: JobStatus::Queued,
            spec,
            created_at: now,
            started_at: None,
            finished_at: None,
            progress: None,
            history: Vec::new(),
            error: None,
            model_id: None,
            attempts: 0,
            cancel_requested: false,
        }
    }
}

/// A page of jobs, newest first, and the cursor of the next page.
#[derive(Debug, Clone)]
pub struct JobPage {
    pub jobs: Vec<JobRecord>,
    pub next: Option<i64>,
}

impl JobPage {
    /// The page from up to `limit + 1` rows of (sequence number, job), newest first: a row
    /// beyond `limit` tells that there is a next page, which starts before the last kept.
    pub fn from_rows(mut rows: Vec<(i64, JobRecord)>, limit: usize) -> Self {
        let next = if rows.len() > limit {
            rows.truncate(limit);
            rows.last().map(|(seq, _)| *seq)
        } else {
            None
        };
        JobPage {
            jobs: rows.into_iter().map(|(_, job)| job).collect(),
            next,
        }
    }
}

/// Keeps jobs. Every method is short and blocking; implementations are shared by the HTTP
/// handlers and the worker threads.
pub trait JobStore: Send + Sync {
    /// Adds a queued job, unless `capacity` jobs are already queued (`StoreError::Full`).
    fn insert(&self, job: &JobRecord, capacity: usize) -> Result<()>;
    fn get(&self, id: &str) -> Result<Option<JobRecord>>;
    /// Newest first, `limit` jobs created before the cursor `before`, optionally of one status.
    fn list(&self, status: Option<JobStatus>, limit: usize, before: Option<i64>)
        -> Result<JobPage>;
    /// Moves the oldest queued job to `running` and returns it.
    fn claim_next(&self, now: u64) -> Result<Option<JobRecord>>;
    /// Records progress and, at the end of an epoch, the metrics history, while `claim` is
    /// current; false (nothing written) otherwise.
    fn record_progress(
        &self,
        claim: &Claim,
        progress: &JobProgress,
        history: Option<&[EpochMetrics]>,
    ) -> Result<bool>;
    /// Ends a running job; false if it was not this claim's to end (it ended already, or a
    /// later claim, here or in another process, holds it now).
    fn finish(
        &self,
        claim: &Claim,
        status: JobStatus,
        error: Option<&JobFailure>,
        model_id: Option<&str>,
        now: u64,
    ) -> Result<bool>;
    /// Puts a running job back in the queue (the server is stopping); false as for `finish`.
    fn requeue(&self, claim: &Claim) -> Result<bool>;
    /// Whether `claim` still holds its job (running, and no later claim): asked before a
    /// checkpoint or a model is written, which live in another store.
    fn holds(&self, claim: &Claim) -> Result<bool>;
    /// Cancels a job: a queued one at once (returns true), a running one by setting its
    /// request flag (returns false). A finished job is left as it is.
    fn cancel(&self, id: &str, now: u64) -> Result<bool>;
    /// At start-up: jobs left `running` by a previous process go back to the queue (or to
    /// `cancelled` if cancelling was asked). Returns how many were requeued.
    fn recover(&self, now: u64) -> Result<usize>;
    /// Jobs in each status.
    fn counts(&self) -> Result<Vec<(JobStatus, u64)>>;
    /// Called every few seconds with the claims this process is running: renews their leases
    /// (in a store shared by several processes) and tells which jobs were asked to cancel and
    /// which claims no longer hold their job (a later claim took it over, or it ended).
    fn heartbeat(&self, running: &[Claim], now: u64) -> Result<Heartbeat>;
    /// Whether running jobs hold leases that lapse when not renewed (a store shared by several
    /// processes): a process that cannot renew them must stop its jobs before they lapse.
    fn leases(&self) -> bool {
        false
    }
    /// How events reach the other processes sharing this store; `None` when there are none.
    fn relay(&self) -> Option<std::sync::Arc<dyn EventRelay>> {
        None
    }
}

/// What a [`JobStore::heartbeat`] found about the jobs running here.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Heartbeat {
    /// Jobs whose cancellation was asked (possibly through another process).
    pub cancel: Vec<String>,
    /// Claims that no longer hold their job: their runs must stop without recording an end.
    pub lost: Vec<Claim>,
}

/// Carries job events (serialised) between the processes sharing a job store.
pub trait EventRelay: Send + Sync {
    /// Publishes one event to every process, this one included.
    fn send(&self, payload: &str) -> Result<()>;
    /// Delivers every event published from now on to `deliver`, on a thread of its own that
    /// reconnects after failures, until `stop` is set.
    fn listen(
        &self,
        deliver: Box<dyn Fn(&str) + Send>,
        stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    ) -> std::thread::JoinHandle<()>;
}
