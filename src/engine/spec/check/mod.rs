//! Checking a spec once, against the data it will learn from and the machine's bounds, and
//! the checked value that training takes (the "parameter guard" pattern): a function that
//! receives a [`CheckedSpec`] knows every rule below holds and checks nothing again.
//!
//! The rules are grouped by concern, one function each; every message names its field.

use std::ops::Deref;

use super::{Finetune, Limits, TrainingSpec};
use crate::engine::crbm::SequenceSpec;
use crate::engine::data::Dataset;
use crate::engine::error::{EngineError, Result};
use crate::engine::finetune::WakeSleepInit;
use crate::engine::rbm::LayerMethod;

/// What a spec is checked against: the dataset's shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataShape {
    /// Values per example (28 × 28 = 784 for MNIST).
    pub n_inputs: usize,
    /// Label classes (0 for unlabelled data).
    pub classes: usize,
    /// Training examples the dataset holds.
    pub examples: usize,
}

impl DataShape {
    /// The MNIST training set.
    pub const MNIST: DataShape = DataShape {
        n_inputs: 784,
        classes: 10,
        examples: 60_000,
    };

    /// The shape of `data`.
    pub fn of(data: &Dataset) -> DataShape {
        DataShape {
            n_inputs: data.n_pixels(),
            classes: data.classes,
            examples: data.len(),
        }
    }
}

/// A spec that passed [`TrainingSpec::check`] for data of a known shape. It reads as the
/// spec it holds (`Deref`); it cannot be built any other way.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckedSpec {
    spec: TrainingSpec,
    shape: DataShape,
}

impl Deref for CheckedSpec {
    type Target = TrainingSpec;
    fn deref(&self) -> &TrainingSpec {
        &self.spec
    }
}

impl CheckedSpec {
    pub fn spec(&self) -> &TrainingSpec {
        &self.spec
    }

    /// The shape the spec was checked for.
    pub fn shape(&self) -> DataShape {
        self.shape
    }

    pub fn into_spec(self) -> TrainingSpec {
        self.spec
    }

    /// Refuses data of another shape than the one checked (its values per example or its
    /// classes); the number of examples may be smaller, as a loader may read only those the
    /// spec uses.
    pub fn fits(&self, data: &Dataset) -> Result<()> {
        if data.n_pixels() != self.shape.n_inputs || data.classes != self.shape.classes {
            return Err(EngineError::invalid(
                "dataset",
                format!(
                    "the spec was checked for {} values and {} classes per example; this data \
                     has {} and {}",
                    self.shape.n_inputs,
                    self.shape.classes,
                    data.n_pixels(),
                    data.classes
                ),
            ));
        }
        Ok(())
    }
}

impl TrainingSpec {
    /// Checks every rule for data of `shape` within `limits`: the first broken rule is the
    /// error, naming its field.
    pub fn check(&self, shape: DataShape, limits: &Limits) -> Result<CheckedSpec> {
        check_alias(self)?;
        check_size(self, shape, limits)?;
        check_layers(self, shape.classes)?;
        check_units(self, shape.classes)?;
        check_examples(self, shape)?;
        if let Some(seq) = &self.sequence {
            check_sequence(self, seq, shape)?;
        }
        check_ais(self)?;
        check_finetune(self, shape.classes)?;
        check_classifier(self)?;
        Ok(CheckedSpec {
            spec: self.clone(),
            shape,
        })
    }

    /// [`TrainingSpec::check`] for the shape of `data`.
    pub fn check_for(&self, data: &Dataset, limits: &Limits) -> Result<CheckedSpec> {
        self.check(DataShape::of(data), limits)
    }
}

fn refuse<T>(field: &str, message: impl Into<String>) -> Result<T> {
    Err(EngineError::invalid(field, message))
}

fn check_alias(spec: &TrainingSpec) -> Result<()> {
    let Some(alias) = &spec.alias else {
        return Ok(());
    };
    let ok = !alias.is_empty()
        && alias.len() <= 64
        && alias
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if !ok {
        return refuse("alias", "1-64 characters of letters, digits, '-' and '_'");
    }
    Ok(())
}

