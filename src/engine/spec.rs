//! The training spec: what to learn, from which data, with which settings. The command line
//! reads it from a JSON file and the HTTP API accepts the same JSON unchanged.

use serde::{Deserialize, Serialize};

use crate::engine::crbm::SequenceSpec;
use crate::engine::data::Dataset;
use crate::engine::error::{EngineError, Result};
use crate::engine::finetune::{
    AutoencoderConfig, BackpropConfig, UpDownConfig, WakeSleepConfig, WakeSleepInit,
};
use crate::engine::rbm::{LayerMethod, RbmTrainConfig, Units};

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

/// Bounds that keep one spec from exhausting the machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_layers: usize,
    pub max_units: usize,
    /// Weights across all layers.
    pub max_parameters: usize,
}

impl Limits {
    /// The one set of default bounds: the server's settings default to these, and the
    /// command line trains within them, so whatever it trains the server accepts.
    pub const DEFAULT: Limits = Limits {
        max_layers: 10,
        max_units: 20_000,
        max_parameters: 50_000_000,
    };

    /// Checks a trained model (one read from a file) against the bounds a spec is held to.
    pub fn check_model(&self, dbn: &crate::engine::dbn::Dbn) -> Result<()> {
        let exceeds = |what: String| Err(EngineError::invalid("model", what));
        let layers = dbn.layers();
        if layers.len() > self.max_layers {
            let n = layers.len();
            return exceeds(format!(
                "{n} layers exceed the limit of {}",
                self.max_layers
            ));
        }
        let widest = layers.iter().map(|l| l.n_hidden()).max().unwrap_or(0);
        if widest > self.max_units {
            return exceeds(format!(
                "a layer of {widest} units exceeds the limit of {}",
                self.max_units
            ));
        }
        let params = dbn.parameter_count();
        if params > self.max_parameters {
            return exceeds(format!(
                "{params} weights exceed the limit of {}",
                self.max_parameters
            ));
        }
        Ok(())
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits::DEFAULT
    }
}

