//! Twins of the training spec and its sections.

use utoipa::ToSchema;

/// A complete training run: dataset, architecture, settings and seed. Unknown fields are
/// rejected.
#[derive(ToSchema)]
#[schema(as = TrainingSpec, example = json!({
    "name": "mnist-dbn", "dataset": "mnist",
    "architecture": {"hidden": [500, 500, 2000], "labels_in_top": true},
    "pretrain": {"epochs": 30},
    "layer_overrides": [{"layer": 2, "epochs": 50, "persistent": true, "cd_k": 5, "learning_rate": 0.05, "momentum_final": 0.5}],
    "seed": 1
}))]
pub struct TrainingSpecSchema {
    /// A name for the resulting model.
    name: Option<String>,
    /// When the job succeeds, point this alias at its model (1-64 of `[A-Za-z0-9_-]`; e.g.
    /// `default`). Changes nothing in what is learned.
    alias: Option<String>,
    /// Dataset to learn from (default `mnist`); see `GET /v1/datasets`.
    dataset: Option<String>,
    architecture: ArchitectureSchema,
    pretrain: Option<RbmTrainConfigSchema>,
    /// Per-layer changes to `pretrain`.
    layer_overrides: Option<Vec<LayerOverrideSchema>>,
    /// Use only the first this many training examples (default: all).
    train_examples: Option<usize>,
    /// Hold out the last this many training examples for monitoring (default 0).
    validation_examples: Option<usize>,
    /// Seed of every random draw (default 0).
    seed: Option<u64>,
    /// Learn from binarised images (default false): each pixel of the training and held-out
    /// images is on with its intensity as probability, drawn once with `seed`, as in the
    /// binarised MNIST on which log-probabilities are usually reported. Needs binary visible
    /// units and no `sequence`.
    binarize: Option<bool>,
    /// Fine-tuning after pretraining (default none).
    finetune: Option<FinetuneSchema>,
    /// A classifier learned by backpropagation after an `up_down` fine-tuning (default none;
    /// the settings of `finetune` with `method: backprop`, without `method`). It starts from
    /// the up-down recognition weights, and the model keeps the up-down generative weights:
    /// one model classifies at backprop's error and dreams with up-down's weights.
    classifier: Option<BackpropSchema>,
    /// After training, measure the average log-probability of the binarised training and
    /// test images under the first RBM, in nats, with its partition function estimated by
    /// annealed importance sampling (default none). The model card gets `ais_log_z`,
    /// `train_log_prob`, `test_log_prob` and their ±3 standard-error ranges; a net of two or
    /// more layers without labels on top also gets `test_log_prob_dbn_bound`, the variational
    /// lower bound of the whole DBN, and `dbn_top_log_z`.
    ais: Option<AisSpecSchema>,
    /// Learn sequences instead of still images (default none): every layer becomes a
    /// conditional RBM whose visible and hidden biases are set by the previous `order` frames
    /// (Taylor, Hinton & Roweis 2006). Needs `labels_in_top: false`, no `finetune`, no `ais`
    /// and no `validation_examples`. The model card gets `test_prediction_error` (squared
    /// error of the next frame predicted as E[v | past], the mean of 10 sampled
    /// continuations), `test_continuation_error` (averaged over the next 8 frames), both for
    /// the baseline that repeats the last frame (`…_copy_last`), and
    /// `test_prediction_error_autoregressive` (the first layer's autoregressive part alone);
    /// `POST /v1/models/{id}/continue` continues a sequence. Jobs checkpoint every epoch.
    sequence: Option<SequenceSpecSchema>,
}

/// How the data become sequences, and the model's order.
#[derive(ToSchema)]
#[schema(as = SequenceSpec, example = json!({"order": 3, "length": 16, "moving": {"canvas": 36, "max_speed": 3}}))]
pub struct SequenceSpecSchema {
    /// Previous frames that set each frame's dynamic biases, in every layer (default 3).
    order: Option<usize>,
    /// Frames per sequence (default 16); at least order × layers + 1. Without `moving`, the
    /// dataset's examples are the frames, in order, cut into sequences of this length.
    length: Option<usize>,
    /// Make one sequence per example by moving each image across a larger canvas.
    moving: Option<MovingImagesSchema>,
}

