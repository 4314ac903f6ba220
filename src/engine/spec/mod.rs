//! The training spec: what to learn, from which data, with which settings. The command line
//! reads it from a JSON file and the HTTP API accepts the same JSON unchanged.

use serde::{Deserialize, Serialize};

use crate::engine::crbm::SequenceSpec;
use crate::engine::data::Dataset;
use crate::engine::finetune::{AutoencoderConfig, BackpropConfig, UpDownConfig, WakeSleepConfig};
use crate::engine::rbm::{LayerMethod, RbmTrainConfig, Units};

mod check;
mod cost;
mod limits;
pub use check::{CheckedSpec, DataShape};
pub use limits::{layer_parameters, Limits};

/// Mixed into the seed for the binarisation of `binarize`, so that it draws nothing from the
/// run's own generator.
const BINARIZE_STREAM: u64 = 0x6269_6e61_7269_7365;

/// A complete description of a training run. Unknown fields are rejected.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainingSpec {
    /// A name for the resulting model (optional).
    #[serde(default)]
    pub name: Option<String>,
    /// When a server job of this spec succeeds, the alias to point at its model (optional;
    /// e.g. `default`, so that clients of the alias get the new model without a new id).
    /// Changes nothing in what is learned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alias: Option<String>,
    /// Dataset to learn from; `mnist` is the standard MNIST training set.
    #[serde(default = "default_dataset")]
    pub dataset: String,
    pub architecture: Architecture,
    /// Settings of every layer's RBM, unless a layer override says otherwise.
    #[serde(default)]
    pub pretrain: RbmTrainConfig,
    /// Per-layer changes to `pretrain` (e.g. more epochs for the top RBM).
    #[serde(default)]
    pub layer_overrides: Vec<LayerOverride>,
    /// Use only the first this many training examples (default: all).
    #[serde(default)]
    pub train_examples: Option<usize>,
    /// Hold out the last this many training examples for monitoring (default 0; the paper
    /// chose its epochs on the last 10,000 and then trained on all 60,000).
    #[serde(default)]
    pub validation_examples: usize,
    /// Seed of every random draw of the run (default 0).
    #[serde(default)]
    pub seed: u64,
    /// Learn from binarised images (default false): each pixel of the training and held-out
    /// images is switched on with its intensity as probability, drawn once from a generator
    /// seeded by `seed`, as in the binarised MNIST on which Salakhutdinov & Murray measured
    /// log-probabilities. Needs binary visible units; test metrics still read the images as
    /// they are.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub binarize: bool,
    /// Fine-tuning after greedy pretraining (default none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finetune: Option<Finetune>,
    /// A classifier learned by backpropagation after an `up_down` fine-tuning (default none):
    /// the classifier starts from the up-down recognition weights, and the model keeps the
    /// up-down generative weights, so one model classifies at backprop's error and dreams
    /// with up-down's weights. Takes the settings of `finetune` with `method: backprop`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub classifier: Option<BackpropConfig>,
    /// After training, estimate the first RBM's partition function by annealed importance
    /// sampling and record the average log-probability of the binarised training and test
    /// images (default none; slow: about 35 s for 784-500 at the paper's schedule here, about
    /// 6 minutes with lateral connections, whose visible units are swept one by one). A net
    /// of two or more restricted layers without labels on top also gets the variational lower
    /// bound of the whole DBN on the test images, with its top RBM's ln Z by AIS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ais: Option<AisSpec>,
    /// Learn sequences instead of still images (default none): every layer becomes a
    /// conditional RBM whose biases are set by the previous `order` frames (Taylor, Hinton &
    /// Roweis 2006). Needs `labels_in_top: false`, no fine-tuning, no AIS and no held-out
    /// examples; give Gaussian visible units a learning rate of about 0.001.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sequence: Option<SequenceSpec>,
}

/// Settings of the log-probability measurement (Salakhutdinov & Murray 2008).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AisSpec {
    /// Annealing runs (default 100).
    #[serde(default = "default_ais_runs")]
    pub runs: usize,
    /// Intermediate distributions (default 14,500, the paper's).
    #[serde(default = "default_ais_steps")]
    pub steps: usize,
}

