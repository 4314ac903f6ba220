//! The deep autoencoder of Hinton & Salakhutdinov (2006): the pretrained stack unrolled into
//! an encoder (every RBM's recognition weights, up to the code layer) and a decoder (the same
//! weights transposed, back down to the inputs), then fine-tuned as one network by
//! backpropagation of the reconstruction's cross-entropy. After fine-tuning encoder and
//! decoder weights are separate.

use std::time::Instant;

use ndarray::{Array1, Array2, ArrayView2, Axis, Zip};
use serde::{Deserialize, Serialize};

use super::net::Dense;
use super::run::{FinetuneRun, FinetuneState};
use crate::engine::dbn::Dbn;
use crate::engine::error::{EngineError, Result};
use crate::engine::math::matmul;
use crate::engine::observer::{Control, EpochMetrics, Phase};
use crate::engine::rbm::{shuffle, Units};
use crate::engine::EngineRng;

/// Rows pushed through the network at a time outside training, bounding memory.
const BLOCK_ROWS: usize = 1000;

/// How to fine-tune a deep autoencoder. Every field has a default; unknown fields are
/// rejected.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AutoencoderConfig {
    /// Passes over the training data (default 50).
    pub epochs: usize,
    /// Examples per mini-batch (default 100).
    pub batch_size: usize,
    /// Step size (default 0.001; the loss sums the cross-entropy over every input).
    pub learning_rate: f32,
    /// Momentum (default 0.9).
    pub momentum: f32,
    /// L2 decay of the weights (default 0).
    pub weight_decay: f32,
}

impl Default for AutoencoderConfig {
    fn default() -> Self {
        AutoencoderConfig {
            epochs: 50,
            batch_size: 100,
            learning_rate: 0.001,
            momentum: 0.9,
            weight_decay: 0.0,
        }
    }
}

impl AutoencoderConfig {
    pub fn validate(&self, prefix: &str) -> Result<()> {
        super::config::check_run(prefix, self.epochs, self.batch_size, self.learning_rate)?;
        let bad = |f: &str, m: String| Err(EngineError::invalid(format!("{prefix}.{f}"), m));
        if !(0.0..1.0).contains(&self.momentum) {
            return bad("momentum", "must be in [0, 1)".into());
        }
        if !(self.weight_decay.is_finite() && (0.0..1.0).contains(&self.weight_decay)) {
            return bad("weight_decay", "must be in [0, 1)".into());
        }
        Ok(())
    }
}

/// Encoder and decoder layers, with the activation of each layer's outputs: logistic for
/// binary units, identity for Gaussian ones (the linear code layer).
#[derive(Debug, Clone, PartialEq)]
pub struct DeepAutoencoder {
    layers: Vec<Dense>,
    units: Vec<Units>,
}

impl DeepAutoencoder {
    /// The activations of the unrolled `dbn`: the RBMs' hidden units going up, their visible
    /// units coming down.
    pub fn units_of(dbn: &Dbn) -> Vec<Units> {
        let up = dbn.layers().iter().map(|r| r.hidden_units);
        let down = dbn.layers().iter().rev().map(|r| r.visible_units);
        up.chain(down).collect()
    }

    /// Checks that `layers` chain and mirror `dbn`'s sizes (2 per RBM) and attaches the
    /// activations of the unrolled `dbn`.
    pub fn new(dbn: &Dbn, layers: Vec<Dense>) -> Result<Self> {
        let net = DeepAutoencoder {
            layers,
            units: Self::units_of(dbn),
        };
        net.check_fits(dbn)?;
        Ok(net)
    }

    /// Checks that this network is the unrolled form of `dbn`: mirrored sizes and the
    /// activations of its units, with no label units.
    pub(crate) fn check_fits(&self, dbn: &Dbn) -> Result<()> {
        let layers = &self.layers;
        let sizes = dbn.sizes();
        let mirrored: Vec<usize> = sizes
            .iter()
            .chain(sizes.iter().rev().skip(1))
            .copied()
            .collect();
        let fits = layers.len() + 1 == mirrored.len()
            && layers.iter().enumerate().all(|(i, l)| {
                l.weights.dim() == (mirrored[i], mirrored[i + 1]) && l.bias.len() == mirrored[i + 1]
            });
        if !fits {
            return Err(EngineError::Model(
                "the autoencoder's layers do not mirror the DBN's sizes".into(),
            ));
        }
        if dbn.label_classes() > 0 {
            return Err(EngineError::Model(
                "a deep autoencoder is built from a DBN without label units".into(),
            ));
        }
        if self.units != Self::units_of(dbn) {
            return Err(EngineError::Model(
                "the autoencoder's activations do not match the DBN's units".into(),
            ));
        }
        Ok(())
    }

    /// The unrolled DBN: encoder (W_l, c_l) going up, decoder (W_lᵀ, b_l) coming down.
    pub fn from_dbn(dbn: &Dbn) -> Result<Self> {
        let up = dbn.layers().iter().map(|r| Dense {
            weights: r.weights.clone(),
            bias: r.hidden_bias.clone(),
        });
        let down = dbn.layers().iter().rev().map(|r| Dense {
            weights: r.weights.t().as_standard_layout().into_owned(),
            bias: r.visible_bias.clone(),
        });
        Self::new(dbn, up.chain(down).collect())
    }

