//! A DBN whose first RBM has Gaussian visible units, trained on standardised real MNIST
//! pixels (the committed subset): it classifies, survives a save and load with its input
//! statistics, generates pixels in [0, 1], and its unrolled classifier computes what the DBN
//! computes on raw inputs.

use crate::common;

use dbn_serve::engine::data::MnistSplit;
use dbn_serve::engine::dbn::{error_rate, train_greedy, Dbn, TrainOutcome};
use dbn_serve::engine::finetune::Classifier;
use dbn_serve::engine::observer::Silent;
use dbn_serve::engine::persist::{self, ModelCard};
use dbn_serve::engine::rbm::{RbmTrainConfig, Units};
use dbn_serve::engine::rng_from_seed;
use dbn_serve::engine::spec::{Architecture, LayerOverride, Limits, TrainingSpec};

fn gaussian_spec(examples: usize) -> TrainingSpec {
    TrainingSpec {
        name: Some("gaussian".into()),
        alias: None,
        dataset: "mnist".into(),
        architecture: Architecture {
            hidden: vec![200, 200],
            visible_units: Units::Gaussian,
            ..Architecture::default()
        },
        pretrain: RbmTrainConfig {
            epochs: 10,
            ..RbmTrainConfig::default()
        },
        layer_overrides: vec![LayerOverride {
            layer: 0,
            learning_rate: Some(0.005),
            bias_learning_rate: Some(0.005),
            ..LayerOverride::default()
        }],
        train_examples: Some(examples),
        validation_examples: 0,
        seed: 3,
        binarize: false,
        finetune: None,
        classifier: None,
        ais: None,
        sequence: None,
    }
}

fn trained_outcome() -> TrainOutcome {
    let data = common::fixture(MnistSplit::Train);
    let spec = gaussian_spec(2000);
    train_greedy(
        &spec.check_for(&data, &Limits::default()).unwrap(),
        &data,
        &mut Silent,
        &mut rng_from_seed(3),
    )
    .unwrap()
}

fn trained() -> Dbn {
    trained_outcome().dbn
}

#[test]
fn a_gaussian_first_layer_learns_standardised_digits_and_classifies() {
    let dbn = trained();
    assert_eq!(dbn.layers()[0].visible_units, Units::Gaussian);
    let norm = dbn.input_norm().expect("input statistics are kept");
    // MNIST's centre pixels vary, its corners do not (floored scale).
    assert!(norm.scale.iter().any(|&s| s > 0.3));
    assert_eq!(norm.scale[0], dbn_serve::engine::dbn::MIN_SCALE);
    let test = common::fixture(MnistSplit::Test);
    let e = error_rate(
        dbn.classify_free_energy(test.images.view()).unwrap().view(),
        &test.labels,
    );
    eprintln!("test error {e}");
    // Chance is 90 %.
    assert!(e < 0.3, "test error {e}");
    // The first layer reconstructs standardised pixels better than their mean (error = 1 per
    // varying pixel).
    let z = norm.apply(test.images.view());
    let recon = dbn.layers()[0].reconstruction_error(z.view()) / z.ncols() as f64;
    let baseline = z.mapv(|x| (x * x) as f64).sum() / z.len() as f64;
    eprintln!("reconstruction {recon} vs mean {baseline}");
    assert!(
        recon < 0.6 * baseline,
        "reconstruction {recon} vs mean {baseline}"
    );

    // Generated digits come back as pixels.
    let images = dbn.generate(Some(3), 5, 50, &mut rng_from_seed(1)).unwrap();
    assert_eq!(images.dim(), (5, 784));
    assert!(images.iter().all(|&p| (0.0..=1.0).contains(&p)));
    assert!(images.iter().any(|&p| p > 0.5), "blank images");
}

#[test]
fn the_input_statistics_and_unit_kinds_survive_a_save_and_load() {
    let outcome = trained_outcome();
    let dbn = outcome.dbn.clone();
    let card = ModelCard::for_training(&gaussian_spec(2000), &outcome, Some([28, 28]), 1);
    let (back, _) = persist::from_bytes(&persist::to_bytes(&dbn, &card).unwrap()).unwrap();
    assert_eq!(back, dbn);
    let test = common::fixture(MnistSplit::Test);
    let x = test.images.slice(ndarray::s![..50, ..]);
    assert_eq!(
        back.classify_free_energy(x).unwrap(),
        dbn.classify_free_energy(x).unwrap()
    );
}

#[test]
fn the_unrolled_classifier_folds_the_standardisation_into_its_first_layer() {
    let dbn = trained();
    let net = Classifier::from_dbn(&dbn, 10, 0.01, &mut rng_from_seed(2)).unwrap();
    let test = common::fixture(MnistSplit::Test);
    let x = test.images.slice(ndarray::s![..20, ..]);
    // The network's first layer on raw pixels equals the DBN's first layer on standardised ones.
    let first = &net.layers()[0];
    let mut z = x.dot(&first.weights);
    z += &first.bias;
    z.mapv_inplace(|a| 1.0 / (1.0 + (-a).exp()));
    let want = dbn.layers()[0].hidden_probs(dbn.input_norm().unwrap().apply(x).view());
    let worst = (&z - &want).mapv(f32::abs).fold(0.0f32, |a, &b| a.max(b));
    assert!(worst < 1e-4, "largest difference {worst}");
}

#[test]
fn specs_that_mix_gaussian_units_with_what_needs_binary_ones_are_refused() {
    let limits = Limits::default();
    let mut spec = gaussian_spec(100);
    spec.ais = Some(serde_json::from_str("{}").unwrap());
    assert!(spec
        .check(dbn_serve::engine::spec::DataShape::MNIST, &limits)
        .is_err());
    let mut spec = gaussian_spec(100);
    spec.architecture.hidden = vec![100];
    spec.architecture.top_units = Units::Gaussian;
    let err = spec
        .check(dbn_serve::engine::spec::DataShape::MNIST, &limits)
        .unwrap_err()
        .to_string();
    assert!(err.contains("Gaussian"), "{err}");
    // Free-energy classification sums out binary hidden units: labels cannot join a
    // Gaussian top.
    let mut spec = gaussian_spec(100);
    spec.architecture.visible_units = Units::Binary;
    spec.architecture.top_units = Units::Gaussian;
    let err = spec
        .check(dbn_serve::engine::spec::DataShape::MNIST, &limits)
        .unwrap_err()
        .to_string();
    assert!(err.contains("top_units"), "{err}");
    let mut rng = rng_from_seed(1);
    let labelled = dbn_serve::engine::rbm::Rbm::new(20, 5, 10, 0.1, &mut rng).unwrap();
    assert!(labelled.with_units(Units::Binary, Units::Gaussian).is_err());
    let spec = gaussian_spec(100);
    assert!(spec
        .check(dbn_serve::engine::spec::DataShape::MNIST, &limits)
        .is_ok());
}