/// Weights of one layer of `below` visible and `hidden` hidden units, counting a sequence
/// model's conditioning weights for `order` past frames (A: [order·V, V], B: [order·V, H]).
/// Saturates rather than overflows, so absurd sizes compare as too large.
pub fn layer_parameters(below: usize, hidden: usize, order: usize) -> usize {
    let past = order.saturating_mul(below);
    below
        .saturating_mul(hidden)
        .saturating_add(past.saturating_mul(below.saturating_add(hidden)))
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
            finetune: None,
            classifier: None,
            ais: None,
            sequence: None,
        }
    }

    /// Checks the spec against the input size and limits; errors name the field.
    pub fn validate(&self, n_inputs: usize, classes: usize, limits: &Limits) -> Result<()> {
        if let Some(alias) = &self.alias {
            let ok = !alias.is_empty()
                && alias.len() <= 64
                && alias
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
            if !ok {
                return Err(EngineError::invalid(
                    "alias",
                    "1-64 characters of letters, digits, '-' and '_'",
                ));
            }
        }
        let hidden = &self.architecture.hidden;
        if hidden.is_empty() || hidden.len() > limits.max_layers {
            return Err(EngineError::invalid(
                "architecture.hidden",
                format!(
                    "needs 1..={} layer sizes, got {}",
                    limits.max_layers,
                    hidden.len()
                ),
            ));
        }
        let mut params = 0usize;
        for (i, &h) in hidden.iter().enumerate() {
            if h == 0 || h > limits.max_units {
                return Err(EngineError::invalid(
                    format!("architecture.hidden[{i}]"),
                    format!("must be in 1..={}, got {h}", limits.max_units),
                ));
            }
            params = params.saturating_add(self.layer_parameters(i, n_inputs, classes));
        }
        if params > limits.max_parameters {
            return Err(EngineError::invalid(
                "architecture.hidden",
                format!(
                    "{params} weights exceed the limit of {}",
                    limits.max_parameters
                ),
            ));
        }
        self.pretrain.validate("pretrain")?;
        for (i, o) in self.layer_overrides.iter().enumerate() {
            if o.layer >= hidden.len() {
                return Err(EngineError::invalid(
                    format!("layer_overrides[{i}].layer"),
                    format!("there are {} layers", hidden.len()),
                ));
            }
            self.layer_config(o.layer)
                .validate(&format!("layer_overrides[{i}]"))?;
        }
        for i in 0..hidden.len() {
            if self.layer_config(i).method == LayerMethod::Autoencoder
                && self.layer_labels(i, classes) > 0
            {
                return Err(EngineError::invalid(
                    "pretrain.method",
                    format!(
                        "layer {i} joins the label units, which an autoencoder layer cannot \
                         learn: set architecture.labels_in_top false (and fine-tune by \
                         backprop to classify), or learn that layer with cd"
                    ),
                ));
            }
        }
        let autoencoder_first = self.layer_config(0).method == LayerMethod::Autoencoder;
        let arch = &self.architecture;
        if !arch.top_units.is_binary() && arch.labels_in_top {
            return Err(EngineError::invalid(
                "architecture.top_units",
                "Gaussian top units cannot join label units: set labels_in_top false",
            ));
        }
        if hidden.len() == 1 && !arch.visible_units.is_binary() && !arch.top_units.is_binary() {
            return Err(EngineError::invalid(
                "architecture",
                "a single RBM cannot have Gaussian visible and Gaussian hidden units: add a layer",
            ));
        }
        let gaussian = !arch.visible_units.is_binary() || !arch.top_units.is_binary();
        if arch.lateral {
            let first = self.layer_config(0);
            if !arch.visible_units.is_binary()
                || self.layer_labels(0, classes) > 0
                || first.persistent
                || first.method != LayerMethod::Cd
            {
                return Err(EngineError::invalid(
                    "architecture.lateral",
                    "lateral connections need binary visible units, no label units on the first \
                     layer, and CD (not persistent, not autoencoder) for it",
                ));
            }
            let generative = matches!(
                self.finetune,
                Some(Finetune::UpDown(_) | Finetune::Autoencoder(_) | Finetune::WakeSleep(_))
            );
            if generative {
                return Err(EngineError::invalid(
                    "architecture.lateral",
                    "up-down, deep-autoencoder and wake-sleep fine-tuning are for restricted \
                     layers; backprop works",
                ));
            }
        }
        if let Some(seq) = &self.sequence {
            self.validate_sequence(seq, n_inputs, classes)?;
        }
        if self.train_examples == Some(0) {
            return Err(EngineError::invalid("train_examples", "must be at least 1"));
        }
        if let Some(a) = &self.ais {
            if !(1..=10_000).contains(&a.runs) {
                return Err(EngineError::invalid("ais.runs", "must be in 1..=10000"));
            }
            if !(10..=1_000_000).contains(&a.steps) {
                return Err(EngineError::invalid("ais.steps", "must be in 10..=1000000"));
            }
            let random_start = matches!(
                &self.finetune,
                Some(Finetune::WakeSleep(c)) if c.init == WakeSleepInit::Random
            );
            if random_start {
                return Err(EngineError::invalid(
                    "ais",
                    "wake-sleep from random weights trains no RBMs to measure; its card gets \
                     test_log_prob_bound instead",
                ));
            }
            if gaussian || autoencoder_first {
                return Err(EngineError::invalid(
                    "ais",
                    "annealed importance sampling is implemented for RBMs of binary units only",
                ));
            }
            if hidden.len() == 1 && self.architecture.labels_in_top {
                return Err(EngineError::invalid(
                    "ais",
                    "the first RBM must be free of label units: use two or more layers, or \
                     labels_in_top false",
                ));
            }
        }
        match &self.finetune {
            Some(Finetune::Backprop(c)) => {
                c.validate("finetune")?;
                if !arch.top_units.is_binary() {
                    return Err(EngineError::invalid(
                        "finetune",
                        "backpropagation into a classifier needs binary top units",
                    ));
                }
                if classes < 2 {
                    return Err(EngineError::invalid(
                        "finetune",
                        "backpropagation needs a dataset with labels",
                    ));
                }
            }
            Some(Finetune::UpDown(c)) => {
                c.validate("finetune")?;
                if gaussian {
                    return Err(EngineError::invalid(
                        "finetune",
                        "up-down is implemented for binary units only",
                    ));
                }
                if !self.architecture.labels_in_top || hidden.len() < 2 || classes < 2 {
                    return Err(EngineError::invalid(
                        "finetune",
                        "up-down needs two or more layers and labels in the top RBM",
                    ));
                }
            }
            Some(Finetune::Autoencoder(c)) => {
                c.validate("finetune")?;
                if arch.labels_in_top || !arch.visible_units.is_binary() {
                    return Err(EngineError::invalid(
                        "finetune",
                        "a deep autoencoder needs labels_in_top false and binary visible units",
                    ));
                }
            }
            Some(Finetune::WakeSleep(c)) => {
                c.validate("finetune")?;
                if arch.labels_in_top || gaussian {
                    return Err(EngineError::invalid(
                        "finetune",
                        "wake-sleep needs labels_in_top false and binary units",
                    ));
                }
            }
            None => {}
        }
        if let Some(c) = &self.classifier {
            c.validate("classifier")?;
            if !matches!(self.finetune, Some(Finetune::UpDown(_))) {
                return Err(EngineError::invalid(
                    "classifier",
                    "follows an up_down fine-tuning; for a classifier alone use finetune with \
                     method backprop",
                ));
            }
        }
        Ok(())
    }

    /// The fine-tuning stages in the order they run: `finetune`, then the classifier.
    pub fn finetune_stages(&self) -> Vec<Finetune> {
        let classifier = self.classifier.clone().map(Finetune::Backprop);
        self.finetune.iter().cloned().chain(classifier).collect()
    }

    /// What a sequence model cannot combine with.
    fn validate_sequence(&self, seq: &SequenceSpec, n_inputs: usize, classes: usize) -> Result<()> {
        let arch = &self.architecture;
        // Datasets hold square images (28 × 28); the frames check the exact shape again.
        let side = (n_inputs as f64).sqrt().round() as usize;
        seq.validate(arch.hidden.len(), side, side)?;
        let refuse = |field: &str, message: &str| Err(EngineError::invalid(field, message));
        if arch.labels_in_top && classes > 0 {
            return refuse(
                "architecture.labels_in_top",
                "a sequence model has no label units: set labels_in_top false",
            );
        }
        if !arch.top_units.is_binary() || arch.lateral {
            return refuse(
                "architecture",
                "a sequence model has binary hidden units and no lateral connections",
            );
        }
        if self.finetune.is_some() || self.ais.is_some() {
            return refuse(
                "sequence",
                "a sequence model is learned greedily only: no finetune, no ais",
            );
        }
        if self.validation_examples > 0 {
            return refuse(
                "validation_examples",
                "a sequence model holds out no examples; its test sequences are scored instead",
            );
        }
        for i in 0..arch.hidden.len() {
            let c = self.layer_config(i);
            if c.persistent || c.method != LayerMethod::Cd {
                return refuse(
                    "pretrain",
                    "conditional RBMs learn by CD (not persistent, not autoencoder)",
                );
            }
        }
        Ok(())
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
    /// `data`, of which the last `validation_examples` are held out.
    pub fn split(&self, data: &Dataset) -> (Dataset, Dataset) {
        let used = self
            .train_examples
            .map_or(data.len(), |n| n.min(data.len()));
        data.slice(0..used)
            .split_last(self.validation_examples.min(used))
    }

    /// Multiply-adds of pretraining layer `i` on `n` examples: every CD-k step is 2k + 3
    /// products of V × H per example (up, k times down and up, two for the statistics).
    pub fn layer_work(&self, i: usize, n_inputs: usize, classes: usize, n: usize) -> f64 {
        let c = self.layer_config(i);
        c.epochs as f64
            * n as f64
            * (2 * c.cd_k + 3) as f64
            * self.layer_visible(i, n_inputs, classes) as f64
            * self.architecture.hidden[i] as f64
    }

    /// The fraction of a run's arithmetic that fine-tuning takes (0 without fine-tuning).
    pub fn finetune_share(&self, n_inputs: usize, classes: usize, n: usize) -> f64 {
        let hidden = &self.architecture.hidden;
        let pretrain: f64 = (0..hidden.len())
            .map(|i| self.layer_work(i, n_inputs, classes, n))
            .sum();
        let (forward, below) = self.forward_work(n_inputs);
        let stages = self.finetune_stages();
        if stages.is_empty() {
            return 0.0;
        }
        let mut finetune = 0.0;
        for stage in &stages {
            match self.stage_work(stage, n_inputs, classes, n, forward, below) {
                Some(work) => finetune += work,
                // Without pretraining all the work is wake-sleep's.
                None => return 1.0,
            }
        }
        finetune / (pretrain + finetune).max(1.0)
    }

    /// The shares of fine-tuning's arithmetic that each of its stages takes (summing to 1).
    pub fn stage_shares(&self, n_inputs: usize, classes: usize, n: usize) -> Vec<f64> {
        let (forward, below) = self.forward_work(n_inputs);
        let work: Vec<f64> = self
            .finetune_stages()
            .iter()
            .map(|s| {
                self.stage_work(s, n_inputs, classes, n, forward, below)
                    .unwrap_or(1.0)
            })
            .collect();
        let total: f64 = work.iter().sum();
        work.iter()
            .map(|w| w / total.max(f64::MIN_POSITIVE))
            .collect()
    }

    /// Multiply-adds of one pass up the stack, and the top layer's size.
    fn forward_work(&self, n_inputs: usize) -> (f64, usize) {
        let mut forward = 0.0;
        let mut below = n_inputs;
        for &h in &self.architecture.hidden {
            forward += (below * h) as f64;
            below = h;
        }
        (forward, below)
    }

    /// Multiply-adds of one fine-tuning stage on `n` examples (`None`: wake-sleep from random
    /// weights, which is all of the run's work); backpropagation is three products per layer
    /// and example (forward, two backward).
    fn stage_work(
        &self,
        stage: &Finetune,
        n_inputs: usize,
        classes: usize,
        n: usize,
        forward: f64,
        below: usize,
    ) -> Option<f64> {
        let hidden = &self.architecture.hidden;
        Some(match stage {
            Finetune::Backprop(c) => {
                3.0 * c.epochs as f64 * n as f64 * (forward + (below * classes) as f64)
            }
            // Below the top: six products per layer (up, down, two predictions, two
            // updates); the top: 2k + 3 products.
            Finetune::UpDown(c) => {
                let top = (self.layer_visible(hidden.len() - 1, n_inputs, classes)
                    * hidden[hidden.len() - 1]) as f64;
                let k = c.cd_k.iter().sum::<usize>() as f64 / c.cd_k.len().max(1) as f64;
                c.epochs as f64
                    * n as f64
                    * (6.0 * (forward - top.min(forward)) + (2.0 * k + 3.0) * top)
            }
            // Encoder and decoder: twice the forward products, three each per example.
            Finetune::Autoencoder(c) => 6.0 * c.epochs as f64 * n as f64 * forward,
            Finetune::WakeSleep(c) if c.init == WakeSleepInit::Random => return None,
            // Wake: up, down and an update per layer; sleep the same.
            Finetune::WakeSleep(c) => 6.0 * c.epochs as f64 * n as f64 * forward,
        })
    }

    /// Weights of layer `i`, conditioning weights included ([`layer_parameters`]).
    pub fn layer_parameters(&self, i: usize, n_inputs: usize, classes: usize) -> usize {
        let order = self.sequence.as_ref().map_or(0, |s| s.order);
        layer_parameters(
            self.layer_visible(i, n_inputs, classes),
            self.architecture.hidden[i],
            order,
        )
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::dbn::Dbn;
    use crate::engine::rbm::Rbm;

    fn spec(hidden: &[usize]) -> TrainingSpec {
        let mut spec = TrainingSpec::digit_model();
        spec.architecture.hidden = hidden.to_vec();
        spec
    }

    /// A 8-6-5 stack with 3 labels joined to the top, as the spec would train it.
    fn model() -> Dbn {
        let mut rng = crate::engine::rng_from_seed(1);
        let bottom = Rbm::new(8, 6, 0, 0.1, &mut rng).unwrap();
        let top = Rbm::new(6 + 3, 5, 3, 0.1, &mut rng).unwrap();
        Dbn::new(vec![bottom, top]).unwrap()
    }

    #[test]
    fn a_spec_and_the_model_it_trains_count_the_same_weights() {
        let spec = spec(&[6, 5]);
        let planned: usize = (0..2).map(|i| spec.layer_parameters(i, 8, 3)).sum();
        assert_eq!(planned, 8 * 6 + 9 * 5);
        assert_eq!(model().parameter_count(), planned);
    }

    #[test]
    fn conditioning_weights_count_order_times_the_past() {
        // A: [2·4, 4] and B: [2·4, 3] besides W: [4, 3].
        assert_eq!(layer_parameters(4, 3, 2), 4 * 3 + 8 * 4 + 8 * 3);
        assert_eq!(layer_parameters(usize::MAX, 2, 1), usize::MAX);
    }

    #[test]
    fn a_model_is_held_to_every_bound_a_spec_is() {
        let dbn = model();
        let at = Limits {
            max_layers: 2,
            max_units: 6,
            max_parameters: dbn.parameter_count(),
        };
        assert!(at.check_model(&dbn).is_ok());
        for (past, what) in [
            (
                Limits {
                    max_layers: 1,
                    ..at
                },
                "layers",
            ),
            (Limits { max_units: 5, ..at }, "units"),
            (
                Limits {
                    max_parameters: at.max_parameters - 1,
                    ..at
                },
                "weights",
            ),
        ] {
            let err = past.check_model(&dbn).unwrap_err().to_string();
            assert!(err.contains(what), "{what}: {err}");
        }
    }
}
