//! Conditional RBMs for sequences: the conditionals against a hand computation, Gibbs
//! sampling against the exact conditional distribution by enumeration, learning against the
//! exact conditional likelihood of a toy sequence, moving-digit videos, stacking, files.

use crate::common;

use dbn_serve::engine::crbm::{
    gather_past, train_temporal, Conditioning, ContinueConfig, Crbm, SequenceSpec, Temporal,
};
use dbn_serve::engine::data::{Dataset, MnistSplit, MovingImages};
use dbn_serve::engine::dbn::Checkpoint;
use dbn_serve::engine::dbn::{test_metrics, Dbn};
use dbn_serve::engine::observer::{Control, EpochMetrics, Observer, Progress, Silent};
use dbn_serve::engine::persist::{self, ModelCard};
use dbn_serve::engine::rbm::{Rbm, RbmTrainConfig, Units};
use dbn_serve::engine::spec::{Architecture, Limits, TrainingSpec};
use dbn_serve::engine::{rng_from_seed, EngineError};
use ndarray::{array, Array1, Array2, ArrayView2, Axis};

/// A layer with the given parameters and unit kinds.
fn layer(w: Array2<f32>, vb: Array1<f32>, hb: Array1<f32>, visible: Units) -> Rbm {
    let mut rbm = Rbm::new(w.nrows(), w.ncols(), 0, 0.01, &mut rng_from_seed(0)).unwrap();
    rbm.weights = w;
    rbm.visible_bias = vb;
    rbm.hidden_bias = hb;
    rbm.with_units(visible, Units::Binary).unwrap()
}

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

#[test]
fn the_conditionals_match_a_hand_computation() {
    // Two Gaussian visible units, two hidden units, order 1.
    let rbm = layer(
        array![[0.5, -1.0], [2.0, 0.25]],
        array![0.1, -0.2],
        array![0.3, 0.0],
        Units::Gaussian,
    );
    let cond = Conditioning {
        past_visible: array![[0.5, 0.0], [-1.0, 2.0]],
        past_hidden: array![[1.0, -0.5], [0.0, 0.25]],
    };
    let crbm = Crbm {
        rbm: &rbm,
        cond: &cond,
    };
    let past = array![[1.0f32, 0.5]];
    let biases = crbm.biases(past.view());
    // b̃ = b + p·A = (0.1 + 0.5 − 0.5, −0.2 + 0 + 1.0) = (0.1, 0.8)
    // c̃ = c + p·B = (0.3 + 1.0 + 0, 0 − 0.5 + 0.125) = (1.3, −0.375)
    for (got, want) in biases.visible.iter().zip([0.1, 0.8]) {
        assert!((*got as f64 - want).abs() < 1e-6, "{got} vs {want}");
    }
    for (got, want) in biases.hidden.iter().zip([1.3, -0.375]) {
        assert!((*got as f64 - want).abs() < 1e-6, "{got} vs {want}");
    }
    // v = (0.2, −0.4): inputs c̃ + v·W = (1.3 + 0.1 − 0.8, −0.375 − 0.2 − 0.1) = (0.6, −0.675).
    let v = array![[0.2f32, -0.4]];
    let h = crbm.hidden_means(v.view(), &biases);
    for (got, want) in h.iter().zip([sigmoid(0.6), sigmoid(-0.675)]) {
        assert!((*got as f64 - want).abs() < 1e-6, "{got} vs {want}");
    }
    // h = (1, 0): E[v | h, p] = b̃ + W·h = (0.1 + 0.5, 0.8 + 2.0) = (0.6, 2.8).
    let means = crbm.visible_means(array![[1.0f32, 0.0]].view(), &biases);
    for (got, want) in means.iter().zip([0.6, 2.8]) {
        assert!((*got as f64 - want).abs() < 1e-6, "{got} vs {want}");
    }
    // F(v | p) = Σ (v − b̃)²/2 − Σ softplus(c̃ + v·W)
    //          = ((0.1)² + (1.2)²)/2 − ln(1 + e^0.6) − ln(1 + e^−0.675)
    let f = crbm.free_energy(v.view(), &biases)[0];
    let want = (0.01 + 1.44) / 2.0 - (1.0 + 0.6f64.exp()).ln() - (1.0 + (-0.675f64).exp()).ln();
    assert!((f - want).abs() < 1e-5, "{f} vs {want}");
}

