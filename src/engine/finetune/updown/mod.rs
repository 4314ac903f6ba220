//! Generative fine-tuning by the up-down algorithm (contrastive wake-sleep; Hinton, Osindero
//! & Teh 2006, Appendix B). The weights below the top RBM are untied into recognition weights
//! (the RBMs' own, used bottom-up) and generative weights (used top-down). Per mini-batch:
//! - wake: a stochastic up-pass with the recognition weights; the generative weights learn by
//!   the delta rule to predict each layer from the one above, ΔG ∝ h_above (h_below − ĥ_below);
//! - the top: CD-k in the associative memory of penultimate features and labels;
//! - sleep: a stochastic down-pass from the chain's end with the generative weights; the
//!   recognition weights learn to predict each layer from the one below, ΔR ∝ h_below (h_above − ĥ_above).

use std::time::Instant;

use ndarray::{concatenate, s, Array2, ArrayView2, Axis};
use rand::Rng;
use serde::{Deserialize, Serialize};

use super::hybrid::label_log_likelihood_gradient;
use super::run::{FinetuneRun, FinetuneState};
use crate::engine::dbn::{error_rate, Dbn};
use crate::engine::error::{EngineError, Result};
use crate::engine::math::{matmul, sample_bernoulli};
use crate::engine::observer::{Control, EpochMetrics, Phase};
use crate::engine::rbm::shuffle;
use crate::engine::EngineRng;

/// Settings of up-down fine-tuning; every field has a default.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UpDownConfig {
    /// Passes over the data (default 30; the paper used 300).
    pub epochs: usize,
    /// Examples per mini-batch (default 100).
    pub batch_size: usize,
    /// Step size of every weight (default 0.01).
    pub learning_rate: f32,
    /// Gibbs steps at the top, rising through the run: the epochs are split into equal parts,
    /// one per entry (default [3, 6, 10], as in the paper).
    pub cd_k: Vec<usize>,
    /// When set, the top RBM's negative phase continues persistent fantasy chains (PCD,
    /// Tieleman 2008; labels free) instead of starting each batch from the wake features, and
    /// the sleep phase goes down from those chains. Default false: the paper's CD-k.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub persistent: bool,
    /// Weight of a discriminative term in the top RBM's update: this times the gradient of
    /// log p(label | features), with p(k | f) ∝ exp(−F(f, k)) as classification by free
    /// energy computes it and f the mean-field penultimate features, is added to the top's
    /// CD-k step (the hybrid objective of Larochelle & Bengio 2008). The layers below learn
    /// by up-down alone. Default 0: the paper's purely generative up-down.
    #[serde(skip_serializing_if = "is_zero")]
    pub discriminative: f32,
}

fn is_zero(x: &f32) -> bool {
    *x == 0.0
}

impl Default for UpDownConfig {
    fn default() -> Self {
        UpDownConfig {
            epochs: 30,
            batch_size: 100,
            learning_rate: 0.01,
            cd_k: vec![3, 6, 10],
            persistent: false,
            discriminative: 0.0,
        }
    }
}

impl UpDownConfig {
    pub fn validate(&self, prefix: &str) -> Result<()> {
        let bad = |f: &str, m: String| Err(EngineError::invalid(format!("{prefix}.{f}"), m));
        if self.epochs == 0 || self.epochs > super::MAX_FINETUNE_EPOCHS {
            return bad(
                "epochs",
                format!("must be in 1..={}", super::MAX_FINETUNE_EPOCHS),
            );
        }
        if self.batch_size == 0 || self.batch_size > super::MAX_FINETUNE_BATCH {
            return bad(
                "batch_size",
                format!("must be in 1..={}", super::MAX_FINETUNE_BATCH),
            );
        }
        if !(self.learning_rate.is_finite()
            && self.learning_rate > 0.0
            && self.learning_rate <= 10.0)
        {
            return bad("learning_rate", "must be in (0, 10]".into());
        }
        if self.cd_k.is_empty() || self.cd_k.iter().any(|&k| k == 0 || k > 1000) {
            return bad("cd_k", "needs 1 to 1000 steps per entry".into());
        }
        if !(self.discriminative.is_finite() && (0.0..=100.0).contains(&self.discriminative)) {
            return bad("discriminative", "must be in [0, 100]".into());
        }
        Ok(())
    }