/// Videos of images moving at constant velocity across a blank canvas, bouncing off its
/// edges; deterministic for a seed.
#[derive(ToSchema)]
#[schema(as = MovingImages)]
pub struct MovingImagesSchema {
    /// Side of the square canvas (default 36); larger than the images.
    canvas: Option<usize>,
    /// Largest speed along each axis in pixels per frame (default 3, or the room the canvas
    /// leaves when that is less: 1 for canvas 29, 2 for 30).
    max_speed: Option<usize>,
    /// Seed of the start positions and velocities (default 0).
    seed: Option<u64>,
}

/// Settings of the log-probability measurement; every field has a default.
#[derive(ToSchema)]
#[schema(as = AisSpec)]
pub struct AisSpecSchema {
    /// Annealing runs (default 100).
    runs: Option<usize>,
    /// Intermediate distributions (default 14,500, the paper's schedule).
    steps: Option<usize>,
}

/// How the pretrained stack is fine-tuned, chosen by `method`.
#[derive(ToSchema, serde::Deserialize)]
#[serde(tag = "method", rename_all = "snake_case")]
#[schema(as = Finetune)]
pub enum FinetuneSchema {
    /// Backpropagation through the unrolled recognition weights with a new softmax layer.
    Backprop(BackpropSchema),
    /// The up-down algorithm (contrastive wake-sleep) with untied weights.
    UpDown(UpDownSchema),
    /// A deep autoencoder: the stack unrolled into encoder and decoder, trained by
    /// backpropagation to reconstruct its inputs (no label units, binary inputs).
    Autoencoder(AutoencoderSchema),
    /// The wake-sleep algorithm: a logistic belief net with separate recognition and
    /// generative weights (no label units, binary units).
    WakeSleep(WakeSleepSchema),
}

/// Settings of wake-sleep; every field has a default.
#[derive(ToSchema, serde::Deserialize)]
#[schema(as = WakeSleepConfig)]
pub struct WakeSleepSchema {
    /// Passes over the data (default 10).
    epochs: Option<usize>,
    /// Examples (and dreams) per mini-batch (default 100).
    batch_size: Option<usize>,
    /// Step size (default 0.01).
    learning_rate: Option<f32>,
    /// `pretrained` (default: start from the greedily learned stack) or `random` (start from
    /// random weights, with no pretraining).
    #[schema(pattern = "^(pretrained|random)$")]
    init: Option<String>,
}

/// Settings of deep-autoencoder fine-tuning; every field has a default.
#[derive(ToSchema, serde::Deserialize)]
#[schema(as = AutoencoderConfig)]
pub struct AutoencoderSchema {
    /// Passes over the data (default 50).
    epochs: Option<usize>,
    /// Examples per mini-batch (default 100).
    batch_size: Option<usize>,
    /// Step size (default 0.001; the loss sums the cross-entropy over the inputs).
    learning_rate: Option<f32>,
    /// Momentum (default 0.9).
    momentum: Option<f32>,
    /// L2 weight decay (default 0).
    weight_decay: Option<f32>,
}

/// Settings of backpropagation; every field has a default.
#[derive(ToSchema, serde::Deserialize)]
#[schema(as = BackpropConfig)]
pub struct BackpropSchema {
    /// Passes over the data (default 50).
    epochs: Option<usize>,
    /// First epochs in which only the softmax layer learns (default 5).
    top_only_epochs: Option<usize>,
    /// Examples per mini-batch (default 100).
    batch_size: Option<usize>,
    /// Step size of the first epoch (default 0.1).
    learning_rate: Option<f32>,
    /// Factor on the step size after every epoch (default 0.97).
    learning_rate_decay: Option<f32>,
    /// Momentum of the first epochs (default 0.5).
    momentum_initial: Option<f32>,
    /// Momentum afterwards (default 0.9).
    momentum_final: Option<f32>,
    /// Epoch (0-based) from which `momentum_final` applies (default 5).
    momentum_switch_epoch: Option<usize>,
    /// L2 weight decay (default 0.00001).
    weight_decay: Option<f32>,
    /// Dropout: probability of keeping an input (default 1).
    input_keep: Option<f32>,
    /// Dropout: probability of keeping a hidden unit (default 1).
    hidden_keep: Option<f32>,
    /// Standard deviation of the softmax layer's initial weights (default 0.01).
    init_std: Option<f32>,
}

