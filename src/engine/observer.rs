//! How training reports progress and learns that it should stop, without knowing who listens:
//! the command line draws a progress bar, the service's job queue records and streams it.

use serde::{Deserialize, Serialize};

use crate::engine::dbn::Checkpoint;

/// The stage of a training run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Greedy layer-by-layer learning of the RBM stack.
    Pretrain,
    /// Fine-tuning of the whole stack.
    Finetune,
}

/// Where training stands, reported after every mini-batch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Progress {
    pub phase: Phase,
    /// Layer being trained (0-based) and the number of layers.
    pub layer: usize,
    pub layers: usize,
    /// Current epoch (1-based) of this layer, and its total.
    pub epoch: usize,
    pub epochs: usize,
    /// Mini-batches done in this epoch, and their number.
    pub batch: usize,
    pub batches: usize,
    /// Fraction of the whole run done, 0..1 (weighted by each layer's arithmetic).
    pub fraction: f64,
    /// Training examples per second over this epoch so far.
    pub examples_per_sec: f64,
}

/// What one epoch of one layer measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochMetrics {
    pub phase: Phase,
    pub layer: usize,
    /// 1-based.
    pub epoch: usize,
    /// Mean Σ_i (v_i − v̂_i)² per example over the epoch's mini-batches (the reconstruction the
    /// CD update used; absent for persistent CD, whose negative phase is no reconstruction).
    pub recon_error_train: Option<f64>,
    /// Mean-field reconstruction error on held-out data, when there is any.
    pub recon_error_validation: Option<f64>,
    /// Mean free energy of held-out data minus that of as many training examples: it grows
    /// when the layer starts to overfit.
    pub free_energy_gap: Option<f64>,
    /// Classification error on held-out data, where the stage can classify.
    pub validation_error: Option<f64>,
    /// Classification error on the training batches (fine-tuning; with dropout on).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub train_error: Option<f64>,
    /// Mean cross-entropy on the training batches (fine-tuning).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cross_entropy: Option<f64>,
    /// Mean cross-entropy on held-out data (fine-tuning).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validation_cross_entropy: Option<f64>,
    /// Variational lower bound on the mean log-probability of held-out data, in nats
    /// (wake-sleep).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_prob_bound: Option<f64>,
    pub momentum: f32,
    pub seconds: f64,
    pub examples_per_sec: f64,
}

/// Where a run stands in the whole job: `done` of `n` examples into `epoch` (0-based) of
/// `epochs`, mapped into the part `(from, to)` of the job that the run covers.
pub(crate) fn job_fraction(
    part: (f64, f64),
    epoch: usize,
    epochs: usize,
    done: usize,
    n: usize,
) -> f64 {
    let within = ((epoch as f64 + done as f64 / n.max(1) as f64) / epochs.max(1) as f64).min(1.0);
    part.0 + (part.1 - part.0) * within
}

/// Examples per second over `done` examples since `started`.
pub(crate) fn examples_per_sec(done: usize, started: std::time::Instant) -> f64 {
    done as f64 / started.elapsed().as_secs_f64().max(1e-9)
}

/// Whether training should go on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    Continue,
    Stop,
}

/// Receives progress; returning [`Control::Stop`] makes training end with
/// `EngineError::Cancelled` before the next mini-batch.
pub trait Observer {
    fn on_batch(&mut self, progress: &Progress) -> Control;
    fn on_epoch(&mut self, progress: &Progress, metrics: &EpochMetrics) -> Control;
    /// Whether to build a [`Checkpoint`] at the end of every epoch (a copy of the model and
    /// its learning state; default no).
    fn wants_checkpoints(&self) -> bool {
        false
    }
    /// Receives the end-of-epoch checkpoint when [`Observer::wants_checkpoints`] says so.
    fn on_checkpoint(&mut self, _checkpoint: &Checkpoint) -> Control {
        Control::Continue
    }
}

/// Listens to nothing and never stops training.
#[derive(Debug, Default, Clone, Copy)]
pub struct Silent;

impl Observer for Silent {
    fn on_batch(&mut self, _: &Progress) -> Control {
        Control::Continue
    }
    fn on_epoch(&mut self, _: &Progress, _: &EpochMetrics) -> Control {
        Control::Continue
    }
}
