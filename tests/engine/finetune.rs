//! Discriminative fine-tuning on the real-MNIST fixture: it lowers the error of the greedy
//! model, stops within a batch when cancelled, and survives a save and load.

use crate::common;

use dbn_serve::engine::data::MnistSplit;
use dbn_serve::engine::dbn::{error_rate, test_metrics, train_model};
use dbn_serve::engine::finetune::{BackpropConfig, UpDownConfig};
use dbn_serve::engine::observer::{Control, EpochMetrics, Observer, Phase, Progress, Silent};
use dbn_serve::engine::rbm::RbmTrainConfig;
use dbn_serve::engine::spec::{Architecture, Finetune, Limits, TrainingSpec};
use dbn_serve::engine::{persist, EngineError};

/// 784-100-200 with labels on top, 3 epochs of CD-1 per layer on 1,500 fixture images with
/// the last 500 held out, then `finetune`.
fn spec(finetune: Option<BackpropConfig>) -> TrainingSpec {
    TrainingSpec {
        name: Some("finetune-test".into()),
        alias: None,
        dataset: "mnist".into(),
        architecture: Architecture {
            hidden: vec![100, 200],
            labels_in_top: true,
            ..Architecture::default()
        },
        pretrain: RbmTrainConfig {
            epochs: 3,
            ..RbmTrainConfig::default()
        },
        layer_overrides: Vec::new(),
        train_examples: None,
        validation_examples: 500,
        seed: 4,
        binarize: false,
        finetune: finetune.map(Finetune::Backprop),
        classifier: None,
        ais: None,
        sequence: None,
    }
}

fn few_epochs() -> BackpropConfig {
    BackpropConfig {
        epochs: 8,
        top_only_epochs: 2,
        ..BackpropConfig::default()
    }
}

#[test]
fn backprop_lowers_the_error_of_the_greedy_model() {
    let data = common::fixture(MnistSplit::Train);
    let test = common::fixture(MnistSplit::Test);
    let run = |ft| {
        let mut rng = dbn_serve::engine::rng_from_seed(4);
        train_model(
            &spec(ft).check_for(&data, &Limits::default()).unwrap(),
            &data,
            &mut Silent,
            &mut rng,
            None,
        )
        .unwrap()
    };
    let greedy = run(None);
    let tuned = run(Some(few_epochs()));

    // The same pretraining under both: fine-tuning leaves the generative model alone.
    assert_eq!(greedy.dbn.layers(), tuned.dbn.layers());
    let greedy_error = error_rate(
        greedy
            .dbn
            .classify_free_energy(test.images.view())
            .unwrap()
            .view(),
        &test.labels,
    );
    let metrics = test_metrics(None, &tuned.dbn, &test).unwrap();
    let tuned_error = metrics["test_error_discriminative"];
    assert_eq!(metrics["test_error_free_energy"], greedy_error);
    // On 500 test images, 8 epochs of backprop beat the greedy model's free energy clearly.
    assert!(
        tuned_error < greedy_error - 0.02,
        "greedy {greedy_error}, fine-tuned {tuned_error}"
    );
    // The held-out error after fine-tuning is recorded, and so is every epoch.
    let ft: Vec<&EpochMetrics> = tuned
        .history
        .iter()
        .filter(|m| m.phase == Phase::Finetune)
        .collect();
    assert_eq!(ft.len(), 8);
    assert!(ft
        .iter()
        .all(|m| m.validation_error.is_some() && m.cross_entropy.is_some()));
    assert!(ft.last().unwrap().cross_entropy < ft.first().unwrap().cross_entropy);
    assert_eq!(tuned.validation_error, ft.last().unwrap().validation_error);

    // Saved and loaded, the classifier gives the same probabilities bit for bit.
    let card =
        persist::ModelCard::for_training(&spec(Some(few_epochs())), &tuned, Some([28, 28]), 1);
    // The card names the epoch with the lowest held-out error, for retraining on all data.
    let best = ft
        .iter()
        .map(|m| m.validation_error.unwrap())
        .fold(f64::INFINITY, f64::min);
    let first_best = ft
        .iter()
        .position(|m| m.validation_error == Some(best))
        .unwrap();
    assert_eq!(card.metrics["finetune_best_validation_error"], best);
    assert_eq!(card.metrics["finetune_best_epoch"], (first_best + 1) as f64);
    let bytes = persist::to_bytes(&tuned.dbn, &card).unwrap();
    let (loaded, _) = persist::from_bytes(&bytes).unwrap();
    assert_eq!(
        loaded.classify_discriminative(test.images.view()).unwrap(),
        tuned
            .dbn
            .classify_discriminative(test.images.view())
            .unwrap()
    );
    // A model without fine-tuning says so instead of classifying.
    assert!(matches!(
        greedy.dbn.classify_discriminative(test.images.view()),
        Err(EngineError::Invalid { .. })
    ));
}

