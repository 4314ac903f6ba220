//! Wake-sleep on logistic belief nets. On a net small enough to enumerate, the sampled
//! variational bound must match the bound computed exactly, lie below the exact ln p(v),
//! and learning must raise the exact log-likelihood of toy data. On real digits, starting
//! from the pretrained stack must beat starting from random weights (the seed's claim).

use crate::common;

use dbn_serve::engine::data::MnistSplit;
use dbn_serve::engine::dbn::{test_metrics, train_model, Dbn};
use dbn_serve::engine::finetune::{
    train_wake_sleep, BeliefNet, Dense, FinetuneRun, WakeSleepConfig, WakeSleepInit,
};
use dbn_serve::engine::observer::Silent;
use dbn_serve::engine::persist;
use dbn_serve::engine::rbm::{Rbm, RbmTrainConfig};
use dbn_serve::engine::rng_from_seed;
use dbn_serve::engine::spec::{Architecture, Finetune, Limits, TrainingSpec};
use ndarray::{Array1, Array2};

fn all_states(n: usize) -> Array2<f32> {
    Array2::from_shape_fn((1 << n, n), |(s, i)| ((s >> i) & 1) as f32)
}

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// ln Bernoulli(s; σ(bias + x·W)) summed over the units of one layer, in f64.
fn log_layer(s: &[f32], x: &[f32], layer: &Dense) -> f64 {
    (0..s.len())
        .map(|j| {
            let a = layer.bias[j] as f64
                + (0..x.len())
                    .map(|i| x[i] as f64 * layer.weights[[i, j]] as f64)
                    .sum::<f64>();
            let p = sigmoid(a);
            if s[j] == 1.0 {
                p.ln()
            } else {
                (1.0 - p).ln()
            }
        })
        .sum()
}

/// ln p(v, h1, h2) for a two-layer net.
fn log_joint(net: &BeliefNet, v: &[f32], h1: &[f32], h2: &[f32]) -> f64 {
    let top: f64 = (0..h2.len())
        .map(|j| {
            let p = sigmoid(net.top_bias[j] as f64);
            if h2[j] == 1.0 {
                p.ln()
            } else {
                (1.0 - p).ln()
            }
        })
        .sum();
    top + log_layer(h1, h2, &net.generative[1]) + log_layer(v, h1, &net.generative[0])
}

fn log_q(net: &BeliefNet, v: &[f32], h1: &[f32], h2: &[f32]) -> f64 {
    log_layer(h1, v, &net.recognition[0]) + log_layer(h2, h1, &net.recognition[1])
}

fn dense(rng: &mut dbn_serve::engine::EngineRng, rows: usize, cols: usize, std: f32) -> Dense {
    let mut w = vec![0.0f32; rows * cols];
    dbn_serve::engine::math::fill_normal(rng, &mut w, 0.0, std);
    let mut b = vec![0.0f32; cols];
    dbn_serve::engine::math::fill_normal(rng, &mut b, 0.0, std);
    Dense {
        weights: Array2::from_shape_vec((rows, cols), w).unwrap(),
        bias: Array1::from_vec(b),
    }
}

/// A 5-3-2 net with random recognition and generative weights.
fn tiny_net(seed: u64, std: f32) -> BeliefNet {
    let mut rng = rng_from_seed(seed);
    BeliefNet::new(
        vec![dense(&mut rng, 5, 3, std), dense(&mut rng, 3, 2, std)],
        vec![dense(&mut rng, 3, 5, std), dense(&mut rng, 2, 3, std)],
        Array1::from_vec(vec![0.4, -0.3]),
    )
    .unwrap()
}

/// (exact ln p(v), exact E_q[ln p(v,h) − ln q(h|v)]) by enumeration.
fn exact(net: &BeliefNet, v: &[f32]) -> (f64, f64) {
    let (h1s, h2s) = (all_states(3), all_states(2));
    let mut joint = Vec::new();
    let mut bound = 0.0;
    for h1 in h1s.rows() {
        for h2 in h2s.rows() {
            let (h1, h2) = (h1.as_slice().unwrap(), h2.as_slice().unwrap());
            let lj = log_joint(net, v, h1, h2);
            let lq = log_q(net, v, h1, h2);
            joint.push(lj);
            bound += lq.exp() * (lj - lq);
        }
    }
    let max = joint.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    (
        max + joint.iter().map(|t| (t - max).exp()).sum::<f64>().ln(),
        bound,
    )
}

#[test]
fn the_sampled_bound_matches_enumeration_and_lies_below_the_exact_log_probability() {
    let net = tiny_net(1, 1.0);
    let vs = all_states(5);
    let mut total = 0.0;
    for v in vs.rows() {
        let v = v.as_slice().unwrap();
        let (log_p, bound) = exact(&net, v);
        total += log_p.exp();
        assert!(bound <= log_p + 1e-9, "bound {bound} above ln p {log_p}");
        let row = Array2::from_shape_vec((1, 5), v.to_vec()).unwrap();
        let sampled = net
            .log_prob_bound(row.view(), 20_000, &mut rng_from_seed(2))
            .unwrap();
        assert!(
            (sampled - bound).abs() < 0.05,
            "sampled {sampled}, exact {bound}"
        );
    }
    assert!((total - 1.0).abs() < 1e-9, "p(v) sums to {total}");
}

