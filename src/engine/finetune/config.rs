//! Settings of discriminative fine-tuning by backpropagation, with defaults in the spirit of
//! Hinton & Salakhutdinov's `backpropclassify` (output layer alone first, then everything)
//! and, for dropout, Srivastava et al. (2014).

use serde::{Deserialize, Serialize};

use crate::engine::error::{EngineError, Result};

/// The most epochs a fine-tuning run may ask for.
pub const MAX_FINETUNE_EPOCHS: usize = 10_000;
/// Largest mini-batch of either fine-tuning method.
pub const MAX_FINETUNE_BATCH: usize = 100_000;

/// How to fine-tune the unrolled network. Every field has a default; unknown fields are
/// rejected.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BackpropConfig {
    /// Passes over the training data (default 50).
    pub epochs: usize,
    /// Epochs at the start in which only the new softmax layer learns, so that its random
    /// weights do not wreck the pretrained features (default 5).
    pub top_only_epochs: usize,
    /// Examples per mini-batch (default 100).
    pub batch_size: usize,
    /// Step size of the first epoch (default 0.1).
    pub learning_rate: f32,
    /// Factor applied to the step size after every epoch (default 0.97).
    pub learning_rate_decay: f32,
    /// Momentum for the first `momentum_switch_epoch` epochs (default 0.5), then
    /// `momentum_final` (default 0.9).
    pub momentum_initial: f32,
    pub momentum_final: f32,
    pub momentum_switch_epoch: usize,
    /// L2 decay of the weights (default 0.00001).
    pub weight_decay: f32,
    /// Probability of keeping an input pixel during training (1 = no dropout; 0.8 in
    /// Srivastava et al.).
    pub input_keep: f32,
    /// Probability of keeping a hidden unit during training (1 = no dropout; 0.5 in
    /// Srivastava et al.).
    pub hidden_keep: f32,
    /// Standard deviation of the new output layer's initial weights (default 0.01).
    pub init_std: f32,
}

impl Default for BackpropConfig {
    fn default() -> Self {
        BackpropConfig {
            epochs: 50,
            top_only_epochs: 5,
            batch_size: 100,
            learning_rate: 0.1,
            learning_rate_decay: 0.97,
            momentum_initial: 0.5,
            momentum_final: 0.9,
            momentum_switch_epoch: 5,
            weight_decay: 1e-5,
            input_keep: 1.0,
            hidden_keep: 1.0,
            init_std: 0.01,
        }
    }
}

impl BackpropConfig {
    /// Checks every setting; errors name the field under `prefix`.
    pub fn validate(&self, prefix: &str) -> Result<()> {
        let bad =
            |field: &str, msg: String| Err(EngineError::invalid(format!("{prefix}.{field}"), msg));
        if self.epochs == 0 || self.epochs > MAX_FINETUNE_EPOCHS {
            return bad(
                "epochs",
                format!("must be in 1..={MAX_FINETUNE_EPOCHS}, got {}", self.epochs),
            );
        }
        if self.top_only_epochs > self.epochs {
            return bad("top_only_epochs", "must not exceed epochs".into());
        }
        if self.batch_size == 0 || self.batch_size > MAX_FINETUNE_BATCH {
            return bad(
                "batch_size",
                format!(
                    "must be in 1..={MAX_FINETUNE_BATCH}, got {}",
                    self.batch_size
                ),
            );
        }
        let finite_in = |v: f32, lo: f32, hi: f32| v.is_finite() && v >= lo && v <= hi;
        let checks = [
            ("learning_rate", self.learning_rate, 0.0, 100.0),
            ("learning_rate_decay", self.learning_rate_decay, 0.0, 1.0),
            ("momentum_initial", self.momentum_initial, 0.0, 0.999),
            ("momentum_final", self.momentum_final, 0.0, 0.999),
            ("weight_decay", self.weight_decay, 0.0, 1.0),
            ("init_std", self.init_std, 0.0, 10.0),
        ];
        for (field, v, lo, hi) in checks {
            if !finite_in(v, lo, hi) {
                return bad(field, format!("must be in [{lo}, {hi}], got {v}"));
            }
        }
        for (field, v) in [
            ("input_keep", self.input_keep),
            ("hidden_keep", self.hidden_keep),
        ] {
            if !(v.is_finite() && v > 0.0 && v <= 1.0) {
                return bad(field, format!("must be in (0, 1], got {v}"));
            }
        }
        Ok(())
    }

    /// Momentum in `epoch` (0-based).
    pub fn momentum(&self, epoch: usize) -> f32 {
        if epoch < self.momentum_switch_epoch {
            self.momentum_initial
        } else {
            self.momentum_final
        }
    }

    /// Step size in `epoch` (0-based).
    pub fn learning_rate_at(&self, epoch: usize) -> f32 {
        self.learning_rate * self.learning_rate_decay.powi(epoch as i32)
    }
}

/// Checks the settings every fine-tuning run shares: epochs and batch size within the
/// fine-tuning bounds, and a step size in (0, 10].
pub(crate) fn check_run(prefix: &str, epochs: usize, batch_size: usize, lr: f32) -> Result<()> {
    let bad = |f: &str, m: String| Err(EngineError::invalid(format!("{prefix}.{f}"), m));
    if !(1..=MAX_FINETUNE_EPOCHS).contains(&epochs) {
        return bad("epochs", format!("must be in 1..={MAX_FINETUNE_EPOCHS}"));
    }
    if !(1..=MAX_FINETUNE_BATCH).contains(&batch_size) {
        return bad("batch_size", format!("must be in 1..={MAX_FINETUNE_BATCH}"));
    }
    if !(lr.is_finite() && lr > 0.0 && lr <= 10.0) {
        return bad("learning_rate", "must be in (0, 10]".into());
    }
    Ok(())
}
