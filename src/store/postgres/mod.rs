//! The shared job store: jobs in PostgreSQL, for several replicas over one queue.
//!
//! A worker claims the oldest queued job with `FOR UPDATE SKIP LOCKED` and holds a lease on it
//! that its replica's heartbeat renews ([`JobStore::heartbeat`]). When a replica dies, its
//! leases run out and the next claim of any replica takes the job back (it resumes from its
//! checkpoint). Lease times are the database's clock, so replicas' clocks need not agree.
//! Writes that end a job only apply while this replica holds its lease, so a replica that lost
//! a job (paused past its lease) cannot overwrite the new owner's work.
//!
//! Connections and their pool are in `pool`, TLS in `tls`; events cross replicas by `NOTIFY`
//! on one channel ([`PgEventRelay`]).

mod pool;
mod relay;
mod tls;

use std::sync::Arc;
use std::time::Duration;

use postgres::{Client, Row};

use super::jobs::json;
use super::jobs::{
    Claim, EventRelay, Heartbeat, JobFailure, JobPage, JobProgress, JobRecord, JobStatus, JobStore,
};
use super::{Result, StoreError};
use crate::engine::observer::EpochMetrics;
use pool::{Connector, Pool};
pub use relay::PgEventRelay;

/// Migrations in order; `dbn_migrations` records the ones applied.
const MIGRATIONS: &[&str] = &["CREATE TABLE dbn_jobs (
        seq BIGSERIAL PRIMARY KEY,
        id TEXT NOT NULL UNIQUE,
        status TEXT NOT NULL,
        spec TEXT NOT NULL,
        created_at BIGINT NOT NULL,
        started_at BIGINT,
        finished_at BIGINT,
        progress TEXT,
        history TEXT NOT NULL DEFAULT '[]',
        error_code TEXT,
        error_message TEXT,
        model_id TEXT,
        attempts INTEGER NOT NULL DEFAULT 0,
        cancel_requested BOOLEAN NOT NULL DEFAULT FALSE,
        lease_owner TEXT,
        lease_expires_at TIMESTAMPTZ
    );
    CREATE INDEX dbn_jobs_status ON dbn_jobs (status, seq);"];

/// Advisory-lock keys (arbitrary constants of this project): one serialises migrations at
/// start-up, one serialises the queue-capacity check with the insert.
/// The advisory lock held while the schema is migrated (public for tests and operators:
/// `SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND objid = …`).
pub const MIGRATION_LOCK: i64 = 0x6462_6e5f_6d69_6772;
/// How long start-up waits for another replica's migration before giving up.
pub const MIGRATION_WAIT: Duration = Duration::from_secs(60);
const INSERT_LOCK: i64 = 0x6462_6e5f_696e_7374;

const COLUMNS: &str = "id, status, spec, created_at, started_at, finished_at, progress, history, \
                       error_code, error_message, model_id, attempts, cancel_requested";

/// Jobs in PostgreSQL, over a small pool of connections.
pub struct PostgresJobStore {
    pool: Pool,
    /// This replica's name on the leases it holds.
    owner: String,
    lease: Duration,
}

impl PostgresJobStore {
    /// Connects to `url` (`postgres://user:password@host:port/db`), brings the schema up to
    /// date and names this replica `owner` on its leases, which last `lease`.
    pub fn connect(url: &str, owner: String, lease: Duration) -> Result<Self> {
        Self::connect_waiting(url, owner, lease, MIGRATION_WAIT)
    }

    /// As [`PostgresJobStore::connect`], waiting at most `wait` for the migration lock.
    pub fn connect_waiting(
        url: &str,
        owner: String,
        lease: Duration,
        wait: Duration,
    ) -> Result<Self> {
        let pool = Pool::new(Connector::from_url(url, lease)?);
        pool.with(|client| migrate(client, wait))?;
        Ok(PostgresJobStore { pool, owner, lease })
    }

    fn with<T: Send>(&self, f: impl FnOnce(&mut Client) -> Result<T> + Send) -> Result<T> {
        self.pool.with(f)
    }

    fn lease_secs(&self) -> f64 {
        self.lease.as_secs_f64()
    }
}

