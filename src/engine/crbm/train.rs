//! Learning a stack of conditional RBMs by contrastive divergence, one layer at a time
//! (Taylor, Hinton & Roweis 2006). For a frame v with past p and dynamic biases b̃, c̃:
//! ΔW = ε(<v h>_data − <v h>_recon), Δb = ε(<v> − <v̂>), Δc = ε(<h> − <ĥ>), and for the
//! conditioning weights ΔA = ε·pᵀ(v − v̂), ΔB = ε·pᵀ(h − ĥ): the past is clamped in both
//! phases, so its statistics differ only through the frame's. The reconstruction is the mean
//! (Gaussian visible units are reconstructed without noise, as in the paper's code). Layer
//! l+1 learns from the hidden probabilities that layer l gives each frame, as sequences of
//! their own that start `order` frames later.

use std::time::Instant;

use ndarray::{Array1, Array2, Axis, Zip};

use super::checkpoint::{CrbmState, TemporalCheckpoint};
use super::model::{gather_past, gather_rows, Conditioning, Crbm, Temporal};
use super::SequenceSpec;
use crate::engine::data::Dataset;
use crate::engine::dbn::{run_fingerprint, Checkpoint, Dbn, InputNorm, TrainOutcome};
use crate::engine::error::{EngineError, Result};
use crate::engine::math::{matmul, sample_bernoulli, update};
use crate::engine::observer::{
    examples_per_sec, job_fraction, Control, EpochMetrics, Observer, Phase, Progress,
};
use crate::engine::rbm::{is_permutation, shuffle, Rbm, RbmTrainConfig, Units, VisibleBiasInit};
use crate::engine::spec::{CheckedSpec, TrainingSpec};
use crate::engine::EngineRng;

/// Frames of one layer's visible units, cut into sequences of equal length.
pub struct Frames {
    /// [sequences · length, V]: sequence s is rows s·length .. (s+1)·length.
    pub x: Array2<f32>,
    pub length: usize,
}

impl Frames {
    /// Rows that have `order` frames of their own sequence before them: the training windows.
    pub fn targets(&self, order: usize) -> Vec<usize> {
        let sequences = self.x.nrows() / self.length.max(1);
        (0..sequences)
            .flat_map(|s| (order..self.length).map(move |t| s * self.length + t))
            .collect()
    }
}

/// Where one layer sits in the run, who watches, and what its checkpoints carry.
pub struct LayerProgress<'a> {
    pub layer: usize,
    pub layers: usize,
    pub fraction: (f64, f64),
    pub observer: &'a mut dyn Observer,
    /// Continue from this state instead of starting afresh.
    pub resume: Option<CrbmState>,
    /// The finished layers below and the metrics so far, for checkpoints.
    pub done: &'a [(Rbm, Conditioning)],
    pub history: &'a [EpochMetrics],
    /// Stamped on checkpoints: identifies the run's spec and data.
    pub fingerprint: u64,
}

