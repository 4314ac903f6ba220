//! Checkpoints: a run stopped after any epoch, in pretraining or fine-tuning, and resumed from
//! the serialised checkpoint ends with exactly the model of the uninterrupted run; a
//! checkpoint of another run is refused.

use crate::common;

use dbn_serve::engine::data::MnistSplit;
use dbn_serve::engine::dbn::{
    resume_greedy, train_classifier_stage, train_model, Checkpoint, GreedyCheckpoint, TrainOutcome,
};
use dbn_serve::engine::finetune::{BackpropConfig, UpDownConfig};
use dbn_serve::engine::observer::{Control, EpochMetrics, Observer, Progress, Silent};
use dbn_serve::engine::persist::{self, ModelCard};
use dbn_serve::engine::rbm::RbmTrainConfig;
use dbn_serve::engine::spec::{Architecture, Finetune, LayerOverride, Limits, TrainingSpec};
use dbn_serve::engine::{rng_from_seed, EngineError};

/// Two layers, the top one an associative memory learned by PCD-2 (so the fantasy particles
/// must survive the checkpoint too), with a validation split. Momentum switches after the
/// first epoch, so checkpoints 1 and 4 sit on the switch, and the top layer switches to a
/// momentum of its own.
fn spec() -> TrainingSpec {
    TrainingSpec {
        name: None,
        alias: None,
        dataset: "mnist".into(),
        architecture: Architecture {
            hidden: vec![40, 30],
            labels_in_top: true,
            ..Architecture::default()
        },
        pretrain: RbmTrainConfig {
            epochs: 3,
            batch_size: 50,
            momentum_switch_epoch: 1,
            ..RbmTrainConfig::default()
        },
        layer_overrides: vec![LayerOverride {
            layer: 1,
            persistent: Some(true),
            cd_k: Some(2),
            momentum_final: Some(0.7),
            ..LayerOverride::default()
        }],
        train_examples: Some(500),
        validation_examples: 100,
        seed: 21,
        binarize: false,
        finetune: None,
        classifier: None,
        ais: None,
        sequence: None,
    }
}

/// Keeps the serialised checkpoint of every epoch and stops after the `stop_after`-th.
struct StopAtCheckpoint {
    stop_after: usize,
    saved: Vec<Vec<u8>>,
}

impl StopAtCheckpoint {
    fn new(stop_after: usize) -> Self {
        StopAtCheckpoint {
            stop_after,
            saved: Vec::new(),
        }
    }

