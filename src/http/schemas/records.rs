//! Twins of what runs report: progress, per-epoch metrics, provenance, datasets.

use std::collections::BTreeMap;

use utoipa::ToSchema;

/// Where a training run stands.
#[derive(ToSchema)]
#[schema(as = JobProgress)]
pub struct JobProgressSchema {
    /// `pretrain` or `finetune`.
    phase: String,
    /// Layer in training (0-based) and the number of layers.
    layer: usize,
    layers: usize,
    /// Epoch (1-based) of this layer and its total.
    epoch: usize,
    epochs: usize,
    /// Mini-batches done in this epoch and their number.
    batch: usize,
    batches: usize,
    /// Fraction of the whole run done, 0..1.
    fraction: f64,
    examples_per_sec: f64,
    /// Estimated seconds left.
    eta_seconds: Option<f64>,
}

/// What one epoch of one layer measured.
#[derive(ToSchema)]
#[schema(as = EpochMetrics)]
pub struct EpochMetricsSchema {
    phase: String,
    layer: usize,
    epoch: usize,
    /// Mean squared reconstruction error per example on the training batches.
    recon_error_train: Option<f64>,
    /// Mean-field reconstruction error on held-out data.
    recon_error_validation: Option<f64>,
    /// Mean free energy of held-out minus training data (grows with overfitting).
    free_energy_gap: Option<f64>,
    /// Classification error on held-out data, where defined.
    validation_error: Option<f64>,
    /// Classification error on the training batches (fine-tuning).
    train_error: Option<f64>,
    /// Mean cross-entropy on the training batches (fine-tuning).
    cross_entropy: Option<f64>,
    /// Mean cross-entropy on held-out data (fine-tuning).
    validation_cross_entropy: Option<f64>,
    /// Variational lower bound on the mean log-probability of held-out data, in nats
    /// (wake-sleep).
    log_prob_bound: Option<f64>,
    momentum: f32,
    seconds: f64,
    examples_per_sec: f64,
}

/// Where a model came from.
#[derive(ToSchema)]
#[schema(as = Provenance)]
pub struct ProvenanceSchema {
    dataset: String,
    train_examples: usize,
    validation_examples: usize,
    seed: u64,
    threads: usize,
    /// `avx512`, `avx2` or `portable`.
    kernels: String,
    engine_version: String,
    created_unix: u64,
    train_seconds: f64,
    /// `f32`, or `bf16` for a compacted model (metrics measured on the bf16 weights).
    storage: String,
}

/// A dataset available to training.
#[derive(ToSchema)]
#[schema(as = DatasetInfo)]
pub struct DatasetInfoSchema {
    name: String,
    /// `builtin` or `uploaded`.
    source: String,
    train_examples: usize,
    test_examples: usize,
    n_inputs: usize,
    classes: usize,
}

/// Named results of a model, e.g. `test_error`.
pub type MetricsMap = BTreeMap<String, f64>;