/// The bounds: layers, units per layer, weights in all.
fn check_size(spec: &TrainingSpec, shape: DataShape, limits: &Limits) -> Result<()> {
    let hidden = &spec.architecture.hidden;
    if hidden.is_empty() || hidden.len() > limits.max_layers {
        return refuse(
            "architecture.hidden",
            format!(
                "needs 1..={} layer sizes, got {}",
                limits.max_layers,
                hidden.len()
            ),
        );
    }
    let mut params = 0usize;
    for (i, &h) in hidden.iter().enumerate() {
        if h == 0 || h > limits.max_units {
            return refuse(
                &format!("architecture.hidden[{i}]"),
                format!("must be in 1..={}, got {h}", limits.max_units),
            );
        }
        params = params.saturating_add(spec.layer_parameters(i, shape.n_inputs, shape.classes));
    }
    if params > limits.max_parameters {
        return refuse(
            "architecture.hidden",
            format!(
                "{params} weights exceed the limit of {}",
                limits.max_parameters
            ),
        );
    }
    Ok(())
}

/// Each layer's learning settings, overrides included.
fn check_layers(spec: &TrainingSpec, classes: usize) -> Result<()> {
    let layers = spec.architecture.hidden.len();
    spec.pretrain.validate("pretrain")?;
    for (i, o) in spec.layer_overrides.iter().enumerate() {
        if o.layer >= layers {
            return refuse(
                &format!("layer_overrides[{i}].layer"),
                format!("there are {layers} layers"),
            );
        }
        spec.layer_config(o.layer)
            .validate(&format!("layer_overrides[{i}]"))?;
    }
    for i in 0..layers {
        if spec.layer_config(i).method == LayerMethod::Autoencoder
            && spec.layer_labels(i, classes) > 0
        {
            return refuse(
                "pretrain.method",
                format!(
                    "layer {i} joins the label units, which an autoencoder layer cannot learn: \
                     set architecture.labels_in_top false (and fine-tune by backprop to \
                     classify), or learn that layer with cd"
                ),
            );
        }
    }
    Ok(())
}

/// Unit kinds, labels, binarised data and lateral connections.
fn check_units(spec: &TrainingSpec, classes: usize) -> Result<()> {
    let arch = &spec.architecture;
    if !arch.top_units.is_binary() && arch.labels_in_top {
        return refuse(
            "architecture.top_units",
            "Gaussian top units cannot join label units: set labels_in_top false",
        );
    }
    if arch.hidden.len() == 1 && !arch.visible_units.is_binary() && !arch.top_units.is_binary() {
        return refuse(
            "architecture",
            "a single RBM cannot have Gaussian visible and Gaussian hidden units: add a layer",
        );
    }
    if spec.binarize && (!arch.visible_units.is_binary() || spec.sequence.is_some()) {
        return refuse(
            "binarize",
            "binarised images need binary visible units and no sequence section",
        );
    }
    if arch.lateral {
        let first = spec.layer_config(0);
        if !arch.visible_units.is_binary()
            || spec.layer_labels(0, classes) > 0
            || first.persistent
            || first.method != LayerMethod::Cd
        {
            return refuse(
                "architecture.lateral",
                "lateral connections need binary visible units, no label units on the first \
                 layer, and CD (not persistent, not autoencoder) for it",
            );
        }
        let generative = matches!(
            spec.finetune,
            Some(Finetune::UpDown(_) | Finetune::Autoencoder(_) | Finetune::WakeSleep(_))
        );
        if generative {
            return refuse(
                "architecture.lateral",
                "up-down, deep-autoencoder and wake-sleep fine-tuning are for restricted \
                 layers; backprop works",
            );
        }
    }
    Ok(())
}

/// The examples used and held out, against what the dataset has.
fn check_examples(spec: &TrainingSpec, shape: DataShape) -> Result<()> {
    if spec.train_examples == Some(0) {
        return refuse("train_examples", "must be at least 1");
    }
    let used = spec
        .train_examples
        .map_or(shape.examples, |t| t.min(shape.examples));
    if spec.validation_examples > 0 && spec.validation_examples >= used {
        return refuse(
            "validation_examples",
            format!(
                "holding out {} of the {used} examples used leaves none to learn from",
                spec.validation_examples
            ),
        );
    }
    Ok(())
}