fn default_ais_runs() -> usize {
    100
}

fn default_ais_steps() -> usize {
    14_500
}

impl AisSpec {
    pub fn config(&self) -> crate::engine::rbm::AisConfig {
        crate::engine::rbm::AisConfig::schedule(self.runs, self.steps)
    }
}

/// How the pretrained stack is fine-tuned, by `method`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "method", rename_all = "snake_case")]
pub enum Finetune {
    /// Discriminatively: backpropagation through the unrolled recognition weights with a new
    /// softmax output layer (Hinton & Salakhutdinov 2006), optionally with dropout.
    Backprop(BackpropConfig),
    /// Generatively: the up-down algorithm (contrastive wake-sleep; Hinton, Osindero & Teh
    /// 2006), which unties recognition and generative weights below the top RBM.
    UpDown(UpDownConfig),
    /// As a deep autoencoder (Hinton & Salakhutdinov 2006): the stack unrolled into encoder
    /// and decoder, trained by backpropagation to reconstruct its inputs. Needs a net without
    /// label units on binary inputs; a Gaussian `top_units` gives the linear code layer.
    Autoencoder(AutoencoderConfig),
    /// By the wake-sleep algorithm (the seed's Box 1): a logistic belief net with separate
    /// recognition and generative weights, started from the pretrained stack or (with
    /// `init: random`) from random weights without pretraining. Needs a net without label
    /// units on binary units.
    WakeSleep(WakeSleepConfig),
}

fn default_dataset() -> String {
    "mnist".into()
}

/// Layer sizes above the input, e.g. `[500, 500, 2000]` for the seed's digit model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Architecture {
    pub hidden: Vec<usize>,
    /// Join the softmax label units to the visible layer of the top RBM, making it an
    /// associative memory of features and labels (default true).
    #[serde(default = "yes")]
    pub labels_in_top: bool,
    /// The first RBM's visible units: `binary` (default; inputs in [0, 1] read as
    /// probabilities) or `gaussian` (real-valued: every input is standardised to zero mean and
    /// unit variance over the training set, and modelled by unit-variance Gaussian units;
    /// give that layer a learning rate of about 0.001–0.01).
    #[serde(default, skip_serializing_if = "Units::is_binary_ref")]
    pub visible_units: Units,
    /// The top RBM's hidden units: `binary` (default) or `gaussian`, a real-valued code
    /// (the linear code layer of a deep autoencoder; a small learning rate again).
    #[serde(default, skip_serializing_if = "Units::is_binary_ref")]
    pub top_units: Units,
    /// Lateral connections between the first RBM's visible units, making it a
    /// semi-restricted Boltzmann machine (default false): reconstructions settle by damped
    /// mean field and samples come from sequential Gibbs sweeps. Needs binary visible units,
    /// no labels on that layer, and CD (not persistent, not autoencoder) for it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub lateral: bool,
}

fn yes() -> bool {
    true
}

impl Default for Architecture {
    /// No layers yet, labels in the top RBM, binary units.
    fn default() -> Self {
        Architecture {
            hidden: Vec::new(),
            labels_in_top: true,
            visible_units: Units::Binary,
            top_units: Units::Binary,
            lateral: false,
        }
    }
}

/// Settings that differ for one layer (0-based; the top RBM is the last).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct LayerOverride {
    pub layer: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epochs: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub learning_rate: Option<f32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bias_learning_rate: Option<f32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight_decay: Option<f32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cd_k: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub persistent: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_size: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub momentum_final: Option<f32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<LayerMethod>,
}

impl TrainingSpec {
    /// The seed's 784-500-500-2000 digit model with labels joined to the top RBM.
    pub fn digit_model() -> Self {
        TrainingSpec {
            name: Some("mnist-dbn".into()),
            alias: None,
            dataset: default_dataset(),
            architecture: Architecture {
                hidden: vec![500, 500, 2000],
                labels_in_top: true,
                ..Architecture::default()
            },
            pretrain: RbmTrainConfig::default(),
            layer_overrides: Vec::new(),
            train_examples: None,
            validation_examples: 0,
            seed: 0,
            binarize: false,
            finetune: None,
            classifier: None,
            ais: None,
            sequence: None,
        }
    }

