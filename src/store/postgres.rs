//! The shared job store: jobs in PostgreSQL, for several replicas over one queue.
//!
//! A worker claims the oldest queued job with `FOR UPDATE SKIP LOCKED` and holds a lease on it
//! that its replica's heartbeat renews ([`JobStore::heartbeat`]). When a replica dies, its
//! leases run out and the next claim of any replica takes the job back (it resumes from its
//! checkpoint). Lease times are the database's clock, so replicas' clocks need not agree.
//! Writes that end a job only apply while this replica holds its lease, so a replica that lost
//! a job (paused past its lease) cannot overwrite the new owner's work.
//!
//! Events cross replicas by `NOTIFY` on one channel ([`PgEventRelay`]).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use postgres::fallible_iterator::FallibleIterator;
use postgres::{Client, Row};
use tokio_postgres_rustls::MakeRustlsConnect;

use super::jobs::json;
use super::jobs::{
    EventRelay, Heartbeat, JobFailure, JobPage, JobProgress, JobRecord, JobStatus, JobStore,
};
use super::{Result, StoreError};
use crate::engine::observer::EpochMetrics;

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
const MIGRATION_LOCK: i64 = 0x6462_6e5f_6d69_6772;
const INSERT_LOCK: i64 = 0x6462_6e5f_696e_7374;

/// The channel events are published on.
const CHANNEL: &str = "dbn_job_events";

const COLUMNS: &str = "id, status, spec, created_at, started_at, finished_at, progress, history, \
                       error_code, error_message, model_id, attempts, cancel_requested";

/// Jobs in PostgreSQL. Holds a few idle connections; every call takes one for its duration.
pub struct PostgresJobStore {
    config: postgres::Config,
    tls: MakeRustlsConnect,
    /// Idle connections and when each was last used.
    idle: Mutex<Vec<(Client, Instant)>>,
    /// Connections open (idle or in use), bounded by [`MAX_OPEN`].
    open: Mutex<usize>,
    freed: Condvar,
    /// This replica's name on the leases it holds.
    owner: String,
    lease: Duration,
}

/// Idle connections kept for reuse; more are opened when needed and closed after.
const MAX_IDLE: usize = 8;
/// Connections open at once; more callers wait for one.
const MAX_OPEN: usize = 16;
/// An idle connection older than this is checked before use (the server or a firewall may
/// have closed it meanwhile).
const CHECK_AFTER: Duration = Duration::from_secs(30);

impl From<postgres::Error> for StoreError {
    fn from(e: postgres::Error) -> Self {
        match e.as_db_error() {
            // Connection failures (class 08), the server shutting down or starting (57P01-03),
            // too many connections (53300): try again later.
            Some(db)
                if db.code().code().starts_with("08")
                    || ["57P01", "57P02", "57P03", "53300"].contains(&db.code().code()) =>
            {
                StoreError::Unavailable(format!("{}: {}", db.code().code(), db.message()))
            }
            // The server answered: a statement failed.
            Some(db) => StoreError::Database(format!("{}: {}", db.code().code(), db.message())),
            // No answer: the connection failed, broke or timed out.
            None if e.is_closed()
                || std::error::Error::source(&e)
                    .is_some_and(|c| c.downcast_ref::<std::io::Error>().is_some())
                || [
                    "error connecting",
                    "error performing TLS",
                    "error communicating",
                    "timeout",
                ]
                .iter()
                .any(|p| e.to_string().starts_with(p)) =>
            {
                StoreError::Unavailable(e.to_string())
            }
            // A client-side failure (a value of the wrong type, say).
            None => StoreError::Database(e.to_string()),
        }
    }
}

