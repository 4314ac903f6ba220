//! The wake-sleep algorithm (Hinton, Dayan, Frey & Neal 1995; the seed's Box 1) for a
//! multi-layer logistic belief net with separate recognition and generative weights.
//!
//! The generative model is a sigmoid belief net: independent top units with prior
//! p(h_L = 1) = σ(g_L), and each layer below drawn from the one above,
//! p(h_l = 1 | h_{l+1}) = σ(g_l + G_l h_{l+1}). The recognition weights give the
//! approximate posterior q(h_{l+1} = 1 | h_l) = σ(r_{l+1} + h_l R_l).
//!
//! Wake phase: drive the recognition weights bottom-up from data with stochastic binary
//! states, and teach the generative weights to reconstruct each layer from the one above:
//! ΔG = ε (h_l − p_l)ᵀ h_{l+1}. Sleep phase: dream a fantasy top-down from the generative
//! model, and teach the recognition weights to recover the causes of the dream:
//! ΔR = ε h_lᵀ (h_{l+1} − q_{l+1}).
//!
//! Quality is measured by the variational lower bound on ln p(v), which for a belief net
//! with a factorial top needs no partition function:
//! ln p(v) ≥ E_q[ln p(v, h) − ln q(h | v)], estimated by sampling h ~ q.

use std::time::Instant;

use ndarray::{Array1, Array2, ArrayView2, Axis, Zip};
use serde::{Deserialize, Serialize};

use super::net::Dense;
use super::run::{FinetuneRun, FinetuneState};
use crate::engine::dbn::Dbn;
use crate::engine::error::{EngineError, Result};
use crate::engine::math::{matmul, sample_bernoulli, sigmoid_bias_rows, softplus64};
use crate::engine::observer::{Control, EpochMetrics, Phase};
use crate::engine::rbm::shuffle;
use crate::engine::EngineRng;

/// Rows of the monitoring set whose bound is measured after every epoch.
const MONITOR_ROWS: usize = 1000;
/// Samples of h ~ q(h | v) per image when the bound is measured.
pub const BOUND_SAMPLES: usize = 10;

/// Where wake-sleep starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum WakeSleepInit {
    /// From the greedily learned stack of RBMs: both recognition and generative weights are
    /// the RBMs' weights (the seed: fast).
    #[default]
    Pretrained,
    /// From small random weights and zero biases, with no pretraining (the seed: slow).
    Random,
}

/// How to learn by wake-sleep. Every field has a default; unknown fields are rejected.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WakeSleepConfig {
    /// Passes over the training data (default 10).
    pub epochs: usize,
    /// Examples (and dreams) per mini-batch (default 100).
    pub batch_size: usize,
    /// Step size of every weight and bias (default 0.01).
    pub learning_rate: f32,
    /// Start from the pretrained stack (default) or from random weights.
    pub init: WakeSleepInit,
}

impl Default for WakeSleepConfig {
    fn default() -> Self {
        WakeSleepConfig {
            epochs: 10,
            batch_size: 100,
            learning_rate: 0.01,
            init: WakeSleepInit::Pretrained,
        }
    }
}

impl WakeSleepConfig {
    pub fn validate(&self, prefix: &str) -> Result<()> {
        super::config::check_run(prefix, self.epochs, self.batch_size, self.learning_rate)
    }
}

/// A sigmoid belief net with its recognition model. `recognition[l]` maps layer l to l + 1
/// (weights [s_l, s_{l+1}], bias [s_{l+1}]); `generative[l]` maps layer l + 1 to l
/// (weights [s_{l+1}, s_l], bias [s_l]); `top_bias` is the top layer's prior.
#[derive(Debug, Clone, PartialEq)]
pub struct BeliefNet {
    pub recognition: Vec<Dense>,
    pub generative: Vec<Dense>,
    pub top_bias: Array1<f32>,
}

impl BeliefNet {
    /// Checks that the layers chain and mirror each other.
    pub fn new(
        recognition: Vec<Dense>,
        generative: Vec<Dense>,
        top_bias: Array1<f32>,
    ) -> Result<Self> {
        let bad = |m: &str| Err(EngineError::Model(format!("belief net: {m}")));
        if recognition.is_empty() || recognition.len() != generative.len() {
            return bad("needs as many generative as recognition layers, at least one");
        }
        for (l, (r, g)) in recognition.iter().zip(&generative).enumerate() {
            let (below, above) = r.weights.dim();
            if r.bias.len() != above || g.weights.dim() != (above, below) || g.bias.len() != below {
                return bad("recognition and generative layers do not mirror each other");
            }
            if l > 0 && recognition[l - 1].weights.ncols() != below {
                return bad("the layers do not chain");
            }
        }
        if recognition.last().map(|r| r.weights.ncols()) != Some(top_bias.len()) {
            return bad("the top prior does not match the top layer");
        }
        let finite = recognition
            .iter()
            .chain(&generative)
            .flat_map(|d| d.weights.iter().chain(d.bias.iter()))
            .chain(top_bias.iter())
            .all(|x| x.is_finite());
        if !finite {
            return bad("non-finite values");
        }
        Ok(BeliefNet {
            recognition,
            generative,
            top_bias,
        })
    }

