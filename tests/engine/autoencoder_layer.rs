//! Autoencoder layers: one step of learning must move every parameter by −ε times the
//! gradient of the mean reconstruction loss, which is computed here independently in f64 by
//! central differences; and a stack learned this way on real MNIST pixels must reconstruct
//! and, fine-tuned by backpropagation, classify.

use crate::common;

use dbn_serve::engine::data::MnistSplit;
use dbn_serve::engine::dbn::{test_metrics, train_model};
use dbn_serve::engine::finetune::BackpropConfig;
use dbn_serve::engine::observer::Silent;
use dbn_serve::engine::rbm::{LayerMethod, Rbm, RbmTrainConfig, Units, VisibleBiasInit};
use dbn_serve::engine::rng_from_seed;
use dbn_serve::engine::spec::{Architecture, Finetune, Limits, TrainingSpec};
use ndarray::{Array1, Array2};

const V: usize = 5;
const H: usize = 3;

fn act(units: Units, x: f64) -> f64 {
    match units {
        Units::Binary => 1.0 / (1.0 + (-x).exp()),
        Units::Gaussian => x,
    }
}

/// Mean reconstruction loss of the tied autoencoder, written out in f64: cross-entropy for
/// logistic outputs, half the squared error for linear ones.
fn loss(rbm: &Rbm, data: &Array2<f32>) -> f64 {
    let mut total = 0.0;
    for v in data.rows() {
        let h: Vec<f64> = (0..H)
            .map(|j| {
                let x = rbm.hidden_bias[j] as f64
                    + (0..V)
                        .map(|i| v[i] as f64 * rbm.weights[[i, j]] as f64)
                        .sum::<f64>();
                act(rbm.hidden_units, x)
            })
            .collect();
        for i in 0..V {
            let x = rbm.visible_bias[i] as f64
                + (0..H)
                    .map(|j| h[j] * rbm.weights[[i, j]] as f64)
                    .sum::<f64>();
            let r = act(rbm.visible_units, x);
            let t = v[i] as f64;
            total += match rbm.visible_units {
                Units::Binary => -(t * r.ln() + (1.0 - t) * (1.0 - r).ln()),
                Units::Gaussian => 0.5 * (r - t) * (r - t),
            };
        }
    }
    total / data.nrows() as f64
}

fn check_one_step(visible: Units, hidden: Units, data: Array2<f32>) {
    let mut rng = rng_from_seed(11);
    let mut rbm = Rbm::new(V, H, 0, 0.5, &mut rng)
        .unwrap()
        .with_units(visible, hidden)
        .unwrap();
    rbm.visible_bias = Array1::from_shape_fn(V, |i| 0.2 * i as f32 - 0.4);
    rbm.hidden_bias = Array1::from_shape_fn(H, |j| 0.1 - 0.3 * j as f32);
    let before = rbm.clone();
    let eps = 1e-3f32;
    let config = RbmTrainConfig {
        epochs: 1,
        batch_size: data.nrows(),
        learning_rate: eps,
        bias_learning_rate: eps,
        momentum_initial: 0.0,
        momentum_final: 0.0,
        weight_decay: 0.0,
        visible_bias_init: VisibleBiasInit::Zero,
        method: LayerMethod::Autoencoder,
        ..RbmTrainConfig::default()
    };
    common::train_quietly(&mut rbm, data.view(), &config, &mut rng);

    let h = 1e-3f32;
    let numeric = |perturb: &dyn Fn(&mut Rbm, f32)| {
        let (mut plus, mut minus) = (before.clone(), before.clone());
        perturb(&mut plus, h);
        perturb(&mut minus, -h);
        (loss(&plus, &data) - loss(&minus, &data)) / (2.0 * h as f64)
    };
    let mut worst = 0.0f64;
    let mut largest = 0.0f64;
    let mut compare = |moved: f32, was: f32, grad: f64| {
        let step = (moved - was) as f64;
        worst = worst.max((step + eps as f64 * grad).abs());
        largest = largest.max((eps as f64 * grad).abs());
    };
    for i in 0..V {
        for j in 0..H {
            let g = numeric(&|r: &mut Rbm, d| r.weights[[i, j]] += d);
            compare(rbm.weights[[i, j]], before.weights[[i, j]], g);
        }
        let g = numeric(&|r: &mut Rbm, d| r.visible_bias[i] += d);
        compare(rbm.visible_bias[i], before.visible_bias[i], g);
    }
    for j in 0..H {
        let g = numeric(&|r: &mut Rbm, d| r.hidden_bias[j] += d);
        compare(rbm.hidden_bias[j], before.hidden_bias[j], g);
    }
    // Steps are of order ε·|∇| ≈ 1e-3; f32 parameters resolve about 1e-7 of them.
    assert!(
        largest > 1e-4,
        "the gradient is too small to test: {largest}"
    );
    assert!(
        worst < 0.02 * largest,
        "{visible:?}/{hidden:?}: step differs from −ε∇L by {worst} (largest step {largest})"
    );
}

