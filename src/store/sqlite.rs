//! The embedded job store: one SQLite file (WAL mode) under the data directory, with versioned
//! schema migrations applied at start-up.

use std::path::Path;
use std::sync::Mutex;

use rusqlite::{params, Connection, OptionalExtension, Row};

use super::jobs::json;
use super::jobs::{
    Claim, Heartbeat, JobFailure, JobPage, JobProgress, JobRecord, JobStatus, JobStore,
};
use super::{Result, StoreError};
use crate::engine::observer::EpochMetrics;

/// Migrations in order; `PRAGMA user_version` records how many have run.
const MIGRATIONS: &[&str] = &["CREATE TABLE jobs (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        id TEXT NOT NULL UNIQUE,
        status TEXT NOT NULL,
        spec TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        started_at INTEGER,
        finished_at INTEGER,
        progress TEXT,
        history TEXT NOT NULL DEFAULT '[]',
        error_code TEXT,
        error_message TEXT,
        model_id TEXT,
        attempts INTEGER NOT NULL DEFAULT 0,
        cancel_requested INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX jobs_status ON jobs(status, seq);"];

/// Jobs in SQLite. Owns the one connection; callers share it through `Arc<dyn JobStore>`.
pub struct SqliteJobStore {
    conn: Mutex<Connection>,
}

const COLUMNS: &str = "id, status, spec, created_at, started_at, finished_at, progress, history, \
                       error_code, error_message, model_id, attempts, cancel_requested";

impl SqliteJobStore {
    /// Opens (creating if needed) the database at `path` and brings its schema up to date.
    pub fn open(path: &Path) -> Result<Self> {
        let conn = Connection::open(path)?;
        Self::init(conn)
    }

    /// A private in-memory database (tests).
    pub fn in_memory() -> Result<Self> {
        Self::init(Connection::open_in_memory()?)
    }

    fn init(mut conn: Connection) -> Result<Self> {
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        // The version first: a database this server cannot read is refused untouched (the
        // journal mode below would rewrite its header).
        let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        if version < 0 || version as usize > MIGRATIONS.len() {
            return Err(StoreError::Database(format!(
                "schema version {version} is newer than this server knows ({})",
                MIGRATIONS.len()
            )));
        }
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
            let tx = conn.transaction()?;
            tx.execute_batch(sql)?;
            tx.pragma_update(None, "user_version", (i + 1) as i64)?;
            tx.commit()?;
        }
        Ok(SqliteJobStore {
            conn: Mutex::new(conn),
        })
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave SQLite half-written (every change is a
        // statement or a transaction), so a poisoned lock is safe to reuse.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn parse<T: serde::de::DeserializeOwned>(what: &str, text: &str) -> rusqlite::Result<T> {
    serde_json::from_str(text).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(
            0,
            rusqlite::types::Type::Text,
            format!("{what}: {e}").into(),
        )
    })
}

/// A job from a row that has the columns of [`COLUMNS`] (read by name).
fn record(row: &Row<'_>) -> rusqlite::Result<JobRecord> {
    let status: String = row.get("status")?;
    let status = JobStatus::parse(&status).ok_or_else(|| {
        rusqlite::Error::FromSqlConversionFailure(
            2,
            rusqlite::types::Type::Text,
            format!("unknown job status {status:?}").into(),
        )
    })?;
    let progress: Option<String> = row.get("progress")?;
    let code: Option<String> = row.get("error_code")?;
    let message: Option<String> = row.get("error_message")?;
    Ok(JobRecord {
        id: row.get("id")?,
        status,
        spec: parse("spec", &row.get::<_, String>("spec")?)?,
        created_at: row.get::<_, i64>("created_at")? as u64,
        started_at: row.get::<_, Option<i64>>("started_at")?.map(|t| t as u64),
        finished_at: row.get::<_, Option<i64>>("finished_at")?.map(|t| t as u64),
        progress: progress
            .map(|p| parse::<JobProgress>("progress", &p))
            .transpose()?,
        history: parse("history", &row.get::<_, String>("history")?)?,
        error: code.map(|code| JobFailure {
            code,
            message: message.unwrap_or_default(),
        }),
        model_id: row.get("model_id")?,
        attempts: row.get::<_, i64>("attempts")? as u32,
        cancel_requested: row.get::<_, i64>("cancel_requested")? != 0,
    })
}