/// Applies the migrations this database lacks, one transaction each, under an advisory lock so
/// that replicas starting together apply each once. A database migrated by a newer server is
/// refused untouched.
fn migrate(client: &mut Client, wait: Duration) -> Result<()> {
    let deadline = std::time::Instant::now() + wait;
    loop {
        let locked: bool = client
            .query_one("SELECT pg_try_advisory_lock($1)", &[&MIGRATION_LOCK])?
            .get(0);
        if locked {
            break;
        }
        if std::time::Instant::now() >= deadline {
            return Err(StoreError::Database(format!(
                "another session has held the schema migration lock for {}s: a replica may be \
                 migrating a large database (start again later), or a stale session holds it \
                 (find it with SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND \
                 objid = {} and end it with pg_terminate_backend)",
                wait.as_secs(),
                MIGRATION_LOCK & 0xffff_ffff
            )));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let result = (|| -> Result<()> {
        client.batch_execute(
            "CREATE TABLE IF NOT EXISTS dbn_migrations (
                version INTEGER PRIMARY KEY,
                applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
            )",
        )?;
        let version: i32 = client
            .query_one("SELECT COALESCE(MAX(version), 0) FROM dbn_migrations", &[])?
            .get(0);
        if version < 0 || version as usize > MIGRATIONS.len() {
            return Err(StoreError::Database(format!(
                "schema version {version} is newer than this server knows ({})",
                MIGRATIONS.len()
            )));
        }
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
            let mut tx = client.transaction()?;
            tx.batch_execute(sql)?;
            tx.execute(
                "INSERT INTO dbn_migrations (version) VALUES ($1)",
                &[&((i + 1) as i32)],
            )?;
            tx.commit()?;
            tracing::info!(version = i + 1, "database schema migrated");
        }
        Ok(())
    })();
    let unlocked = client.execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK]);
    result?;
    unlocked?;
    Ok(())
}

fn parse<T: serde::de::DeserializeOwned>(what: &str, text: &str) -> Result<T> {
    serde_json::from_str(text).map_err(|e| StoreError::Database(format!("stored {what}: {e}")))
}

/// A job from a row with the columns of [`COLUMNS`] (read by name).
fn record(row: &Row) -> Result<JobRecord> {
    let status: String = row.try_get("status")?;
    let status = JobStatus::parse(&status)
        .ok_or_else(|| StoreError::Database(format!("unknown job status {status:?}")))?;
    let progress: Option<String> = row.try_get("progress")?;
    let code: Option<String> = row.try_get("error_code")?;
    let message: Option<String> = row.try_get("error_message")?;
    let millis = |name: &str| -> Result<Option<u64>> {
        Ok(row.try_get::<_, Option<i64>>(name)?.map(|t| t as u64))
    };
    Ok(JobRecord {
        id: row.try_get("id")?,
        status,
        spec: parse("spec", row.try_get("spec")?)?,
        created_at: row.try_get::<_, i64>("created_at")? as u64,
        started_at: millis("started_at")?,
        finished_at: millis("finished_at")?,
        progress: progress
            .map(|p| parse::<JobProgress>("progress", &p))
            .transpose()?,
        history: parse("history", row.try_get("history")?)?,
        error: code.map(|code| JobFailure {
            code,
            message: message.unwrap_or_default(),
        }),
        model_id: row.try_get("model_id")?,
        attempts: row.try_get::<_, i32>("attempts")? as u32,
        cancel_requested: row.try_get("cancel_requested")?,
    })
}