    pub fn layers(&self) -> &[Dense] {
        &self.layers
    }

    /// Layers of the encoder (the rest are the decoder).
    pub fn depth(&self) -> usize {
        self.layers.len() / 2
    }

    pub fn code_size(&self) -> usize {
        self.layers[self.depth() - 1].weights.ncols()
    }

    /// Outputs of layers `range` applied in turn to `x`, block by block.
    fn run(&self, x: ArrayView2<f32>, range: std::ops::Range<usize>) -> Array2<f32> {
        let width = self.layers[range.end - 1].weights.ncols();
        let mut out = Array2::zeros((x.nrows(), width));
        for (xb, mut ob) in x
            .axis_chunks_iter(Axis(0), BLOCK_ROWS)
            .zip(out.axis_chunks_iter_mut(Axis(0), BLOCK_ROWS))
        {
            let mut act = xb.to_owned();
            for l in range.clone() {
                act = self.layer(l, act.view());
            }
            ob.assign(&act);
        }
        out
    }

    fn layer(&self, l: usize, x: ArrayView2<f32>) -> Array2<f32> {
        let layer = &self.layers[l];
        let mut z = Array2::zeros((x.nrows(), layer.weights.ncols()));
        matmul(z.view_mut(), false, x, layer.weights.view(), 1.0);
        self.units[l].activate(z.view_mut(), layer.bias.view());
        z
    }

    /// The codes of `x`: [batch, inputs] → [batch, code size].
    pub fn encode(&self, x: ArrayView2<f32>) -> Array2<f32> {
        self.run(x, 0..self.depth())
    }

    /// Inputs from codes: [batch, code size] → [batch, inputs].
    pub fn decode(&self, code: ArrayView2<f32>) -> Array2<f32> {
        self.run(code, self.depth()..self.layers.len())
    }

    /// Reconstructions of `x`: [batch, inputs] → [batch, inputs].
    pub fn reconstruct(&self, x: ArrayView2<f32>) -> Array2<f32> {
        self.run(x, 0..self.layers.len())
    }

    /// Mean over rows of Σ_i (x_i − x̂_i)²: the papers' "average squared reconstruction
    /// error per image".
    pub fn reconstruction_error(&self, x: ArrayView2<f32>) -> f64 {
        mean_squared_distance(x, self.reconstruct(x).view())
    }
}

/// Mean over rows of Σ (a − b)².
pub fn mean_squared_distance(a: ArrayView2<f32>, b: ArrayView2<f32>) -> f64 {
    let total: f64 = a
        .iter()
        .zip(b.iter())
        .map(|(&x, &y)| ((x - y) as f64).powi(2))
        .sum();
    total / a.nrows().max(1) as f64
}

/// Forward and backward buffers of one mini-batch.
struct Workspace {
    /// acts[0] is the batch, acts[l + 1] the output of layer l.
    acts: Vec<Array2<f32>>,
    deltas: Vec<Array2<f32>>,
    grads: Vec<Dense>,
}

impl Workspace {
    fn new(net: &DeepAutoencoder, batch: usize) -> Self {
        let mut sizes = vec![net.layers[0].weights.nrows()];
        sizes.extend(net.layers.iter().map(|l| l.weights.ncols()));
        Workspace {
            acts: sizes.iter().map(|&s| Array2::zeros((batch, s))).collect(),
            deltas: sizes[1..]
                .iter()
                .map(|&s| Array2::zeros((batch, s)))
                .collect(),
            grads: net
                .layers
                .iter()
                .map(|l| Dense {
                    weights: Array2::zeros(l.weights.dim()),
                    bias: Array1::zeros(l.bias.len()),
                })
                .collect(),
        }
    }

    /// Forward pass on acts[0], then the gradients of the summed cross-entropy of the
    /// logistic outputs (squared error for linear ones) divided by the batch size. Returns
    /// the batch's summed squared reconstruction error.
    fn forward_backward(&mut self, net: &DeepAutoencoder) -> f64 {
        let last = net.layers.len() - 1;
        let batch = self.acts[0].nrows();
        for (l, layer) in net.layers.iter().enumerate() {
            let (below, above) = self.acts.split_at_mut(l + 1);
            let z = &mut above[0];
            matmul(
                z.view_mut(),
                false,
                below[l].view(),
                layer.weights.view(),
                1.0,
            );
            net.units[l].activate(z.view_mut(), layer.bias.view());
        }
        // Logistic outputs with cross-entropy, or linear ones with squared error:
        // δ = (x̂ − x) / batch either way.
        let squared =
            mean_squared_distance(self.acts[0].view(), self.acts[last + 1].view()) * batch as f64;
        Zip::from(&mut self.deltas[last])
            .and(&self.acts[last + 1])
            .and(&self.acts[0])
            .for_each(|d, &r, &x| *d = (r - x) / batch as f32);
        for l in (0..=last).rev() {
            matmul(
                self.grads[l].weights.view_mut(),
                false,
                self.acts[l].t(),
                self.deltas[l].view(),
                1.0,
            );
            self.grads[l].bias = self.deltas[l].sum_axis(Axis(0));
            if l == 0 {
                break;
            }
            let (lower, upper) = self.deltas.split_at_mut(l);
            let below = &mut lower[l - 1];
            matmul(
                below.view_mut(),
                false,
                upper[0].view(),
                net.layers[l].weights.t(),
                1.0,
            );
            if net.units[l - 1].is_binary() {
                Zip::from(below)
                    .and(&self.acts[l])
                    .for_each(|d, &a| *d *= a * (1.0 - a));
            }
        }
        squared
    }
}