#[test]
fn one_step_follows_the_cross_entropy_gradient_for_binary_units() {
    let data = Array2::from_shape_fn((6, V), |(r, i)| ((r * 3 + i * 5) % 7 < 3) as u8 as f32);
    check_one_step(Units::Binary, Units::Binary, data);
}

#[test]
fn one_step_follows_the_squared_error_gradient_for_gaussian_inputs() {
    let data = Array2::from_shape_fn((6, V), |(r, i)| (r as f32 - 2.5) * 0.4 + 0.3 * i as f32);
    check_one_step(Units::Gaussian, Units::Binary, data);
}

#[test]
fn one_step_follows_the_gradient_with_a_linear_code() {
    let data = Array2::from_shape_fn((6, V), |(r, i)| ((r + 2 * i) % 3 == 0) as u8 as f32);
    check_one_step(Units::Binary, Units::Gaussian, data);
}

#[test]
fn an_autoencoder_stack_reconstructs_real_digits_and_fine_tunes_into_a_classifier() {
    let data = common::fixture(MnistSplit::Train);
    let test = common::fixture(MnistSplit::Test);
    let spec = TrainingSpec {
        name: Some("ae".into()),
        alias: None,
        dataset: "mnist".into(),
        architecture: Architecture {
            hidden: vec![200, 100],
            labels_in_top: false,
            ..Architecture::default()
        },
        pretrain: RbmTrainConfig {
            epochs: 8,
            method: LayerMethod::Autoencoder,
            ..RbmTrainConfig::default()
        },
        layer_overrides: Vec::new(),
        train_examples: None,
        validation_examples: 0,
        seed: 2,
        binarize: false,
        finetune: Some(Finetune::Backprop(BackpropConfig {
            epochs: 10,
            ..BackpropConfig::default()
        })),
        classifier: None,
        ais: None,
        sequence: None,
    };
    let out = train_model(
        &spec.check_for(&data, &Limits::default()).unwrap(),
        &data,
        &mut Silent,
        &mut rng_from_seed(2),
        None,
    )
    .unwrap();
    // Each layer's reconstruction error fell during its pretraining.
    for layer in 0..2 {
        let errors: Vec<f64> = out
            .history
            .iter()
            .filter(|m| m.layer == layer && m.recon_error_train.is_some())
            .filter_map(|m| m.recon_error_train)
            .collect();
        assert!(errors.len() >= 8, "layer {layer}: {errors:?}");
        assert!(
            errors.last().unwrap() < &(0.7 * errors[0]),
            "layer {layer}: {errors:?}"
        );
    }
    let first = &out.dbn.layers()[0];
    let pixels = first.reconstruction_error(test.images.view());
    // A blank image is about 100 squared units away from a digit; the mean image about 50.
    assert!(pixels < 25.0, "test reconstruction error {pixels}");
    let metrics = test_metrics(None, &out.dbn, &test).unwrap();
    let e = metrics["test_error"];
    eprintln!("reconstruction {pixels}, test error {e}");
    assert!(e < 0.2, "test error {e}");
}
