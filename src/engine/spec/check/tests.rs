//! The rules of [`super`], each refused with its field and its message.

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
            unlabelled(json!({"binarize": true, "architecture": {"visible_units": "gaussian"}})),
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
            unlabelled(json!({"ais": {}, "finetune": {"method": "wake_sleep", "init": "random"}})),
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
