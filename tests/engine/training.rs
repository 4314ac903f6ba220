//! Greedy DBN training on the committed real-MNIST subset: reproducibility, cancellation,
//! validation and a real accuracy floor.

use crate::common;

use dbn_serve::engine::data::MnistSplit;
use dbn_serve::engine::dbn::{error_rate, train_greedy};
use dbn_serve::engine::observer::{Control, EpochMetrics, Observer, Progress, Silent};
use dbn_serve::engine::rbm::RbmTrainConfig;
use dbn_serve::engine::spec::{Architecture, LayerOverride, Limits, TrainingSpec};
use dbn_serve::engine::{rng_from_seed, EngineError};

fn spec(hidden: Vec<usize>, epochs: usize, examples: usize, seed: u64) -> TrainingSpec {
    TrainingSpec {
        name: Some("test".into()),
        alias: None,
        dataset: "mnist".into(),
        architecture: Architecture {
            hidden,
            labels_in_top: true,
            ..Architecture::default()
        },
        pretrain: RbmTrainConfig {
            epochs,
            ..RbmTrainConfig::default()
        },
        layer_overrides: Vec::new(),
        train_examples: Some(examples),
        validation_examples: 0,
        seed,
        binarize: false,
        finetune: None,
        classifier: None,
        ais: None,
        sequence: None,
    }
}

#[test]
fn the_same_seed_gives_the_same_model_and_another_seed_another() {
    let data = common::fixture(MnistSplit::Train);
    let train = |seed| {
        let s = spec(vec![40, 30], 2, 300, seed);
        train_greedy(
            &s.check_for(&data, &Limits::default()).unwrap(),
            &data,
            &mut Silent,
            &mut rng_from_seed(seed),
        )
        .unwrap()
        .dbn
    };
    let (a, b, c) = (train(5), train(5), train(6));
    assert_eq!(a, b);
    assert_ne!(a, c);
}

/// Stops training after a given number of mini-batches and counts what it saw.
struct StopAfter {
    batches: usize,
    seen: usize,
}

impl Observer for StopAfter {
    fn on_batch(&mut self, _: &Progress) -> Control {
        self.seen += 1;
        if self.seen >= self.batches {
            Control::Stop
        } else {
            Control::Continue
        }
    }
    fn on_epoch(&mut self, _: &Progress, _: &EpochMetrics) -> Control {
        Control::Continue
    }
}

#[test]
fn cancellation_stops_within_one_mini_batch() {
    let data = common::fixture(MnistSplit::Train);
    let s = spec(vec![50, 50], 5, 2000, 1);
    let mut stop = StopAfter {
        batches: 7,
        seen: 0,
    };
    let result = train_greedy(
        &s.check_for(&data, &Limits::default()).unwrap(),
        &data,
        &mut stop,
        &mut rng_from_seed(1),
    );
    assert!(matches!(result, Err(EngineError::Cancelled)));
    assert_eq!(
        stop.seen, 7,
        "no mini-batch runs after the observer says stop"
    );
}

/// Records progress fractions and epoch metrics.
#[derive(Default)]
struct Recorder {
    fractions: Vec<f64>,
    epochs: Vec<EpochMetrics>,
}

impl Observer for Recorder {
    fn on_batch(&mut self, p: &Progress) -> Control {
        self.fractions.push(p.fraction);
        Control::Continue
    }
    fn on_epoch(&mut self, _: &Progress, m: &EpochMetrics) -> Control {
        self.epochs.push(m.clone());
        Control::Continue
    }
}

#[test]
fn progress_rises_to_one_and_validation_metrics_are_reported() {
    let data = common::fixture(MnistSplit::Train);
    let mut s = spec(vec![60, 80], 2, 1000, 3);
    s.validation_examples = 200;
    s.layer_overrides = vec![LayerOverride {
        layer: 1,
        epochs: Some(3),
        cd_k: Some(2),
        batch_size: Some(50),
        ..LayerOverride::default()
    }];
    let mut rec = Recorder::default();
    let out = train_greedy(
        &s.check_for(&data, &Limits::default()).unwrap(),
        &data,
        &mut rec,
        &mut rng_from_seed(3),
    )
    .unwrap();
    assert!(
        rec.fractions.windows(2).all(|w| w[1] >= w[0]),
        "progress never goes back"
    );
    assert!((rec.fractions.last().unwrap() - 1.0).abs() < 1e-9);
    assert_eq!(
        rec.epochs.len(),
        2 + 3,
        "layer 1 has its override's epoch count"
    );
    assert!(rec
        .epochs
        .iter()
        .all(|m| m.recon_error_validation.is_some() && m.free_energy_gap.is_some()));
    assert_eq!((out.train_examples, out.validation_examples), (800, 200));
    assert!(out.validation_error.is_some());
    // Reconstruction improves as the first layer learns.
    let first: Vec<f64> = rec
        .epochs
        .iter()
        .filter(|m| m.layer == 0)
        .map(|m| m.recon_error_train.unwrap())
        .collect();
    assert!(first[1] < first[0], "{first:?}");
}

