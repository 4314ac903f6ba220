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
    /// Gibbs steps of the negative phase: CD-k (default 1); with `cd_k_final`, the k of the
    /// first epoch.
    pub cd_k: usize,
    /// When set, k rises linearly from `cd_k` in the first epoch to this in the last, rounded
    /// to the nearest step (Salakhutdinov & Murray's CD-25 models were learned with k raised
    /// gradually from 1 to 25). Default: k stays `cd_k`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cd_k_final: Option<usize>,
    /// Both step sizes are multiplied by this after every epoch: epoch e (0-based) learns
    /// with ε · decay^e (default 1, a constant step).
    #[serde(skip_serializing_if = "is_one")]
    pub learning_rate_decay: f32,
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
            cd_k_final: None,
            learning_rate_decay: 1.0,
            persistent: false,
            visible_bias_init: VisibleBiasInit::Data,
            init_std: 0.01,
            method: LayerMethod::Cd,
        }
    }
}

/// For serde's `skip_serializing_if`: a default of 1 stays out of the JSON, so that specs
/// and cards written before the field existed read back the same.
fn is_one(x: &f32) -> bool {
    *x == 1.0
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
        if let Some(last) = self.cd_k_final {
            if last == 0 || last > MAX_CD_K {
                return bad(
                    "cd_k_final",
                    format!("must be in 1..={MAX_CD_K}, got {last}"),
                );
            }
        }
        if self.method == LayerMethod::Autoencoder
            && (self.persistent || self.cd_k != 1 || self.cd_k_final.is_some())
        {
            return bad(
                "method",
                "an autoencoder layer has no Gibbs chain: cd_k must be 1, cd_k_final unset and \
                 persistent false"
                    .into(),
            );
        }
        if !(self.learning_rate_decay.is_finite()
            && self.learning_rate_decay > 0.0
            && self.learning_rate_decay <= 1.0)
        {
            return bad(
                "learning_rate_decay",
                format!(
                    "must be a number in (0, 1], got {}",
                    self.learning_rate_decay
                ),
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

    /// The k of CD-k in `epoch` (0-based): `cd_k`, or on the line from `cd_k` in the first
    /// epoch to `cd_k_final` in the last.
    pub fn cd_k_at(&self, epoch: usize) -> usize {
        match self.cd_k_final {
            Some(last) if self.epochs > 1 => {
                let t = epoch.min(self.epochs - 1) as f64 / (self.epochs - 1) as f64;
                let k = self.cd_k as f64 + (last as f64 - self.cd_k as f64) * t;
                (k.round() as usize).max(1)
            }
            _ => self.cd_k,
        }
    }

    /// The mean k over all epochs (for cost estimates).
    pub fn cd_k_mean(&self) -> f64 {
        let epochs = self.epochs.max(1);
        (0..epochs).map(|e| self.cd_k_at(e)).sum::<usize>() as f64 / epochs as f64
    }

    /// The settings of one epoch (0-based): its k and its decayed step sizes.
    pub fn at_epoch(&self, epoch: usize) -> RbmTrainConfig {
        let factor = self
            .learning_rate_decay
            .powi(epoch.min(i32::MAX as usize) as i32);
        RbmTrainConfig {
            cd_k: self.cd_k_at(epoch),
            cd_k_final: None,
            learning_rate: self.learning_rate * factor,
            bias_learning_rate: self.bias_learning_rate * factor,
            learning_rate_decay: 1.0,
            ..self.clone()
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn ramp(epochs: usize, first: usize, last: usize) -> RbmTrainConfig {
        RbmTrainConfig {
            epochs,
            cd_k: first,
            cd_k_final: Some(last),
            ..RbmTrainConfig::default()
        }
    }

    #[test]
    fn k_rises_on_a_line_from_the_first_epoch_to_the_last() {
        let c = ramp(25, 1, 25);
        let ks: Vec<usize> = (0..25).map(|e| c.cd_k_at(e)).collect();
        assert_eq!(ks, (1..=25).collect::<Vec<_>>());
        let c = ramp(101, 1, 25);
        assert_eq!((c.cd_k_at(0), c.cd_k_at(50), c.cd_k_at(100)), (1, 13, 25));
        assert!((0..100).all(|e| c.cd_k_at(e) <= c.cd_k_at(e + 1)));
        // Past the last epoch (a resumed run's bookkeeping) k stays at the end.
        assert_eq!(c.cd_k_at(500), 25);
        // One epoch: the first k; no ramp: cd_k throughout.
        assert_eq!(ramp(1, 3, 9).cd_k_at(0), 3);
        let plain = RbmTrainConfig::default();
        assert_eq!((plain.cd_k_at(0), plain.cd_k_at(29)), (1, 1));
        assert_eq!(c.cd_k_mean(), 13.0);
    }

    #[test]
    fn each_epoch_learns_with_its_decayed_steps_and_its_own_k() {
        let c = RbmTrainConfig {
            learning_rate: 0.1,
            bias_learning_rate: 0.2,
            learning_rate_decay: 0.5,
            ..ramp(5, 1, 5)
        };
        let e2 = c.at_epoch(2);
        assert_eq!(e2.cd_k, 3);
        assert!((e2.learning_rate - 0.025).abs() < 1e-7);
        assert!((e2.bias_learning_rate - 0.05).abs() < 1e-7);
        assert_eq!(e2.cd_k_final, None);
        assert_eq!(e2.learning_rate_decay, 1.0);
        assert_eq!(e2.epochs, 5);
        assert_eq!(c.at_epoch(0).learning_rate, 0.1);
        let plain = RbmTrainConfig::default();
        assert_eq!(plain.at_epoch(7), plain);
    }

    #[test]
    fn a_bad_schedule_is_refused_with_the_field_named() {
        let cases = [
            (
                ramp(10, 1, 0),
                "pretrain.cd_k_final",
                "must be in 1..=1000, got 0",
            ),
            (ramp(10, 1, 5000), "pretrain.cd_k_final", "got 5000"),
            (
                RbmTrainConfig {
                    learning_rate_decay: 1.5,
                    ..RbmTrainConfig::default()
                },
                "pretrain.learning_rate_decay",
                "must be a number in (0, 1], got 1.5",
            ),
            (
                RbmTrainConfig {
                    learning_rate_decay: 0.0,
                    ..RbmTrainConfig::default()
                },
                "pretrain.learning_rate_decay",
                "got 0",
            ),
            (
                RbmTrainConfig {
                    method: LayerMethod::Autoencoder,
                    ..ramp(10, 1, 2)
                },
                "pretrain.method",
                "cd_k_final unset",
            ),
        ];
        for (config, field, message) in cases {
            let err = config.validate("pretrain").unwrap_err().to_string();
            assert!(err.contains(field), "{err}");
            assert!(err.contains(message), "{err}");
        }
        assert!(ramp(10, 1, 25).validate("pretrain").is_ok());
    }

    #[test]
    fn the_default_schedule_stays_out_of_the_json() {
        let json = serde_json::to_value(RbmTrainConfig::default()).unwrap();
        assert!(json.get("cd_k_final").is_none());
        assert!(json.get("learning_rate_decay").is_none());
        let back: RbmTrainConfig = serde_json::from_value(
            serde_json::to_value(RbmTrainConfig {
                learning_rate_decay: 0.98,
                ..ramp(100, 1, 25)
            })
            .unwrap(),
        )
        .unwrap();
        assert_eq!(back.cd_k_final, Some(25));
        assert_eq!(back.learning_rate_decay, 0.98);
    }
}
