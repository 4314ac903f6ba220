//! The deep autoencoder: its learning step is checked against the gradient of the
//! reconstruction cross-entropy computed independently (f64, central differences) on a tiny
//! unrolled net with a linear code layer; on real MNIST digits fine-tuning must lower the
//! test reconstruction error of the unrolled pretrained stack, and the model must survive a
//! save and load.

use crate::common;

use dbn_serve::engine::data::MnistSplit;
use dbn_serve::engine::dbn::{test_metrics, train_greedy, train_model, Dbn};
use dbn_serve::engine::finetune::{
    train_autoencoder, AutoencoderConfig, DeepAutoencoder, Dense, FinetuneRun,
};
use dbn_serve::engine::observer::Silent;
use dbn_serve::engine::persist;
use dbn_serve::engine::rbm::{Rbm, RbmTrainConfig, Units};
use dbn_serve::engine::rng_from_seed;
use dbn_serve::engine::spec::{Architecture, Finetune, LayerOverride, Limits, TrainingSpec};
use ndarray::{Array1, Array2};

fn tiny_dbn() -> Dbn {
    let mut rng = rng_from_seed(21);
    let mut a = Rbm::new(6, 4, 0, 0.6, &mut rng).unwrap();
    a.visible_bias = Array1::from_shape_fn(6, |i| 0.1 * i as f32 - 0.2);
    a.hidden_bias = Array1::from_shape_fn(4, |j| 0.2 - 0.1 * j as f32);
    let mut b = Rbm::new(4, 2, 0, 0.6, &mut rng)
        .unwrap()
        .with_units(Units::Binary, Units::Gaussian)
        .unwrap();
    b.visible_bias = Array1::from_shape_fn(4, |i| -0.1 * i as f32);
    b.hidden_bias = Array1::from_vec(vec![0.3, -0.2]);
    Dbn::new(vec![a, b]).unwrap()
}

/// Mean cross-entropy of the reconstructions, by a plain f64 forward pass.
fn loss(layers: &[Dense], units: &[Units], x: &Array2<f32>) -> f64 {
    let mut total = 0.0;
    for row in x.rows() {
        let mut act: Vec<f64> = row.iter().map(|&v| v as f64).collect();
        for (l, layer) in layers.iter().enumerate() {
            act = (0..layer.weights.ncols())
                .map(|j| {
                    let z = layer.bias[j] as f64
                        + act
                            .iter()
                            .enumerate()
                            .map(|(i, a)| a * layer.weights[[i, j]] as f64)
                            .sum::<f64>();
                    match units[l] {
                        Units::Binary => 1.0 / (1.0 + (-z).exp()),
                        Units::Gaussian => z,
                    }
                })
                .collect();
        }
        for (r, &t) in act.iter().zip(row.iter()) {
            let t = t as f64;
            total -= t * r.ln() + (1.0 - t) * (1.0 - r).ln();
        }
    }
    total / x.nrows() as f64
}

#[test]
fn one_step_follows_the_gradient_of_the_reconstruction_cross_entropy() {
    let dbn = tiny_dbn();
    let x = Array2::from_shape_fn((5, 6), |(r, i)| ((r * 2 + i * 3) % 5 < 2) as u8 as f32);
    let mut net = DeepAutoencoder::from_dbn(&dbn).unwrap();
    let units = DeepAutoencoder::units_of(&dbn);
    assert_eq!(units[1], Units::Gaussian, "the code layer is linear");
    let before: Vec<Dense> = net.layers().to_vec();
    let eps = 1e-3f32;
    let config = AutoencoderConfig {
        epochs: 1,
        batch_size: 5,
        learning_rate: eps,
        momentum: 0.0,
        weight_decay: 0.0,
    };
    let mut run = FinetuneRun {
        observer: &mut Silent,
        fraction: (0.0, 1.0),
        validation: None,
        resume: None,
        base: None,
        earlier: &[],
        fingerprint: 0,
    };
    train_autoencoder(
        &mut net,
        &dbn,
        x.view(),
        None,
        &config,
        &mut run,
        &mut rng_from_seed(1),
    )
    .unwrap();
    let h = 1e-3f32;
    let (mut worst, mut largest) = (0.0f64, 0.0f64);
    for l in 0..before.len() {
        let (rows, cols) = before[l].weights.dim();
        let mut check = |moved: f32, was: f32, perturb: &dyn Fn(&mut Vec<Dense>, f32)| {
            let (mut plus, mut minus) = (before.clone(), before.clone());
            perturb(&mut plus, h);
            perturb(&mut minus, -h);
            let grad = (loss(&plus, &units, &x) - loss(&minus, &units, &x)) / (2.0 * h as f64);
            worst = worst.max(((moved - was) as f64 + eps as f64 * grad).abs());
            largest = largest.max((eps as f64 * grad).abs());
        };
        for i in 0..rows {
            for j in 0..cols {
                check(
                    net.layers()[l].weights[[i, j]],
                    before[l].weights[[i, j]],
                    &|n: &mut Vec<Dense>, d| n[l].weights[[i, j]] += d,
                );
            }
        }
        for j in 0..cols {
            check(
                net.layers()[l].bias[j],
                before[l].bias[j],
                &|n: &mut Vec<Dense>, d| n[l].bias[j] += d,
            );
        }
    }
    assert!(largest > 1e-4, "gradient too small to test: {largest}");
    assert!(
        worst < 0.02 * largest,
        "step differs from −ε∇L by {worst} (largest {largest})"
    );
}