/// Every binary vector of length n, as rows.
fn all_states(n: usize) -> Array2<f32> {
    Array2::from_shape_fn((1 << n, n), |(s, i)| ((s >> i) & 1) as f32)
}

/// ln p(v | past) for every row of `frames` with its past, by enumerating the 2^V frames.
fn exact_log_conditional(crbm: Crbm, frames: ArrayView2<f32>, past: ArrayView2<f32>) -> Vec<f64> {
    let states = all_states(crbm.n_visible());
    frames
        .outer_iter()
        .zip(past.outer_iter())
        .map(|(v, p)| {
            let p = p.insert_axis(Axis(0)).to_owned();
            let repeated = p.broadcast((states.nrows(), p.ncols())).unwrap().to_owned();
            let biases = crbm.biases(repeated.view());
            let f_all = crbm.free_energy(states.view(), &biases);
            let max = f_all.iter().map(|f| -f).fold(f64::NEG_INFINITY, f64::max);
            let log_z = max + f_all.iter().map(|f| (-f - max).exp()).sum::<f64>().ln();
            let one = crbm.biases(p.view());
            -crbm.free_energy(v.insert_axis(Axis(0)), &one)[0] - log_z
        })
        .collect()
}

fn random_crbm(v: usize, h: usize, order: usize, seed: u64, scale: f32) -> (Rbm, Conditioning) {
    let mut rng = rng_from_seed(seed);
    let mut rbm = Rbm::new(v, h, 0, scale, &mut rng).unwrap();
    rbm.visible_bias = Array1::from_shape_fn(v, |i| 0.3 * (i as f32 - 1.0));
    rbm.hidden_bias = Array1::from_shape_fn(h, |j| -0.2 * j as f32);
    (rbm, Conditioning::random(order, v, h, scale, &mut rng))
}

#[test]
fn gibbs_sampling_reaches_the_exact_conditional_distribution() {
    // Three binary visible units, two hidden, order 2: the mean of many chains' frames must
    // equal E[v | past] computed by enumerating the eight frames.
    let (rbm, cond) = random_crbm(3, 2, 2, 7, 1.0);
    let dbn = Dbn::new(vec![rbm.clone()])
        .unwrap()
        .with_temporal(Temporal {
            order: 2,
            layers: vec![cond.clone()],
        })
        .unwrap();
    let crbm = Crbm {
        rbm: &rbm,
        cond: &cond,
    };
    let chains = 20_000;
    let older = Array2::from_shape_fn((chains, 3), |(_, i)| [1.0, 0.0, 1.0][i]);
    let newer = Array2::from_shape_fn((chains, 3), |(_, i)| [0.0, 1.0, 1.0][i]);
    let frames = dbn
        .continue_sequences(
            &[older.view(), newer.view()],
            &ContinueConfig {
                frames: 1,
                gibbs_steps: 30,
                mean_field: false,
            },
            &mut rng_from_seed(3),
        )
        .unwrap();
    let sampled = frames[0].mean_axis(Axis(0)).unwrap();
    // The past is the newer frame first.
    let past = array![[0.0f32, 1.0, 1.0, 1.0, 0.0, 1.0]];
    let states = all_states(3);
    let pasts = past.broadcast((8, 6)).unwrap().to_owned();
    let log_p = exact_log_conditional(crbm, states.view(), pasts.view());
    let exact: Vec<f64> = (0..3)
        .map(|i| {
            states
                .outer_iter()
                .zip(&log_p)
                .map(|(s, lp)| s[i] as f64 * lp.exp())
                .sum()
        })
        .collect();
    let total: f64 = log_p.iter().map(|lp| lp.exp()).sum();
    assert!(
        (total - 1.0).abs() < 1e-5,
        "the enumeration sums to {total}"
    );
    for i in 0..3 {
        assert!(
            (sampled[i] as f64 - exact[i]).abs() < 0.015,
            "E[v{i} | past]: chains {} vs exact {}",
            sampled[i],
            exact[i]
        );
    }
}