/// Trains one conditional RBM on `frames` as `config` says; returns each epoch's metrics
/// (the training reconstruction error: squared error per frame of the CD reconstruction).
pub fn train_crbm(
    rbm: &mut Rbm,
    cond: &mut Conditioning,
    order: usize,
    frames: &Frames,
    config: &RbmTrainConfig,
    run: &mut LayerProgress,
    rng: &mut EngineRng,
) -> Result<Vec<EpochMetrics>> {
    let targets = frames.targets(order);
    if targets.is_empty() {
        return Err(EngineError::invalid(
            "sequence.length",
            "no frame has a full past to learn from",
        ));
    }
    let n = targets.len();
    let batch = config.batch_size.min(n);
    let batches = n.div_ceil(batch);
    let (mut inc, mut windows, first_epoch) = match run.resume.take() {
        Some(state) => {
            check_state(&state, rbm, cond, n, config.epochs)?;
            let windows = state.order.iter().map(|&w| w as usize).collect();
            let first = state.next_epoch;
            let inc = CrbmState {
                order: Vec::new(),
                ..state
            };
            (inc, windows, first)
        }
        None => (
            CrbmState {
                next_epoch: 0,
                w_inc: Array2::zeros(rbm.weights.dim()),
                a_inc: Array2::zeros(cond.past_visible.dim()),
                b_inc: Array2::zeros(cond.past_hidden.dim()),
                vb_inc: Array1::zeros(rbm.n_visible()),
                hb_inc: Array1::zeros(rbm.n_hidden()),
                order: Vec::new(),
            },
            (0..n).collect::<Vec<usize>>(),
            0,
        ),
    };
    let mut history = Vec::with_capacity(config.epochs);
    for epoch in first_epoch..config.epochs {
        let started = Instant::now();
        let momentum = config.momentum(epoch);
        let epoch_config = config.at_epoch(epoch);
        shuffle(&mut windows, rng);
        let mut error = 0.0f64;
        for (b, chunk) in windows.chunks(batch).enumerate() {
            let rows: Vec<usize> = chunk.iter().map(|&w| targets[w]).collect();
            error += cd_step(
                rbm,
                cond,
                order,
                frames,
                &rows,
                &epoch_config,
                momentum,
                &mut inc,
                rng,
            );
            let done = b * batch + chunk.len();
            let progress = Progress {
                phase: Phase::Pretrain,
                layer: run.layer,
                layers: run.layers,
                epoch: epoch + 1,
                epochs: config.epochs,
                batch: b + 1,
                batches,
                fraction: job_fraction(run.fraction, epoch, config.epochs, done, n),
                examples_per_sec: examples_per_sec(done, started),
            };
            if run.observer.on_batch(&progress) == Control::Stop {
                return Err(EngineError::Cancelled);
            }
        }
        let finite = rbm.is_finite()
            && cond
                .past_visible
                .iter()
                .chain(&cond.past_hidden)
                .all(|x| x.is_finite());
        if !finite || !error.is_finite() {
            return Err(EngineError::Diverged(format!(
                "conditional layer {} at epoch {}: lower the learning rate",
                run.layer,
                epoch + 1
            )));
        }
        let metrics = EpochMetrics {
            phase: Phase::Pretrain,
            layer: run.layer,
            epoch: epoch + 1,
            recon_error_train: Some(error / n as f64),
            recon_error_validation: None,
            free_energy_gap: None,
            validation_error: None,
            train_error: None,
            cross_entropy: None,
            validation_cross_entropy: None,
            log_prob_bound: None,
            momentum,
            seconds: started.elapsed().as_secs_f64(),
            examples_per_sec: examples_per_sec(n, started),
        };
        let progress = Progress {
            phase: Phase::Pretrain,
            layer: run.layer,
            layers: run.layers,
            epoch: epoch + 1,
            epochs: config.epochs,
            batch: batches,
            batches,
            fraction: job_fraction(run.fraction, epoch + 1, config.epochs, 0, n),
            examples_per_sec: metrics.examples_per_sec,
        };
        let mut stop = run.observer.on_epoch(&progress, &metrics) == Control::Stop;
        history.push(metrics);
        if run.observer.wants_checkpoints() {
            let checkpoint = Checkpoint::Temporal(TemporalCheckpoint {
                done: run.done.to_vec(),
                layer: run.layer,
                rbm: rbm.clone(),
                cond: cond.clone(),
                state: CrbmState {
                    next_epoch: epoch + 1,
                    order: windows.iter().map(|&w| w as u32).collect(),
                    ..inc.clone()
                },
                history: run.history.iter().chain(&history).cloned().collect(),
                rng: rng.clone(),
                fingerprint: run.fingerprint,
            });
            stop |= run.observer.on_checkpoint(&checkpoint) == Control::Stop;
        }
        if stop {
            return Err(EngineError::Cancelled);
        }
    }
    Ok(history)
}

/// Checks a resumed learning state against the layer, its `n` windows and its epochs.
fn check_state(
    state: &CrbmState,
    rbm: &Rbm,
    cond: &Conditioning,
    n: usize,
    epochs: usize,
) -> Result<()> {
    let bad = |m: &str| Err(EngineError::Model(format!("checkpoint: {m}")));
    if state.w_inc.dim() != rbm.weights.dim()
        || state.a_inc.dim() != cond.past_visible.dim()
        || state.b_inc.dim() != cond.past_hidden.dim()
        || state.vb_inc.len() != rbm.n_visible()
        || state.hb_inc.len() != rbm.n_hidden()
    {
        return bad("increments do not fit the layer");
    }
    if state.next_epoch > epochs {
        return bad("its epoch is past the layer's epochs");
    }
    if !is_permutation(&state.order, n) {
        return bad("the window order does not fit the training data");
    }
    Ok(())
}

