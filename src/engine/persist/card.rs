//! The model card: everything about a model except its numbers.

use serde::{Deserialize, Serialize};

use crate::engine::spec::TrainingSpec;

/// Everything about a model except its numbers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelCard {
    pub name: String,
    /// Layer sizes from the input up, e.g. [784, 500, 500, 2000].
    pub sizes: Vec<usize>,
    /// Label units on the top RBM.
    pub label_classes: usize,
    /// Height and width of input images, when the inputs are images.
    pub image_shape: Option<[usize; 2]>,
    /// The spec it was trained from, if any.
    pub spec: Option<TrainingSpec>,
    pub provenance: Provenance,
    /// Named results, e.g. `test_error`.
    #[serde(default)]
    pub metrics: std::collections::BTreeMap<String, f64>,
}

impl ModelCard {
    /// The card of a model that greedy training just produced from `spec`.
    pub fn for_training(
        spec: &TrainingSpec,
        outcome: &crate::engine::dbn::TrainOutcome,
        image_shape: Option<[usize; 2]>,
        threads: usize,
    ) -> Self {
        let mut metrics = std::collections::BTreeMap::new();
        if let Some(v) = outcome.validation_error {
            metrics.insert("validation_error".to_string(), v);
        }
        // The fine-tuning epoch with the lowest held-out error (the first of equals): the
        // epoch count to retrain with on all the data, as the papers chose theirs.
        let best = outcome
            .history
            .iter()
            .filter(|m| m.phase == crate::engine::observer::Phase::Finetune)
            .filter_map(|m| m.validation_error.map(|e| (m.epoch, e)))
            .fold(None, |best: Option<(usize, f64)>, (epoch, e)| match best {
                Some((_, b)) if b <= e => best,
                _ => Some((epoch, e)),
            });
        if let Some((epoch, e)) = best {
            metrics.insert("finetune_best_epoch".to_string(), epoch as f64);
            metrics.insert("finetune_best_validation_error".to_string(), e);
        }
        ModelCard {
            name: spec.name.clone().unwrap_or_else(|| "model".into()),
            sizes: outcome.dbn.sizes(),
            label_classes: outcome.dbn.label_classes(),
            image_shape,
            spec: Some(spec.clone()),
            provenance: Provenance {
                dataset: spec.dataset.clone(),
                train_examples: outcome.train_examples,
                validation_examples: outcome.validation_examples,
                seed: spec.seed,
                threads,
                kernels: crate::engine::math::kernel_set().into(),
                engine_version: env!("CARGO_PKG_VERSION").into(),
                created_unix: std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs()),
                train_seconds: outcome.seconds,
                storage: f32_storage(),
            },
            metrics,
        }
    }
}

/// Where a model came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Provenance {
    pub dataset: String,
    pub train_examples: usize,
    pub validation_examples: usize,
    pub seed: u64,
    /// Worker threads used (results are reproducible for a given seed, thread count and
    /// kernel set).
    pub threads: usize,
    /// The vector instruction set the kernels ran with: `avx512`, `avx2` or `portable`.
    #[serde(default)]
    pub kernels: String,
    pub engine_version: String,
    /// Seconds since the Unix epoch when training finished.
    pub created_unix: u64,
    pub train_seconds: f64,
    /// How the file stores real values: `f32`, or `bf16` for a model compacted to half the
    /// bytes (`dbn-serve compact`), whose metrics are then measured on the bf16 weights.
    #[serde(default = "f32_storage")]
    pub storage: String,
}

fn f32_storage() -> String {
    "f32".into()
}
