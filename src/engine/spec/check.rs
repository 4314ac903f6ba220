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
mod tests {
    use serde_json::{json, Value};

    use super::*;

    /// A spec from `changes` laid over a small valid one (784-20-10 with labels on top).
    fn spec(changes: Value) -> TrainingSpec {
        let mut base = json!({"architecture": {"hidden": [20, 10]}});
        for (k, v) in changes.as_object().unwrap() {
            if k == "architecture" {
                for (ak, av) in v.as_object().unwrap() {
                    base["architecture"][ak] = av.clone();
                }
            } else {
                base[k] = v.clone();
            }
        }
        serde_json::from_value(base).unwrap()
    }

    fn one_layer(changes: Value) -> Value {
        let mut v = changes;
        v["architecture"]["hidden"] = json!([20]);
        v
    }

    #[test]
    fn every_rule_refuses_with_its_field_and_its_message() {
        let unlabelled = |v: Value| {
            let mut v = v;
            v["architecture"]["labels_in_top"] = json!(false);
            v
        };
        let moving = json!({"order": 2, "length": 10, "moving": {"canvas": 36, "max_speed": 3}});
        let sequence = |extra: Value| {
            let mut v = unlabelled(json!({"sequence": moving.clone(), "train_examples": 100}));
            for (k, x) in extra.as_object().unwrap() {
                if k == "architecture" {
                    for (ak, av) in x.as_object().unwrap() {
                        v["architecture"][ak] = av.clone();
                    }
                } else {
                    v[k] = x.clone();
                }
            }
            v
        };
        let cases: Vec<(Value, &str)> = vec![
            (json!({"alias": "no spaces"}), "alias: 1-64 characters"),
            (
                json!({"architecture": {"hidden": []}}),
                "architecture.hidden: needs 1..=10 layer sizes, got 0",
            ),
            (
                json!({"architecture": {"hidden": [20, 0]}}),
                "architecture.hidden[1]: must be in 1..=20000, got 0",
            ),
            (
                json!({"architecture": {"hidden": [20000, 20000, 20000]}}),
                "weights exceed the limit of 50000000",
            ),
            (
                json!({"layer_overrides": [{"layer": 2}]}),
                "layer_overrides[0].layer: there are 2 layers",
            ),
            (
                json!({"pretrain": {"epochs": 0}}),
                "pretrain.epochs: must be in",
            ),
            (
                json!({"layer_overrides": [{"layer": 1, "cd_k": 0}]}),
                "layer_overrides[0].cd_k: must be in",
            ),
            (
                json!({"layer_overrides": [{"layer": 1, "method": "autoencoder"}]}),
                "pretrain.method: layer 1 joins the label units",
            ),
            (
                json!({"architecture": {"top_units": "gaussian"}}),
                "architecture.top_units: Gaussian top units cannot join label units",
            ),
            (
                unlabelled(one_layer(json!({"architecture": {
                    "visible_units": "gaussian", "top_units": "gaussian"}}))),
                "architecture: a single RBM cannot have Gaussian visible and Gaussian hidden",
            ),
            (
                unlabelled(
                    json!({"binarize": true, "architecture": {"visible_units": "gaussian"}}),
                ),
                "binarize: binarised images need binary visible units",
            ),
            (
                one_layer(json!({"architecture": {"lateral": true}})),
                "architecture.lateral: lateral connections need binary visible units",
            ),
            (
                json!({"architecture": {"lateral": true}, "finetune": {"method": "up_down"}}),
                "architecture.lateral: up-down, deep-autoencoder and wake-sleep",
            ),
            (
                json!({"train_examples": 0}),
                "train_examples: must be at least 1",
            ),
            (
                json!({"train_examples": 500, "validation_examples": 500}),
                "validation_examples: holding out 500 of the 500 examples used",
            ),
            (
                json!({"validation_examples": 60000}),
                "validation_examples: holding out 60000 of the 60000",
            ),
            (
                sequence(json!({"architecture": {"labels_in_top": true}})),
                "architecture.labels_in_top: a sequence model has no label units",
            ),
            (
                sequence(json!({"architecture": {"top_units": "gaussian"}})),
                "architecture: a sequence model has binary hidden units",
            ),
            (
                sequence(json!({"finetune": {"method": "backprop"}})),
                "sequence: a sequence model is learned greedily only",
            ),
            (
                sequence(json!({"validation_examples": 10})),
                "validation_examples: a sequence model holds out no examples",
            ),
            (
                sequence(json!({"pretrain": {"persistent": true}})),
                "pretrain: conditional RBMs learn by CD",
            ),
            (
                sequence(json!({"train_examples": 60000,
                                "sequence": {"order": 2, "length": 10000,
                                             "moving": {"canvas": 36, "max_speed": 3}}})),
                "train_examples: 60000 sequences of 10000 frames exceed the limit",
            ),
            (
                json!({"ais": {"runs": 0}}),
                "ais.runs: must be in 1..=10000",
            ),
            (
                json!({"ais": {"steps": 5}}),
                "ais.steps: must be in 10..=1000000",
            ),
            (
                unlabelled(
                    json!({"ais": {}, "finetune": {"method": "wake_sleep", "init": "random"}}),
                ),
                "ais: wake-sleep from random weights trains no RBMs",
            ),
            (
                unlabelled(json!({"ais": {}, "architecture": {"visible_units": "gaussian"}})),
                "ais: annealed importance sampling is implemented for RBMs of binary units",
            ),
            (
                one_layer(json!({"ais": {}})),
                "ais: the first RBM must be free of label units",
            ),
            (
                unlabelled(json!({"architecture": {"top_units": "gaussian"},
                                  "finetune": {"method": "backprop"}})),
                "finetune: backpropagation into a classifier needs binary top units",
            ),
            (
                unlabelled(json!({"architecture": {"visible_units": "gaussian"},
                                  "finetune": {"method": "up_down"}})),
                "finetune: up-down is implemented for binary units only",
            ),
            (
                one_layer(json!({"finetune": {"method": "up_down"}})),
                "finetune: up-down needs two or more layers and labels in the top RBM",
            ),
            (
                json!({"finetune": {"method": "autoencoder"}}),
                "finetune: a deep autoencoder needs labels_in_top false",
            ),
            (
                json!({"finetune": {"method": "wake_sleep"}}),
                "finetune: wake-sleep needs labels_in_top false and binary units",
            ),
            (
                json!({"finetune": {"method": "backprop", "epochs": 0}}),
                "finetune.epochs",
            ),
            (
                json!({"classifier": {}}),
                "classifier: follows an up_down fine-tuning",
            ),
        ];
        for (changes, expected) in cases {
            let s = spec(changes.clone());
            let err = match s.check(DataShape::MNIST, &Limits::DEFAULT) {
                Ok(_) => panic!("accepted: {changes}"),
                Err(e) => e.to_string(),
            };
            assert!(
                err.contains(expected),
                "{changes}: {err}\n  wanted: {expected}"
            );
        }
    }