/// Sequences of a single lit pixel moving around a ring of `n` pixels, one step a frame, in a
/// direction of its own; sequence s starts at s mod n.
fn ring_sequences(sequences: usize, length: usize, n: usize) -> Dataset {
    let mut images = Array2::zeros((sequences * length, n));
    for s in 0..sequences {
        let step = if s % 2 == 0 { 1 } else { n - 1 };
        for t in 0..length {
            images[[s * length + t, (s + t * step) % n]] = 1.0;
        }
    }
    Dataset {
        images,
        labels: vec![0; sequences * length],
        image_rows: 1,
        image_cols: n,
        classes: 0,
    }
}

fn ring_spec(hidden: Vec<usize>, epochs: usize) -> TrainingSpec {
    TrainingSpec {
        name: Some("ring".into()),
        alias: None,
        architecture: Architecture {
            hidden,
            labels_in_top: false,
            ..Architecture::default()
        },
        pretrain: RbmTrainConfig {
            epochs,
            batch_size: 20,
            learning_rate: 0.1,
            bias_learning_rate: 0.1,
            weight_decay: 0.0,
            ..RbmTrainConfig::default()
        },
        sequence: Some(SequenceSpec {
            order: 2,
            length: 12,
            moving: None,
        }),
        ..TrainingSpec::digit_model()
    }
}

#[test]
fn learning_raises_the_exact_conditional_likelihood_of_a_sequence() {
    // Which pixel lights next depends on the last two frames (the direction): a conditional
    // RBM of order 2 can learn it, and CD must raise the exact ln p(v_t | v_{t−1}, v_{t−2}).
    let n = 8;
    let data = ring_sequences(160, 12, n);
    let mean_log_conditional = |dbn: &Dbn| {
        let t = dbn.temporal().unwrap();
        let crbm = Crbm {
            rbm: &dbn.layers()[0],
            cond: &t.layers[0],
        };
        let targets: Vec<usize> = (0..160)
            .flat_map(|s| (2..12).map(move |t| s * 12 + t))
            .collect();
        let frames = data.images.select(Axis(0), &targets);
        let past = gather_past(data.images.view(), &targets, 2);
        let lp = exact_log_conditional(crbm, frames.view(), past.view());
        lp.iter().sum::<f64>() / lp.len() as f64
    };
    let train = |epochs: usize| {
        let spec = ring_spec(vec![16], epochs);
        let mut rng = rng_from_seed(1);
        train_temporal(
            &spec.check_for(&data, &Limits::default()).unwrap(),
            &data,
            &mut Silent,
            &mut rng,
            None,
        )
        .unwrap()
    };
    let (before, after) = (train(1), train(60));
    let (lp_before, lp_after) = (
        mean_log_conditional(&before.dbn),
        mean_log_conditional(&after.dbn),
    );
    // Uniform over one lit pixel of eight would be ln(1/8) = −2.08 nats, and over all 256
    // frames −5.5; the learned model must be far surer than either.
    assert!(
        lp_after > lp_before + 1.0 && lp_after > -0.5,
        "ln p(v_t | past): {lp_before:.3} after one epoch, {lp_after:.3} after sixty"
    );
    // And its mean-field prediction of the next frame beats repeating the last one (whose
    // squared error is 2: one pixel off, one on).
    let seed: Vec<Array2<f32>> = (0..2)
        .map(|t| {
            let rows: Vec<usize> = (0..160).map(|s| s * 12 + t).collect();
            data.images.select(Axis(0), &rows)
        })
        .collect();
    let views: Vec<ArrayView2<f32>> = seed.iter().map(|f| f.view()).collect();
    let predicted = after
        .dbn
        .continue_sequences(
            &views,
            &ContinueConfig {
                frames: 3,
                gibbs_steps: 20,
                mean_field: true,
            },
            &mut rng_from_seed(0),
        )
        .unwrap();
    for (k, frame) in predicted.iter().enumerate() {
        let rows: Vec<usize> = (0..160).map(|s| s * 12 + 2 + k).collect();
        let truth = data.images.select(Axis(0), &rows);
        let error = (frame - &truth).mapv(|d| d * d).sum() / 160.0;
        assert!(
            error < 0.5,
            "frame {k} ahead: squared error {error:.3} (copying: 2)"
        );
    }
}