    /// Recognition and generative weights both from the DBN's RBMs (W and c going up, Wᵀ and
    /// b coming down), and the top prior fitted to the top layer's mean activity on `data`.
    pub fn from_dbn(dbn: &Dbn, data: ArrayView2<f32>) -> Result<Self> {
        if dbn.label_classes() > 0 {
            return Err(EngineError::invalid(
                "finetune",
                "wake-sleep needs a net without label units",
            ));
        }
        let recognition: Vec<Dense> = dbn
            .layers()
            .iter()
            .map(|r| Dense {
                weights: r.weights.clone(),
                bias: r.hidden_bias.clone(),
            })
            .collect();
        let generative: Vec<Dense> = dbn
            .layers()
            .iter()
            .map(|r| Dense {
                weights: r.weights.t().as_standard_layout().into_owned(),
                bias: r.visible_bias.clone(),
            })
            .collect();
        let mut net = BeliefNet::new(recognition, generative, Array1::zeros(dbn.top().n_hidden()))?;
        let rows = data.slice(ndarray::s![..data.nrows().min(10_000), ..]);
        let top = net.up_probs(rows).pop().expect("at least one layer");
        if let Some(mean) = top.mean_axis(Axis(0)) {
            net.top_bias = mean.mapv(|p| {
                let p = p.clamp(1e-3, 1.0 - 1e-3);
                (p / (1.0 - p)).ln()
            });
        }
        Ok(net)
    }

    pub fn n_inputs(&self) -> usize {
        self.recognition[0].weights.nrows()
    }

    pub fn code_size(&self) -> usize {
        self.top_bias.len()
    }

    /// Mean-field recognition: q(h_l = 1 | ·) for every layer above the data.
    pub fn up_probs(&self, x: ArrayView2<f32>) -> Vec<Array2<f32>> {
        let mut out: Vec<Array2<f32>> = Vec::with_capacity(self.recognition.len());
        for r in &self.recognition {
            let below = out.last().map_or(x, |a| a.view());
            out.push(affine_sigmoid(below, r));
        }
        out
    }

    /// Mean-field generation from top-layer states down to input probabilities.
    pub fn down_probs(&self, top: ArrayView2<f32>) -> Array2<f32> {
        let mut act = top.to_owned();
        for g in self.generative.iter().rev() {
            act = affine_sigmoid(act.view(), g);
        }
        act
    }

    /// `count` fantasies by ancestral sampling: top units from their prior, each layer
    /// sampled from the one above; the inputs are returned as probabilities.
    pub fn sample<R: rand::Rng + ?Sized>(&self, count: usize, rng: &mut R) -> Array2<f32> {
        self.dream(count, rng).swap_remove(0)
    }

    /// A batch of dreams: element 0 holds p(v | h_1) of the sampled first hidden layer, and
    /// elements 1..=L the sampled states of the layers above.
    fn dream<R: rand::Rng + ?Sized>(&self, count: usize, rng: &mut R) -> Vec<Array2<f32>> {
        let layers = self.recognition.len();
        let mut states: Vec<Array2<f32>> = vec![Array2::zeros((0, 0)); layers + 1];
        let prior = Array2::from_shape_fn((count, self.top_bias.len()), |(_, j)| {
            1.0 / (1.0 + (-self.top_bias[j]).exp())
        });
        let mut top = Array2::zeros(prior.dim());
        sample_bernoulli(rng, prior.view(), top.view_mut());
        states[layers] = top;
        for l in (0..layers).rev() {
            let p = affine_sigmoid(states[l + 1].view(), &self.generative[l]);
            if l == 0 {
                states[0] = p;
            } else {
                let mut s = Array2::zeros(p.dim());
                sample_bernoulli(rng, p.view(), s.view_mut());
                states[l] = s;
            }
        }
        states
    }

