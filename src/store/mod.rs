//! Where state lives. On one machine: jobs in an embedded SQLite database, models and
//! checkpoints as files. For several replicas: jobs in PostgreSQL, models and checkpoints in
//! S3-compatible object storage. Each pair sits behind one trait ([`JobStore`],
//! [`ModelStore`]).

pub mod aliases;
pub mod fs;
pub mod jobs;
pub mod object;
pub mod postgres;
pub mod sqlite;

pub use aliases::{check_alias_name, AliasBook};
pub use fs::{FsModelStore, ModelEntry, ModelStore};
pub use jobs::{
    Claim, EventRelay, Heartbeat, JobFailure, JobPage, JobProgress, JobRecord, JobStatus, JobStore,
};
pub use object::ObjectModelStore;
pub use postgres::PostgresJobStore;
pub use sqlite::SqliteJobStore;

/// Failures of the stores.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{0} not found")]
    NotFound(String),
    /// The request conflicts with the current state (e.g. an id in use, a finished job).
    #[error("{0}")]
    Conflict(String),
    /// A bounded resource is full (the job queue).
    #[error("{0}")]
    Full(String),
    /// The content offered for storing is invalid (a model file that does not load).
    #[error("{0}")]
    Invalid(String),
    /// Something already stored cannot be read back (a damaged model object or file, alias
    /// book or dataset manifest): the store's fault, not the caller's.
    #[error("corrupt: {0}")]
    Corrupt(String),
    #[error("database: {0}")]
    Database(String),
    /// The database or object store cannot be reached (down, or the network failed).
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// The disk holding the store is full.
    #[error("storage full: {0}")]
    StorageFull(String),
    /// The store's files cannot be written (permissions, a read-only file system).
    #[error("not writable: {0}")]
    Unwritable(String),
    /// The database stayed locked by another process past the busy timeout.
    #[error("database busy: {0}")]
    Busy(String),
    #[error("{path}: {source}")]
    Io {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        use rusqlite::ErrorCode::{
            CannotOpen, DatabaseBusy, DatabaseLocked, DiskFull, PermissionDenied, ReadOnly,
        };
        match e.sqlite_error_code() {
            Some(DatabaseBusy | DatabaseLocked) => StoreError::Busy(e.to_string()),
            Some(DiskFull) => StoreError::StorageFull(e.to_string()),
            Some(ReadOnly | PermissionDenied | CannotOpen) => StoreError::Unwritable(e.to_string()),
            _ => StoreError::Database(e.to_string()),
        }
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Whether `id` may name a stored object: 1–64 characters of `[A-Za-z0-9_-]`, so it can never
/// leave its directory.
pub fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// A fresh random id with a prefix, e.g. `job-3f9a0c1d5e7b2a46`.
pub fn new_id(prefix: &str) -> String {
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    // RandomState carries per-process random keys from the OS.
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.write_u128(now_millis() as u128 * 1_000_000 + std::process::id() as u128);
    format!("{prefix}-{:016x}", h.finish())
}

/// Removes what writes interrupted by a crash leave in `dir`: temporary files and directories
/// (`.NAME.tmp-…`, see `persist::write_atomic`) that were never renamed into place. Call it only
/// while holding the data directory, when no write of this process is under way. Returns how
/// many were removed; a missing `dir` has none.
pub fn sweep_temporaries(dir: &std::path::Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if !(name.starts_with('.') && name.contains(".tmp-")) {
            continue;
        }
        let path = entry.path();
        let result = if path.is_dir() {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
        match result {
            Ok(()) => {
                tracing::warn!("removed {}, left by an interrupted write", path.display());
                removed += 1;
            }
            Err(e) => tracing::warn!("cannot remove {}: {e}", path.display()),
        }
    }
    removed
}

/// Milliseconds since the Unix epoch.
pub fn now_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_interrupted_writes_are_swept() {
        let dir = tempfile::tempdir().unwrap();
        let keep = ["model-a.safetensors", ".hidden", "x.tmp-1"];
        let sweep = [".model-b.safetensors.tmp-12-0", ".job-c.ckpt.tmp-3-9"];
        for name in keep.iter().chain(&sweep) {
            std::fs::write(dir.path().join(name), b"half").unwrap();
        }
        std::fs::create_dir(dir.path().join(".upload.tmp-44")).unwrap();
        std::fs::write(dir.path().join(".upload.tmp-44/images"), b"x").unwrap();
        assert_eq!(sweep_temporaries(dir.path()), 3);
        let mut left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(left, [".hidden", "model-a.safetensors", "x.tmp-1"]);
        assert_eq!(sweep_temporaries(&dir.path().join("missing")), 0);
    }

    #[test]
    fn ids_that_could_escape_a_directory_are_invalid() {
        for bad in ["", "../x", "a/b", "a\\b", ".", "..", "x y", &"a".repeat(65)] {
            assert!(!valid_id(bad), "{bad:?} accepted");
        }
        assert!(valid_id("job-0123abcd"));
        let (a, b) = (new_id("m"), new_id("m"));
        assert!(valid_id(&a) && a != b);
    }
}