    fn last(&self) -> Checkpoint {
        Checkpoint::from_bytes(self.saved.last().expect("a checkpoint was taken")).unwrap()
    }
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

/// The model's file bytes: equal bytes mean bit-identical weights (f32 `==` would let −0 = 0).
fn model_bytes(o: &TrainOutcome) -> Vec<u8> {
    let card = ModelCard {
        name: "m".into(),
        sizes: o.dbn.sizes(),
        label_classes: o.dbn.label_classes(),
        image_shape: None,
        spec: None,
        provenance: Default::default(),
        metrics: Default::default(),
    };
    persist::to_bytes(&o.dbn, &card).unwrap()
}

fn assert_same(a: &TrainOutcome, b: &TrainOutcome) {
    assert!(
        model_bytes(a) == model_bytes(b),
        "the resumed model differs from the uninterrupted one"
    );
    assert_eq!(untimed(&a.history), untimed(&b.history));
    assert_eq!(a.validation_error, b.validation_error);
}

fn train(
    spec: &TrainingSpec,
    observer: &mut dyn Observer,
    checkpoint: Option<Checkpoint>,
) -> Result<TrainOutcome, EngineError> {
    let data = common::fixture(MnistSplit::Train);
    let mut rng = rng_from_seed(spec.seed);
    train_model(
        &spec.check_for(&data, &Limits::default()).unwrap(),
        &data,
        observer,
        &mut rng,
        checkpoint,
    )
}

fn run(spec: &TrainingSpec, observer: &mut dyn Observer) -> Result<TrainOutcome, EngineError> {
    train(spec, observer, None)
}

fn resume(
    spec: &TrainingSpec,
    observer: &mut dyn Observer,
    checkpoint: Checkpoint,
) -> Result<TrainOutcome, EngineError> {
    train(spec, observer, Some(checkpoint))
}

fn greedy(checkpoint: Checkpoint) -> GreedyCheckpoint {
    match checkpoint {
        Checkpoint::Greedy(cp) => cp,
        other => panic!("not a greedy checkpoint: {}", other.position()),
    }
}

#[test]
fn resuming_after_any_epoch_gives_the_uninterrupted_model() {
    let spec = spec();
    let straight = run(&spec, &mut Silent).unwrap();
    // Epoch checkpoints 1..=6: on the momentum switch, inside and at the end of layer 0,
    // inside the PCD top layer, and at the very end.
    for stop_after in [1, 2, 3, 4, 5, 6] {
        let mut stopper = StopAtCheckpoint::new(stop_after);
        assert!(
            matches!(run(&spec, &mut stopper), Err(EngineError::Cancelled)),
            "stopping at {stop_after}"
        );
        let resumed = resume(&spec, &mut Silent, stopper.last()).unwrap();
        assert_same(&straight, &resumed);
    }
    // Stopped twice: resumed from checkpoint 2, stopped again two epochs later, resumed again.
    let mut first = StopAtCheckpoint::new(2);
    let _ = run(&spec, &mut first);
    let mut second = StopAtCheckpoint::new(2);
    assert!(matches!(
        resume(&spec, &mut second, first.last()),
        Err(EngineError::Cancelled)
    ));
    let again = greedy(second.last());
    assert_eq!((again.layer, again.state.next_epoch), (1, 1));
    let again = Checkpoint::Greedy(again);
    assert_same(&straight, &resume(&spec, &mut Silent, again).unwrap());
}

#[test]
fn foreign_corrupt_and_mismatched_checkpoints_are_rejected() {
    let spec = spec();
    let mut stopper = StopAtCheckpoint::new(4);
    let _ = run(&spec, &mut stopper);
    let bytes = stopper.saved.pop().unwrap();
    for cut in [0, 9, bytes.len() / 3, bytes.len() - 1] {
        assert!(
            Checkpoint::from_bytes(&bytes[..cut]).is_err(),
            "truncated at {cut}"
        );
    }
    // A model file is not a checkpoint.
    let model = model_bytes(&run(&spec, &mut Silent).unwrap());
    assert!(Checkpoint::from_bytes(&model).is_err());
    // Any other spec (architecture, seed, learning rate, examples) or other data is refused.
    for change in 0..4 {
        let mut other = spec.clone();
        match change {
            0 => other.architecture.hidden = vec![40, 31],
            1 => other.seed += 1,
            2 => other.pretrain.learning_rate = 0.05,
            _ => other.train_examples = Some(450),
        }
        let e = resume(&other, &mut Silent, Checkpoint::from_bytes(&bytes).unwrap()).unwrap_err();
        assert!(
            e.to_string().contains("another spec"),
            "change {change}: {e}"
        );
    }
    let mut shifted = common::fixture(MnistSplit::Train);
    shifted.images[[0, 300]] = 0.5 - shifted.images[[0, 300]];
    let e = resume_greedy(
        &spec.check_for(&shifted, &Limits::default()).unwrap(),
        &shifted,
        &mut Silent,
        greedy(Checkpoint::from_bytes(&bytes).unwrap()),
    )
    .unwrap_err();
    assert!(e.to_string().contains("other training data"), "{e}");
    // Crafted state: an epoch beyond the layer's, or increments of the wrong shape.
    let mut late = greedy(Checkpoint::from_bytes(&bytes).unwrap());
    late.state.next_epoch = 9;
    let e = resume(&spec, &mut Silent, Checkpoint::Greedy(late)).unwrap_err();
    assert!(e.to_string().contains("past this layer"), "{e}");
    let mut wrong = greedy(Checkpoint::from_bytes(&bytes).unwrap());
    wrong.state.hb_inc = ndarray::Array1::zeros(3);
    assert!(resume(&spec, &mut Silent, Checkpoint::Greedy(wrong)).is_err());
}

/// The spec above with one epoch per layer and three of fine-tuning: backpropagation with
/// dropout (so the masks' draws must resume where they were), or up-down.
fn finetune_spec(backprop: bool) -> TrainingSpec {
    let mut spec = spec();
    spec.pretrain.epochs = 1;
    spec.finetune = Some(if backprop {
        Finetune::Backprop(BackpropConfig {
            epochs: 3,
            top_only_epochs: 1,
            batch_size: 50,
            momentum_switch_epoch: 2,
            input_keep: 0.8,
            hidden_keep: 0.5,
            ..BackpropConfig::default()
        })
    } else {
        Finetune::UpDown(UpDownConfig {
            epochs: 3,
            batch_size: 50,
            cd_k: vec![1, 2],
            ..UpDownConfig::default()
        })
    });
    spec
}

#[test]
fn resuming_in_finetuning_gives_the_uninterrupted_model() {
    for backprop in [true, false] {
        let spec = finetune_spec(backprop);
        let straight = run(&spec, &mut Silent).unwrap();
        assert_eq!(straight.dbn.classifier().is_some(), backprop);
        assert_eq!(straight.dbn.is_untied(), !backprop);
        // Checkpoints 1-2 are the two layers' epochs, 3-5 fine-tuning's.
        for stop_after in 2..=5 {
            let mut stopper = StopAtCheckpoint::new(stop_after);
            assert!(matches!(
                run(&spec, &mut stopper),
                Err(EngineError::Cancelled)
            ));
            let last = stopper.last();
            match (&last, stop_after) {
                (Checkpoint::Greedy(_), 2) => {}
                (Checkpoint::Finetune(cp), n) => assert_eq!(cp.state.next_epoch, n - 2),
                _ => panic!("checkpoint {stop_after} is of the wrong kind"),
            }
            let resumed = resume(&spec, &mut Silent, last).unwrap();
            assert_same(&straight, &resumed);
        }
    }
}

/// Up-down with persistent chains at the top: the chains (binary features, one label each)
/// travel in the checkpoint, so a run stopped after either fine-tuning epoch resumes to the
/// uninterrupted model; and they change what is learned.
#[test]
fn persistent_up_down_resumes_with_its_chains() {
    let mut spec = finetune_spec(false);
    let Some(Finetune::UpDown(cfg)) = spec.finetune.as_mut() else {
        panic!("an up-down spec");
    };
    cfg.persistent = true;
    let straight = run(&spec, &mut Silent).unwrap();
    let cd = run(&finetune_spec(false), &mut Silent).unwrap();
    assert_ne!(
        straight.dbn.layers(),
        cd.dbn.layers(),
        "persistent chains change the top's negative phase"
    );
    let top = &straight.dbn.layers()[1];
    for stop_after in 3..=4 {
        let mut stopper = StopAtCheckpoint::new(stop_after);
        assert!(matches!(
            run(&spec, &mut stopper),
            Err(EngineError::Cancelled)
        ));
        let last = stopper.last();
        let Checkpoint::Finetune(cp) = &last else {
            panic!("checkpoint {stop_after} is not fine-tuning's");
        };
        let chains = cp.state.chains.as_ref().expect("the chains are saved");
        assert_eq!(chains.dim(), (50, top.n_visible()));
        assert!(chains.iter().all(|&x| x == 0.0 || x == 1.0));
        for row in chains.rows() {
            let labels = row.slice(ndarray::s![top.n_features()..]).sum();
            assert_eq!(labels, 1.0, "one label per chain");
        }
        let resumed = resume(&spec, &mut Silent, last).unwrap();
        assert_same(&straight, &resumed);
    }
}

/// Up-down, then a classifier by backpropagation: one model with both, and a checkpoint of
/// either stage resumes to the uninterrupted model.
#[test]
fn a_classifier_after_up_down_keeps_both_and_resumes_from_either_stage() {
    let mut spec = finetune_spec(false);
    spec.classifier = Some(BackpropConfig {
        epochs: 2,
        top_only_epochs: 1,
        batch_size: 50,
        ..BackpropConfig::default()
    });
    let straight = run(&spec, &mut Silent).unwrap();
    assert!(
        straight.dbn.is_untied(),
        "up-down's generative weights are kept"
    );
    assert!(
        straight.dbn.classifier().is_some(),
        "and the classifier added"
    );
    // Up-down alone leaves the same generative weights: the classifier changes nothing else.
    let up_down_only = run(&finetune_spec(false), &mut Silent).unwrap();
    for l in 0..straight.dbn.layers().len() - 1 {
        assert_eq!(
            straight.dbn.generative(l),
            up_down_only.dbn.generative(l),
            "layer {l}"
        );
    }
    assert_eq!(straight.dbn.layers(), up_down_only.dbn.layers());
    // Checkpoints 1-2: the layers; 3-5: up-down; 6-7: the classifier.
    for stop_after in 3..=7 {
        let mut stopper = StopAtCheckpoint::new(stop_after);
        assert!(matches!(
            run(&spec, &mut stopper),
            Err(EngineError::Cancelled)
        ));
        let last = stopper.last();
        let Checkpoint::Finetune(cp) = &last else {
            panic!("checkpoint {stop_after} is not fine-tuning's");
        };
        assert_eq!(
            cp.state.increments.is_empty(),
            stop_after <= 5,
            "{stop_after}"
        );
        let resumed = resume(&spec, &mut Silent, last).unwrap();
        assert_same(&straight, &resumed);
    }
    // A classifier needs up-down before it.
    let mut alone = finetune_spec(true);
    alone.classifier = spec.classifier.clone();
    let e = alone
        .check(
            dbn_serve::engine::spec::DataShape::MNIST,
            &Limits::default(),
        )
        .unwrap_err();
    assert!(e.to_string().contains("classifier"), "{e}");
}

/// A classifier stage trained on its own on a model that up-down already fine-tuned (the CLI's
/// `finetune` of a fine-tuned model): up-down's weights stay, a new classifier replaces the
/// old one, and the history gains the classifier's epochs.
#[test]
fn a_classifier_stage_alone_replaces_the_classifier_and_keeps_up_down() {
    let mut spec = finetune_spec(false);
    spec.classifier = Some(BackpropConfig {
        epochs: 2,
        top_only_epochs: 1,
        batch_size: 50,
        ..BackpropConfig::default()
    });
    let data = common::fixture(MnistSplit::Train);
    let checked = spec.check_for(&data, &Limits::default()).unwrap();
    let straight = run(&spec, &mut Silent).unwrap();
    let old = straight.dbn.classifier().cloned().expect("a classifier");
    let generative: Vec<_> = (0..straight.dbn.layers().len() - 1)
        .map(|l| straight.dbn.generative(l).to_owned())
        .collect();
    let layers = straight.dbn.layers().to_vec();
    let epochs_before = straight.history.len();

    let again = train_classifier_stage(&checked, straight, &data, &mut Silent).unwrap();
    let new = again.dbn.classifier().expect("a classifier");
    assert_ne!(
        new, &old,
        "the classifier is trained anew from its own stream"
    );
    assert_eq!(new.layers().len(), old.layers().len());
    for (l, before) in generative.iter().enumerate() {
        assert_eq!(again.dbn.generative(l), before, "layer {l}");
    }
    assert_eq!(again.dbn.layers(), &layers[..]);
    assert_eq!(
        again.history.len(),
        epochs_before + 2,
        "the classifier's epochs added"
    );
    assert!(
        again.validation_error.is_some(),
        "the new classifier is measured on the held-out images"
    );

    // A spec without a classifier stage has nothing to train.
    let up_down_only = finetune_spec(false)
        .check_for(&data, &Limits::default())
        .unwrap();
    let e = train_classifier_stage(&up_down_only, again, &data, &mut Silent).unwrap_err();
    assert!(e.to_string().contains("classifier"), "{e}");
}

#[test]
fn finetuning_checkpoints_of_another_run_or_corrupt_are_rejected() {
    let spec = finetune_spec(true);
    let mut stopper = StopAtCheckpoint::new(4);
    let _ = run(&spec, &mut stopper);
    let bytes = stopper.saved.pop().unwrap();
    assert!(matches!(
        Checkpoint::from_bytes(&bytes),
        Ok(Checkpoint::Finetune(_))
    ));
    for cut in [0, 9, bytes.len() / 2, bytes.len() - 1] {
        assert!(Checkpoint::from_bytes(&bytes[..cut]).is_err(), "cut {cut}");
    }
    // Other fine-tuning settings, or the other method, make another run.
    let mut faster = spec.clone();
    if let Some(Finetune::Backprop(c)) = &mut faster.finetune {
        c.learning_rate = 0.2;
    }
    for other in [faster, finetune_spec(false)] {
        let cp = Checkpoint::from_bytes(&bytes).unwrap();
        let e = resume(&other, &mut Silent, cp).unwrap_err();
        assert!(e.to_string().contains("another spec"), "{e}");
    }
    // A crafted order that is not a permutation is refused.
    let Ok(Checkpoint::Finetune(mut cp)) = Checkpoint::from_bytes(&bytes) else {
        unreachable!()
    };
    cp.state.order[0] = cp.state.order[1];
    let e = resume(&spec, &mut Silent, Checkpoint::Finetune(cp)).unwrap_err();
    assert!(e.to_string().contains("permutation"), "{e}");
}

/// Writes the seed corpus of the `model` and `checkpoint` fuzz targets: a 6-pixel DBN (3
/// hidden units, then 2 with 2 labels) trained on 40 synthetic examples, its greedy and
/// fine-tuning checkpoints, and the model. Small files, so that libFuzzer mutates them whole.
/// `cargo test --test checkpoint write_fuzz_seeds -- --ignored`
#[test]
#[ignore = "writes fuzz/corpus; run by hand when the file formats change"]
fn write_fuzz_seeds() {
    let n = 40;
    let images =
        ndarray::Array2::from_shape_fn((n, 6), |(r, c)| ((r * 7 + c * 3) % 5 == 0) as u8 as f32);
    let data = dbn_serve::engine::data::Dataset {
        images,
        labels: (0..n).map(|r| (r % 2) as u8).collect(),
        image_rows: 2,
        image_cols: 3,
        classes: 2,
    };
    let mut spec = finetune_spec(true);
    spec.architecture.hidden = vec![3, 2];
    spec.train_examples = None;
    spec.validation_examples = 10;
    spec.pretrain.batch_size = 10;
    if let Some(Finetune::Backprop(c)) = &mut spec.finetune {
        c.batch_size = 10;
    }
    let mut all = StopAtCheckpoint::new(usize::MAX);
    let out = train_model(
        &spec.check_for(&data, &Limits::default()).unwrap(),
        &data,
        &mut all,
        &mut rng_from_seed(1),
        None,
    )
    .unwrap();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
    let write = |dir: &str, name: &str, bytes: &[u8]| {
        std::fs::create_dir_all(root.join(dir)).unwrap();
        std::fs::write(root.join(dir).join(name), bytes).unwrap();
    };
    write("checkpoint", "greedy", &all.saved[0]);
    write("checkpoint", "finetune", all.saved.last().unwrap());
    let card = ModelCard::for_training(&spec, &out, Some([2, 3]), 1);
    write(
        "model",
        "backprop",
        &persist::to_bytes(&out.dbn, &card).unwrap(),
    );
    let mut updown = spec.clone();
    updown.finetune = finetune_spec(false).finetune;
    let out = train_model(
        &updown.check_for(&data, &Limits::default()).unwrap(),
        &data,
        &mut Silent,
        &mut rng_from_seed(1),
        None,
    )
    .unwrap();
    let card = ModelCard::for_training(&updown, &out, None, 1);
    write(
        "model",
        "updown",
        &persist::to_bytes(&out.dbn, &card).unwrap(),
    );
}

#[test]
fn a_semi_restricted_first_layer_resumes_bit_for_bit() {
    // The lateral weights and their momentum increments must survive the checkpoint too.
    let mut spec = spec();
    spec.architecture.lateral = true;
    spec.architecture.labels_in_top = true;
    let straight = run(&spec, &mut Silent).unwrap();
    assert!(straight.dbn.layers()[0].lateral.is_some());
    for stop_after in [1, 2, 4] {
        let mut stopper = StopAtCheckpoint::new(stop_after);
        assert!(matches!(
            run(&spec, &mut stopper),
            Err(EngineError::Cancelled)
        ));
        let resumed = resume(&spec, &mut Silent, stopper.last()).unwrap();
        assert_same(&straight, &resumed);
    }
}