    /// The mean over the rows of `v` (binary vectors) of the variational bound
    /// E_q[ln p(v, h) − ln q(h | v)], with `samples` draws of h ~ q(h | v) per row, in nats.
    pub fn log_prob_bound<R: rand::Rng + ?Sized>(
        &self,
        v: ArrayView2<f32>,
        samples: usize,
        rng: &mut R,
    ) -> Result<f64> {
        if v.ncols() != self.n_inputs() || v.nrows() == 0 || samples == 0 {
            return Err(EngineError::Shape(format!(
                "{} rows of {} values for a net of {} inputs",
                v.nrows(),
                v.ncols(),
                self.n_inputs()
            )));
        }
        if v.iter().any(|&x| x != 0.0 && x != 1.0) {
            return Err(EngineError::invalid(
                "input",
                "the bound is for binary vectors",
            ));
        }
        let mut total = 0.0f64;
        for _ in 0..samples {
            let states = self.recognise(v, rng);
            // ln q(h | v): each sampled layer given the one below.
            for (l, r) in self.recognition.iter().enumerate() {
                total -= log_bernoulli(states[l + 1].view(), logits(states[l].view(), r).view());
            }
            // ln p(v, h): each layer given the one above, and the top prior.
            for (l, g) in self.generative.iter().enumerate() {
                total += log_bernoulli(states[l].view(), logits(states[l + 1].view(), g).view());
            }
            let top = states.last().expect("layers");
            let prior = Array2::from_shape_fn(top.dim(), |(_, j)| self.top_bias[j]);
            total += log_bernoulli(top.view(), prior.view());
        }
        Ok(total / (samples * v.nrows()) as f64)
    }

    /// The data and sampled states of every layer above it, bottom-up through q.
    fn recognise<R: rand::Rng + ?Sized>(
        &self,
        v: ArrayView2<f32>,
        rng: &mut R,
    ) -> Vec<Array2<f32>> {
        let mut states = vec![v.to_owned()];
        for r in &self.recognition {
            let q = affine_sigmoid(states.last().expect("data").view(), r);
            let mut s = Array2::zeros(q.dim());
            sample_bernoulli(rng, q.view(), s.view_mut());
            states.push(s);
        }
        states
    }

    /// One wake phase on the batch `v` and one sleep phase of as many dreams, with step
    /// size `lr`.
    fn step<R: rand::Rng + ?Sized>(&mut self, v: ArrayView2<f32>, lr: f32, rng: &mut R) {
        let b = v.nrows();
        let scale = lr / b as f32;
        // Wake: generative weights learn to reconstruct each layer from the one above.
        let states = self.recognise(v, rng);
        for (l, g) in self.generative.iter_mut().enumerate() {
            let p = affine_sigmoid(states[l + 1].view(), g);
            let err = &states[l] - &p;
            matmul(
                g.weights.view_mut(),
                true,
                states[l + 1].t(),
                err.view(),
                scale,
            );
            g.bias.scaled_add(scale, &err.sum_axis(Axis(0)));
        }
        let top = states.last().expect("layers");
        let prior = self.top_bias.mapv(|a| 1.0 / (1.0 + (-a).exp()));
        let mean = top.sum_axis(Axis(0));
        Zip::from(&mut self.top_bias)
            .and(&mean)
            .and(&prior)
            .for_each(|t, &m, &p| *t += scale * (m - b as f32 * p));
        // Sleep: recognition weights learn to recover the causes of a dream.
        let mut dream = self.dream(b, rng);
        let mut v_dream = Array2::zeros(dream[0].dim());
        sample_bernoulli(rng, dream[0].view(), v_dream.view_mut());
        dream[0] = v_dream;
        for (l, r) in self.recognition.iter_mut().enumerate() {
            let q = affine_sigmoid(dream[l].view(), r);
            let err = &dream[l + 1] - &q;
            matmul(r.weights.view_mut(), true, dream[l].t(), err.view(), scale);
            r.bias.scaled_add(scale, &err.sum_axis(Axis(0)));
        }
    }

    fn is_finite(&self) -> bool {
        self.recognition
            .iter()
            .chain(&self.generative)
            .all(|d| d.weights.iter().chain(d.bias.iter()).all(|x| x.is_finite()))
            && self.top_bias.iter().all(|x| x.is_finite())
    }
}

/// x W + b, before the logistic. x: [batch, in] → [batch, out].
fn logits(x: ArrayView2<f32>, layer: &Dense) -> Array2<f32> {
    let mut z = Array2::zeros((x.nrows(), layer.weights.ncols()));
    matmul(z.view_mut(), false, x, layer.weights.view(), 1.0);
    z += &layer.bias;
    z
}

