//! Learning an RBM by contrastive divergence (seed Eq. 4):
//! Δw_ij = ε(<v_i h_j>_data − <v_i h_j>_recon), with momentum and L2 weight decay.
//!
//! Hinton's conventions (`rbm.m`): the positive statistics use p(h | v0); sampled hidden states
//! drive the reconstruction; the negative statistics use the reconstruction's probabilities
//! and p(h | v1). With CD-k the intermediate visible states are sampled. With persistent CD the
//! negative phase continues the fantasy particles of the previous mini-batch instead of
//! starting at the data.
//!
//! All buffers are allocated once per layer; a mini-batch step allocates only the small work
//! lists of the sparse products.

use std::time::Instant;

use ndarray::{s, Array1, Array2, ArrayView2, Axis, Zip};
use rand::Rng;

use super::model::squared_distance;
use super::{LayerMethod, LayerState, Rbm, RbmTrainConfig, VisibleBiasInit};
use crate::engine::dbn::{Checkpoint, GreedyCheckpoint};
use crate::engine::error::{EngineError, Result};
use crate::engine::math::product::{looks_sparse, sparse_batches_pay_off};
use crate::engine::math::{sample_bernoulli, update, xt_times_p_add, SparseRows};
use crate::engine::observer::{
    examples_per_sec, job_fraction, Control, EpochMetrics, Observer, Phase, Progress,
};
use crate::engine::EngineRng;

/// Where one layer's training sits in a larger run, and who watches it.
pub struct LayerRun<'a> {
    /// Continue from this state instead of starting afresh.
    pub resume: Option<LayerState>,
    /// The layers below, already trained, and the metrics so far (for checkpoints).
    pub done: &'a [Rbm],
    pub history: &'a [EpochMetrics],
    /// Stamped on checkpoints: identifies the run's spec and data.
    pub fingerprint: u64,
    pub phase: Phase,
    pub layer: usize,
    pub layers: usize,
    /// The share of the whole run this layer covers: [start, end) within 0..1.
    pub fraction: (f64, f64),
    /// Held-out inputs of this layer, for monitoring (a few thousand rows are plenty).
    pub validation: Option<ArrayView2<'a, f32>>,
    pub observer: &'a mut dyn Observer,
}

/// Rows of held-out and training data used for the per-epoch monitors.
const MONITOR_ROWS: usize = 2000;

