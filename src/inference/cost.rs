//! What a call asks of the machine, counted before any work is done, and the budgets it is
//! held to: one for a single call and one for all the calls admitted at once.
//!
//! Work is counted in multiply-adds, the engine's unit of cost; decoding an image is counted
//! at [`DECODE_WORK_PER_PIXEL`] multiply-adds per decoded pixel (a 4096 × 4096 PNG takes
//! about 0.1 s to decode here, as long as 3·10⁹ multiply-adds take the engine). The counts
//! are estimates of the dominant terms, not exact: they bound what one request can buy.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::engine::dbn::Dbn;

/// Multiply-adds charged per pixel of a decoded image.
pub const DECODE_WORK_PER_PIXEL: u64 = 200;

/// The work budgets, in multiply-adds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// Most work one call may ask for; beyond it the call is refused before it starts.
    pub per_call: u64,
    /// Most work admitted at once over all calls (waiting or computing); beyond it a call is
    /// refused as overload and may be retried.
    pub in_flight: u64,
}

impl Budget {
    /// Large enough never to refuse anything: for tests and embedding.
    pub const UNLIMITED: Budget = Budget {
        per_call: u64::MAX,
        in_flight: u64::MAX,
    };
}

/// Why a call's work was not admitted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The call alone exceeds the per-call budget.
    TooCostly { work: u64, budget: u64 },
    /// The calls already admitted leave no room for this one now.
    Saturated { budget: u64 },
}

/// The work of all admitted calls; shared by clones.
#[derive(Debug, Clone, Default)]
pub struct Ledger {
    admitted: Arc<AtomicU64>,
}

/// A call's admitted work, returned to the ledger when dropped.
#[derive(Debug)]
pub struct Reservation {
    admitted: Arc<AtomicU64>,
    work: u64,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.admitted.fetch_sub(self.work, Ordering::SeqCst);
    }
}

impl Ledger {
    /// Admits `work` under `budget`, or says why not.
    pub fn reserve(&self, work: u64, budget: Budget) -> Result<Reservation, Refusal> {
        if work > budget.per_call {
            return Err(Refusal::TooCostly {
                work,
                budget: budget.per_call,
            });
        }
        self.admitted
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |now| {
                now.checked_add(work)
                    .filter(|&total| total <= budget.in_flight)
            })
            .map_err(|_| Refusal::Saturated {
                budget: budget.in_flight,
            })?;
        Ok(Reservation {
            admitted: self.admitted.clone(),
            work,
        })
    }

    /// The work admitted now.
    pub fn admitted(&self) -> u64 {
        self.admitted.load(Ordering::SeqCst)
    }
}

/// One pass of `rows` inputs through the model: every weight once per row (up through the
/// layers and the classifier, or down through the generative weights).
pub fn passes(dbn: &Dbn, rows: usize) -> u64 {
    (rows as u64).saturating_mul(dbn.parameter_count() as u64)
}

/// `chains` Gibbs chains of `steps` steps in the top RBM (two products with its weights per
/// step), then one pass down to the pixels.
pub fn gibbs(dbn: &Dbn, chains: usize, steps: usize) -> u64 {
    let top = (dbn.top().n_visible() * dbn.top().n_hidden()) as u64;
    let per_chain = (steps as u64).saturating_mul(2).saturating_mul(top);
    (chains as u64)
        .saturating_mul(per_chain)
        .saturating_add(passes(dbn, chains))
}

/// Continuing a sequence model for `frames` frames of `gibbs_steps` steps each: every weight
/// of every layer twice per step (the conditioning weights, used once per frame, counted
/// with them: an upper bound).
pub fn sequence(dbn: &Dbn, frames: usize, gibbs_steps: usize) -> u64 {
    (frames as u64)
        .saturating_mul(gibbs_steps as u64)
        .saturating_mul(2)
        .saturating_mul(dbn.parameter_count() as u64)
}

/// Decoding images of `pixels` pixels in all.
pub fn decoding(pixels: u64) -> u64 {
    pixels.saturating_mul(DECODE_WORK_PER_PIXEL)
}

#[cfg(test)]
mod tests {
    use super::*;

    const BUDGET: Budget = Budget {
        per_call: 100,
        in_flight: 250,
    };

    #[test]
    fn a_call_over_its_budget_is_refused_and_admitted_work_is_returned_on_drop() {
        let ledger = Ledger::default();
        assert_eq!(
            ledger.reserve(101, BUDGET).unwrap_err(),
            Refusal::TooCostly {
                work: 101,
                budget: 100
            }
        );
        let a = ledger.reserve(100, BUDGET).unwrap();
        let b = ledger.reserve(100, BUDGET).unwrap();
        assert_eq!(ledger.admitted(), 200);
        assert_eq!(
            ledger.reserve(51, BUDGET).unwrap_err(),
            Refusal::Saturated { budget: 250 }
        );
        let c = ledger.reserve(50, BUDGET).unwrap();
        drop(a);
        assert_eq!(ledger.admitted(), 150);
        drop((b, c));
        assert_eq!(ledger.admitted(), 0);
        // Nothing overflows at the unlimited budget.
        let _big = ledger.reserve(u64::MAX, Budget::UNLIMITED).unwrap();
        assert!(ledger.reserve(1, Budget::UNLIMITED).is_err());
    }

    #[test]
    fn gibbs_work_grows_with_chains_steps_and_the_top_layer() {
        let mut rng = crate::engine::rng_from_seed(1);
        let rbm = |v, h, labels, rng: &mut crate::engine::EngineRng| {
            crate::engine::rbm::Rbm::new(v, h, labels, 0.01, rng).unwrap()
        };
        let dbn = Dbn::new(vec![
            rbm(784, 500, 0, &mut rng),
            rbm(510, 2000, 10, &mut rng),
        ])
        .unwrap();
        let top = (510 * 2000) as u64;
        let down = dbn.parameter_count() as u64;
        assert_eq!(gibbs(&dbn, 1, 1), 2 * top + down);
        assert_eq!(gibbs(&dbn, 400, 2500), 400 * (2500 * 2 * top + down));
        assert_eq!(passes(&dbn, 3), 3 * down);
        assert_eq!(decoding(4096 * 4096), 4096 * 4096 * DECODE_WORK_PER_PIXEL);
        assert_eq!(gibbs(&dbn, usize::MAX, usize::MAX), u64::MAX);
    }
}