    /// Gibbs steps at the top in `epoch` (0-based).
    pub fn k_at(&self, epoch: usize) -> usize {
        let part = (epoch * self.cd_k.len() / self.epochs).min(self.cd_k.len() - 1);
        self.cd_k[part]
    }
}

fn sample<R: Rng + ?Sized>(p: &Array2<f32>, rng: &mut R) -> Array2<f32> {
    let mut s = Array2::zeros(p.dim());
    sample_bernoulli(rng, p.view(), s.view_mut());
    s
}

/// `w += alpha · aᵀ·b` for a: [batch, rows of w], b: [batch, cols of w].
fn add_outer(w: &mut Array2<f32>, a: ArrayView2<f32>, b: ArrayView2<f32>, alpha: f32) {
    matmul(w.view_mut(), true, a.t(), b, alpha);
}

/// What one mini-batch of up-down does besides its data.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Step {
    /// Gibbs steps at the top.
    pub k: usize,
    /// Step size of every weight.
    pub lr: f32,
    /// Weight of the top's discriminative term ([`UpDownConfig::discriminative`]).
    pub discriminative: f32,
}

/// One mini-batch of up-down learning on `dbn` (untied) with one-hot `labels` ([batch, k]).
/// With `chains`, the top's negative phase continues those fantasy chains (an empty array
/// starts them from this batch's wake state). Returns the squared error of the wake-phase
/// prediction of the data.
pub(crate) fn up_down_step<R: Rng + ?Sized>(
    dbn: &mut Dbn,
    v: ArrayView2<f32>,
    labels: ArrayView2<f32>,
    step: Step,
    chains: Option<&mut Array2<f32>>,
    rng: &mut R,
) -> Result<f64> {
    let Step {
        k,
        lr,
        discriminative,
    } = step;
    let batch = v.nrows() as f32;
    let eps = lr / batch;
    let n = dbn.layers().len();
    // The discriminative term's gradient, from the weights as they are before this step.
    let hybrid = if discriminative > 0.0 {
        let f = dbn.features(v)?;
        Some(label_log_likelihood_gradient(dbn.top(), f.view(), labels))
    } else {
        None
    };
    // Wake: stochastic up-pass with the recognition weights. wake[l] is the state of the
    // visible units of layer l (wake[0] the data); wake[n-1] the penultimate features.
    let mut wake = vec![v.to_owned()];
    for l in 0..n - 1 {
        let rbm = &dbn.layers()[l];
        let p = rbm.hidden_probs(wake[l].view());
        wake.push(sample(&p, rng));
    }
    // The top: CD-k in the associative memory of [features | labels].
    let top = &dbn.layers()[n - 1];
    let nf = top.n_features();
    let pos_vis = concatenate(Axis(1), &[wake[n - 1].view(), labels])
        .map_err(|e| EngineError::Shape(e.to_string()))?;
    let pos_hid = top.hidden_probs(pos_vis.view());
    let (neg_vis, neg_hid) = match chains {
        Some(chains) => {
            if chains.nrows() == 0 {
                *chains = pos_vis.as_standard_layout().into_owned();
            }
            // PCD-k: features and labels both sampled, as in pretraining's persistent chains.
            for _ in 0..k {
                let h = sample(&top.hidden_probs(chains.view()), rng);
                let p = top.visible_probs(h.view());
                top.sample_visible_into(rng, p.view(), chains.view_mut());
            }
            (chains.clone(), top.hidden_probs(chains.view()))
        }
        None => {
            let mut hid_state = sample(&pos_hid, rng);
            let mut neg_vis = pos_vis.clone();
            let mut neg_hid = pos_hid.clone();
            for step in 0..k {
                // Features sampled, labels as their softmax probabilities (seed Eq. 3).
                neg_vis = top.visible_probs(hid_state.view());
                let feat = sample(&neg_vis.slice(s![.., ..nf]).to_owned(), rng);
                neg_vis.slice_mut(s![.., ..nf]).assign(&feat);
                neg_hid = top.hidden_probs(neg_vis.view());
                if step + 1 < k {
                    hid_state = sample(&neg_hid, rng);
                }
            }
            (neg_vis, neg_hid)
        }
    };
    // Sleep: stochastic down-pass with the generative weights from the chain's features.
    // sleep[l] mirrors wake[l]; the data layer keeps probabilities.
    let mut sleep = vec![Array2::zeros((0, 0)); n];
    sleep[n - 1] = neg_vis.slice(s![.., ..nf]).to_owned();
    for l in (0..n - 1).rev() {
        let p = dbn.generative_probs(l, sleep[l + 1].view());
        sleep[l] = if l == 0 { p } else { sample(&p, rng) };
    }
    // Predictions with the weights as they were in this step.
    let gen_pred: Vec<Array2<f32>> = (0..n - 1)
        .map(|l| dbn.generative_probs(l, wake[l + 1].view()))
        .collect();
    let rec_pred: Vec<Array2<f32>> = (0..n - 1)
        .map(|l| {
            let rbm = &dbn.layers()[l];
            rbm.hidden_probs(sleep[l].view())
        })
        .collect();
    let recon = (&wake[0] - &gen_pred[0]).mapv(|d| (d * d) as f64).sum() / batch as f64;

    // Updates: generative weights by the wake delta rule, recognition weights by the sleep
    // delta rule, the top RBM by CD-k.
    for l in 0..n - 1 {
        let err_below = &wake[l] - &gen_pred[l];
        add_outer(
            dbn.generative_mut(l),
            err_below.view(),
            wake[l + 1].view(),
            eps,
        );
        let rbm = &mut dbn.layers_mut()[l];
        rbm.visible_bias
            .scaled_add(eps, &err_below.sum_axis(Axis(0)));
        let err_above = &sleep[l + 1] - &rec_pred[l];
        add_outer(&mut rbm.weights, sleep[l].view(), err_above.view(), eps);
        rbm.hidden_bias
            .scaled_add(eps, &err_above.sum_axis(Axis(0)));
    }
    let top = &mut dbn.layers_mut()[n - 1];
    add_outer(&mut top.weights, pos_vis.view(), pos_hid.view(), eps);
    add_outer(&mut top.weights, neg_vis.view(), neg_hid.view(), -eps);
    top.visible_bias
        .scaled_add(eps, &(&pos_vis - &neg_vis).sum_axis(Axis(0)));
    top.hidden_bias
        .scaled_add(eps, &(&pos_hid - &neg_hid).sum_axis(Axis(0)));
    if let Some((grad_w, grad_vb, grad_hb)) = hybrid {
        let alpha = eps * discriminative;
        top.weights.scaled_add(alpha, &grad_w);
        top.visible_bias.scaled_add(alpha, &grad_vb);
        top.hidden_bias.scaled_add(alpha, &grad_hb);
    }
    Ok(recon)
}

