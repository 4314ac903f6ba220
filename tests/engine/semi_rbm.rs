//! Semi-restricted Boltzmann machines: lateral connections between the visible units. On a
//! machine small enough to enumerate, the free energy, the Gibbs sampler and learning are
//! checked against exact values; the damped mean-field reconstruction against its fixed
//! point; and on data of copied pixel pairs, which one hidden unit cannot explain but lateral
//! weights can, the semi-restricted machine must beat the restricted one.

use crate::common;

use dbn_serve::engine::data::MnistSplit;
use dbn_serve::engine::dbn::{train_greedy, Dbn};
use dbn_serve::engine::observer::Silent;
use dbn_serve::engine::persist;
use dbn_serve::engine::rbm::{Rbm, RbmTrainConfig, VisibleBiasInit};
use dbn_serve::engine::spec::{Architecture, Limits, TrainingSpec};
use dbn_serve::engine::{rng_from_seed, EngineRng};
use ndarray::{Array1, Array2};

const V: usize = 6;

fn all_states(n: usize) -> Array2<f32> {
    Array2::from_shape_fn((1 << n, n), |(s, i)| ((s >> i) & 1) as f32)
}

fn log_sum_exp(t: &[f64]) -> f64 {
    let max = t.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    max + t.iter().map(|x| (x - max).exp()).sum::<f64>().ln()
}

fn semi(h: usize, seed: u64, std: f32) -> (Rbm, EngineRng) {
    let mut rng = rng_from_seed(seed);
    let mut rbm = Rbm::new(V, h, 0, std, &mut rng)
        .unwrap()
        .with_lateral()
        .unwrap();
    let mut l = Array2::zeros((V, V));
    let mut noise = vec![0.0f32; V * V];
    dbn_serve::engine::math::fill_normal(&mut rng, &mut noise, 0.0, std);
    for i in 0..V {
        for k in 0..i {
            l[[i, k]] = noise[i * V + k];
            l[[k, i]] = noise[i * V + k];
        }
    }
    rbm.lateral = Some(l);
    rbm.visible_bias = Array1::from_shape_fn(V, |i| 0.2 * i as f32 - 0.5);
    rbm.hidden_bias = Array1::from_shape_fn(h, |j| 0.3 - 0.2 * j as f32);
    (rbm, rng)
}

/// E(v, h) in f64, with the lateral term.
fn energy(rbm: &Rbm, v: &[f32], h: &[f32]) -> f64 {
    let l = rbm.lateral.as_ref().unwrap();
    let mut e = 0.0;
    for i in 0..V {
        e -= rbm.visible_bias[i] as f64 * v[i] as f64;
        for j in 0..h.len() {
            e -= v[i] as f64 * rbm.weights[[i, j]] as f64 * h[j] as f64;
        }
        for k in 0..V {
            e -= 0.5 * v[i] as f64 * l[[i, k]] as f64 * v[k] as f64;
        }
    }
    for j in 0..h.len() {
        e -= rbm.hidden_bias[j] as f64 * h[j] as f64;
    }
    e
}

/// Exact mean log-likelihood of `data`.
fn log_likelihood(rbm: &Rbm, data: &Array2<f32>) -> f64 {
    let vs = all_states(V);
    let f = rbm.free_energy(vs.view());
    let log_z = log_sum_exp(&f.iter().map(|&x| -(x as f64)).collect::<Vec<_>>());
    let fd = rbm.free_energy(data.view());
    -fd.iter().map(|&x| x as f64).sum::<f64>() / data.nrows() as f64 - log_z
}

#[test]
fn free_energy_with_lateral_connections_is_the_brute_force_marginal() {
    let (rbm, _) = semi(4, 1, 0.8);
    let (vs, hs) = (all_states(V), all_states(4));
    let f = rbm.free_energy(vs.view());
    for (s, v) in vs.rows().into_iter().enumerate() {
        let t: Vec<f64> = hs
            .rows()
            .into_iter()
            .map(|h| -energy(&rbm, v.as_slice().unwrap(), h.as_slice().unwrap()))
            .collect();
        let want = -log_sum_exp(&t);
        assert!(
            (f[s] as f64 - want).abs() < 1e-4 * (1.0 + want.abs()),
            "state {s}"
        );
    }
}

