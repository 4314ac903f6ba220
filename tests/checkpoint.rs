//! Checkpoints: a run stopped after any epoch and resumed from the serialised checkpoint ends
//! with exactly the model of the uninterrupted run.

mod common;

use dbn_serve::engine::data::MnistSplit;
use dbn_serve::engine::dbn::{resume_greedy, train_greedy, Checkpoint, TrainOutcome};
use dbn_serve::engine::observer::{Control, EpochMetrics, Observer, Progress, Silent};
use dbn_serve::engine::rbm::RbmTrainConfig;
use dbn_serve::engine::spec::{Architecture, LayerOverride, Limits, TrainingSpec};
use dbn_serve::engine::{rng_from_seed, EngineError};

/// Two layers, the top one an associative memory learned by PCD-2 (so the fantasy particles
/// must survive the checkpoint too), with a validation split.
fn spec() -> TrainingSpec {
    TrainingSpec {
        name: None,
        dataset: "mnist".into(),
        architecture: Architecture {
            hidden: vec![40, 30],
            labels_in_top: true,
        },
        pretrain: RbmTrainConfig {
            epochs: 3,
            batch_size: 50,
            ..RbmTrainConfig::default()
        },
        layer_overrides: vec![LayerOverride {
            layer: 1,
            persistent: Some(true),
            cd_k: Some(2),
            momentum_final: Some(0.5),
            ..LayerOverride::default()
        }],
        train_examples: Some(500),
        validation_examples: 100,
        seed: 21,
    }
}

/// Keeps the serialised checkpoint of every epoch and stops after the `stop_after`-th.
struct StopAtCheckpoint {
    stop_after: usize,
    saved: Vec<Vec<u8>>,
}

impl Observer for StopAtCheckpoint {
    fn on_batch(&mut self, _: &Progress) -> Control {
        Control::Continue
    }
    fn on_epoch(&mut self, _: &Progress, _: &EpochMetrics) -> Control {
        Control::Continue
    }
    fn wants_checkpoints(&self) -> bool {
        true
    }
    fn on_checkpoint(&mut self, checkpoint: &Checkpoint) -> Control {
        self.saved
            .push(checkpoint.to_bytes().expect("checkpoint serialises"));
        if self.saved.len() == self.stop_after {
            Control::Stop
        } else {
            Control::Continue
        }
    }
}

/// The metrics without their timings, which differ from run to run.
fn untimed(history: &[EpochMetrics]) -> Vec<EpochMetrics> {
    history
        .iter()
        .map(|m| EpochMetrics {
            seconds: 0.0,
            examples_per_sec: 0.0,
            ..m.clone()
        })
        .collect()
}

fn assert_same(a: &TrainOutcome, b: &TrainOutcome) {
    assert_eq!(
        a.dbn, b.dbn,
        "the resumed model differs from the uninterrupted one"
    );
    assert_eq!(untimed(&a.history), untimed(&b.history));
    assert_eq!(a.validation_error, b.validation_error);
}

#[test]
fn resuming_after_any_epoch_gives_the_uninterrupted_model() {
    let data = common::fixture(MnistSplit::Train);
    let spec = spec();
    let straight = train_greedy(
        &spec,
        &data,
        &Limits::default(),
        &mut Silent,
        &mut rng_from_seed(spec.seed),
    )
    .unwrap();
    // Epoch checkpoints 1..=6: inside layer 0, at its end, inside the PCD top layer, at the end.
    for stop_after in [1, 3, 5, 6] {
        let mut stopper = StopAtCheckpoint {
            stop_after,
            saved: Vec::new(),
        };
        let cut = train_greedy(
            &spec,
            &data,
            &Limits::default(),
            &mut stopper,
            &mut rng_from_seed(spec.seed),
        );
        assert!(
            matches!(cut, Err(EngineError::Cancelled)),
            "stopping at checkpoint {stop_after}"
        );
        let checkpoint = Checkpoint::from_bytes(stopper.saved.last().unwrap()).unwrap();
        let resumed =
            resume_greedy(&spec, &data, &Limits::default(), &mut Silent, checkpoint).unwrap();
        assert_same(&straight, &resumed);
    }
}

#[test]
fn foreign_corrupt_and_mismatched_checkpoints_are_rejected() {
    let data = common::fixture(MnistSplit::Train);
    let spec = spec();
    let mut stopper = StopAtCheckpoint {
        stop_after: 4,
        saved: Vec::new(),
    };
    let _ = train_greedy(
        &spec,
        &data,
        &Limits::default(),
        &mut stopper,
        &mut rng_from_seed(spec.seed),
    );
    let bytes = stopper.saved.pop().unwrap();
    for cut in [0, 9, bytes.len() / 3, bytes.len() - 1] {
        assert!(
            Checkpoint::from_bytes(&bytes[..cut]).is_err(),
            "truncated at {cut}"
        );
    }
    // A model file is not a checkpoint.
    let model = dbn_serve::engine::persist::to_bytes(
        &train_greedy(
            &spec,
            &data,
            &Limits::default(),
            &mut Silent,
            &mut rng_from_seed(1),
        )
        .unwrap()
        .dbn,
        &dbn_serve::engine::persist::ModelCard {
            name: "m".into(),
            sizes: vec![784, 40, 30],
            label_classes: 10,
            image_shape: None,
            spec: None,
            provenance: Default::default(),
            metrics: Default::default(),
        },
    )
    .unwrap();
    assert!(Checkpoint::from_bytes(&model).is_err());
    // A checkpoint of another architecture, or of fewer examples, does not resume this spec.
    let mut other = spec.clone();
    other.architecture.hidden = vec![40, 31];
    let e = resume_greedy(
        &other,
        &data,
        &Limits::default(),
        &mut Silent,
        Checkpoint::from_bytes(&bytes).unwrap(),
    )
    .unwrap_err();
    assert!(e.to_string().contains("does not match"), "{e}");
    let mut fewer = spec.clone();
    fewer.train_examples = Some(450);
    let e = resume_greedy(
        &fewer,
        &data,
        &Limits::default(),
        &mut Silent,
        Checkpoint::from_bytes(&bytes).unwrap(),
    )
    .unwrap_err();
    assert!(e.to_string().contains("permutation"), "{e}");
}
