//! Stopping a computation that nobody waits for any more. A caller runs the computation in
//! [`scope`] with a flag it may raise from another thread (a deadline passed, the client left,
//! the server is stopping); the engine's long loops (Gibbs chains, sequence continuations,
//! classification by sampling) look at [`requested`] once per step and end early, and their
//! functions then answer `EngineError::Cancelled`. The flag lives in a thread-local so that
//! it stays out of every numeric signature; outside a scope nothing is ever cancelled.
//! Training has its own, explicit channel (`Observer::on_batch`).

use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::engine::error::{EngineError, Result};

thread_local! {
    static FLAG: RefCell<Option<Arc<AtomicBool>>> = const { RefCell::new(None) };
}

/// Runs `work` on this thread with `flag` as its cancel flag (scopes nest; the outer flag
/// is restored afterwards, also when `work` panics).
pub fn scope<T>(flag: Arc<AtomicBool>, work: impl FnOnce() -> T) -> T {
    struct Restore(Option<Arc<AtomicBool>>);
    impl Drop for Restore {
        fn drop(&mut self) {
            let outer = self.0.take();
            FLAG.with(|f| *f.borrow_mut() = outer);
        }
    }
    let outer = FLAG.with(|f| f.borrow_mut().replace(flag));
    let _restore = Restore(outer);
    work()
}

/// Whether the computation running on this thread should stop.
pub fn requested() -> bool {
    FLAG.with(|f| {
        f.borrow()
            .as_ref()
            .is_some_and(|flag| flag.load(Ordering::Relaxed))
    })
}

/// `Err(Cancelled)` when [`requested`].
pub fn check() -> Result<()> {
    if requested() {
        Err(EngineError::Cancelled)
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_raised_flag_is_seen_only_inside_its_scope() {
        let flag = Arc::new(AtomicBool::new(false));
        assert!(!requested());
        scope(flag.clone(), || {
            assert!(!requested());
            flag.store(true, Ordering::Relaxed);
            assert!(requested());
            assert!(matches!(check(), Err(EngineError::Cancelled)));
            // An inner scope with its own flag, then the outer one again.
            scope(Arc::new(AtomicBool::new(false)), || assert!(!requested()));
            assert!(requested());
        });
        assert!(!requested());
        // Another thread's scope is not this one's.
        let raised = Arc::new(AtomicBool::new(true));
        scope(raised, || {
            std::thread::scope(|s| {
                s.spawn(|| assert!(!requested()));
            });
        });
    }
}
