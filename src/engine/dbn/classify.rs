//! Classification with the associative memory on top of the DBN.
//!
//! Free energy: after a deterministic up-pass, the top RBM's free energy with label k clamped,
//! F(x, k) = −b_k − Σ_i b_i f_i − Σ_j softplus(c_j + Σ_i f_i w_ij + w_kj), is computed exactly
//! for each k, and p(k | x) = softmax_k(−F(x, k)).
//! Gibbs: the features are clamped and alternating Gibbs sampling runs in the top two layers;
//! p(k | x) is estimated by how often label k turns on.

use ndarray::{s, Array1, Array2, ArrayView2, Axis};
use rand::Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::Dbn;
use crate::engine::error::{EngineError, Result};
use crate::engine::math::team::{self, Team};
use crate::engine::math::{self, matmul, sample_categorical_rows, softmax_bias_rows};
use crate::engine::rbm::Rbm;

/// Rows below which the per-label sums are split by columns over the team, not by rows.
const PAR_ROWS: usize = 16;
/// Rows classified at a time: the top layer's input for a block is BLOCK_ROWS × 2000 floats.
pub const BLOCK_ROWS: usize = 1000;

/// Σ_j softplus(base_rj + w_kj) for every row r and label k (a few images), with the columns
/// j split over the persistent team and the parts' sums added in part order.
/// base: [rows, H], w_l: [classes, H] → [rows, classes].
fn softplus_sums_split(base: ArrayView2<f32>, w_l: ArrayView2<f32>) -> Array2<f32> {
    let team = Team::global();
    let blocks: Vec<_> = team::split(base.ncols(), team.parts(), 16).collect();
    let partial = team.map(blocks, |_, cols| {
        let mut sums = Vec::with_capacity(base.nrows() * w_l.nrows());
        for base_row in base.rows() {
            let base_row = base_row
                .as_slice()
                .expect("rows of an owned array are contiguous");
            for w_row in w_l.rows() {
                let shift = w_row
                    .as_slice()
                    .expect("rows of the weights are contiguous");
                sums.push(math::softplus_sum_shifted(
                    &base_row[cols.clone()],
                    &shift[cols.clone()],
                ));
            }
        }
        sums
    });
    let mut total = Array2::zeros((base.nrows(), w_l.nrows()));
    for sums in partial {
        for (t, s) in total.iter_mut().zip(sums) {
            *t += s;
        }
    }
    total
}

/// c + f·W_f: the top RBM's hidden input from penultimate features f, before any label.
/// f: [rows, features] → [rows, H].
pub(crate) fn top_hidden_input(top: &Rbm, features: ArrayView2<f32>) -> Array2<f32> {
    let w_f = top.weights.slice(s![..top.n_features(), ..]);
    let mut base = Array2::zeros((features.nrows(), top.n_hidden()));
    math::x_times_w(features, w_f, base.view_mut());
    base += &top.hidden_bias;
    base
}

/// b_k + Σ_j softplus(base_rj + w_kj) for every row r and label k: −F(f, k) without the
/// feature term Σ_i b_i f_i, which is the same for every label, so that a softmax over a row
/// gives p(k | f). base: [`top_hidden_input`] → [rows, classes].
pub(crate) fn label_scores(top: &Rbm, base: ArrayView2<f32>) -> Array2<f32> {
    let nf = top.n_features();
    let w_l = top.weights.slice(s![nf.., ..]);
    let b_l = top.visible_bias.slice(s![nf..]);
    let k = w_l.nrows();
    let mut out = Array2::zeros((base.nrows(), k));
    if base.nrows() < PAR_ROWS {
        // A few images: the columns are split over the team instead of the rows.
        let sums = softplus_sums_split(base, w_l);
        for ((score, sum), label) in out.iter_mut().zip(sums).zip((0..k).cycle()) {
            *score = b_l[label] + sum;
        }
    } else {
        base.axis_iter(Axis(0))
            .into_par_iter()
            .zip(out.axis_iter_mut(Axis(0)).into_par_iter())
            .for_each(|(base_row, mut out_row)| {
                let base_row = base_row
                    .as_slice()
                    .expect("rows of an owned array are contiguous");
                for (label, score) in out_row.iter_mut().enumerate() {
                    let shift = w_l.row(label);
                    let shift = shift
                        .as_slice()
                        .expect("rows of the weights are contiguous");
                    *score = b_l[label] + math::softplus_sum_shifted(base_row, shift);
                }
            });
    }
    out
}

impl Dbn {
    fn require_labels(&self) -> Result<usize> {
        match self.label_classes() {
            0 => Err(EngineError::invalid(
                "model",
                "this model has no label units, so it cannot classify",
            )),
            k => Ok(k),
        }
    }

    /// The penultimate features of `x` and the top RBM's hidden input from them
    /// ([`top_hidden_input`]). → ([batch, features], [batch, H]).
    fn features_and_top_input(&self, x: ArrayView2<f32>) -> Result<(Array2<f32>, Array2<f32>)> {
        let features = self.features(x)?;
        let base = top_hidden_input(self.top(), features.view());
        Ok((features, base))
    }