/// What a sequence model cannot combine with, and the frames it would build.
fn check_sequence(spec: &TrainingSpec, seq: &SequenceSpec, shape: DataShape) -> Result<()> {
    let arch = &spec.architecture;
    // Datasets hold square images (28 × 28); the frames check the exact shape again.
    let side = (shape.n_inputs as f64).sqrt().round() as usize;
    seq.validate(arch.hidden.len(), side, side)?;
    if arch.labels_in_top && shape.classes > 0 {
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
    if spec.finetune.is_some() || spec.ais.is_some() {
        return refuse(
            "sequence",
            "a sequence model is learned greedily only: no finetune, no ais",
        );
    }
    if spec.validation_examples > 0 {
        return refuse(
            "validation_examples",
            "a sequence model holds out no examples; its test sequences are scored instead",
        );
    }
    for i in 0..arch.hidden.len() {
        let c = spec.layer_config(i);
        if c.persistent || c.method != LayerMethod::Cd {
            return refuse(
                "pretrain",
                "conditional RBMs learn by CD (not persistent, not autoencoder)",
            );
        }
    }
    // The frames a run would build must fit the engine's limit.
    let used = spec
        .train_examples
        .map_or(shape.examples, |t| t.min(shape.examples));
    let sequences = used / seq.examples_per_sequence();
    if sequences > seq.max_sequences(spec.model_inputs(shape.n_inputs)) {
        return refuse(
            "train_examples",
            format!(
                "{sequences} sequences of {} frames exceed the limit of {} frame values: use \
                 fewer examples",
                seq.length,
                crate::engine::crbm::MAX_FRAME_VALUES
            ),
        );
    }
    Ok(())
}

/// The log-probability measurement.
fn check_ais(spec: &TrainingSpec) -> Result<()> {
    let Some(a) = &spec.ais else {
        return Ok(());
    };
    let arch = &spec.architecture;
    if !(1..=10_000).contains(&a.runs) {
        return refuse("ais.runs", "must be in 1..=10000");
    }
    if !(10..=1_000_000).contains(&a.steps) {
        return refuse("ais.steps", "must be in 10..=1000000");
    }
    let random_start = matches!(
        &spec.finetune,
        Some(Finetune::WakeSleep(c)) if c.init == WakeSleepInit::Random
    );
    if random_start {
        return refuse(
            "ais",
            "wake-sleep from random weights trains no RBMs to measure; its card gets \
             test_log_prob_bound instead",
        );
    }
    let gaussian = !arch.visible_units.is_binary() || !arch.top_units.is_binary();
    if gaussian || spec.layer_config(0).method == LayerMethod::Autoencoder {
        return refuse(
            "ais",
            "annealed importance sampling is implemented for RBMs of binary units only",
        );
    }
    if arch.hidden.len() == 1 && arch.labels_in_top {
        return refuse(
            "ais",
            "the first RBM must be free of label units: use two or more layers, or \
             labels_in_top false",
        );
    }
    Ok(())
}

/// The fine-tuning method against the architecture and the labels.
fn check_finetune(spec: &TrainingSpec, classes: usize) -> Result<()> {
    let arch = &spec.architecture;
    let gaussian = !arch.visible_units.is_binary() || !arch.top_units.is_binary();
    match &spec.finetune {
        Some(Finetune::Backprop(c)) => {
            c.validate("finetune")?;
            if !arch.top_units.is_binary() {
                return refuse(
                    "finetune",
                    "backpropagation into a classifier needs binary top units",
                );
            }
            if classes < 2 {
                return refuse("finetune", "backpropagation needs a dataset with labels");
            }
        }
        Some(Finetune::UpDown(c)) => {
            c.validate("finetune")?;
            if gaussian {
                return refuse("finetune", "up-down is implemented for binary units only");
            }
            if !arch.labels_in_top || arch.hidden.len() < 2 || classes < 2 {
                return refuse(
                    "finetune",
                    "up-down needs two or more layers and labels in the top RBM",
                );
            }
        }
        Some(Finetune::Autoencoder(c)) => {
            c.validate("finetune")?;
            if arch.labels_in_top || !arch.visible_units.is_binary() {
                return refuse(
                    "finetune",
                    "a deep autoencoder needs labels_in_top false and binary visible units",
                );
            }
        }
        Some(Finetune::WakeSleep(c)) => {
            c.validate("finetune")?;
            if arch.labels_in_top || gaussian {
                return refuse(
                    "finetune",
                    "wake-sleep needs labels_in_top false and binary units",
                );
            }
        }
        None => {}
    }
    Ok(())
}

/// The classifier stage, which follows up-down only.
fn check_classifier(spec: &TrainingSpec) -> Result<()> {
    let Some(c) = &spec.classifier else {
        return Ok(());
    };
    c.validate("classifier")?;
    if !matches!(spec.finetune, Some(Finetune::UpDown(_))) {
        return refuse(
            "classifier",
            "follows an up_down fine-tuning; for a classifier alone use finetune with method \
             backprop",
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests;