/// Settings of the up-down algorithm; every field has a default.
#[derive(ToSchema, serde::Deserialize)]
#[schema(as = UpDownConfig)]
pub struct UpDownSchema {
    /// Passes over the data (default 30).
    epochs: Option<usize>,
    /// Examples per mini-batch (default 100).
    batch_size: Option<usize>,
    /// Step size of every weight (default 0.01).
    learning_rate: Option<f32>,
    /// Gibbs steps at the top, one entry per equal part of the run (default [3, 6, 10]).
    cd_k: Option<Vec<usize>>,
    /// Persistent fantasy chains for the top RBM's negative phase (PCD, labels free), from
    /// which the sleep phase also goes down, instead of the paper's CD-k from the wake state
    /// (default false).
    persistent: Option<bool>,
    /// Weight of a discriminative term in the top RBM's update: the gradient of
    /// log p(label | features) as classification by free energy computes it, added to the
    /// top's CD-k step; the layers below learn by up-down alone (default 0, in [0, 100]).
    discriminative: Option<f32>,
}

/// Layer sizes above the input.
#[derive(ToSchema)]
#[schema(as = Architecture)]
pub struct ArchitectureSchema {
    /// e.g. `[500, 500, 2000]`.
    hidden: Vec<usize>,
    /// Join 10 softmax label units to the top RBM's visible layer (default true).
    labels_in_top: Option<bool>,
    /// The first RBM's visible units: `binary` (default) or `gaussian` (real-valued; each
    /// input is standardised over the training set and the model keeps the statistics, so
    /// callers still send raw inputs). Give that layer a learning rate near 0.001–0.01.
    #[schema(pattern = "^(binary|gaussian)$")]
    visible_units: Option<String>,
    /// The top RBM's hidden units: `binary` (default) or `gaussian` (a real-valued code).
    #[schema(pattern = "^(binary|gaussian)$")]
    top_units: Option<String>,
    /// Lateral connections between the first RBM's visible units: a semi-restricted
    /// Boltzmann machine (default false; binary inputs, no labels or PCD on that layer).
    lateral: Option<bool>,
}

/// How one RBM learns; every field has a default.
#[derive(ToSchema)]
#[schema(as = RbmTrainConfig)]
pub struct RbmTrainConfigSchema {
    /// Passes over the data (default 30).
    epochs: Option<usize>,
    /// Examples per mini-batch (default 100).
    batch_size: Option<usize>,
    /// ε for the weights (default 0.1).
    learning_rate: Option<f32>,
    /// ε for the biases (default 0.1).
    bias_learning_rate: Option<f32>,
    /// Momentum of the first epochs (default 0.5).
    momentum_initial: Option<f32>,
    /// Momentum afterwards (default 0.9).
    momentum_final: Option<f32>,
    /// Epoch (0-based) from which `momentum_final` applies (default 5).
    momentum_switch_epoch: Option<usize>,
    /// L2 weight decay (default 0.0002).
    weight_decay: Option<f32>,
    /// Gibbs steps of the negative phase (default 1); with `cd_k_final`, the first epoch's.
    cd_k: Option<usize>,
    /// When set, k rises linearly from `cd_k` in the first epoch to this in the last
    /// (default: k stays `cd_k`).
    cd_k_final: Option<usize>,
    /// Both step sizes are multiplied by this after every epoch (default 1: constant).
    learning_rate_decay: Option<f32>,
    /// Persistent CD (default false).
    persistent: Option<bool>,
    /// `data` (default) or `zero`.
    #[schema(pattern = "^(data|zero)$")]
    visible_bias_init: Option<String>,
    /// Standard deviation of the initial weights (default 0.01).
    init_std: Option<f32>,
    /// `cd` (default: the layer is an RBM learned by contrastive divergence) or
    /// `autoencoder` (a one-hidden-layer autoencoder with tied weights, learned by gradient
    /// descent on its reconstruction error; needs `cd_k` 1, `persistent` false and no label
    /// units on the layer).
    #[schema(pattern = "^(cd|autoencoder)$")]
    method: Option<String>,
}

/// Settings that differ for one layer (0-based).
#[derive(ToSchema)]
#[schema(as = LayerOverride)]
pub struct LayerOverrideSchema {
    layer: usize,
    epochs: Option<usize>,
    learning_rate: Option<f32>,
    bias_learning_rate: Option<f32>,
    weight_decay: Option<f32>,
    cd_k: Option<usize>,
    persistent: Option<bool>,
    batch_size: Option<usize>,
    momentum_final: Option<f32>,
    /// `cd` or `autoencoder` for this layer.
    #[schema(pattern = "^(cd|autoencoder)$")]
    method: Option<String>,
}