    /// F(x, k) for every example and label. x: [batch, n_inputs] → [batch, classes].
    /// Large batches go through in blocks of [`BLOCK_ROWS`], so memory stays bounded.
    pub fn label_free_energies(&self, x: ArrayView2<f32>) -> Result<Array2<f32>> {
        let k = self.require_labels()?;
        if x.nrows() > BLOCK_ROWS {
            let mut out = Array2::zeros((x.nrows(), k));
            let blocks = x
                .axis_chunks_iter(Axis(0), BLOCK_ROWS)
                .zip(out.axis_chunks_iter_mut(Axis(0), BLOCK_ROWS));
            for (xb, mut ob) in blocks {
                ob.assign(&self.label_free_energies(xb)?);
            }
            return Ok(out);
        }
        let top = self.top();
        let (features, base) = self.features_and_top_input(x)?;
        let feature_term = features.dot(&top.visible_bias.slice(s![..top.n_features()]));
        let mut out = label_scores(top, base.view());
        for (mut row, &ft) in out.axis_iter_mut(Axis(0)).zip(&feature_term) {
            row.mapv_inplace(|score| -score - ft);
        }
        Ok(out)
    }

    /// p(label | x) by exact free energies. x: [batch, n_inputs] → [batch, classes].
    pub fn classify_free_energy(&self, x: ArrayView2<f32>) -> Result<Array2<f32>> {
        let mut neg_f = self.label_free_energies(x)?.mapv(|f| -f);
        let zero = Array1::zeros(neg_f.ncols());
        softmax_bias_rows(neg_f.view_mut(), zero.view());
        Ok(neg_f)
    }

    /// p(label | x) estimated by `steps` steps of alternating Gibbs sampling in the top two
    /// layers with the features clamped, counting how often each label is on.
    pub fn classify_gibbs<R: Rng + ?Sized>(
        &self,
        x: ArrayView2<f32>,
        steps: usize,
        rng: &mut R,
    ) -> Result<Array2<f32>> {
        let k = self.require_labels()?;
        if steps == 0 || steps > super::generate::MAX_STEPS {
            return Err(EngineError::invalid(
                "steps",
                format!(
                    "Gibbs classification needs 1..={} steps",
                    super::generate::MAX_STEPS
                ),
            ));
        }
        let top = self.top();
        let nf = top.n_features();
        let (_, base) = self.features_and_top_input(x)?;
        let w_l = top.weights.slice(s![nf.., ..]);
        let b_l = top.visible_bias.slice(s![nf..]);
        let batch = base.nrows();
        let mut labels = Array2::from_elem((batch, k), 1.0 / k as f32);
        let mut counts = Array2::<f32>::zeros((batch, k));
        let mut hp = Array2::zeros((batch, top.n_hidden()));
        let mut h = Array2::zeros((batch, top.n_hidden()));
        let mut lp = Array2::zeros((batch, k));
        let zero = Array1::zeros(top.n_hidden());
        for _ in 0..steps {
            crate::engine::cancel::check()?;
            hp.assign(&base);
            matmul(hp.view_mut(), true, labels.view(), w_l, 1.0);
            top.hidden_units.activate(hp.view_mut(), zero.view());
            top.sample_hidden_into(rng, hp.view(), h.view_mut());
            matmul(lp.view_mut(), false, h.view(), w_l.t(), 1.0);
            softmax_bias_rows(lp.view_mut(), b_l);
            sample_categorical_rows(rng, lp.view(), labels.view_mut());
            counts += &labels;
        }
        Ok(counts / steps as f32)
    }
}

/// The index of the largest value in each row (first on ties).
pub fn argmax_rows(probs: ArrayView2<f32>) -> Vec<usize> {
    probs
        .rows()
        .into_iter()
        .map(|r| {
            r.iter()
                .enumerate()
                .fold((0, f32::NEG_INFINITY), |best, (i, &p)| {
                    if p > best.1 {
                        (i, p)
                    } else {
                        best
                    }
                })
                .0
        })
        .collect()
}

/// Fraction of rows whose argmax differs from the label.
pub fn error_rate(probs: ArrayView2<f32>, labels: &[u8]) -> f64 {
    let wrong = argmax_rows(probs)
        .iter()
        .zip(labels)
        .filter(|(&p, &l)| p != l as usize)
        .count();
    wrong as f64 / labels.len().max(1) as f64
}

/// counts[true][predicted].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfusionMatrix {
    pub counts: Vec<Vec<u64>>,
}

impl ConfusionMatrix {
    pub fn from_predictions(probs: ArrayView2<f32>, labels: &[u8]) -> Self {
        let k = probs.ncols();
        let mut counts = vec![vec![0u64; k]; k];
        for (p, &l) in argmax_rows(probs).iter().zip(labels) {
            if (l as usize) < k {
                counts[l as usize][*p] += 1;
            }
        }
        ConfusionMatrix { counts }
    }

    pub fn total(&self) -> u64 {
        self.counts.iter().flatten().sum()
    }

    pub fn errors(&self) -> u64 {
        self.total()
            - (0..self.counts.len())
                .map(|i| self.counts[i][i])
                .sum::<u64>()
    }

    /// Error rate of each true class.
    pub fn class_errors(&self) -> Vec<f64> {
        self.counts
            .iter()
            .enumerate()
            .map(|(i, row)| {
                let n: u64 = row.iter().sum();
                if n == 0 {
                    0.0
                } else {
                    (n - row[i]) as f64 / n as f64
                }
            })
            .collect()
    }
}