fn digit_spec(finetune_epochs: usize) -> TrainingSpec {
    TrainingSpec {
        name: Some("deep-ae".into()),
        alias: None,
        dataset: "mnist".into(),
        architecture: Architecture {
            hidden: vec![200, 30],
            labels_in_top: false,
            top_units: Units::Gaussian,
            ..Architecture::default()
        },
        pretrain: RbmTrainConfig {
            epochs: 10,
            ..RbmTrainConfig::default()
        },
        layer_overrides: vec![LayerOverride {
            layer: 1,
            learning_rate: Some(0.001),
            bias_learning_rate: Some(0.001),
            ..LayerOverride::default()
        }],
        train_examples: None,
        validation_examples: 0,
        seed: 4,
        binarize: false,
        finetune: Some(Finetune::Autoencoder(AutoencoderConfig {
            epochs: finetune_epochs,
            ..AutoencoderConfig::default()
        })),
        classifier: None,
        ais: None,
        sequence: None,
    }
}

#[test]
fn fine_tuning_lowers_the_reconstruction_error_of_real_digits() {
    let data = common::fixture(MnistSplit::Train);
    let test = common::fixture(MnistSplit::Test);
    let spec = digit_spec(15);
    let limits = Limits::default();
    let greedy = train_greedy(
        &spec.check_for(&data, &limits).unwrap(),
        &data,
        &mut Silent,
        &mut rng_from_seed(4),
    )
    .unwrap()
    .dbn;
    // The unrolled stack before fine-tuning computes exactly what the DBN's own
    // up-and-down pass computes.
    let unrolled = DeepAutoencoder::from_dbn(&greedy).unwrap();
    let x = test.images.view();
    let a = unrolled.reconstruct(x);
    let b = greedy.reconstruct(x).unwrap();
    let worst = (&a - &b).mapv(f32::abs).fold(0.0f32, |m, &d| m.max(d));
    assert!(
        worst < 1e-4,
        "unrolled and DBN reconstructions differ by {worst}"
    );
    let before = unrolled.reconstruction_error(x);

    let tuned = train_model(
        &spec.check_for(&data, &limits).unwrap(),
        &data,
        &mut Silent,
        &mut rng_from_seed(4),
        None,
    )
    .unwrap()
    .dbn;
    let after = test_metrics(None, &tuned, &test).unwrap()["test_reconstruction_error"];
    eprintln!("test reconstruction error: pretrained {before:.2}, fine-tuned {after:.2}");
    assert!(
        after < 0.8 * before,
        "pretrained {before}, fine-tuned {after}"
    );
    let codes = tuned.encode(x).unwrap();
    assert_eq!(codes.dim(), (test.len(), 30));
    // A linear code layer: codes are not confined to (0, 1).
    assert!(codes.iter().any(|&c| !(0.0..=1.0).contains(&c)));
    let recon = tuned.reconstruct(x).unwrap();
    assert!(recon.iter().all(|&p| (0.0..=1.0).contains(&p)));

    let card = persist::ModelCard::for_training(
        &spec,
        &dbn_serve::engine::dbn::TrainOutcome {
            dbn: tuned.clone(),
            history: Vec::new(),
            train_examples: data.len(),
            validation_examples: 0,
            validation_error: None,
            seconds: 0.0,
        },
        Some([28, 28]),
        1,
    );
    let (back, _) = persist::from_bytes(&persist::to_bytes(&tuned, &card).unwrap()).unwrap();
    assert_eq!(back, tuned);
    assert_eq!(back.reconstruct(x).unwrap(), recon);
}

#[test]
fn a_deep_autoencoder_spec_needs_unlabelled_binary_inputs() {
    let limits = Limits::default();
    let mut spec = digit_spec(1);
    assert!(spec
        .check(dbn_serve::engine::spec::DataShape::MNIST, &limits)
        .is_ok());
    spec.architecture.labels_in_top = true;
    assert!(spec
        .check(dbn_serve::engine::spec::DataShape::MNIST, &limits)
        .is_err());
    let mut spec = digit_spec(1);
    spec.architecture.visible_units = Units::Gaussian;
    assert!(spec
        .check(dbn_serve::engine::spec::DataShape::MNIST, &limits)
        .is_err());
}