impl JobStore for SqliteJobStore {
    fn insert(&self, job: &JobRecord, capacity: usize) -> Result<()> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let queued: i64 = tx.query_row(
            "SELECT COUNT(*) FROM jobs WHERE status = 'queued'",
            [],
            |r| r.get(0),
        )?;
        if queued as usize >= capacity {
            return Err(StoreError::Full(format!(
                "the queue holds {queued} jobs, its capacity"
            )));
        }
        tx.execute(
            "INSERT INTO jobs (id, status, spec, created_at, history) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![
                job.id,
                job.status.as_str(),
                json(&job.spec)?,
                job.created_at as i64,
                json(&job.history)?
            ],
        )?;
        tx.commit()?;
        Ok(())
    }

    fn get(&self, id: &str) -> Result<Option<JobRecord>> {
        let conn = self.conn();
        Ok(conn
            .query_row(
                &format!("SELECT {COLUMNS} FROM jobs WHERE id = ?1"),
                [id],
                record,
            )
            .optional()?)
    }

    fn list(
        &self,
        status: Option<JobStatus>,
        limit: usize,
        before: Option<i64>,
    ) -> Result<JobPage> {
        let conn = self.conn();
        let mut stmt = conn.prepare(&format!(
            "SELECT seq, {COLUMNS} FROM jobs WHERE (?1 IS NULL OR status = ?1) AND seq < ?2 \
             ORDER BY seq DESC LIMIT ?3"
        ))?;
        let rows = stmt.query_map(
            params![
                status.map(|s| s.as_str()),
                before.unwrap_or(i64::MAX),
                (limit + 1) as i64
            ],
            |row| {
                let seq: i64 = row.get(0)?;
                let job = record(row)?;
                Ok((seq, job))
            },
        )?;
        let rows = rows.collect::<rusqlite::Result<Vec<(i64, JobRecord)>>>()?;
        Ok(JobPage::from_rows(rows, limit))
    }

    fn claim_next(&self, now: u64) -> Result<Option<JobRecord>> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let id: Option<String> = tx
            .query_row(
                "SELECT id FROM jobs WHERE status = 'queued' ORDER BY seq LIMIT 1",
                [],
                |r| r.get(0),
            )
            .optional()?;
        let Some(id) = id else { return Ok(None) };
        tx.execute(
            "UPDATE jobs SET status = 'running', started_at = COALESCE(started_at, ?2), \
             attempts = attempts + 1 WHERE id = ?1",
            params![id, now as i64],
        )?;
        let job = tx.query_row(
            &format!("SELECT {COLUMNS} FROM jobs WHERE id = ?1"),
            [&id],
            record,
        )?;
        tx.commit()?;
        Ok(Some(job))
    }

    fn record_progress(
        &self,
        claim: &Claim,
        progress: &JobProgress,
        history: Option<&[EpochMetrics]>,
    ) -> Result<bool> {
        let conn = self.conn();
        let changed = match history {
            Some(h) => conn.execute(
                "UPDATE jobs SET progress = ?3, history = ?4 \
                 WHERE id = ?1 AND attempts = ?2 AND status = 'running'",
                params![claim.job, claim.number, json(progress)?, json(&h)?],
            )?,
            None => conn.execute(
                "UPDATE jobs SET progress = ?3 \
                 WHERE id = ?1 AND attempts = ?2 AND status = 'running'",
                params![claim.job, claim.number, json(progress)?],
            )?,
        };
        Ok(changed == 1)
    }

    fn finish(
        &self,
        claim: &Claim,
        status: JobStatus,
        error: Option<&JobFailure>,
        model_id: Option<&str>,
        now: u64,
    ) -> Result<bool> {
        let conn = self.conn();
        let changed = conn.execute(
            "UPDATE jobs SET status = ?3, error_code = ?4, error_message = ?5, model_id = ?6, \
             finished_at = ?7 WHERE id = ?1 AND attempts = ?2 AND status = 'running'",
            params![
                claim.job,
                claim.number,
                status.as_str(),
                error.map(|e| e.code.as_str()),
                error.map(|e| e.message.as_str()),
                model_id,
                now as i64
            ],
        )?;
        Ok(changed == 1)
    }

    fn requeue(&self, claim: &Claim) -> Result<bool> {
        let changed = self.conn().execute(
            "UPDATE jobs SET status = 'queued' \
             WHERE id = ?1 AND attempts = ?2 AND status = 'running'",
            params![claim.job, claim.number],
        )?;
        Ok(changed == 1)
    }

    fn holds(&self, claim: &Claim) -> Result<bool> {
        let held: Option<i64> = self
            .conn()
            .query_row(
                "SELECT 1 FROM jobs WHERE id = ?1 AND attempts = ?2 AND status = 'running'",
                params![claim.job, claim.number],
                |r| r.get(0),
            )
            .optional()?;
        Ok(held.is_some())
    }

    fn cancel(&self, id: &str, now: u64) -> Result<bool> {
        let conn = self.conn();
        let queued = conn.execute(
            "UPDATE jobs SET status = 'cancelled', finished_at = ?2, cancel_requested = 1 \
             WHERE id = ?1 AND status = 'queued'",
            params![id, now as i64],
        )?;
        if queued == 1 {
            return Ok(true);
        }
        conn.execute(
            "UPDATE jobs SET cancel_requested = 1 WHERE id = ?1 AND status = 'running'",
            [id],
        )?;
        Ok(false)
    }

    fn recover(&self, now: u64) -> Result<usize> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        tx.execute(
            "UPDATE jobs SET status = 'cancelled', finished_at = ?1 \
             WHERE status IN ('running', 'queued') AND cancel_requested = 1",
            [now as i64],
        )?;
        let requeued = tx.execute(
            "UPDATE jobs SET status = 'queued' WHERE status = 'running'",
            [],
        )?;
        tx.commit()?;
        Ok(requeued)
    }

    fn heartbeat(&self, running: &[Claim], _now: u64) -> Result<Heartbeat> {
        let conn = self.conn();
        let mut beat = Heartbeat::default();
        for claim in running {
            let row: Option<(String, i64, u32)> = conn
                .query_row(
                    "SELECT status, cancel_requested, attempts FROM jobs WHERE id = ?1",
                    [&claim.job],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                )
                .optional()?;
            match row {
                Some((status, cancel, number)) if status == "running" && number == claim.number => {
                    if cancel != 0 {
                        beat.cancel.push(claim.job.clone());
                    }
                }
                _ => beat.lost.push(claim.clone()),
            }
        }
        Ok(beat)
    }

    fn counts(&self) -> Result<Vec<(JobStatus, u64)>> {
        let conn = self.conn();
        let mut stmt = conn.prepare("SELECT status, COUNT(*) FROM jobs GROUP BY status")?;
        let mut counts: Vec<(JobStatus, u64)> = JobStatus::ALL.iter().map(|&s| (s, 0)).collect();
        let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
        for row in rows {
            let (status, n) = row?;
            if let Some(slot) = counts.iter_mut().find(|(s, _)| s.as_str() == status) {
                slot.1 = n as u64;
            }
        }
        Ok(counts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::spec::TrainingSpec;

    fn queued(store: &SqliteJobStore, id: &str) {
        let job = JobRecord::queued(id.into(), TrainingSpec::digit_model(), 1);
        store.insert(&job, 100).unwrap();
    }

    #[test]
    fn jobs_are_claimed_oldest_first_and_recovered_after_a_crash() {
        let store = SqliteJobStore::in_memory().unwrap();
        for id in ["a", "b", "c"] {
            queued(&store, id);
        }
        assert_eq!(store.claim_next(5).unwrap().unwrap().id, "a");
        assert_eq!(store.claim_next(6).unwrap().unwrap().id, "b");
        // The process dies: "a" and "b" are running, "b" had been asked to cancel.
        store.cancel("b", 7).unwrap();
        assert_eq!(store.recover(8).unwrap(), 1);
        let a = store.get("a").unwrap().unwrap();
        assert_eq!(
            (a.status, a.attempts, a.started_at),
            (JobStatus::Queued, 1, Some(5))
        );
        assert_eq!(
            store.get("b").unwrap().unwrap().status,
            JobStatus::Cancelled
        );
        // "a" is claimed again before "c", and keeps its first start time.
        let again = store.claim_next(9).unwrap().unwrap();
        assert_eq!(
            (again.id.as_str(), again.attempts, again.started_at),
            ("a", 2, Some(5))
        );
    }

    #[test]
    fn the_queue_is_bounded_and_finished_jobs_stay_finished() {
        let store = SqliteJobStore::in_memory().unwrap();
        queued(&store, "a");
        let b = JobRecord::queued("b".into(), TrainingSpec::digit_model(), 1);
        assert!(matches!(store.insert(&b, 1), Err(StoreError::Full(_))));
        let claim = store.claim_next(2).unwrap().unwrap().claim();
        store
            .finish(&claim, JobStatus::Succeeded, None, Some("m"), 3)
            .unwrap();
        // Neither a cancel nor a second finish changes a finished job.
        assert!(!store.cancel("a", 4).unwrap());
        assert!(!store
            .finish(&claim, JobStatus::Failed, None, None, 5)
            .unwrap());
        let a = store.get("a").unwrap().unwrap();
        assert_eq!(
            (a.status, a.model_id.as_deref(), a.finished_at),
            (JobStatus::Succeeded, Some("m"), Some(3))
        );
        assert_eq!(store.counts().unwrap()[2], (JobStatus::Succeeded, 1));
    }

    #[test]
    fn only_the_latest_claim_of_a_job_may_write_it() {
        let store = SqliteJobStore::in_memory().unwrap();
        queued(&store, "a");
        let first = store.claim_next(1).unwrap().unwrap().claim();
        assert!(store.holds(&first).unwrap());
        // The job is taken up again (a restart's recovery) and claimed a second time.
        store.recover(2).unwrap();
        let second = store.claim_next(3).unwrap().unwrap().claim();
        assert_eq!((first.number, second.number), (1, 2));
        let progress = JobProgress {
            progress: crate::engine::observer::Progress {
                phase: crate::engine::observer::Phase::Pretrain,
                layer: 0,
                layers: 1,
                epoch: 1,
                epochs: 1,
                batch: 0,
                batches: 1,
                fraction: 0.0,
                examples_per_sec: 0.0,
            },
            eta_seconds: None,
        };
        // The first claim's writes are all refused; the second's apply.
        assert!(!store.holds(&first).unwrap());
        assert!(!store.record_progress(&first, &progress, Some(&[])).unwrap());
        assert!(!store.requeue(&first).unwrap());
        assert!(!store
            .finish(&first, JobStatus::Failed, None, None, 4)
            .unwrap());
        let beat = store
            .heartbeat(&[first.clone(), second.clone()], 5)
            .unwrap();
        assert_eq!(beat.lost, [first]);
        assert!(store.record_progress(&second, &progress, None).unwrap());
        assert!(store
            .finish(&second, JobStatus::Succeeded, None, Some("m"), 6)
            .unwrap());
        let a = store.get("a").unwrap().unwrap();
        assert_eq!(
            (a.status, a.model_id.as_deref()),
            (JobStatus::Succeeded, Some("m"))
        );
    }

    #[test]
    fn a_database_from_a_newer_server_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jobs.sqlite3");
        drop(SqliteJobStore::open(&path).unwrap());
        let conn = Connection::open(&path).unwrap();
        conn.pragma_update(None, "user_version", 99).unwrap();
        drop(conn);
        assert!(matches!(
            SqliteJobStore::open(&path),
            Err(StoreError::Database(_))
        ));
        std::fs::write(&path, b"this is not a database at all, just text").unwrap();
        assert!(SqliteJobStore::open(&path).is_err());
    }
}