#[test]
fn invalid_specs_name_the_field() {
    let data = common::fixture(MnistSplit::Train);
    let check = |s: TrainingSpec, field: &str| {
        let e = s.check_for(&data, &Limits::default()).unwrap_err();
        assert!(
            matches!(&e, EngineError::Invalid { field: f, .. } if f == field),
            "{e}"
        );
    };
    check(spec(vec![], 1, 100, 0), "architecture.hidden");
    check(
        spec(vec![10, 1_000_000_000], 1, 100, 0),
        "architecture.hidden[1]",
    );
    check(spec(vec![10], 1_000_000, 100, 0), "pretrain.epochs");
    let mut s = spec(vec![10], 1, 100, 0);
    s.validation_examples = 100;
    check(s, "validation_examples");
    let mut s = spec(vec![10], 1, 100, 0);
    s.pretrain.learning_rate = f32::NAN;
    check(s, "pretrain.learning_rate");
    let json = r#"{"architecture": {"hidden": [10]}, "pretrian": {}}"#;
    assert!(serde_json::from_str::<TrainingSpec>(json)
        .unwrap_err()
        .to_string()
        .contains("unknown field"));
}

#[test]
fn a_small_dbn_learns_real_digits() {
    // 2,000 real training images, a 784-300-300-(+10)-1000 net, 10 epochs per layer (a few
    // seconds). Chance is 90 % error; a 1-nearest-neighbour classifier on raw pixels with
    // these 2,000 images gets about 12 % on the 500 test images. Requiring at most 20 % shows
    // the associative memory learned labels from real features; a net whose label units were
    // not wired to the features would sit near 90 %.
    let data = common::fixture(MnistSplit::Train);
    let test = common::fixture(MnistSplit::Test);
    let mut s = spec(vec![300, 300, 1000], 10, 2000, 11);
    s.pretrain.momentum_switch_epoch = 2;
    let out = train_greedy(
        &s.check_for(&data, &Limits::default()).unwrap(),
        &data,
        &mut Silent,
        &mut rng_from_seed(11),
    )
    .unwrap();
    let fe = error_rate(
        out.dbn
            .classify_free_energy(test.images.view())
            .unwrap()
            .view(),
        &test.labels,
    );
    assert!(fe <= 0.20, "free-energy test error {fe}");
    let gibbs = out
        .dbn
        .classify_gibbs(test.images.view(), 200, &mut rng_from_seed(1))
        .unwrap();
    let ge = error_rate(gibbs.view(), &test.labels);
    assert!(ge <= 0.30, "Gibbs test error {ge}");
    eprintln!("fixture DBN: free-energy error {fe:.3}, Gibbs error {ge:.3}");
}

#[test]
fn a_wide_top_layer_whose_hidden_units_all_switch_off_fails_with_advice() {
    // 784-200-(+10)-2000 at the default step of 0.1: the wide associative memory's hidden
    // units all switch off within three epochs and the model would classify at chance. The run
    // says so instead of storing it; with the top layer's step lowered it learns.
    let data = common::fixture(MnistSplit::Train);
    let test = common::fixture(MnistSplit::Test);
    let s = spec(vec![200, 2000], 3, 2000, 4);
    let run = |s: &TrainingSpec| {
        train_greedy(
            &s.check_for(&data, &Limits::default()).unwrap(),
            &data,
            &mut Silent,
            &mut rng_from_seed(4),
        )
    };
    match run(&s) {
        Err(EngineError::Diverged(m)) => {
            assert!(m.contains("hidden units have switched off"), "{m}");
            assert!(m.contains("layer 1"), "{m}");
        }
        Err(e) => panic!("another error: {e}"),
        Ok(out) => {
            // If it did not collapse, its hidden units must really be alive.
            let top = &out.dbn.layers()[1];
            let features = out.dbn.layers()[0].hidden_probs_all(data.images.view());
            let joined = ndarray::concatenate(
                ndarray::Axis(1),
                &[features.view(), data.one_hot_labels().view()],
            )
            .unwrap();
            let p = top.hidden_probs(joined.view());
            panic!(
                "expected a collapse; largest hidden probability {}",
                p.fold(0.0f32, |a, &b| a.max(b))
            );
        }
    }
    let mut gentle = s.clone();
    gentle.pretrain.epochs = 10;
    gentle.layer_overrides = vec![LayerOverride {
        layer: 1,
        learning_rate: Some(0.02),
        ..LayerOverride::default()
    }];
    let out = run(&gentle).unwrap();
    let fe = error_rate(
        out.dbn
            .classify_free_energy(test.images.view())
            .unwrap()
            .view(),
        &test.labels,
    );
    assert!(fe < 0.5, "free-energy test error {fe}");
}