/// Fine-tunes `dbn` by the up-down algorithm on `x` with `labels` (untying its weights first).
pub fn train_up_down(
    dbn: &mut Dbn,
    x: ArrayView2<f32>,
    labels: &[u8],
    cfg: &UpDownConfig,
    run: &mut FinetuneRun,
    rng: &mut EngineRng,
) -> Result<Vec<EpochMetrics>> {
    cfg.validate("finetune")?;
    let classes = dbn.label_classes();
    let binary = dbn
        .layers()
        .iter()
        .all(|l| l.visible_units.is_binary() && l.hidden_units.is_binary());
    if !binary {
        return Err(EngineError::invalid(
            "finetune",
            "up-down is implemented for nets of binary units only",
        ));
    }
    if classes == 0 || dbn.layers().len() < 2 {
        return Err(EngineError::invalid(
            "finetune",
            "up-down needs a DBN of two or more layers with labels in its top RBM",
        ));
    }
    if labels.len() != x.nrows() || labels.iter().any(|&l| l as usize >= classes) {
        return Err(EngineError::invalid(
            "labels",
            "one label below the class count per example",
        ));
    }
    dbn.untie();
    let n = x.nrows();
    let batch = cfg.batch_size.min(n).max(1);
    let batches = n / batch;
    let state = match run.resume.take() {
        Some(state) => {
            state.check(n, cfg.epochs, &[])?;
            state
        }
        None => FinetuneState::fresh(n, Vec::new()),
    };
    let mut chains = match (cfg.persistent, state.chains) {
        (true, Some(c)) if c.dim() == (batch, dbn.layers()[dbn.layers().len() - 1].n_visible()) => {
            Some(c)
        }
        (true, Some(_)) => {
            return Err(EngineError::Model(
                "checkpoint: its persistent chains do not fit the top RBM".into(),
            ))
        }
        (true, None) => Some(Array2::zeros((0, 0))),
        (false, _) => None,
    };
    let mut order: Vec<usize> = state.order.iter().map(|&i| i as usize).collect();
    let mut history = Vec::with_capacity(cfg.epochs);
    let mut vb = Array2::zeros((batch, x.ncols()));
    let mut yb = Array2::zeros((batch, classes));
    for epoch in state.next_epoch..cfg.epochs {
        let started = Instant::now();
        shuffle(&mut order, rng);
        let k = cfg.k_at(epoch);
        let mut recon = 0.0;
        for b in 0..batches {
            yb.fill(0.0);
            for (r, &i) in order[b * batch..(b + 1) * batch].iter().enumerate() {
                vb.row_mut(r).assign(&x.row(i));
                yb[[r, labels[i] as usize]] = 1.0;
            }
            let step = Step {
                k,
                lr: cfg.learning_rate,
                discriminative: cfg.discriminative,
            };
            recon += up_down_step(dbn, vb.view(), yb.view(), step, chains.as_mut(), rng)?;
            let done = (b + 1) * batch;
            let progress = run.progress(epoch, cfg.epochs, b + 1, batches, done, n, started);
            if run.observer.on_batch(&progress) == Control::Stop {
                return Err(EngineError::Cancelled);
            }
        }
        let recon = recon / batches.max(1) as f64;
        if !recon.is_finite() || !dbn.layers().iter().all(|l| l.is_finite()) {
            return Err(EngineError::Diverged(format!(
                "up-down epoch {}",
                epoch + 1
            )));
        }
        let (validation_error, free_energy_gap) = match run.validation {
            Some((xv, yv)) => {
                let error = error_rate(dbn.classify_free_energy(xv)?.view(), yv);
                let m = xv.nrows().min(n);
                let gap = top_free_energy(dbn, xv, &yv[..xv.nrows()])?
                    - top_free_energy(dbn, x.slice(s![..m, ..]), &labels[..m])?;
                (Some(error), Some(gap))
            }
            None => (None, None),
        };
        let seconds = started.elapsed().as_secs_f64();
        let metrics = EpochMetrics {
            phase: Phase::Finetune,
            layer: dbn.layers().len() - 1,
            epoch: epoch + 1,
            recon_error_train: Some(recon),
            recon_error_validation: None,
            free_energy_gap,
            validation_error,
            train_error: None,
            cross_entropy: None,
            validation_cross_entropy: None,
            log_prob_bound: None,
            momentum: 0.0,
            seconds,
            examples_per_sec: (batches * batch) as f64 / seconds.max(1e-9),
        };
        let p = run.progress(epoch, cfg.epochs, batches, batches, n, n, started);
        history.push(metrics.clone());
        let mut stop = run.observer.on_epoch(&p, &metrics) == Control::Stop;
        let state = FinetuneState {
            next_epoch: epoch + 1,
            order: order.iter().map(|&i| i as u32).collect(),
            increments: Vec::new(),
            chains: chains.clone().filter(|c| c.nrows() > 0),
        };
        stop |= run.checkpoint(|| Ok(dbn.clone()), state, &history, rng)? == Control::Stop;
        if stop {
            return Err(EngineError::Cancelled);
        }
    }
    Ok(history)
}

/// Mean free energy of the top RBM for examples `x` with their labels, after the
/// recognition up-pass.
fn top_free_energy(dbn: &Dbn, x: ArrayView2<f32>, labels: &[u8]) -> Result<f64> {
    let features = dbn.features(x)?;
    let top = &dbn.layers()[dbn.layers().len() - 1];
    let mut vis = Array2::zeros((x.nrows(), top.n_visible()));
    vis.slice_mut(s![.., ..top.n_features()]).assign(&features);
    for (r, &y) in labels.iter().enumerate() {
        vis[[r, top.n_features() + y as usize]] = 1.0;
    }
    Ok(top.free_energy(vis.view()).mean().unwrap_or(0.0) as f64)
}

#[cfg(test)]
mod tests;