#[test]
fn moving_digits_are_shifted_copies_that_stay_on_the_canvas() {
    let digits = common::fixture(MnistSplit::Train).slice(0..20);
    let moving = MovingImages {
        canvas: 36,
        max_speed: Some(3),
        seed: 5,
    };
    let videos = moving.sequences(&digits, 10).unwrap();
    assert_eq!(videos.images.dim(), (200, 36 * 36));
    assert_eq!((videos.image_rows, videos.image_cols), (36, 36));
    assert_eq!(
        videos,
        moving.sequences(&digits, 10).unwrap(),
        "deterministic"
    );
    let other = MovingImages { seed: 6, ..moving };
    assert_ne!(videos.images, other.sequences(&digits, 10).unwrap().images);
    for s in 0..20 {
        let digit = digits.images.row(s);
        let mut last: Option<(usize, usize)> = None;
        for t in 0..10 {
            let frame = videos.images.row(s * 10 + t);
            assert_eq!(videos.labels[s * 10 + t], digits.labels[s]);
            // The frame is the digit at exactly one offset, blank elsewhere.
            let at = (0..=8)
                .flat_map(|y| (0..=8).map(move |x| (y, x)))
                .find(|&(y, x)| {
                    let mut placed = Array1::<f32>::zeros(36 * 36);
                    for r in 0..28 {
                        for c in 0..28 {
                            placed[(y + r) * 36 + x + c] = digit[r * 28 + c];
                        }
                    }
                    placed == frame
                })
                .unwrap_or_else(|| panic!("sequence {s} frame {t} is not a shifted digit"));
            if let Some((y0, x0)) = last {
                let moved = (at.0 as i64 - y0 as i64)
                    .abs()
                    .max((at.1 as i64 - x0 as i64).abs());
                assert!(moved <= 3, "moved {moved} pixels in one frame");
            }
            last = Some(at);
        }
    }
    // A canvas no larger than the digits is refused.
    let small = MovingImages {
        canvas: 28,
        ..moving
    };
    assert!(matches!(
        small.sequences(&digits, 10),
        Err(EngineError::Invalid { .. })
    ));
}

fn moving_spec(hidden: Vec<usize>) -> TrainingSpec {
    TrainingSpec {
        name: Some("moving".into()),
        alias: None,
        architecture: Architecture {
            hidden,
            labels_in_top: false,
            visible_units: Units::Gaussian,
            ..Architecture::default()
        },
        pretrain: RbmTrainConfig {
            epochs: 2,
            batch_size: 50,
            learning_rate: 0.001,
            bias_learning_rate: 0.001,
            ..RbmTrainConfig::default()
        },
        train_examples: Some(150),
        sequence: Some(SequenceSpec {
            order: 2,
            length: 10,
            moving: Some(MovingImages {
                canvas: 32,
                max_speed: Some(2),
                seed: 0,
            }),
        }),
        ..TrainingSpec::digit_model()
    }
}