/// One CD-k step on the frames at `targets`; returns the summed squared reconstruction error.
#[allow(clippy::too_many_arguments)]
fn cd_step(
    rbm: &mut Rbm,
    cond: &mut Conditioning,
    order: usize,
    frames: &Frames,
    targets: &[usize],
    config: &RbmTrainConfig,
    momentum: f32,
    inc: &mut CrbmState,
    rng: &mut EngineRng,
) -> f64 {
    let x = frames.x.view();
    let v0 = gather_rows(x, targets);
    let past = gather_past(x, targets, order);
    let crbm = Crbm { rbm, cond };
    let biases = crbm.biases(past.view());
    let h0 = crbm.hidden_means(v0.view(), &biases);
    let mut h = Array2::zeros(h0.dim());
    sample_bernoulli(rng, h0.view(), h.view_mut());
    let mut v1 = crbm.visible_means(h.view(), &biases);
    let mut h1 = crbm.hidden_means(v1.view(), &biases);
    for _ in 1..config.cd_k {
        sample_bernoulli(rng, h1.view(), h.view_mut());
        v1 = crbm.visible_means(h.view(), &biases);
        h1 = crbm.hidden_means(v1.view(), &biases);
    }
    let dv = &v0 - &v1;
    let dh = &h0 - &h1;
    let error: f64 = dv.iter().map(|&d| (d as f64) * (d as f64)).sum();

    let rate = config.learning_rate / targets.len() as f32;
    let decay = config.learning_rate * config.weight_decay;
    prepare(&rbm.weights, &mut inc.w_inc, momentum, decay);
    matmul(inc.w_inc.view_mut(), true, v0.t(), h0.view(), rate);
    matmul(inc.w_inc.view_mut(), true, v1.t(), h1.view(), -rate);
    prepare(&cond.past_visible, &mut inc.a_inc, momentum, decay);
    matmul(inc.a_inc.view_mut(), true, past.t(), dv.view(), rate);
    prepare(&cond.past_hidden, &mut inc.b_inc, momentum, decay);
    matmul(inc.b_inc.view_mut(), true, past.t(), dh.view(), rate);
    let bias_rate = config.bias_learning_rate / targets.len() as f32;
    let step_bias = |inc: &mut Array1<f32>, d: &Array2<f32>| {
        let sum = d.sum_axis(Axis(0));
        Zip::from(inc)
            .and(&sum)
            .for_each(|i, &s| *i = momentum * *i + bias_rate * s);
    };
    step_bias(&mut inc.vb_inc, &dv);
    step_bias(&mut inc.hb_inc, &dh);
    rbm.weights += &inc.w_inc;
    cond.past_visible += &inc.a_inc;
    cond.past_hidden += &inc.b_inc;
    rbm.visible_bias += &inc.vb_inc;
    rbm.hidden_bias += &inc.hb_inc;
    error
}

/// `inc = momentum·inc − decay·w`: the part of a batch's increment that does not depend on
/// its statistics, formed before the products add those.
fn prepare(w: &Array2<f32>, inc: &mut Array2<f32>, momentum: f32, decay: f32) {
    update::prepare(
        w.as_slice().expect("parameters are in standard layout"),
        inc.as_slice_mut()
            .expect("increments are in standard layout"),
        momentum,
        decay,
    );
}

/// The hidden probabilities of every frame of `frames` that has a full past, as the frames of
/// the next layer: sequences `order` frames shorter.
pub fn next_frames(crbm: Crbm, order: usize, frames: &Frames) -> Frames {
    let targets = frames.targets(order);
    let mut out = Array2::zeros((targets.len(), crbm.n_hidden()));
    for (chunk, mut rows) in targets
        .chunks(1000)
        .zip(out.axis_chunks_iter_mut(Axis(0), 1000))
    {
        let x = frames.x.view();
        let biases = crbm.biases(gather_past(x, chunk, order).view());
        rows.assign(&crbm.hidden_means(gather_rows(x, chunk).view(), &biases));
    }
    Frames {
        x: out,
        length: frames.length - order,
    }
}

/// Multiply-adds of one CD-k step on one window of a layer: 2k + 3 products with W and two
/// each with A and B (the dynamic biases and their statistics).
fn window_work(order: usize, v: usize, h: usize, k: f64) -> f64 {
    (2.0 * k + 3.0) * (v * h) as f64 + (2 * order * v * (v + h)) as f64
}

