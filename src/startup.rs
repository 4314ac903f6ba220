//! Start-up: takes the data directory, opens the stores the configuration names, starts the
//! training workers and the HTTP server, and stops them again. The one place that chooses
//! concrete stores; `http` only builds routers over the state it is given.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::config::{Role, ServeConfig};
use crate::http::state::AppState;
use crate::http::{router, worker_router};
use crate::jobs::{Datasets, JobError, Jobs, QueueConfig};
use crate::store::{
    FsModelStore, JobStore, ModelStore, ObjectModelStore, PostgresJobStore, SqliteJobStore,
    StoreError,
};

/// Failures to start the server.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("data directory {path}: {source}")]
    DataDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "data directory {path} is in use by another dbn-serve (it holds the lock on dbn-serve.lock); \
         one server per data directory"
    )]
    DataDirInUse { path: PathBuf },
    /// Settings that cannot work together.
    #[error("{0}")]
    Config(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Jobs(#[from] JobError),
    #[error("listening on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// A server that is running; dropping it does not stop it, [`RunningServer::stop`] does.
pub struct RunningServer {
    pub addr: SocketAddr,
    jobs: Jobs,
    workers: Vec<std::thread::JoinHandle<()>>,
    shutdown: tokio::sync::watch::Sender<bool>,
    server: tokio::task::JoinHandle<()>,
    grace: Duration,
    /// The data directory's lock, held for as long as the server runs (the OS drops it if the
    /// process dies).
    _lock: std::fs::File,
}

/// The file whose exclusive lock marks a data directory as taken.
const LOCK_FILE: &str = "dbn-serve.lock";

/// Takes the data directory for this process alone: a second server on it would requeue the
/// first one's running jobs and train them twice.
fn lock_data_dir(dir: &std::path::Path) -> Result<std::fs::File, ServeError> {
    let path = dir.join(LOCK_FILE);
    let data_dir = |source| ServeError::DataDir {
        path: path.clone(),
        source,
    };
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(data_dir)?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(ServeError::DataDirInUse {
            path: dir.to_path_buf(),
        }),
        Err(std::fs::TryLockError::Error(e)) => Err(data_dir(e)),
    }
}

/// Serves with the settings in `config`: takes the data directory's lock, opens the stores it
/// names (PostgreSQL and S3 when set, else SQLite and files in the data directory), requeues
/// interrupted jobs, starts the training workers and begins serving. `mnist_dir` is where the
/// dataset `mnist` is read from; `None` leaves that dataset out. Each training job computes
/// with `config.train_threads` threads (default: all cores). Inference threads are not set
/// here.
pub async fn start(
    config: ServeConfig,
    mnist_dir: Option<PathBuf>,
) -> Result<RunningServer, ServeError> {
    check_deployment(&config)?;
    let dir = config.data_dir.clone();
    std::fs::create_dir_all(&dir).map_err(|source| ServeError::DataDir {
        path: dir.clone(),
        source,
    })?;
    let lock = lock_data_dir(&dir)?;
    for sub in ["models", "checkpoints", "datasets"] {
        crate::store::sweep_temporaries(&dir.join(sub));
    }
    let (job_store, models) = {
        let (config, dir) = (config.clone(), dir.clone());
        tokio::task::spawn_blocking(move || open_stores(&config, &dir))
            .await
            .map_err(|e| StoreError::Unavailable(format!("opening the stores: {e}")))??
    };
    let threads = config
        .train_threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let jobs = Jobs::new(
        job_store,
        models.clone(),
        Datasets::new(mnist_dir, &dir, models.clone()),
        QueueConfig {
            workers: config.training_workers(),
            train_threads: threads,
            capacity: config.queue_capacity,
            limits: config.limits(),
            max_memory: config.max_train_memory_mb.saturating_mul(1 << 20),
            heartbeat: config.heartbeat(),
        },
    )?;
    let workers = jobs.start_workers();
    let (shutdown, shutdown_rx) = tokio::sync::watch::channel(false);
    let listener = tokio::net::TcpListener::bind(config.addr)
        .await
        .map_err(|source| ServeError::Bind {
            addr: config.addr,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| ServeError::Bind {
        addr: config.addr,
        source,
    })?;
    let grace = Duration::from_secs(config.shutdown_grace_secs);
    let state = AppState {
        inference: crate::inference::Inference::new(config.batching()),
        config: Arc::new(config),
        jobs: jobs.clone(),
        models,
        metrics: Default::default(),
        shutdown: shutdown_rx.clone(),
    };
    let limits = crate::http::ConnectionLimits {
        max_connections: state.config.max_connections,
        header_read: Duration::from_secs(state.config.header_read_timeout_secs.max(1)),
    };
    let app = if state.config.role.serves_api() {
        router(state)
    } else {
        worker_router(state)
    };
    let server = tokio::spawn(crate::http::serve(listener, app, shutdown_rx, limits));
    tracing::info!("listening on http://{addr}");
    Ok(RunningServer {
        addr,
        jobs,
        workers,
        shutdown,
        server,
        grace,
        _lock: lock,
    })
}

type Stores = (Arc<dyn JobStore>, Arc<dyn ModelStore>);

/// Refuses settings under which jobs could never run, and warns of those where replicas would
/// not see each other's models.
fn check_deployment(config: &ServeConfig) -> Result<(), ServeError> {
    if config.role != Role::All && config.database_url.is_none() {
        return Err(ServeError::Config(format!(
            "DBN_ROLE={} needs a job database shared with the other role (DBN_DATABASE_URL): \
             with the embedded SQLite database one process must both serve and train",
            match config.role {
                Role::Api => "api",
                _ => "worker",
            }
        )));
    }
    if config.database_url.is_some() && config.model_store.is_none() {
        tracing::warn!(
            "jobs are shared (DBN_DATABASE_URL) but models and checkpoints stay in this \
             replica's data directory (no DBN_MODEL_STORE): other replicas will not see them"
        );
    }
    Ok(())
}

/// The stores the configuration names: PostgreSQL or the embedded SQLite for jobs, S3 or the
/// data directory for models. Blocks (connections, migrations, the first listing): call it on
/// the blocking pool.
fn open_stores(config: &ServeConfig, dir: &std::path::Path) -> Result<Stores, ServeError> {
    let jobs: Arc<dyn JobStore> = match &config.database_url {
        Some(url) => {
            let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "replica".into());
            let owner = format!("{host}/{}", crate::store::new_id("process"));
            let lease = Duration::from_secs(config.lease_secs.max(1));
            let store = PostgresJobStore::connect(url.expose(), owner, lease)?;
            tracing::info!("jobs in PostgreSQL");
            Arc::new(store)
        }
        None => Arc::new(SqliteJobStore::open(&dir.join("jobs.sqlite3"))?),
    };
    let models: Arc<dyn ModelStore> = match &config.model_store {
        Some(url) => {
            let refresh = Duration::from_secs(config.model_refresh_secs.max(1));
            ObjectModelStore::open(url, refresh, config.role.serves_api())?
        }
        None => Arc::new(FsModelStore::open(dir)?),
    };
    if config.default_model && config.role.serves_api() {
        match crate::bundled::install(&*models)? {
            crate::bundled::Install::Installed => tracing::info!(
                "installed the bundled model {} as alias {}",
                crate::bundled::MODEL_ID,
                crate::bundled::ALIAS
            ),
            other => tracing::debug!("bundled model: {other:?}"),
        }
    }
    Ok((jobs, models))
}

impl RunningServer {
    /// Asks everything to stop without waiting: the server stops accepting, streams end,
    /// running jobs stop at their next mini-batch and go back to the queue.
    pub fn signal_stop(&self) {
        let _ = self.shutdown.send(true);
        self.jobs.begin_shutdown();
    }

    /// Stops taking requests and work, lets running jobs stop at their checkpoint (they
    /// resume at the next start) and waits at most the grace period.
    pub async fn stop(self) {
        let _ = self.shutdown.send(true);
        let jobs = self.jobs.clone();
        let grace = self.grace;
        let workers = self.workers;
        // One deadline for both: the workers stop while the connections drain.
        let deadline = tokio::time::Instant::now() + grace;
        let workers_stopped = tokio::task::spawn_blocking(move || jobs.shutdown(workers, grace));
        let (_, server) = tokio::join!(
            workers_stopped,
            tokio::time::timeout_at(deadline, self.server)
        );
        match server {
            Ok(Ok(())) => tracing::info!("server stopped"),
            Ok(Err(e)) => tracing::error!("server task: {e}"),
            Err(_) => tracing::warn!("connections still open after {grace:?}; exiting anyway"),
        }
    }
}