    #[test]
    fn the_default_speed_fits_the_canvas() {
        let on = |moving: Value| {
            let mut v = spec(json!({"train_examples": 100,
                                    "sequence": {"order": 2, "length": 10, "moving": moving}}));
            v.architecture.labels_in_top = false;
            v.check(DataShape::MNIST, &Limits::DEFAULT)
                .map(|c| c.sequence.as_ref().unwrap().moving.unwrap().speed(28, 28))
        };
        // 28 × 28 images on a 30-pixel canvas have 2 pixels of room: the default speed is 2.
        assert_eq!(on(json!({"canvas": 30})).unwrap(), 2);
        assert_eq!(on(json!({"canvas": 29})).unwrap(), 1);
        assert_eq!(on(json!({"canvas": 36})).unwrap(), 3);
        assert_eq!(on(json!({"canvas": 36, "max_speed": 5})).unwrap(), 5);
        let err = on(json!({"canvas": 30, "max_speed": 3})).unwrap_err();
        assert!(err.to_string().contains("must be in 1..=2"), "{err}");
    }

    #[test]
    fn backprop_needs_labels_in_the_data() {
        let s = spec(json!({"architecture": {"labels_in_top": false},
                            "finetune": {"method": "backprop"}}));
        let unlabelled = DataShape {
            classes: 0,
            ..DataShape::MNIST
        };
        let err = s
            .check(unlabelled, &Limits::DEFAULT)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("backpropagation needs a dataset with labels"),
            "{err}"
        );
        assert!(s.check(DataShape::MNIST, &Limits::DEFAULT).is_ok());
    }

    #[test]
    fn a_checked_spec_reads_as_its_spec_and_refuses_data_of_another_shape() {
        let s = spec(json!({"name": "small"}));
        let checked = s.check(DataShape::MNIST, &Limits::DEFAULT).unwrap();
        assert_eq!(checked.name.as_deref(), Some("small"));
        assert_eq!(checked.spec(), &s);
        assert_eq!(checked.shape(), DataShape::MNIST);
        let data = Dataset {
            images: ndarray::Array2::zeros((3, 16)),
            labels: vec![0, 1, 2],
            image_rows: 4,
            image_cols: 4,
            classes: 10,
        };
        let err = checked.fits(&data).unwrap_err().to_string();
        assert!(err.contains("checked for 784 values"), "{err}");
        // The digit model passes.
        assert!(TrainingSpec::digit_model()
            .check(DataShape::MNIST, &Limits::DEFAULT)
            .is_ok());
    }
}