/// Trains `rbm` on `data` ([n, V]) as `config` says, reporting to `run.observer`.
/// Returns the metrics of every epoch.
///
/// The generator is the engine's concrete one so that checkpoints can record its state.
pub fn train_rbm(
    rbm: &mut Rbm,
    data: ArrayView2<f32>,
    config: &RbmTrainConfig,
    run: &mut LayerRun,
    rng: &mut EngineRng,
) -> Result<Vec<EpochMetrics>> {
    config.validate("pretrain")?;
    rbm.check_visible(&data)?;
    // The fused update walks the weights as one slice: make sure they are row-major.
    if !rbm.weights.is_standard_layout() {
        rbm.weights = rbm.weights.as_standard_layout().into_owned();
    }
    if data.nrows() == 0 {
        return Err(EngineError::invalid("dataset", "no training examples"));
    }
    let resume = run.resume.take();
    if resume.is_none() && config.visible_bias_init == VisibleBiasInit::Data {
        rbm.init_visible_bias_from_data(data);
    }
    let mut cd = CdState::new(rbm, config.batch_size.min(data.nrows()), config.persistent);
    // Mostly-zero data (MNIST pixels) is listed as sparse rows once, so that the two products
    // with v0 gather weights for its non-zeros only, where that is faster on this CPU.
    cd.sparse_data =
        (config.method == LayerMethod::Cd && looks_sparse(&data) && sparse_batches_pay_off())
            .then(|| SparseRows::from_dense(data, 1.0));
    let n = data.nrows();
    let (mut order, first_epoch) = match resume {
        Some(state) => {
            state.check(rbm, n, cd.batch, config.persistent)?;
            if state.next_epoch > config.epochs {
                return Err(EngineError::Model(format!(
                    "checkpoint: epoch {} is past this layer's {} epochs",
                    state.next_epoch, config.epochs
                )));
            }
            // The kernels walk these as row-major slices.
            cd.w_inc = state.w_inc.as_standard_layout().into_owned();
            cd.vb_inc = state.vb_inc;
            cd.hb_inc = state.hb_inc;
            cd.chains = state.chains.map(|c| c.as_standard_layout().into_owned());
            cd.l_inc = state.l_inc;
            let order = state.order.iter().map(|&i| i as usize).collect();
            (order, state.next_epoch)
        }
        None => {
            if let Some(chains) = cd.chains.as_mut() {
                // Fantasy particles start at (binarised) training examples.
                let rows = data.slice(s![..chains.nrows(), ..]);
                if rbm.visible_units.is_binary() {
                    sample_bernoulli(rng, rows, chains.view_mut());
                } else {
                    chains.assign(&rows);
                }
            }
            update::prepare(
                rbm.weights
                    .as_slice()
                    .expect("owned weights are contiguous"),
                cd.w_inc
                    .as_slice_mut()
                    .expect("owned increments are contiguous"),
                config.momentum(0),
                config.learning_rate * config.weight_decay,
            );
            ((0..n).collect::<Vec<usize>>(), 0)
        }
    };
    let batches = n.div_ceil(cd.batch);
    let mut history = Vec::with_capacity(config.epochs);
    for epoch in first_epoch..config.epochs {
        shuffle(&mut order, rng);
        // This epoch's k and step sizes. The weight-decay term that the last batch prepares
        // for the next one uses this epoch's rate: one batch of lag in a tiny term.
        let epoch_config = config.at_epoch(epoch);
        let momentum = config.momentum(epoch);
        let started = Instant::now();
        let mut recon_sum = 0.0f64;
        for (bi, rows) in order.chunks(cd.batch).enumerate() {
            let next_momentum = if bi + 1 == batches {
                config.momentum(epoch + 1)
            } else {
                momentum
            };
            recon_sum += cd.step(
                rbm,
                data,
                rows,
                &epoch_config,
                (momentum, next_momentum),
                rng,
            );
            let done = bi * cd.batch + rows.len();
            let progress =
                progress_at(run, epoch, config.epochs, bi + 1, batches, done, n, started);
            if run.observer.on_batch(&progress) == Control::Stop {
                return Err(EngineError::Cancelled);
            }
        }
        let seconds = started.elapsed().as_secs_f64();
        if config.method == LayerMethod::Cd && all_hidden_off(rbm, data) {
            return Err(EngineError::Diverged(format!(
                "layer {} epoch {}: all {} hidden units have switched off for the training \
                 data, and contrastive divergence cannot bring them back; lower this layer's \
                 learning rate (layer_overrides)",
                run.layer,
                epoch + 1,
                rbm.n_hidden()
            )));
        }
        if !rbm.is_finite() || !recon_sum.is_finite() {
            return Err(EngineError::Diverged(format!(
                "layer {} epoch {}: parameters are no longer finite; lower the learning rate",
                run.layer,
                epoch + 1
            )));
        }
        let metrics = epoch_metrics(
            rbm,
            data,
            run,
            epoch,
            momentum,
            seconds,
            n,
            (!config.persistent).then_some(recon_sum / n as f64),
            config.method == LayerMethod::Cd,
        );
        let progress = progress_at(run, epoch, config.epochs, batches, batches, n, n, started);
        let mut stop = run.observer.on_epoch(&progress, &metrics) == Control::Stop;
        history.push(metrics);
        if run.observer.wants_checkpoints() {
            let checkpoint = Checkpoint::Greedy(GreedyCheckpoint {
                done: run.done.to_vec(),
                layer: run.layer,
                rbm: rbm.clone(),
                state: LayerState {
                    next_epoch: epoch + 1,
                    w_inc: cd.w_inc.clone(),
                    vb_inc: cd.vb_inc.clone(),
                    hb_inc: cd.hb_inc.clone(),
                    chains: cd.chains.clone(),
                    order: order.iter().map(|&i| i as u32).collect(),
                    l_inc: cd.l_inc.clone(),
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

fn progress_at(
    run: &LayerRun,
    epoch: usize,
    epochs: usize,
    batch: usize,
    batches: usize,
    done: usize,
    n: usize,
    started: Instant,
) -> Progress {
    Progress {
        phase: run.phase,
        layer: run.layer,
        layers: run.layers,
        epoch: epoch + 1,
        epochs,
        batch,
        batches,
        fraction: job_fraction(run.fraction, epoch, epochs, done, n),
        examples_per_sec: examples_per_sec(done, started),
    }
}

/// Whether every hidden unit has switched off for the first training examples: no unit's
/// probability reaches 0.05 for any of them. Both phases of CD then see (almost) nothing on the
/// hidden side, the weights only decay, and the layer gives the same output for every input: a
/// collapse that too large a step causes in wide layers, and that CD does not undo.
fn all_hidden_off(rbm: &Rbm, data: ArrayView2<f32>) -> bool {
    let rows = data.slice(s![..data.nrows().min(MONITOR_ROWS), ..]);
    rbm.hidden_units.is_binary()
        && rows.nrows() > 0
        && rbm.hidden_probs(rows).iter().all(|&p| p < 0.05)
}

#[allow(clippy::too_many_arguments)]
fn epoch_metrics(
    rbm: &Rbm,
    data: ArrayView2<f32>,
    run: &LayerRun,
    epoch: usize,
    momentum: f32,
    seconds: f64,
    n: usize,
    recon_error_train: Option<f64>,
    energy_based: bool,
) -> EpochMetrics {
    let (recon_error_validation, free_energy_gap) = match run.validation {
        Some(valid) if valid.nrows() > 0 => {
            let valid = valid.slice(s![..valid.nrows().min(MONITOR_ROWS), ..]);
            let train = data.slice(s![..data.nrows().min(valid.nrows()), ..]);
            let mean_f = |x: ArrayView2<f32>| {
                rbm.free_energy(x).iter().map(|&f| f as f64).sum::<f64>() / x.nrows() as f64
            };
            (
                Some(rbm.reconstruction_error(valid)),
                energy_based.then(|| mean_f(valid) - mean_f(train)),
            )
        }
        _ => (None, None),
    };
    EpochMetrics {
        phase: run.phase,
        layer: run.layer,
        epoch: epoch + 1,
        recon_error_train,
        recon_error_validation,
        free_energy_gap,
        validation_error: None,
        train_error: None,
        cross_entropy: None,
        validation_cross_entropy: None,
        log_prob_bound: None,
        momentum,
        seconds,
        examples_per_sec: n as f64 / seconds.max(1e-9),
    }
}

/// Fisher–Yates shuffle with the caller's generator.
pub(crate) fn shuffle<T, R: Rng + ?Sized>(items: &mut [T], rng: &mut R) {
    for i in (1..items.len()).rev() {
        // Multiply-shift maps 64 random bits onto 0..=i with negligible bias.
        let j = ((rng.next_u64() as u128 * (i as u128 + 1)) >> 64) as usize;
        items.swap(i, j);
    }
}

/// Buffers and momentum of one layer's CD learning.
pub(super) struct CdState {
    pub(super) batch: usize,
    /// v0: [B, V] data; vn: [B, V] negative-phase visible; vs: [B, V] sampled visible.
    pub(super) v0: Array2<f32>,
    pub(super) vn: Array2<f32>,
    pub(super) vs: Array2<f32>,
    /// p0, p1: [B, H] hidden probabilities; h: [B, H] sampled hidden states.
    pub(super) p0: Array2<f32>,
    pub(super) p1: Array2<f32>,
    pub(super) h: Array2<f32>,
    /// Momentum-smoothed increments (seed Eq. 4 plus momentum and decay).
    pub(super) w_inc: Array2<f32>,
    pub(super) vb_inc: Array1<f32>,
    pub(super) hb_inc: Array1<f32>,
    /// Column sums of the statistics for the bias updates.
    pub(super) v_sum: Array1<f32>,
    pub(super) h_sum: Array1<f32>,
    /// PCD fantasy particles: [B, V].
    pub(super) chains: Option<Array2<f32>>,
    /// Increments of the lateral weights of a semi-restricted layer: [F, F].
    pub(super) l_inc: Option<Array2<f32>>,
    /// The training data as sparse rows, when it is sparse; the batch's rows and their
    /// transpose (scaled for the weight update) are rebuilt in place every step.
    pub(super) sparse_data: Option<SparseRows>,
    pub(super) batch_rows: SparseRows,
    pub(super) batch_cols: SparseRows,
}

impl CdState {
    fn new(rbm: &Rbm, batch: usize, persistent: bool) -> Self {
        let (v, h) = (rbm.n_visible(), rbm.n_hidden());
        CdState {
            batch,
            v0: Array2::zeros((batch, v)),
            vn: Array2::zeros((batch, v)),
            vs: Array2::zeros((batch, v)),
            p0: Array2::zeros((batch, h)),
            p1: Array2::zeros((batch, h)),
            h: Array2::zeros((batch, h)),
            w_inc: Array2::zeros((v, h)),
            vb_inc: Array1::zeros(v),
            hb_inc: Array1::zeros(h),
            v_sum: Array1::zeros(v),
            h_sum: Array1::zeros(h),
            chains: persistent.then(|| Array2::zeros((batch, v))),
            l_inc: rbm.lateral.as_ref().map(|l| Array2::zeros(l.dim())),
            sparse_data: None,
            batch_rows: SparseRows::default(),
            batch_cols: SparseRows::default(),
        }
    }

    /// One mini-batch of the layer's learning rule on the examples `rows` of `data`.
    /// Returns the summed squared reconstruction error of the batch (0 for PCD).
    fn step<R: Rng + ?Sized>(
        &mut self,
        rbm: &mut Rbm,
        data: ArrayView2<f32>,
        rows: &[usize],
        cfg: &RbmTrainConfig,
        momenta: (f32, f32),
        rng: &mut R,
    ) -> f64 {
        let mut v0 = self.v0.slice_mut(s![..rows.len(), ..]);
        for (mut dst, &r) in v0.axis_iter_mut(Axis(0)).zip(rows) {
            dst.assign(&data.row(r));
        }
        match cfg.method {
            LayerMethod::Cd => self.cd_step(rbm, rows, cfg, momenta, rng),
            LayerMethod::Autoencoder => self.autoencoder_step(rbm, rows.len(), cfg, momenta),
        }
    }

    /// One mini-batch of CD-k / PCD-k on the training examples `rows`, already copied into
    /// `v0`. Returns the summed squared reconstruction error of the batch (0 for PCD).
    fn cd_step<R: Rng + ?Sized>(
        &mut self,
        rbm: &mut Rbm,
        rows: &[usize],
        cfg: &RbmTrainConfig,
        (momentum, next_momentum): (f32, f32),
        rng: &mut R,
    ) -> f64 {
        let b = rows.len();
        let v0 = self.v0.slice(s![..b, ..]);
        let mut p0 = self.p0.slice_mut(s![..b, ..]);
        let mut p1 = self.p1.slice_mut(s![..b, ..]);
        let mut h = self.h.slice_mut(s![..b, ..]);
        let mut vn = self.vn.slice_mut(s![..b, ..]);
        let mut vs = self.vs.slice_mut(s![..b, ..]);

        // Positive phase: p(h | v0), seed Eq. 2.
        if let Some(sparse) = &self.sparse_data {
            sparse.gather_rows_into(rows, &mut self.batch_rows);
            self.batch_rows.times_w(rbm.weights.view(), p0.view_mut());
            rbm.activate_hidden(p0.view_mut());
        } else {
            rbm.hidden_probs_into(v0, p0.view_mut());
        }
        let recon = match self.chains.as_mut() {
            Some(chains) => {
                // PCD-k: continue the fantasy particles.
                let mut chain = chains.slice_mut(s![..b, ..]);
                for _ in 0..cfg.cd_k {
                    rbm.hidden_probs_into(chain.view(), p1.view_mut());
                    rbm.sample_hidden_into(rng, p1.view(), h.view_mut());
                    rbm.visible_probs_into(h.view(), vs.view_mut());
                    rbm.sample_visible_into(rng, vs.view(), chain.view_mut());
                }
                vn.assign(&chain);
                0.0
            }
            None => {
                // CD-k: h0 ~ p(h | v0) drives the reconstruction.
                rbm.sample_hidden_into(rng, p0.view(), h.view_mut());
                for step in 1..=cfg.cd_k {
                    rbm.visible_probs_into(h.view(), vn.view_mut());
                    if step < cfg.cd_k {
                        rbm.sample_visible_into(rng, vn.view(), vs.view_mut());
                        rbm.hidden_probs_into(vs.view(), p1.view_mut());
                        rbm.sample_hidden_into(rng, p1.view(), h.view_mut());
                    }
                }
                let error = squared_distance(v0, vn.view());
                if rbm.lateral.is_some() {
                    // A semi-restricted layer's negative phase is a sampled reconstruction:
                    // a draw from the settled mean field, then one sequential Gibbs sweep
                    // given h (see lateral.rs for why not the mean field alone, which still
                    // gives the reported error).
                    sample_bernoulli(rng, vn.view(), vs.view_mut());
                    rbm.visible_sweep(rng, h.view(), vs.view_mut());
                    vn.assign(&vs);
                }
                error
            }
        };
        // Negative statistics use p(h | v_neg).
        rbm.hidden_probs_into(vn.view(), p1.view_mut());

        // w_inc already holds m·inc − ελ·W (see math::update); add the statistics.
        let scale = cfg.learning_rate / b as f32;
        if self.sparse_data.is_some() {
            self.batch_rows.transpose_into(scale, &mut self.batch_cols);
            self.batch_cols
                .times_w_add(p0.view(), 1.0, self.w_inc.view_mut());
        } else {
            xt_times_p_add(v0, p0.view(), scale, self.w_inc.view_mut());
        }
        xt_times_p_add(vn.view(), p1.view(), -scale, self.w_inc.view_mut());
        update::apply_and_prepare(
            rbm.weights
                .as_slice_mut()
                .expect("owned weights are contiguous"),
            self.w_inc
                .as_slice_mut()
                .expect("owned increments are contiguous"),
            next_momentum,
            cfg.learning_rate * cfg.weight_decay,
        );

        if let (Some(l), Some(inc)) = (rbm.lateral.as_mut(), self.l_inc.as_mut()) {
            // ΔL = ε(<v vᵀ>_data − <v vᵀ>_recon) − ελL, with momentum; kept symmetric with a
            // zero diagonal.
            let f = l.nrows();
            let rate = cfg.learning_rate * super::LATERAL_RATE;
            inc.mapv_inplace(|x| x * momentum);
            inc.scaled_add(-rate * cfg.weight_decay, l);
            let (d, r) = (v0.slice(s![.., ..f]), vn.slice(s![.., ..f]));
            xt_times_p_add(d, d, rate / b as f32, inc.view_mut());
            xt_times_p_add(r, r, -rate / b as f32, inc.view_mut());
            for i in 0..f {
                inc[[i, i]] = 0.0;
                for k in 0..i {
                    let mean = 0.5 * (inc[[i, k]] + inc[[k, i]]);
                    inc[[i, k]] = mean;
                    inc[[k, i]] = mean;
                }
            }
            *l += &*inc;
        }
        let bias_scale = cfg.bias_learning_rate / b as f32;
        column_difference(v0, vn.view(), &mut self.v_sum);
        column_difference(p0.view(), p1.view(), &mut self.h_sum);
        self.move_biases(rbm, bias_scale, momentum);
        recon
    }
}

impl CdState {
    /// Moves both bias vectors along `v_sum` and `h_sum` (the batch's summed statistics or
    /// negative gradients), scaled by `bias_scale`, with momentum.
    pub(super) fn move_biases(&mut self, rbm: &mut Rbm, bias_scale: f32, momentum: f32) {
        for (inc, bias, d) in [
            (&mut self.vb_inc, &mut rbm.visible_bias, &self.v_sum),
            (&mut self.hb_inc, &mut rbm.hidden_bias, &self.h_sum),
        ] {
            Zip::from(inc).and(bias).and(d).for_each(|inc, bias, &d| {
                *inc = momentum * *inc + bias_scale * d;
                *bias += *inc;
            });
        }
    }
}

/// out[j] = Σ_r a[r, j] − Σ_r b[r, j].
pub(super) fn column_difference(a: ArrayView2<f32>, b: ArrayView2<f32>, out: &mut Array1<f32>) {
    out.fill(0.0);
    for (ra, rb) in a.rows().into_iter().zip(b.rows()) {
        Zip::from(&mut *out)
            .and(&ra)
            .and(&rb)
            .for_each(|o, &x, &y| *o += x - y);
    }
}