/// σ(x W + b).
fn affine_sigmoid(x: ArrayView2<f32>, layer: &Dense) -> Array2<f32> {
    let mut z = Array2::zeros((x.nrows(), layer.weights.ncols()));
    matmul(z.view_mut(), false, x, layer.weights.view(), 1.0);
    sigmoid_bias_rows(z.view_mut(), layer.bias.view());
    z
}

/// Σ over all elements of ln Bernoulli(s; σ(a)) = s·a − ln(1 + e^a), in f64.
fn log_bernoulli(states: ArrayView2<f32>, logits: ArrayView2<f32>) -> f64 {
    states
        .iter()
        .zip(logits.iter())
        .map(|(&s, &a)| s as f64 * a as f64 - softplus64(a as f64))
        .sum()
}

/// Learns `net` on `x` ([n, inputs], intensities in [0, 1] sampled to binary states each
/// time a batch is used) by wake-sleep, measuring the bound on `monitor` (binary rows)
/// after every epoch. `base` is the model the net belongs to (for checkpoints).
#[allow(clippy::too_many_arguments)]
pub fn train_wake_sleep(
    net: &mut BeliefNet,
    base: &Dbn,
    x: ArrayView2<f32>,
    monitor: ArrayView2<f32>,
    cfg: &WakeSleepConfig,
    run: &mut FinetuneRun,
    rng: &mut EngineRng,
) -> Result<Vec<EpochMetrics>> {
    cfg.validate("finetune")?;
    if x.ncols() != net.n_inputs() || x.nrows() == 0 {
        return Err(EngineError::Shape(format!(
            "{} examples of {} values for a net of {} inputs",
            x.nrows(),
            x.ncols(),
            net.n_inputs()
        )));
    }
    let n = x.nrows();
    let batch = cfg.batch_size.min(n);
    let batches = n / batch;
    let state = match run.resume.take() {
        Some(state) => {
            state.check(n, cfg.epochs, &[])?;
            state
        }
        None => FinetuneState::fresh(n, Vec::new()),
    };
    let first_epoch = state.next_epoch;
    let mut order: Vec<usize> = state.order.iter().map(|&i| i as usize).collect();
    let monitor = monitor.slice(ndarray::s![..monitor.nrows().min(MONITOR_ROWS), ..]);
    let mut probs = Array2::<f32>::zeros((batch, x.ncols()));
    let mut v = Array2::<f32>::zeros((batch, x.ncols()));
    let mut history = Vec::with_capacity(cfg.epochs);
    for epoch in first_epoch..cfg.epochs {
        let started = Instant::now();
        shuffle(&mut order, rng);
        for b in 0..batches {
            for (r, &i) in order[b * batch..(b + 1) * batch].iter().enumerate() {
                probs.row_mut(r).assign(&x.row(i));
            }
            sample_bernoulli(rng, probs.view(), v.view_mut());
            net.step(v.view(), cfg.learning_rate, rng);
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
        if !net.is_finite() {
            return Err(EngineError::Diverged(format!(
                "wake-sleep weights are no longer finite in epoch {}; lower the learning rate",
                epoch + 1
            )));
        }
        let seconds = started.elapsed().as_secs_f64();
        let bound = if monitor.nrows() > 0 {
            Some(net.log_prob_bound(monitor, 1, rng)?)
        } else {
            None
        };
        let metrics = EpochMetrics {
            phase: Phase::Finetune,
            layer: net.recognition.len() - 1,
            epoch: epoch + 1,
            recon_error_train: None,
            recon_error_validation: None,
            free_energy_gap: None,
            validation_error: None,
            train_error: None,
            cross_entropy: None,
            validation_cross_entropy: None,
            log_prob_bound: bound,
            momentum: 0.0,
            seconds,
            examples_per_sec: (batches * batch) as f64 / seconds.max(1e-9),
        };
        let progress = run.progress(epoch, cfg.epochs, batches, batches, n, n, started);
        history.push(metrics.clone());
        let mut stop = run.observer.on_epoch(&progress, &metrics) == Control::Stop;
        let state = FinetuneState {
            next_epoch: epoch + 1,
            order: order.iter().map(|&i| i as u32).collect(),
            increments: Vec::new(),
            chains: None,
        };
        let model = || base.clone().with_belief_net(net.clone());
        stop |= run.checkpoint(model, state, &history, rng)? == Control::Stop;
        if stop {
            return Err(EngineError::Cancelled);
        }
    }
    Ok(history)
}