/// Stops fine-tuning after a number of its batches.
struct StopAfter {
    finetune_batches: usize,
    limit: usize,
    /// The run's fraction done, which must never go back.
    last_fraction: f64,
}

impl Observer for StopAfter {
    fn on_batch(&mut self, p: &Progress) -> Control {
        if p.phase == Phase::Finetune {
            self.finetune_batches += 1;
        }
        assert!(
            p.fraction >= self.last_fraction && p.fraction <= 1.0,
            "fraction went from {} to {}",
            self.last_fraction,
            p.fraction
        );
        self.last_fraction = p.fraction;
        if self.finetune_batches >= self.limit {
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
fn cancelling_stops_fine_tuning_within_one_batch() {
    let data = common::fixture(MnistSplit::Train);
    let mut observer = StopAfter {
        finetune_batches: 0,
        limit: 3,
        last_fraction: 0.0,
    };
    let mut rng = dbn_serve::engine::rng_from_seed(4);
    let result = train_model(
        &spec(Some(few_epochs()))
            .check_for(&data, &Limits::default())
            .unwrap(),
        &data,
        &mut observer,
        &mut rng,
        None,
    );
    assert!(matches!(result, Err(EngineError::Cancelled)));
    assert_eq!(observer.finetune_batches, 3);
}

#[test]
fn bad_fine_tuning_settings_are_refused_with_the_field_named() {
    let json = r#"{"architecture": {"hidden": [10]}, "finetune": {"method": "backprop", "hidden_keep": 0}}"#;
    let spec: TrainingSpec = serde_json::from_str(json).unwrap();
    match spec.check(
        dbn_serve::engine::spec::DataShape::MNIST,
        &Limits::default(),
    ) {
        Err(EngineError::Invalid { field, .. }) => assert_eq!(field, "finetune.hidden_keep"),
        other => panic!("expected an invalid field, got {other:?}"),
    }
    let unknown =
        r#"{"architecture": {"hidden": [10]}, "finetune": {"method": "backprop", "epoch": 3}}"#;
    assert!(serde_json::from_str::<TrainingSpec>(unknown).is_err());
    let method = r#"{"architecture": {"hidden": [10]}, "finetune": {"method": "telepathy"}}"#;
    assert!(serde_json::from_str::<TrainingSpec>(method).is_err());
}

#[test]
fn up_down_unties_the_weights_and_the_model_round_trips() {
    let data = common::fixture(MnistSplit::Train);
    let mut s = spec(None);
    s.finetune = Some(Finetune::UpDown(UpDownConfig {
        epochs: 3,
        learning_rate: 0.01,
        ..UpDownConfig::default()
    }));
    let mut rng = dbn_serve::engine::rng_from_seed(4);
    let tuned = train_model(
        &s.check_for(&data, &Limits::default()).unwrap(),
        &data,
        &mut Silent,
        &mut rng,
        None,
    )
    .unwrap();
    assert!(tuned.dbn.is_untied());
    let ft: Vec<&EpochMetrics> = tuned
        .history
        .iter()
        .filter(|m| m.phase == Phase::Finetune)
        .collect();
    assert_eq!(ft.len(), 3);
    assert!(ft.iter().all(|m| m.recon_error_train.unwrap().is_finite()
        && m.validation_error.is_some()
        && m.free_energy_gap.is_some_and(f64::is_finite)));
    // The wake-phase prediction of the data improves epoch by epoch, and the free-energy
    // classifier (now on the recognition weights) is no worse than the greedy model's:
    // 784-100-200 after 3 epochs per layer errs on about 55 % of the fixture's test images.
    assert!(ft[2].recon_error_train < ft[0].recon_error_train);
    let test = common::fixture(MnistSplit::Test);
    let tuned_error = test_metrics(None, &tuned.dbn, &test).unwrap()["test_error_free_energy"];
    let mut rng = dbn_serve::engine::rng_from_seed(4);
    let greedy = train_model(
        &spec(None).check_for(&data, &Limits::default()).unwrap(),
        &data,
        &mut Silent,
        &mut rng,
        None,
    )
    .unwrap();
    let greedy_error = test_metrics(None, &greedy.dbn, &test).unwrap()["test_error_free_energy"];
    assert!(
        tuned_error <= greedy_error + 0.01,
        "greedy {greedy_error}, up-down {tuned_error}"
    );

    // Saved and loaded, the generative weights come back: the same seed gives the same digits.
    let card = persist::ModelCard::for_training(&s, &tuned, Some([28, 28]), 1);
    let (loaded, _) = persist::from_bytes(&persist::to_bytes(&tuned.dbn, &card).unwrap()).unwrap();
    assert!(loaded.is_untied());
    let sample = |dbn: &dbn_serve::engine::dbn::Dbn| {
        dbn.generate(Some(3), 4, 20, &mut dbn_serve::engine::rng_from_seed(1))
            .unwrap()
    };
    assert_eq!(sample(&loaded), sample(&tuned.dbn));
}
