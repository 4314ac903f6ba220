//! Job events between replicas over `LISTEN`/`NOTIFY` on one channel.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use postgres::fallible_iterator::FallibleIterator;
use postgres::Client;

use super::pool::{discard, Connector};
use crate::store::{EventRelay, Result, StoreError};

/// The channel events are published on.
const CHANNEL: &str = "dbn_job_events";

/// Sending uses one connection of its own (reopened after a failure); listening runs on a
/// thread with another.
pub struct PgEventRelay {
    connector: Connector,
    sender: Mutex<Option<Client>>,
}

impl PgEventRelay {
    pub(super) fn new(connector: Connector) -> Self {
        PgEventRelay {
            connector,
            sender: Mutex::new(None),
        }
    }
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
            *slot = Some(self.connector.connect()?);
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
        let connector = self.connector.clone();
        std::thread::Builder::new()
            .name("event-relay".into())
            .spawn(move || {
                let mut backoff = Duration::from_millis(200);
                while !stop.load(Ordering::SeqCst) {
                    match listen_once(&connector, &*deliver, &stop) {
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
fn listen_once(connector: &Connector, deliver: &dyn Fn(&str), stop: &AtomicBool) -> Result<()> {
    let mut client = connector.connect()?;
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