#[test]
fn a_rising_k_and_a_decaying_step_change_what_is_learned_and_their_neutral_values_do_not() {
    let data = common::fixture(MnistSplit::Train);
    let train = |pretrain: RbmTrainConfig| {
        let s = TrainingSpec {
            pretrain,
            ..spec(vec![30], 3, 200, 9)
        };
        train_greedy(
            &s.check_for(&data, &Limits::default()).unwrap(),
            &data,
            &mut Silent,
            &mut rng_from_seed(9),
        )
        .unwrap()
        .dbn
    };
    let plain = RbmTrainConfig {
        epochs: 3,
        ..RbmTrainConfig::default()
    };
    let base = train(plain.clone());
    let neutral = train(RbmTrainConfig {
        cd_k_final: Some(1),
        learning_rate_decay: 1.0,
        ..plain.clone()
    });
    assert_eq!(base, neutral);
    let rising = train(RbmTrainConfig {
        cd_k_final: Some(5),
        ..plain.clone()
    });
    let decaying = train(RbmTrainConfig {
        learning_rate_decay: 0.5,
        ..plain.clone()
    });
    assert_ne!(base, rising);
    assert_ne!(base, decaying);
    // A smaller step moves the weights less far from where they start.
    let norm =
        |d: &dbn_serve::engine::dbn::Dbn| d.layers()[0].weights.iter().map(|w| w * w).sum::<f32>();
    assert!(
        norm(&decaying) < norm(&base),
        "{} vs {}",
        norm(&decaying),
        norm(&base)
    );
}

#[test]
fn a_binarised_spec_learns_from_one_binary_draw_of_the_images() {
    let data = common::fixture(MnistSplit::Train);
    let s = TrainingSpec {
        binarize: true,
        validation_examples: 50,
        ..spec(vec![30], 2, 300, 4)
    };
    let (train, valid) = s.split(&data);
    let (again, _) = s.split(&data);
    assert_eq!((train.len(), valid.len()), (250, 50));
    assert!(train
        .images
        .iter()
        .chain(valid.images.iter())
        .all(|&p| p == 0.0 || p == 1.0));
    assert_eq!(train.images, again.images);
    // The draw keeps the ink: on average a pixel is on as often as its intensity says.
    let grey = data.slice(0..250).images.mean().unwrap();
    let binary = train.images.mean().unwrap();
    assert!((grey - binary).abs() < 0.01, "{grey} vs {binary}");
    // Greyscale images are not binary, and the model learned differs.
    let plain = TrainingSpec {
        binarize: false,
        ..s.clone()
    };
    assert!(plain
        .split(&data)
        .0
        .images
        .iter()
        .any(|&p| p > 0.0 && p < 1.0));
    let learn = |spec: &TrainingSpec| {
        train_greedy(
            &spec.check_for(&data, &Limits::default()).unwrap(),
            &data,
            &mut Silent,
            &mut rng_from_seed(4),
        )
        .unwrap()
        .dbn
    };
    assert_ne!(learn(&s), learn(&plain));
    // Gaussian visible units have no binary form.
    let mut gaussian = s.clone();
    gaussian.architecture.visible_units = dbn_serve::engine::rbm::Units::Gaussian;
    gaussian.architecture.labels_in_top = false;
    let err = gaussian
        .check(
            dbn_serve::engine::spec::DataShape::MNIST,
            &Limits::default(),
        )
        .unwrap_err()
        .to_string();
    assert!(err.contains("binarize"), "{err}");
}