#[test]
fn wake_sleep_raises_the_exact_log_likelihood_of_toy_data() {
    let protos = [[1.0, 1.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 1.0, 1.0]];
    let data = Array2::from_shape_fn((200, 5), |(r, i)| {
        let bit = protos[r % 2][i];
        if (r * 7 + i * 3) % 13 == 0 {
            1.0 - bit
        } else {
            bit
        }
    });
    let mean_log_p = |net: &BeliefNet| {
        data.rows()
            .into_iter()
            .map(|v| exact(net, v.as_slice().unwrap()).0)
            .sum::<f64>()
            / data.nrows() as f64
    };
    let mut net = tiny_net(3, 0.1);
    let before = mean_log_p(&net);
    let base = Dbn::new(vec![
        Rbm::new(5, 3, 0, 0.1, &mut rng_from_seed(0)).unwrap(),
        Rbm::new(3, 2, 0, 0.1, &mut rng_from_seed(0)).unwrap(),
    ])
    .unwrap();
    let config = WakeSleepConfig {
        epochs: 200,
        batch_size: 10,
        learning_rate: 0.1,
        init: WakeSleepInit::Random,
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
    let monitor = data.slice(ndarray::s![..20, ..]);
    let history = train_wake_sleep(
        &mut net,
        &base,
        data.view(),
        monitor,
        &config,
        &mut run,
        &mut rng_from_seed(4),
    )
    .unwrap();
    let after = mean_log_p(&net);
    // Uniform over 32 states is −3.47 nats; two noisy prototypes allow far better.
    assert!(after > before + 1.0, "ln p {before:.3} → {after:.3}");
    let bound = history.last().unwrap().log_prob_bound.unwrap();
    assert!(
        bound < after + 0.5,
        "monitored bound {bound} vs exact {after}"
    );
}

fn digit_spec(init: WakeSleepInit) -> TrainingSpec {
    TrainingSpec {
        name: Some("ws".into()),
        alias: None,
        dataset: "mnist".into(),
        architecture: Architecture {
            hidden: vec![100, 50],
            labels_in_top: false,
            ..Architecture::default()
        },
        pretrain: RbmTrainConfig {
            epochs: 10,
            ..RbmTrainConfig::default()
        },
        layer_overrides: Vec::new(),
        train_examples: None,
        validation_examples: 0,
        seed: 5,
        binarize: false,
        finetune: Some(Finetune::WakeSleep(WakeSleepConfig {
            epochs: 5,
            init,
            ..WakeSleepConfig::default()
        })),
        classifier: None,
        ais: None,
        sequence: None,
    }
}

#[test]
fn a_random_start_has_no_rbms_for_ais_to_measure() {
    let mut spec = digit_spec(WakeSleepInit::Random);
    assert!(spec
        .check(
            dbn_serve::engine::spec::DataShape::MNIST,
            &Limits::default()
        )
        .is_ok());
    spec.ais = Some(serde_json::from_str("{}").unwrap());
    let err = spec
        .check(
            dbn_serve::engine::spec::DataShape::MNIST,
            &Limits::default(),
        )
        .unwrap_err()
        .to_string();
    assert!(err.contains("random"), "{err}");
}

#[test]
fn pretraining_gives_wake_sleep_a_better_start_than_random_weights_on_real_digits() {
    let data = common::fixture(MnistSplit::Train);
    let test = common::fixture(MnistSplit::Test);
    let limits = Limits::default();
    let train = |init| {
        train_model(
            &digit_spec(init).check_for(&data, &limits).unwrap(),
            &data,
            &mut Silent,
            &mut rng_from_seed(5),
            None,
        )
        .unwrap()
    };
    let pretrained = train(WakeSleepInit::Pretrained);
    let random = train(WakeSleepInit::Random);
    let bound = |dbn: &Dbn| test_metrics(None, dbn, &test).unwrap()["test_log_prob_bound"];
    let (p, r) = (bound(&pretrained.dbn), bound(&random.dbn));
    eprintln!("test bound after 5 epochs: pretrained {p:.1}, random {r:.1}");
    assert!(p > r + 10.0, "pretrained {p}, random {r}");
    // A random start has no pretraining epochs in its history.
    assert!(random
        .history
        .iter()
        .all(|m| m.phase == dbn_serve::engine::observer::Phase::Finetune));

    // The belief net survives a save and load and generates digits.
    let dbn = pretrained.dbn;
    let card = persist::ModelCard::for_training(
        &digit_spec(WakeSleepInit::Pretrained),
        &pretrained_outcome(&dbn),
        Some([28, 28]),
        1,
    );
    let (back, _) = persist::from_bytes(&persist::to_bytes(&dbn, &card).unwrap()).unwrap();
    assert_eq!(back, dbn);
    let images = back.generate(None, 4, 0, &mut rng_from_seed(1)).unwrap();
    assert_eq!(images.dim(), (4, 784));
    assert!(back.generate(Some(1), 4, 0, &mut rng_from_seed(1)).is_err());
}

fn pretrained_outcome(dbn: &Dbn) -> dbn_serve::engine::dbn::TrainOutcome {
    dbn_serve::engine::dbn::TrainOutcome {
        dbn: dbn.clone(),
        history: Vec::new(),
        train_examples: 2000,
        validation_examples: 0,
        validation_error: None,
        seconds: 0.0,
    }
}
