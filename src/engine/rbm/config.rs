//! Settings for learning one RBM by contrastive divergence, with the defaults of Hinton's
//! `rbm.m` and "A Practical Guide to Training RBMs".

use serde::{Deserialize, Serialize};

use crate::engine::error::{EngineError, Result};

/// How visible biases start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum VisibleBiasInit {
    /// b_i = ln(p_i / (1 − p_i)) from the mean p_i of unit i in the training data.
    #[default]
    Data,
    /// b_i = 0.
    Zero,
}

/// The learning rule of one layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum LayerMethod {
    /// Contrastive divergence (persistent with `persistent`): the layer is an RBM.
    #[default]
    Cd,
    /// An autoencoder with one hidden layer and tied weights, learned by gradient descent on
    /// the reconstruction's cross-entropy (binary inputs) or squared error (Gaussian inputs):
    /// the seed's alternative to RBMs for layer-by-layer learning (Bengio et al. 2007).
    Autoencoder,
}

impl LayerMethod {
    /// For serde's `skip_serializing_if`.
    pub fn is_cd(method: &LayerMethod) -> bool {
        *method == LayerMethod::Cd
    }
}

/// How to learn one RBM. Every field has a default; the JSON form rejects unknown fields.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RbmTrainConfig {
    /// Passes over the training data (default 30).
    pub epochs: usize,
    /// Examples per mini-batch (default 100).
    pub batch_size: usize,
    /// ε for the weights (default 0.1).
    pub learning_rate: f32,
    /// ε for the biases (default 0.1).
    pub bias_learning_rate: f32,
    /// Momentum for the first `momentum_switch_epoch` epochs (default 0.5).
    pub momentum_initial: f32,
    /// Momentum afterwards (default 0.9).
    pub momentum_final: f32,
    /// The epoch (0-based) from which `momentum_final` applies (default 5).
    pub momentum_switch_epoch: usize,
    /// L2 weight decay on the weights only (default 0.0002).
    pub weight_decay: f32,
    /// Gibbs steps of the negative phase: CD-k (default 1).
    pub cd_k: usize,
    /// Persistent CD: keep fantasy particles across mini-batches (default false).
    pub persistent: bool,
    /// Start of the visible biases (default `data`).
    pub visible_bias_init: VisibleBiasInit,
    /// Standard deviation of the initial weights (default 0.01).
    pub init_std: f32,
    /// The learning rule: `cd` (default) or `autoencoder` (then `cd_k` must be 1 and
    /// `persistent` false).
    #[serde(skip_serializing_if = "LayerMethod::is_cd")]
    pub method: LayerMethod,
}

impl Default for RbmTrainConfig {
    fn default() -> Self {
        RbmTrainConfig {
            epochs: 30,
            batch_size: 100,
            learning_rate: 0.1,
            bias_learning_rate: 0.1,
            momentum_initial: 0.5,
            momentum_final: 0.9,
            momentum_switch_epoch: 5,
            weight_decay: 0.0002,
            cd_k: 1,
            persistent: false,
            visible_bias_init: VisibleBiasInit::Data,
            init_std: 0.01,
            method: LayerMethod::Cd,
        }
    }
}

/// Upper bounds that keep a typo from asking for a year of training.
pub const MAX_EPOCHS: usize = 10_000;
pub const MAX_BATCH: usize = 100_000;
pub const MAX_CD_K: usize = 1_000;

impl RbmTrainConfig {
    /// Checks every field; `prefix` names where the config sits in a larger spec.
    pub fn validate(&self, prefix: &str) -> Result<()> {
        let bad =
            |field: &str, msg: String| Err(EngineError::invalid(format!("{prefix}.{field}"), msg));
        if self.epochs == 0 || self.epochs > MAX_EPOCHS {
            return bad(
                "epochs",
                format!("must be in 1..={MAX_EPOCHS}, got {}", self.epochs),
            );
        }
        if self.batch_size == 0 || self.batch_size > MAX_BATCH {
            return bad(
                "batch_size",
                format!("must be in 1..={MAX_BATCH}, got {}", self.batch_size),
            );
        }
        if self.cd_k == 0 || self.cd_k > MAX_CD_K {
            return bad(
                "cd_k",
                format!("must be in 1..={MAX_CD_K}, got {}", self.cd_k),
            );
        }
        if self.method == LayerMethod::Autoencoder && (self.persistent || self.cd_k != 1) {
            return bad(
                "method",
                "an autoencoder layer has no Gibbs chain: cd_k must be 1 and persistent false"
                    .into(),
            );
        }
        for (field, value, max) in [
            ("learning_rate", self.learning_rate, 100.0),
            ("bias_learning_rate", self.bias_learning_rate, 100.0),
            ("init_std", self.init_std, 10.0),
        ] {
            if !(value.is_finite() && value > 0.0 && value <= max) {
                return bad(
                    field,
                    format!("must be a number in (0, {max}], got {value}"),
                );
            }
        }
        for (field, value) in [
            ("momentum_initial", self.momentum_initial),
            ("momentum_final", self.momentum_final),
        ] {
            if !(0.0..1.0).contains(&value) {
                return bad(field, format!("must be in [0, 1), got {value}"));
            }
        }
        if !(self.weight_decay.is_finite() && (0.0..1.0).contains(&self.weight_decay)) {
            return bad(
                "weight_decay",
                format!("must be in [0, 1), got {}", self.weight_decay),
            );
        }
        Ok(())
    }

    /// The momentum in force at `epoch` (0-based).
    pub fn momentum(&self, epoch: usize) -> f32 {
        if epoch < self.momentum_switch_epoch {
            self.momentum_initial
        } else {
            self.momentum_final
        }
    }
}
