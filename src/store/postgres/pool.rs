//! Connections to PostgreSQL: how to open one (settings and TLS), and a small bounded pool of
//! them for the synchronous client, which runs a runtime of its own per connection.

use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use postgres::Client;
use tokio_postgres_rustls::MakeRustlsConnect;

use super::super::{Result, StoreError};

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
            // Disk full (53100) on the database server.
            Some(db) if db.code().code() == "53100" => {
                StoreError::StorageFull(format!("{}: {}", db.code().code(), db.message()))
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

/// The settings and TLS connector every connection is opened with.
#[derive(Clone)]
pub(super) struct Connector {
    config: postgres::Config,
    tls: MakeRustlsConnect,
}

impl Connector {
    /// From a database URL, with timeouts fitted to leases of `lease`.
    pub fn from_url(url: &str, lease: Duration) -> Result<Self> {
        let (mut config, tls) = super::tls::configure(url)?;
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
        Ok(Connector { config, tls })
    }

    pub fn connect(&self) -> Result<Client> {
        Ok(self.config.connect(self.tls.clone())?)
    }
}

/// At most [`MAX_OPEN`] connections, of which up to [`MAX_IDLE`] are kept between calls.
pub(super) struct Pool {
    connector: Connector,
    /// Idle connections and when each was last used.
    idle: Mutex<Vec<(Client, Instant)>>,
    /// Connections open (idle or in use).
    open: Mutex<usize>,
    freed: Condvar,
}

impl Pool {
    pub fn new(connector: Connector) -> Self {
        Pool {
            connector,
            idle: Mutex::new(Vec::new()),
            open: Mutex::new(0),
            freed: Condvar::new(),
        }
    }

    pub fn connector(&self) -> &Connector {
        &self.connector
    }

    /// Runs `f` on a connection from the idle list (or a new one) and returns the connection
    /// to the list if it is still open. The synchronous client runs a runtime of its own,
    /// which may not start inside an async task: called from one, the work moves to a thread
    /// of its own (handlers should use the blocking pool; this keeps a slip from panicking).
    pub fn with<T: Send>(&self, f: impl FnOnce(&mut Client) -> Result<T> + Send) -> Result<T> {
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
        if client.is_closed() {
            // The server dropped this connection; when it restarts it drops every one, so the
            // idle ones go too, and the calls after this one connect afresh instead of each
            // failing on a dead connection.
            let stale = std::mem::take(&mut *self.lock_idle());
            self.closed(stale.len() + 1);
            discard((stale, client));
            return out;
        }
        let mut idle = self.lock_idle();
        if idle.len() < MAX_IDLE {
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
                        return self.connector.connect().inspect_err(|_| self.closed(1));
                    }
                    // Woken when a connection comes back or closes; the timeout re-checks.
                    let _ = self.freed.wait_timeout(open, Duration::from_millis(100));
                }
            }
        }
    }

    fn close(&self, client: Client) {
        discard(client);
        self.closed(1);
    }

    /// Counts `n` connections as closed.
    fn closed(&self, n: usize) {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        *open = open.saturating_sub(n);
        self.freed.notify_all();
    }

    fn lock_idle(&self) -> std::sync::MutexGuard<'_, Vec<(Client, Instant)>> {
        // The list holds whole connections only; a panic elsewhere cannot leave it torn.
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        discard(std::mem::take(&mut *self.lock_idle()));
    }
}

/// Drops connections on a thread of their own: each holds a runtime, which may not be
/// dropped inside an async task (the store may be dropped in one when the server stops).
pub(super) fn discard<T: Send + 'static>(clients: T) {
    let _ = std::thread::Builder::new()
        .name("pg-close".into())
        .spawn(move || drop(clients));
}