#[test]
fn sequential_gibbs_sweeps_reach_the_exact_visible_marginals() {
    // Without the sequential sweep the lateral couplings would be ignored when sampling, and
    // the pairwise statistics E[v_i v_k] would be off.
    let (rbm, mut rng) = semi(3, 2, 1.2);
    let vs = all_states(V);
    let f = rbm.free_energy(vs.view());
    let log_z = log_sum_exp(&f.iter().map(|&x| -(x as f64)).collect::<Vec<_>>());
    let mut pair = Array2::<f64>::zeros((V, V));
    for (s, v) in vs.rows().into_iter().enumerate() {
        let p = (-(f[s] as f64) - log_z).exp();
        for i in 0..V {
            for k in 0..V {
                pair[[i, k]] += p * (v[i] * v[k]) as f64;
            }
        }
    }
    let state = rbm.gibbs(Array2::zeros((4000, V)), 200, None, &mut rng);
    let x = state.visible.mapv(|x| x as f64);
    let sampled = x.t().dot(&x) / 4000.0;
    let worst = (&sampled - &pair)
        .mapv(f64::abs)
        .fold(0.0f64, |a, &b| a.max(b));
    assert!(worst < 0.03, "pairwise statistics off by {worst}");
}

#[test]
fn ais_finds_the_exact_partition_function_of_a_semi_restricted_machine() {
    // The annealed distributions carry the lateral term and the visible units are swept in
    // turn: ln Z must match enumeration, inside the estimate's own ±3 s.e. range.
    for (seed, std) in [(5, 0.5), (6, 1.0), (7, 1.5)] {
        let (rbm, mut rng) = semi(3, seed, std);
        let vs = all_states(V);
        let exact = log_sum_exp(
            &rbm.free_energy(vs.view())
                .iter()
                .map(|&f| -(f as f64))
                .collect::<Vec<_>>(),
        );
        let base = Array1::zeros(V);
        let config = dbn_serve::engine::rbm::AisConfig::schedule(100, 2000);
        let est =
            dbn_serve::engine::rbm::estimate_log_z(&rbm, base.view(), &config, &mut rng).unwrap();
        common::assert_ais_matches(&est, exact, 0.05, &format!("weights std {std}"));
        // Without the lateral term in the weights, the estimate would be far off: the test
        // can tell.
        let mut restricted = rbm.clone();
        restricted.lateral = None;
        let plain = log_sum_exp(
            &restricted
                .free_energy(vs.view())
                .iter()
                .map(|&f| -(f as f64))
                .collect::<Vec<_>>(),
        );
        assert!(
            (plain - exact).abs() > 0.1,
            "lateral weights too weak to matter"
        );
    }
}

#[test]
fn the_dbn_bound_refuses_a_semi_restricted_first_layer() {
    // The bound's posterior assumes independent visible units given h.
    let (rbm, mut rng) = semi(3, 5, 0.5);
    let top = Rbm::new(3, 2, 0, 0.1, &mut rng).unwrap();
    let dbn = Dbn::new(vec![rbm, top]).unwrap();
    let v = Array2::zeros((2, V));
    assert!(dbn
        .log_prob_lower_bound(v.view(), 0.0, 2, &mut rng)
        .is_err());
}

#[test]
fn mean_field_reconstruction_settles_near_its_fixed_point() {
    // m = σ(b + W h + L m) at the fixed point; ten damped steps with weak couplings get close.
    let (rbm, _) = semi(3, 3, 0.3);
    let h = Array2::from_shape_fn((5, 3), |(r, j)| ((r + j) % 2) as f32);
    let m = rbm.visible_probs(h.view());
    let l = rbm.lateral.as_ref().unwrap();
    for r in 0..5 {
        for i in 0..V {
            let a = rbm.visible_bias[i]
                + (0..3).map(|j| rbm.weights[[i, j]] * h[[r, j]]).sum::<f32>()
                + (0..V).map(|k| l[[i, k]] * m[[r, k]]).sum::<f32>();
            let fixed = 1.0 / (1.0 + (-a).exp());
            assert!((m[[r, i]] - fixed).abs() < 2e-3, "row {r} unit {i}");
        }
    }
}

