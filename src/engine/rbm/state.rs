//! What one layer's CD learning carries from epoch to epoch, so that a run stopped at an
//! epoch boundary can continue bit for bit.

use ndarray::{Array1, Array2};

use super::Rbm;
use crate::engine::error::{EngineError, Result};

/// The learning state of one RBM between epochs (the parameters live in the [`Rbm`]).
#[derive(Debug, Clone, PartialEq)]
pub struct LayerState {
    /// The next epoch to run (0-based).
    pub next_epoch: usize,
    /// Weight increments, already holding the next batch's momentum and decay terms:
    /// [n_visible, n_hidden].
    pub w_inc: Array2<f32>,
    pub vb_inc: Array1<f32>,
    pub hb_inc: Array1<f32>,
    /// PCD fantasy particles: [batch, n_visible].
    pub chains: Option<Array2<f32>>,
    /// The order of the training examples after the last shuffle (each epoch shuffles it).
    pub order: Vec<u32>,
    /// Increments of the lateral weights, for a semi-restricted layer: [F, F].
    pub l_inc: Option<Array2<f32>>,
}

/// Whether `order` holds each of 0..n exactly once (a saved shuffle of n examples).
pub(crate) fn is_permutation(order: &[u32], n: usize) -> bool {
    let mut seen = vec![false; n];
    order.len() == n
        && order
            .iter()
            .all(|&i| (i as usize) < n && !std::mem::replace(&mut seen[i as usize], true))
}

impl LayerState {
    /// Checks that the state fits `rbm`, `n` training examples and a batch of `batch` rows.
    pub(crate) fn check(&self, rbm: &Rbm, n: usize, batch: usize, persistent: bool) -> Result<()> {
        let bad = |m: String| Err(EngineError::Model(format!("checkpoint: {m}")));
        if self.w_inc.dim() != rbm.weights.dim()
            || self.vb_inc.len() != rbm.n_visible()
            || self.hb_inc.len() != rbm.n_hidden()
        {
            return bad("increments do not fit the layer".into());
        }
        match (&self.l_inc, &rbm.lateral) {
            (Some(a), Some(b)) if a.dim() == b.dim() => {}
            (None, None) => {}
            _ => return bad("lateral increments do not fit the layer".into()),
        }
        match (&self.chains, persistent) {
            (Some(c), true) if c.dim() == (batch, rbm.n_visible()) => {}
            (None, false) => {}
            _ => return bad("fantasy particles do not fit the layer's settings".into()),
        }
        if !is_permutation(&self.order, n) {
            return bad(format!(
                "the example order is not a permutation of {n} examples"
            ));
        }
        Ok(())
    }
}