impl PostgresJobStore {
    /// Connects to `url` (`postgres://user:password@host:port/db`), brings the schema up to
    /// date and names this replica `owner` on its leases, which last `lease`.
    pub fn connect(url: &str, owner: String, lease: Duration) -> Result<Self> {
        let (mut config, tls) = super::pg_tls::configure(url)?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(10));
        }
        config.application_name("dbn-serve");
        // A dead peer or a silent network is noticed within seconds, not at the kernel's
        // defaults (minutes): the heartbeat must learn it before its leases lapse.
        config.keepalives_idle(Duration::from_secs(10));
        config.keepalives_interval(Duration::from_secs(5));
        config.keepalives_retries(3);
        config.tcp_user_timeout(lease.max(Duration::from_secs(5)));
        if config.get_options().is_none() {
            config.options("-c statement_timeout=60000");
        }
        let store = PostgresJobStore {
            config,
            tls,
            idle: Mutex::new(Vec::new()),
            open: Mutex::new(0),
            freed: Condvar::new(),
            owner,
            lease,
        };
        store.with(migrate)?;
        Ok(store)
    }

    fn connect_one(&self) -> Result<Client> {
        Ok(self.config.connect(self.tls.clone())?)
    }

    /// Runs `f` on a connection from the idle list (or a new one) and returns the connection
    /// to the list if it is still open. The synchronous client runs a runtime of its own,
    /// which may not start inside an async task: called from one, the work moves to a thread
    /// of its own (handlers should use the blocking pool; this keeps a slip from panicking).
    fn with<T: Send>(&self, f: impl FnOnce(&mut Client) -> Result<T> + Send) -> Result<T> {
        if tokio::runtime::Handle::try_current().is_ok() {
            return std::thread::scope(|scope| {
                scope
                    .spawn(|| self.with_here(f))
                    .join()
                    .unwrap_or_else(|_| Err(StoreError::Database("a query panicked".into())))
            });
        }
        self.with_here(f)
    }

    fn with_here<T>(&self, f: impl FnOnce(&mut Client) -> Result<T>) -> Result<T> {
        let mut client = self.take()?;
        let out = f(&mut client);
        let mut idle = self.lock_idle();
        if !client.is_closed() && idle.len() < MAX_IDLE {
            idle.push((client, Instant::now()));
            self.freed.notify_one();
        } else {
            drop(idle);
            self.close(client);
        }
        out
    }

    /// An idle connection that still works, or a new one when fewer than [`MAX_OPEN`] are
    /// open; else waits for one to come back.
    fn take(&self) -> Result<Client> {
        loop {
            let pooled = self.lock_idle().pop();
            match pooled {
                Some((mut c, used)) => {
                    let alive = !c.is_closed()
                        && (used.elapsed() < CHECK_AFTER
                            || c.is_valid(Duration::from_secs(2)).is_ok());
                    if alive {
                        return Ok(c);
                    }
                    self.close(c);
                }
                None => {
                    let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
                    if *open < MAX_OPEN {
                        *open += 1;
                        drop(open);
                        return self.connect_one().inspect_err(|_| self.closed_one());
                    }
                    // Woken when a connection comes back or closes; the timeout re-checks.
                    let _ = self.freed.wait_timeout(open, Duration::from_millis(100));
                }
            }
        }
    }

    fn close(&self, client: Client) {
        discard(client);
        self.closed_one();
    }

    fn closed_one(&self) {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        *open = open.saturating_sub(1);
        self.freed.notify_one();
    }

    fn lock_idle(&self) -> std::sync::MutexGuard<'_, Vec<(Client, Instant)>> {
        // The list holds whole connections only; a panic elsewhere cannot leave it torn.
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lease_secs(&self) -> f64 {
        self.lease.as_secs_f64()
    }

    /// A relay of events between the replicas sharing this database.
    pub fn relay(&self) -> Arc<dyn EventRelay> {
        Arc::new(PgEventRelay {
            config: self.config.clone(),
            tls: self.tls.clone(),
            sender: Mutex::new(None),
        })
    }
}

impl Drop for PostgresJobStore {
    fn drop(&mut self) {
        discard(std::mem::take(&mut *self.lock_idle()));
    }
}

/// Drops connections on a thread of their own: each holds a runtime, which may not be
/// dropped inside an async task (the store may be dropped in one when the server stops).
fn discard<T: Send + 'static>(clients: T) {
    let _ = std::thread::Builder::new()
        .name("pg-close".into())
        .spawn(move || drop(clients));
}