#[test]
fn lateral_connections_model_pixel_pairs_that_flip_together() {
    // Two prototypes (what a hidden unit can explain) whose pixel pairs flip together with
    // probability 1/5 (what units independent given the hidden state cannot): the learned
    // lateral weights couple each pair, and the exact likelihood beats the restricted machine's.
    let protos = [
        [1.0, 1.0, 0.0, 0.0, 1.0, 1.0],
        [0.0, 0.0, 1.0, 1.0, 0.0, 0.0],
    ];
    let data = Array2::from_shape_fn((400, V), |(r, i)| {
        let flip = (r / 2 * 7 + (i / 2) * 3) % 5 == 0;
        let bit = protos[r % 2][i];
        if flip {
            1.0 - bit
        } else {
            bit
        }
    });
    let config = RbmTrainConfig {
        epochs: 200,
        batch_size: 10,
        learning_rate: 0.1,
        momentum_final: 0.5,
        weight_decay: 0.0,
        visible_bias_init: VisibleBiasInit::Data,
        ..RbmTrainConfig::default()
    };
    let train = |lateral: bool| {
        let mut rng = rng_from_seed(4);
        let mut rbm = Rbm::new(V, 1, 0, 0.01, &mut rng).unwrap();
        if lateral {
            rbm = rbm.with_lateral().unwrap();
        }
        let before = log_likelihood(&rbm, &data);
        common::train_quietly(&mut rbm, data.view(), &config, &mut rng);
        (before, log_likelihood(&rbm, &data), rbm)
    };
    let (_, restricted, _) = train(false);
    let (before, semi, rbm) = train(true);
    eprintln!("ln p: restricted {restricted:.3}, semi-restricted {before:.3} → {semi:.3}");
    assert!(semi > before + 1.0, "semi-restricted {before} → {semi}");
    assert!(
        semi > restricted + 0.1,
        "restricted {restricted}, semi {semi}"
    );
    let l = rbm.lateral.unwrap();
    eprintln!("{l:.2}");
    assert!(
        l[[0, 1]] > l[[0, 2]] && l[[2, 3]] > l[[2, 4]],
        "pairs not coupled: {l}"
    );
}

#[test]
fn a_semi_restricted_first_layer_learns_real_digits_and_survives_a_save_and_load() {
    let data = common::fixture(MnistSplit::Train);
    let test = common::fixture(MnistSplit::Test);
    let spec = TrainingSpec {
        name: Some("semi".into()),
        alias: None,
        dataset: "mnist".into(),
        architecture: Architecture {
            hidden: vec![100],
            labels_in_top: false,
            lateral: true,
            ..Architecture::default()
        },
        pretrain: RbmTrainConfig {
            epochs: 5,
            ..RbmTrainConfig::default()
        },
        layer_overrides: Vec::new(),
        train_examples: None,
        validation_examples: 0,
        seed: 6,
        binarize: false,
        finetune: None,
        classifier: None,
        ais: None,
        sequence: None,
    };
    let out = train_greedy(
        &spec.check_for(&data, &Limits::default()).unwrap(),
        &data,
        &mut Silent,
        &mut rng_from_seed(6),
    )
    .unwrap();
    let dbn: Dbn = out.dbn.clone();
    let rbm = &dbn.layers()[0];
    let l = rbm.lateral.as_ref().expect("lateral weights");
    assert!(
        l.iter().any(|&x| x.abs() > 0.01),
        "lateral weights did not learn"
    );
    let recon = rbm.reconstruction_error(test.images.view());
    eprintln!("test reconstruction error {recon}");
    // A blank image is about 100 squared units from a digit.
    assert!(recon < 50.0, "test reconstruction error {recon}");
    // Ink is locally smooth: horizontal neighbours couple more strongly than pixels half an
    // image apart.
    let (mut near, mut far) = (0.0f64, 0.0f64);
    for r in 4..24 {
        for c in 4..23 {
            let i = r * 28 + c;
            near += l[[i, i + 1]] as f64;
            far += l[[i, (i + 14 * 28) % 784]] as f64;
        }
    }
    eprintln!("mean lateral weight: neighbours {near:.3}, distant {far:.3} (sums)");
    assert!(near > far + 1.0, "neighbours {near}, distant {far}");
    let card = persist::ModelCard::for_training(&spec, &out, Some([28, 28]), 1);
    let (back, _) = persist::from_bytes(&persist::to_bytes(&dbn, &card).unwrap()).unwrap();
    assert_eq!(back, dbn);
    let images = back.generate(None, 3, 20, &mut rng_from_seed(1)).unwrap();
    assert!(images.iter().all(|&p| (0.0..=1.0).contains(&p)));
}