/// Fine-tunes `net` to reconstruct `x` ([n, inputs]) by mini-batch gradient descent with
/// momentum. `base` is the pretrained model the network belongs to (for checkpoints).
pub fn train_autoencoder(
    net: &mut DeepAutoencoder,
    base: &Dbn,
    x: ArrayView2<f32>,
    validation: Option<ArrayView2<f32>>,
    cfg: &AutoencoderConfig,
    run: &mut FinetuneRun,
    rng: &mut EngineRng,
) -> Result<Vec<EpochMetrics>> {
    cfg.validate("finetune")?;
    let inputs = net.layers[0].weights.nrows();
    if x.ncols() != inputs || x.nrows() == 0 {
        return Err(EngineError::Shape(format!(
            "{} examples of {} values for an autoencoder of {inputs} inputs",
            x.nrows(),
            x.ncols()
        )));
    }
    let n = x.nrows();
    let batch = cfg.batch_size.min(n);
    let batches = n / batch;
    let zeros: Vec<Dense> = net
        .layers
        .iter()
        .map(|l| Dense {
            weights: Array2::zeros(l.weights.dim()),
            bias: Array1::zeros(l.bias.len()),
        })
        .collect();
    let state = match run.resume.take() {
        Some(state) => {
            state.check(n, cfg.epochs, &zeros)?;
            state
        }
        None => FinetuneState::fresh(n, zeros),
    };
    let (first_epoch, mut inc) = (state.next_epoch, state.increments);
    let mut order: Vec<usize> = state.order.iter().map(|&i| i as usize).collect();
    let mut ws = Workspace::new(net, batch);
    let mut history = Vec::with_capacity(cfg.epochs);
    for epoch in first_epoch..cfg.epochs {
        let started = Instant::now();
        shuffle(&mut order, rng);
        let mut squared = 0.0f64;
        for b in 0..batches {
            let rows = &order[b * batch..(b + 1) * batch];
            for (r, &i) in rows.iter().enumerate() {
                ws.acts[0].row_mut(r).assign(&x.row(i));
            }
            squared += ws.forward_backward(net);
            // inc = momentum·inc − ε(∇ + λW); W += inc.
            for ((layer, step), grad) in net.layers.iter_mut().zip(&mut inc).zip(&ws.grads) {
                layer.momentum_step(
                    step,
                    (&grad.weights, &grad.bias),
                    cfg.learning_rate,
                    cfg.momentum,
                    cfg.weight_decay,
                );
            }
            let progress = run.progress(
                epoch,
                cfg.epochs,
                b + 1,
                batches,
                (b + 1) * batch,
                n,
                started,
            );
            if run.observer.on_batch(&progress) == Control::Stop {
                return Err(EngineError::Cancelled);
            }
        }
        let seen = (batches * batch) as f64;
        let train = squared / seen;
        if !train.is_finite()
            || !net
                .layers
                .iter()
                .all(|l| l.weights.iter().all(|w| w.is_finite()))
        {
            return Err(EngineError::Diverged(format!(
                "the autoencoder's weights are no longer finite in epoch {}; lower the \
                 learning rate",
                epoch + 1
            )));
        }
        let seconds = started.elapsed().as_secs_f64();
        let metrics = EpochMetrics {
            phase: Phase::Finetune,
            layer: net.layers.len() - 1,
            epoch: epoch + 1,
            recon_error_train: Some(train),
            recon_error_validation: validation.map(|v| net.reconstruction_error(v)),
            free_energy_gap: None,
            validation_error: None,
            train_error: None,
            cross_entropy: None,
            validation_cross_entropy: None,
            log_prob_bound: None,
            momentum: cfg.momentum,
            seconds,
            examples_per_sec: seen / seconds.max(1e-9),
        };
        let progress = run.progress(epoch, cfg.epochs, batches, batches, n, n, started);
        history.push(metrics.clone());
        let mut stop = run.observer.on_epoch(&progress, &metrics) == Control::Stop;
        let state = FinetuneState {
            next_epoch: epoch + 1,
            order: order.iter().map(|&i| i as u32).collect(),
            increments: inc.clone(),
            chains: None,
        };
        let model = || base.clone().with_autoencoder(net.clone());
        stop |= run.checkpoint(model, state, &history, rng)? == Control::Stop;
        if stop {
            return Err(EngineError::Cancelled);
        }
    }
    Ok(history)
}