/// Applies the migrations this database lacks, one transaction each, under an advisory lock so
/// that replicas starting together apply each once. A database migrated by a newer server is
/// refused untouched.
fn migrate(client: &mut Client) -> Result<()> {
    client.execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])?;
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
        id: &str,
        progress: &JobProgress,
        history: Option<&[EpochMetrics]>,
    ) -> Result<()> {
        let progress = json(progress)?;
        let history = history.map(|h| json(&h)).transpose()?;
        self.with(|c| {
            c.execute(
                "UPDATE dbn_jobs SET progress = $3, history = COALESCE($4, history), \
                 lease_expires_at = clock_timestamp() + make_interval(secs => $5) \
                 WHERE id = $1 AND lease_owner = $2 AND status = 'running'",
                &[&id, &self.owner, &progress, &history, &self.lease_secs()],
            )?;
            Ok(())
        })
    }

    fn finish(
        &self,
        id: &str,
        status: JobStatus,
        error: Option<&JobFailure>,
        model_id: Option<&str>,
        now: u64,
    ) -> Result<bool> {
        self.with(|c| {
            let changed = c.execute(
                "UPDATE dbn_jobs SET status = $3, error_code = $4, error_message = $5, \
                 model_id = $6, finished_at = $7, lease_owner = NULL, lease_expires_at = NULL \
                 WHERE id = $1 AND lease_owner = $2 AND status = 'running'",
                &[
                    &id,
                    &self.owner,
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

    fn requeue(&self, id: &str) -> Result<bool> {
        self.with(|c| {
            let changed = c.execute(
                "UPDATE dbn_jobs SET status = 'queued', lease_owner = NULL, \
                 lease_expires_at = NULL \
                 WHERE id = $1 AND lease_owner = $2 AND status = 'running'",
                &[&id, &self.owner],
            )?;
            Ok(changed == 1)
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

    fn heartbeat(&self, running: &[String], _now: u64) -> Result<Heartbeat> {
        if running.is_empty() {
            return Ok(Heartbeat::default());
        }
        self.with(|c| {
            let rows = c.query(
                "UPDATE dbn_jobs \
                 SET lease_expires_at = clock_timestamp() + make_interval(secs => $3) \
                 WHERE id = ANY($1) AND lease_owner = $2 AND status = 'running' \
                 RETURNING id, cancel_requested",
                &[&running, &self.owner, &self.lease_secs()],
            )?;
            let mut beat = Heartbeat::default();
            let mut held = Vec::with_capacity(rows.len());
            for row in &rows {
                let id: String = row.try_get(0)?;
                if row.try_get::<_, bool>(1)? {
                    beat.cancel.push(id.clone());
                }
                held.push(id);
            }
            beat.lost = running
                .iter()
                .filter(|id| !held.contains(id))
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
        Some(PostgresJobStore::relay(self))
    }
}

/// Events between replicas over `LISTEN`/`NOTIFY`. Sending uses one connection of its own
/// (reopened after a failure); listening runs on a thread with another.
pub struct PgEventRelay {
    config: postgres::Config,
    tls: MakeRustlsConnect,
    sender: Mutex<Option<Client>>,
}

impl Drop for PgEventRelay {
    fn drop(&mut self) {
        let sender = self
            .sender
            .get_mut()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        discard(sender);
    }
}

impl EventRelay for PgEventRelay {
    fn send(&self, payload: &str) -> Result<()> {
        let mut slot = self.sender.lock().unwrap_or_else(|p| p.into_inner());
        if slot.as_ref().is_none_or(|c| c.is_closed()) {
            *slot = Some(self.config.connect(self.tls.clone())?);
        }
        let client = slot.as_mut().expect("connected above");
        client.execute("SELECT pg_notify($1, $2)", &[&CHANNEL, &payload])?;
        Ok(())
    }

    fn listen(
        &self,
        deliver: Box<dyn Fn(&str) + Send>,
        stop: Arc<AtomicBool>,
    ) -> std::thread::JoinHandle<()> {
        let (config, tls) = (self.config.clone(), self.tls.clone());
        std::thread::Builder::new()
            .name("event-relay".into())
            .spawn(move || {
                let mut backoff = Duration::from_millis(200);
                while !stop.load(Ordering::SeqCst) {
                    match listen_once(&config, &tls, &*deliver, &stop) {
                        Ok(()) => return,
                        Err(e) => {
                            tracing::warn!("job event relay: {e}; reconnecting in {backoff:?}");
                            std::thread::sleep(backoff);
                            backoff = (backoff * 2).min(Duration::from_secs(10));
                        }
                    }
                }
            })
            .expect("spawning the event relay thread")
    }
}

/// Listens on one connection until `stop` (returns `Ok`) or the connection fails.
fn listen_once(
    config: &postgres::Config,
    tls: &MakeRustlsConnect,
    deliver: &dyn Fn(&str),
    stop: &AtomicBool,
) -> Result<()> {
    let mut client = config.connect(tls.clone())?;
    client.batch_execute(&format!("LISTEN {CHANNEL}"))?;
    while !stop.load(Ordering::SeqCst) {
        {
            let mut notifications = client.notifications();
            let mut batch = notifications.timeout_iter(Duration::from_millis(500));
            while let Some(n) = batch.next()? {
                deliver(n.payload());
            }
        }
        if client.is_closed() {
            return Err(StoreError::Unavailable(
                "the listening connection closed".into(),
            ));
        }
    }
    Ok(())
}