#[test]
fn a_two_layer_model_of_moving_digits_continues_and_round_trips() {
    let train = common::fixture(MnistSplit::Train);
    let test = common::fixture(MnistSplit::Test).slice(0..60);
    let spec = moving_spec(vec![60, 40]);
    let outcome = train_temporal(
        &spec.check_for(&train, &Limits::default()).unwrap(),
        &train,
        &mut Silent,
        &mut rng_from_seed(2),
        None,
    )
    .unwrap();
    let dbn = &outcome.dbn;
    assert_eq!(dbn.sizes(), vec![32 * 32, 60, 40]);
    assert_eq!(dbn.seed_frames(), Some(4), "two layers of order 2");
    assert_eq!(outcome.history.len(), 4, "two epochs per layer");
    assert!(
        dbn.input_norm().is_some(),
        "Gaussian frames are standardised"
    );

    // Scored on held-out videos: a model that learned anything beats repeating the last frame.
    let metrics = test_metrics(Some(&spec), dbn, &test).unwrap();
    assert_eq!(metrics["test_sequences"], 60.0);
    assert!(
        metrics["test_prediction_error"] < metrics["test_prediction_error_copy_last"],
        "{metrics:?}"
    );

    // A continuation from three frames is refused; from four it gives frames in [0, 1].
    let frames = spec.sequence.as_ref().unwrap().test_frames(&test).unwrap();
    let seed: Vec<ArrayView2<f32>> = (0..4)
        .map(|t| frames.images.slice(ndarray::s![t..t + 1, ..]))
        .collect();
    let config = ContinueConfig {
        frames: 5,
        gibbs_steps: 10,
        mean_field: false,
    };
    assert!(matches!(
        dbn.continue_sequences(&seed[..3], &config, &mut rng_from_seed(0)),
        Err(EngineError::Invalid { .. })
    ));
    let out = dbn
        .continue_sequences(&seed, &config, &mut rng_from_seed(0))
        .unwrap();
    assert_eq!(out.len(), 5);
    assert!(out.iter().all(|f| f.dim() == (1, 1024)));
    assert!(out.iter().flatten().all(|&x| (0.0..=1.0).contains(&x)));

    // A sequence model refuses uses that would ignore its past.
    assert!(dbn
        .encode(frames.images.slice(ndarray::s![..1, ..]))
        .is_err());
    assert!(dbn.generate(None, 1, 5, &mut rng_from_seed(0)).is_err());

    // The model file keeps everything: the same model, the same continuation.
    let card = ModelCard::for_training(&spec, &outcome, Some([32, 32]), 1);
    let bytes = persist::to_bytes(dbn, &card).unwrap();
    let (loaded, card) = persist::from_bytes(&bytes).unwrap();
    assert_eq!(&loaded, dbn);
    assert_eq!(card.spec.as_ref().unwrap().sequence, spec.sequence);
    let again = loaded
        .continue_sequences(&seed, &config, &mut rng_from_seed(0))
        .unwrap();
    assert_eq!(again, out);

    // A card whose sequence section does not fit the tensors is refused on loading.
    let mut crafted = card.clone();
    crafted
        .spec
        .as_mut()
        .unwrap()
        .sequence
        .as_mut()
        .unwrap()
        .order = 3;
    let bytes = persist::to_bytes(dbn, &crafted).unwrap();
    assert!(matches!(
        persist::from_bytes(&bytes),
        Err(EngineError::Model(_))
    ));
    // Nor can a fine-tuned part join a sequence model.
    let net = dbn_serve::engine::finetune::Classifier::from_dbn(
        &Dbn::new(dbn.layers().to_vec()).unwrap(),
        10,
        0.01,
        &mut rng_from_seed(0),
    )
    .unwrap();
    assert!(loaded.with_classifier(net).is_err());
}

