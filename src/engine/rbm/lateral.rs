//! Semi-restricted Boltzmann machines (the seed's Box 2; Osindero & Hinton 2008): lateral
//! connections L (symmetric, zero diagonal) between the binary visible units, so that
//! E(v, h) = −bᵀv − cᵀh − vᵀWh − ½ vᵀLv. The hidden units stay independent given v, so
//! p(h | v) and learning's positive phase are unchanged. Given h the visible units form a
//! Markov random field: reconstructions settle by damped mean field,
//! m ← λ m + (1 − λ) σ(b + W h + L m), and samples come from sequential Gibbs sweeps over the
//! visible units. The lateral weights learn by CD like the others:
//! ΔL_ik = ε(<v_i v_k>_data − <v_i v_k>_recon).
//!
//! The negative phase of learning uses a *sampled* reconstruction, a draw from the settled
//! mean field followed by one sequential Gibbs sweep given the sampled hidden states, rather
//! than the mean field alone: on pixel pairs that flip together given the hidden state, a
//! product of mean-field means cannot show the pair's correlation, the lateral weights grow
//! without bound, and the exact log-likelihood fell from −4.2 to −16.8 nats in the oracle
//! test, where the sampled reconstruction reaches −2.6 (`tests/engine/semi_rbm.rs`). Starting the
//! sweep at the data instead (−2.2 there) kept reconstructions so close to the data on MNIST
//! that the model's own chains collapsed to blank images. The mean field remains the
//! reconstruction callers see.

use ndarray::{s, Array2, ArrayView2, ArrayViewMut2, Axis, Zip};
use rand::Rng;

use super::Rbm;
use crate::engine::error::{EngineError, Result};
use crate::engine::math::{fill_uniform, matmul};

/// Iterations of mean-field settling per reconstruction.
pub const SETTLE_STEPS: usize = 10;
/// λ: the share of the previous estimate kept at each settling step.
pub const DAMPING: f32 = 0.2;
/// The lateral weights' learning rate as a share of the layer's: every visible unit has a
/// lateral input from every other, so full-size steps make the settling saturate.
pub const LATERAL_RATE: f32 = 0.1;

fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

impl Rbm {
    /// The same RBM with lateral connections (starting at zero) between its binary feature
    /// units: a semi-restricted Boltzmann machine.
    pub fn with_lateral(mut self) -> Result<Self> {
        if !self.visible_units.is_binary() {
            return Err(EngineError::invalid(
                "lateral",
                "lateral connections join binary visible units only",
            ));
        }
        let f = self.n_features();
        self.lateral = Some(Array2::zeros((f, f)));
        Ok(self)
    }

    /// Checks that lateral weights are square over the features, symmetric, with a zero
    /// diagonal and finite.
    pub(crate) fn check_lateral(&self) -> Result<()> {
        let Some(l) = &self.lateral else {
            return Ok(());
        };
        let f = self.n_features();
        let symmetric = (0..f).all(|i| l[[i, i]] == 0.0 && (0..i).all(|k| l[[i, k]] == l[[k, i]]));
        if l.dim() != (f, f) || !symmetric || !self.visible_units.is_binary() {
            return Err(EngineError::Model(
                "lateral weights must be square over the binary visible units, symmetric, with \
                 a zero diagonal"
                    .into(),
            ));
        }
        Ok(())
    }

    /// Replaces the total inputs `x` (bias added, before the logistic) of the feature units
    /// by their damped mean-field estimate under the lateral connections. x: [batch, F].
    pub(crate) fn settle(&self, mut x: ArrayViewMut2<f32>) {
        let Some(l) = &self.lateral else {
            x.mapv_inplace(sigmoid);
            return;
        };
        let input = x.to_owned();
        let mut m = input.mapv(sigmoid);
        let mut lateral = Array2::zeros(m.dim());
        for _ in 0..SETTLE_STEPS {
            matmul(lateral.view_mut(), false, m.view(), l.view(), 1.0);
            Zip::from(&mut m)
                .and(&input)
                .and(&lateral)
                .for_each(|m, &a, &b| *m = DAMPING * *m + (1.0 - DAMPING) * sigmoid(a + b));
        }
        x.assign(&m);
    }

    /// One sequential Gibbs sweep over the feature units of `v` given the hidden states `h`:
    /// each unit in turn is drawn from p(v_i | h, v_rest) = σ(b_i + (W h)_i + Σ_k L_ik v_k).
    /// Without lateral connections the units are independent and one parallel draw is exact.
    pub fn visible_sweep<R: Rng + ?Sized>(
        &self,
        rng: &mut R,
        h: ArrayView2<f32>,
        mut v: ArrayViewMut2<f32>,
    ) {
        let f = self.n_features();
        let mut input = Array2::zeros((h.nrows(), self.n_visible()));
        matmul(input.view_mut(), false, h, self.weights.t(), 1.0);
        let mut input = input.slice_mut(s![.., ..f]);
        input += &self.visible_bias.slice(s![..f]);
        let mut u = vec![0.0f32; f];
        for (row, mut v_row) in input.axis_iter(Axis(0)).zip(v.axis_iter_mut(Axis(0))) {
            fill_uniform(rng, &mut u);
            match &self.lateral {
                None => {
                    for i in 0..f {
                        v_row[i] = (u[i] < sigmoid(row[i])) as u8 as f32;
                    }
                }
                Some(l) => {
                    for i in 0..f {
                        let a = row[i] + l.row(i).dot(&v_row.slice(s![..f]));
                        v_row[i] = (u[i] < sigmoid(a)) as u8 as f32;
                    }
                }
            }
        }
    }

    /// −½ vᵀLv for each row of v (0 without lateral connections). v: [batch, V].
    pub(crate) fn lateral_energy(&self, v: ArrayView2<f32>) -> Vec<f32> {
        let Some(l) = &self.lateral else {
            return vec![0.0; v.nrows()];
        };
        let f = self.n_features();
        let vf = v.slice(s![.., ..f]);
        let mut lv = Array2::zeros((v.nrows(), f));
        matmul(lv.view_mut(), false, vf, l.view(), 1.0);
        vf.rows()
            .into_iter()
            .zip(lv.rows())
            .map(|(a, b)| -0.5 * a.dot(&b))
            .collect()
    }
}