/// Learns the stack of conditional RBMs that `spec` (with its `sequence` section) describes
/// from `data`: every layer greedily, on the layer below's hidden probabilities. Or goes on
/// from `checkpoint`, which must come from the same spec and data and carries its own
/// generator, to the model the uninterrupted run makes.
pub fn train_temporal(
    spec: &CheckedSpec,
    data: &Dataset,
    observer: &mut dyn Observer,
    rng: &mut EngineRng,
    checkpoint: Option<TemporalCheckpoint>,
) -> Result<TrainOutcome> {
    let started = Instant::now();
    spec.fits(data)?;
    let seq: &SequenceSpec = spec.sequence.as_ref().ok_or_else(|| {
        EngineError::invalid("sequence", "a conditional model needs the sequence section")
    })?;
    let (train, _) = spec.split(data);
    let fingerprint = if checkpoint.is_some() || observer.wants_checkpoints() {
        let json = serde_json::to_string(&spec.pretraining())
            .map_err(|e| EngineError::invalid("spec", e.to_string()))?;
        run_fingerprint(&json, &train, 0)
    } else {
        0
    };
    let mut resumed_rng;
    let (rng, mut done, mut history, mut current) = match checkpoint {
        Some(cp) => {
            if cp.fingerprint != fingerprint
                || cp.layer >= spec.architecture.hidden.len()
                || cp.done.len() != cp.layer
            {
                return Err(EngineError::Model(
                    "checkpoint: it was taken with another spec or other training data".into(),
                ));
            }
            resumed_rng = cp.rng;
            (
                &mut resumed_rng,
                cp.done,
                cp.history,
                Some((cp.rbm, cp.cond, cp.state)),
            )
        }
        None => (rng, Vec::new(), Vec::new(), None),
    };
    let made = seq.frames(&train)?.images;
    let sequences = made.nrows() / seq.length;
    let order = seq.order;
    let hidden = &spec.architecture.hidden;
    let norm = match spec.architecture.visible_units {
        Units::Gaussian => Some(InputNorm::fit(made.view())?),
        Units::Binary => None,
    };
    let mut frames = Frames {
        x: match &norm {
            Some(norm) => norm.apply(made.view()),
            None => made,
        },
        length: seq.length,
    };
    // Each layer's share of the run by its arithmetic.
    let work: Vec<f64> = (0..hidden.len())
        .map(|i| {
            let c = spec.layer_config(i);
            let v = if i == 0 {
                frames.x.ncols()
            } else {
                hidden[i - 1]
            };
            let windows = sequences * (seq.length - (i + 1) * order);
            c.epochs as f64 * windows as f64 * window_work(order, v, hidden[i], c.cd_k_mean())
        })
        .collect();
    let total: f64 = work.iter().sum::<f64>().max(1.0);
    // Layers finished before a checkpoint pass their frames up as they did.
    for (i, (rbm, cond)) in done.iter_mut().enumerate() {
        fit_layer(rbm, cond, spec, i, frames.x.ncols())?;
        frames = next_frames(Crbm { rbm, cond }, order, &frames);
    }
    let first = done.len();
    let mut finished: f64 = work[..first].iter().sum();
    for (i, &h) in hidden.iter().enumerate().skip(first) {
        let config = spec.layer_config(i);
        let v = frames.x.ncols();
        let (mut rbm, mut cond, resume) = match current.take() {
            Some((mut rbm, cond, state)) => {
                fit_layer(&mut rbm, &cond, spec, i, v)?;
                (rbm, cond, Some(state))
            }
            None => {
                let (v_units, _) = spec.layer_units(i);
                let mut rbm =
                    Rbm::new(v, h, 0, config.init_std, rng)?.with_units(v_units, Units::Binary)?;
                if v_units.is_binary() && config.visible_bias_init == VisibleBiasInit::Data {
                    rbm.init_visible_bias_from_data(frames.x.view());
                }
                let cond = Conditioning::random(order, v, h, config.init_std, rng);
                (rbm, cond, None)
            }
        };
        let new_epochs = {
            let mut run = LayerProgress {
                layer: i,
                layers: hidden.len(),
                fraction: (finished / total, (finished + work[i]) / total),
                observer: &mut *observer,
                resume,
                done: &done,
                history: &history,
                fingerprint,
            };
            train_crbm(&mut rbm, &mut cond, order, &frames, &config, &mut run, rng)?
        };
        history.extend(new_epochs);
        finished += work[i];
        if i + 1 < hidden.len() {
            frames = next_frames(
                Crbm {
                    rbm: &rbm,
                    cond: &cond,
                },
                order,
                &frames,
            );
        }
        done.push((rbm, cond));
    }
    let (layers, conds): (Vec<Rbm>, Vec<Conditioning>) = done.into_iter().unzip();
    let mut dbn = Dbn::new(layers)?;
    if let Some(norm) = norm {
        dbn = dbn.with_input_norm(norm)?;
    }
    let dbn = dbn.with_temporal(Temporal {
        order,
        layers: conds,
    })?;
    Ok(TrainOutcome {
        dbn,
        history,
        // Sequences learned from: one per image when images move.
        train_examples: sequences,
        validation_examples: 0,
        validation_error: None,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Fits a layer read from a checkpoint to layer `i` of the spec on `visible` inputs: its
/// size, its conditioning weights' shapes, and the unit kinds (checkpoints do not record them).
fn fit_layer(
    rbm: &mut Rbm,
    cond: &Conditioning,
    spec: &TrainingSpec,
    i: usize,
    visible: usize,
) -> Result<()> {
    if rbm.weights.dim() != (visible, spec.architecture.hidden[i]) {
        return Err(EngineError::Model(format!(
            "checkpoint: layer {i} does not match the spec"
        )));
    }
    let order = spec.sequence.as_ref().map_or(0, |s| s.order);
    cond.check_order(order, rbm, i)?;
    let (v_units, _) = spec.layer_units(i);
    (rbm.visible_units, rbm.hidden_units) = (v_units, Units::Binary);
    Ok(())
}