#[test]
fn sequence_specs_refuse_what_they_cannot_do() {
    let check = |spec: &TrainingSpec| {
        spec.check(
            dbn_serve::engine::spec::DataShape::MNIST,
            &Limits::default(),
        )
    };
    let good = moving_spec(vec![50]);
    check(&good).unwrap();
    let field = |spec: TrainingSpec| match check(&spec) {
        Err(EngineError::Invalid { field, .. }) => field,
        other => panic!("expected a refusal, got {other:?}"),
    };
    let mut labels = good.clone();
    labels.architecture.labels_in_top = true;
    assert_eq!(field(labels), "architecture.labels_in_top");
    let mut short = good.clone();
    short.sequence.as_mut().unwrap().length = 2;
    assert_eq!(field(short), "sequence.length");
    let mut order = good.clone();
    order.sequence.as_mut().unwrap().order = 0;
    assert_eq!(field(order), "sequence.order");
    let mut canvas = good.clone();
    canvas
        .sequence
        .as_mut()
        .unwrap()
        .moving
        .as_mut()
        .unwrap()
        .canvas = 20;
    assert_eq!(field(canvas), "sequence.moving.canvas");
    let mut held_out = good.clone();
    held_out.validation_examples = 10;
    assert_eq!(field(held_out), "validation_examples");
    let mut finetune = good.clone();
    finetune.finetune = Some(dbn_serve::engine::spec::Finetune::Backprop(
        Default::default(),
    ));
    assert_eq!(field(finetune), "sequence");
    let mut persistent = good;
    persistent.pretrain.persistent = true;
    assert_eq!(field(persistent), "pretrain");
}

/// Keeps every checkpoint a run offers, as bytes.
#[derive(Default)]
struct Keeper {
    checkpoints: Vec<Vec<u8>>,
}

impl Observer for Keeper {
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
        self.checkpoints.push(checkpoint.to_bytes().unwrap());
        Control::Continue
    }
}

#[test]
fn a_sequence_run_resumes_from_its_checkpoints_bit_for_bit() {
    let data = ring_sequences(40, 12, 8);
    let mut spec = ring_spec(vec![12, 6], 3);
    spec.sequence.as_mut().unwrap().order = 1;
    let mut keeper = Keeper::default();
    let whole = train_temporal(
        &spec.check_for(&data, &Limits::default()).unwrap(),
        &data,
        &mut keeper,
        &mut rng_from_seed(5),
        None,
    )
    .unwrap();
    assert_eq!(keeper.checkpoints.len(), 6, "one per epoch of each layer");
    // From the middle of the first layer and from the middle of the second.
    for at in [1, 4] {
        let checkpoint = Checkpoint::from_bytes(&keeper.checkpoints[at]).unwrap();
        assert!(matches!(checkpoint, Checkpoint::Temporal(_)));
        // The generator given here is ignored: the checkpoint carries its own.
        let Checkpoint::Temporal(cp) = checkpoint else {
            unreachable!()
        };
        let resumed = train_temporal(
            &spec.check_for(&data, &Limits::default()).unwrap(),
            &data,
            &mut Silent,
            &mut rng_from_seed(99),
            Some(cp),
        )
        .unwrap();
        assert_eq!(resumed.dbn, whole.dbn, "resumed after checkpoint {at}");
        assert_eq!(resumed.history.len(), whole.history.len());
    }
    // Another spec or other data is refused.
    let Checkpoint::Temporal(cp) = Checkpoint::from_bytes(&keeper.checkpoints[1]).unwrap() else {
        unreachable!()
    };
    let mut other = spec.clone();
    other.seed = 1;
    assert!(matches!(
        train_temporal(
            &other.check_for(&data, &Limits::default()).unwrap(),
            &data,
            &mut Silent,
            &mut rng_from_seed(5),
            Some(cp)
        ),
        Err(EngineError::Model(_))
    ));
}