    /// The fine-tuning stages in the order they run: `finetune`, then the classifier.
    pub fn finetune_stages(&self) -> Vec<Finetune> {
        let classifier = self.classifier.clone().map(Finetune::Backprop);
        self.finetune.iter().cloned().chain(classifier).collect()
    }

    /// The parts of the spec that decide pretraining: without its name, fine-tuning and
    /// measurement, so a greedy model (or checkpoint) serves every fine-tuning of the same
    /// pretraining.
    pub fn pretraining(&self) -> TrainingSpec {
        TrainingSpec {
            name: None,
            alias: None,
            finetune: None,
            classifier: None,
            ais: None,
            ..self.clone()
        }
    }

    /// The examples to learn from and the held-out ones: the first `train_examples` of
    /// `data`, of which the last `validation_examples` are held out; binarised when the spec
    /// says so (the same draw every time).
    pub fn split(&self, data: &Dataset) -> (Dataset, Dataset) {
        let used = self
            .train_examples
            .map_or(data.len(), |n| n.min(data.len()));
        let mut examples = data.slice(0..used);
        if self.binarize {
            let mut rng = crate::engine::rng_from_seed(self.seed ^ BINARIZE_STREAM);
            examples.images = crate::engine::rbm::sample_binary(examples.images.view(), &mut rng);
        }
        examples.split_last(self.validation_examples.min(used))
    }

    /// Visible units of layer `i`: the input, a hidden layer, or features plus labels on top.
    pub fn layer_visible(&self, i: usize, n_inputs: usize, classes: usize) -> usize {
        let below = if i == 0 {
            self.model_inputs(n_inputs)
        } else {
            self.architecture.hidden[i - 1]
        };
        below + self.layer_labels(i, classes)
    }

    /// The model's inputs for data of `n_inputs` values per example: a moving sequence's
    /// canvas, or the data's own.
    pub fn model_inputs(&self, n_inputs: usize) -> usize {
        match self.sequence.as_ref().and_then(|s| s.moving.as_ref()) {
            Some(m) => m.canvas.saturating_mul(m.canvas),
            None => n_inputs,
        }
    }

    /// The shape of the model's input images for data of `rows` × `cols`.
    pub fn image_shape(&self, rows: usize, cols: usize) -> [usize; 2] {
        match &self.sequence {
            Some(seq) => {
                let (r, c) = seq.frame_shape(rows, cols);
                [r, c]
            }
            None => [rows, cols],
        }
    }

    /// The (visible, hidden) unit kinds of layer `i`.
    pub fn layer_units(&self, i: usize) -> (Units, Units) {
        let arch = &self.architecture;
        let visible = if i == 0 {
            arch.visible_units
        } else {
            Units::Binary
        };
        let hidden = if i + 1 == arch.hidden.len() {
            arch.top_units
        } else {
            Units::Binary
        };
        (visible, hidden)
    }

    /// Label units joined to layer `i` (only the top one, when asked).
    pub fn layer_labels(&self, i: usize, classes: usize) -> usize {
        if self.architecture.labels_in_top && i + 1 == self.architecture.hidden.len() {
            classes
        } else {
            0
        }
    }

    /// The settings of layer `i`: `pretrain` with that layer's overrides applied in order.
    pub fn layer_config(&self, i: usize) -> RbmTrainConfig {
        let mut c = self.pretrain.clone();
        for o in self.layer_overrides.iter().filter(|o| o.layer == i) {
            c.epochs = o.epochs.unwrap_or(c.epochs);
            c.learning_rate = o.learning_rate.unwrap_or(c.learning_rate);
            c.bias_learning_rate = o.bias_learning_rate.unwrap_or(c.bias_learning_rate);
            c.weight_decay = o.weight_decay.unwrap_or(c.weight_decay);
            c.cd_k = o.cd_k.unwrap_or(c.cd_k);
            c.persistent = o.persistent.unwrap_or(c.persistent);
            c.batch_size = o.batch_size.unwrap_or(c.batch_size);
            c.momentum_final = o.momentum_final.unwrap_or(c.momentum_final);
            c.method = o.method.unwrap_or(c.method);
        }
        c
    }
}