impl JobStore for PostgresJobStore {
    fn insert(&self, job: &JobRecord, capacity: usize) -> Result<()> {
        self.with(|c| {
            let mut tx = c.transaction()?;
            // Replicas inserting at once see each other's jobs in the count.
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&INSERT_LOCK])?;
            let queued: i64 = tx
                .query_one("SELECT COUNT(*) FROM dbn_jobs WHERE status = 'queued'", &[])?
                .get(0);
            if queued as usize >= capacity {
                return Err(StoreError::Full(format!(
                    "the queue holds {queued} jobs, its capacity"
                )));
            }
            let inserted = tx.execute(
                "INSERT INTO dbn_jobs (id, status, spec, created_at, history) \
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT (id) DO NOTHING",
                &[
                    &job.id,
                    &job.status.as_str(),
                    &json(&job.spec)?,
                    &(job.created_at as i64),
                    &json(&job.history)?,
                ],
            )?;
            if inserted == 0 {
                return Err(StoreError::Conflict(format!("job {} exists", job.id)));
            }
            tx.commit()?;
            Ok(())
        })
    }

    fn get(&self, id: &str) -> Result<Option<JobRecord>> {
        self.with(|c| {
            c.query_opt(
                &format!("SELECT {COLUMNS} FROM dbn_jobs WHERE id = $1"),
                &[&id],
            )?
            .as_ref()
            .map(record)
            .transpose()
        })
    }

    fn list(
        &self,
        status: Option<JobStatus>,
        limit: usize,
        before: Option<i64>,
    ) -> Result<JobPage> {
        let rows = self.with(|c| {
            Ok(c.query(
                &format!(
                    "SELECT seq, {COLUMNS} FROM dbn_jobs \
                     WHERE ($1::TEXT IS NULL OR status = $1) AND seq < $2 \
                     ORDER BY seq DESC LIMIT $3"
                ),
                &[
                    &status.map(|s| s.as_str()),
                    &before.unwrap_or(i64::MAX),
                    &((limit + 1) as i64),
                ],
            )?)
        })?;
        let mut jobs = Vec::with_capacity(rows.len());
        for row in &rows {
            jobs.push((row.try_get::<_, i64>("seq")?, record(row)?));
        }
        Ok(JobPage::from_rows(jobs, limit))
    }

    fn claim_next(&self, now: u64) -> Result<Option<JobRecord>> {
        self.with(|c| {
            // A job whose worker died after a cancel was asked ends cancelled, not retried.
            c.execute(
                "UPDATE dbn_jobs SET status = 'cancelled', finished_at = $1, lease_owner = NULL \
                 WHERE status = 'running' AND cancel_requested \
                 AND lease_expires_at < clock_timestamp()",
                &[&(now as i64)],
            )?;
            let row = c.query_opt(
                &format!(
                    "WITH next AS ( \
                         SELECT seq FROM dbn_jobs \
                         WHERE status = 'queued' \
                            OR (status = 'running' AND lease_expires_at < clock_timestamp()) \
                         ORDER BY seq LIMIT 1 FOR UPDATE SKIP LOCKED) \
                     UPDATE dbn_jobs j SET status = 'running', \
                         started_at = COALESCE(j.started_at, $2), attempts = j.attempts + 1, \
                         lease_owner = $1, \
                         lease_expires_at = clock_timestamp() + make_interval(secs => $3) \
                     FROM next WHERE j.seq = next.seq \
                     RETURNING {}",
                    COLUMNS
                        .split(", ")
                        .map(|col| format!("j.{col}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                &[&self.owner, &(now as i64), &self.lease_secs()],
            )?;
            row.as_ref().map(record).transpose()
        })
    }

    fn record_progress(
        &self,
        claim: &Claim,
        progress: &JobProgress,
        history: Option<&[EpochMetrics]>,
    ) -> Result<bool> {
        let progress = json(progress)?;
        let history = history.map(|h| json(&h)).transpose()?;
        self.with(|c| {
            let changed = c.execute(
                "UPDATE dbn_jobs SET progress = $4, history = COALESCE($5, history), \
                 lease_expires_at = clock_timestamp() + make_interval(secs => $6) \
                 WHERE id = $1 AND lease_owner = $2 AND attempts = $3 AND status = 'running'",
                &[
                    &claim.job,
                    &self.owner,
                    &(claim.number as i32),
                    &progress,
                    &history,
                    &self.lease_secs(),
                ],
            )?;
            Ok(changed == 1)
        })
    }

    fn finish(
        &self,
        claim: &Claim,
        status: JobStatus,
        error: Option<&JobFailure>,
        model_id: Option<&str>,
        now: u64,
    ) -> Result<bool> {
        self.with(|c| {
            let changed = c.execute(
                "UPDATE dbn_jobs SET status = $4, error_code = $5, error_message = $6, \
                 model_id = $7, finished_at = $8, lease_owner = NULL, lease_expires_at = NULL \
                 WHERE id = $1 AND lease_owner = $2 AND attempts = $3 AND status = 'running'",
                &[
                    &claim.job,
                    &self.owner,
                    &(claim.number as i32),
                    &status.as_str(),
                    &error.map(|e| e.code.as_str()),
                    &error.map(|e| e.message.as_str()),
                    &model_id,
                    &(now as i64),
                ],
            )?;
            Ok(changed == 1)
        })
    }

    fn requeue(&self, claim: &Claim) -> Result<bool> {
        self.with(|c| {
            let changed = c.execute(
                "UPDATE dbn_jobs SET status = 'queued', lease_owner = NULL, \
                 lease_expires_at = NULL \
                 WHERE id = $1 AND lease_owner = $2 AND attempts = $3 AND status = 'running'",
                &[&claim.job, &self.owner, &(claim.number as i32)],
            )?;
            Ok(changed == 1)
        })
    }

    /// Held: running under this replica's unexpired lease, with no later claim.
    fn holds(&self, claim: &Claim) -> Result<bool> {
        self.with(|c| {
            let row = c.query_opt(
                "SELECT 1 FROM dbn_jobs WHERE id = $1 AND lease_owner = $2 AND attempts = $3 \
                 AND status = 'running' AND lease_expires_at > clock_timestamp()",
                &[&claim.job, &self.owner, &(claim.number as i32)],
            )?;
            Ok(row.is_some())
        })
    }

    /// One statement, so a job requeued or claimed meanwhile cannot slip between a check and
    /// the flag.
    fn cancel(&self, id: &str, now: u64) -> Result<bool> {
        self.with(|c| {
            let row = c.query_opt(
                "UPDATE dbn_jobs SET cancel_requested = TRUE, \
                 finished_at = CASE WHEN status = 'queued' THEN $2 ELSE finished_at END, \
                 status = CASE WHEN status = 'queued' THEN 'cancelled' ELSE status END \
                 WHERE id = $1 AND status IN ('queued', 'running') \
                 RETURNING status",
                &[&id, &(now as i64)],
            )?;
            Ok(row.is_some_and(|r| r.get::<_, String>(0) == "cancelled"))
        })
    }

    /// Other replicas may be running jobs right now: only jobs whose lease has run out are
    /// this call's business. Those asked to cancel end cancelled; the rest are counted (the
    /// next claim of any replica takes them).
    fn recover(&self, now: u64) -> Result<usize> {
        self.with(|c| {
            c.execute(
                "UPDATE dbn_jobs SET status = 'cancelled', finished_at = $1, lease_owner = NULL \
                 WHERE cancel_requested AND (status = 'queued' \
                    OR (status = 'running' AND lease_expires_at < clock_timestamp()))",
                &[&(now as i64)],
            )?;
            let expired: i64 = c
                .query_one(
                    "SELECT COUNT(*) FROM dbn_jobs \
                     WHERE status = 'running' AND lease_expires_at < clock_timestamp()",
                    &[],
                )?
                .get(0);
            Ok(expired as usize)
        })
    }

    /// Renews only the leases of claims that are still the job's: a lapsed claim whose job
    /// was claimed again (here or elsewhere) is reported lost, never renewed.
    fn heartbeat(&self, running: &[Claim], _now: u64) -> Result<Heartbeat> {
        if running.is_empty() {
            return Ok(Heartbeat::default());
        }
        let ids: Vec<&str> = running.iter().map(|c| c.job.as_str()).collect();
        let numbers: Vec<i32> = running.iter().map(|c| c.number as i32).collect();
        self.with(|c| {
            let rows = c.query(
                "UPDATE dbn_jobs AS j \
                 SET lease_expires_at = clock_timestamp() + make_interval(secs => $4) \
                 FROM unnest($1::text[], $2::int[]) AS r(id, attempts) \
                 WHERE j.id = r.id AND j.attempts = r.attempts AND j.lease_owner = $3 \
                 AND j.status = 'running' \
                 RETURNING j.id, j.attempts, j.cancel_requested",
                &[&ids, &numbers, &self.owner, &self.lease_secs()],
            )?;
            let mut beat = Heartbeat::default();
            let mut held = Vec::with_capacity(rows.len());
            for row in &rows {
                let id: String = row.try_get(0)?;
                let number = row.try_get::<_, i32>(1)? as u32;
                if row.try_get::<_, bool>(2)? {
                    beat.cancel.push(id.clone());
                }
                held.push(Claim { job: id, number });
            }
            beat.lost = running
                .iter()
                .filter(|c| !held.contains(c))
                .cloned()
                .collect();
            Ok(beat)
        })
    }

    fn counts(&self) -> Result<Vec<(JobStatus, u64)>> {
        let rows = self
            .with(|c| Ok(c.query("SELECT status, COUNT(*) FROM dbn_jobs GROUP BY status", &[])?))?;
        let mut counts: Vec<(JobStatus, u64)> = JobStatus::ALL.iter().map(|&s| (s, 0)).collect();
        for row in &rows {
            let status: String = row.try_get(0)?;
            let n: i64 = row.try_get(1)?;
            if let Some(slot) = counts.iter_mut().find(|(s, _)| s.as_str() == status) {
                slot.1 = n as u64;
            }
        }
        Ok(counts)
    }

    fn leases(&self) -> bool {
        true
    }

    fn relay(&self) -> Option<Arc<dyn EventRelay>> {
        Some(Arc::new(PgEventRelay::new(self.pool.connector().clone())))
    }
}
