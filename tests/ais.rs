//! Annealed importance sampling against the exact partition function of RBMs small enough to
//! enumerate (2^16 visible states, hidden units summed out analytically by the free energy,
//! which tests/exact_rbm.rs checks against brute force).

use dbn_serve::engine::rbm::{base_rate_biases, estimate_log_z, mean_log_prob, AisConfig, Rbm};
use dbn_serve::engine::rng_from_seed;
use ndarray::{Array1, Array2};

const V: usize = 16;
const H: usize = 10;

fn all_states(n: usize) -> Array2<f32> {
    Array2::from_shape_fn((1 << n, n), |(s, i)| ((s >> i) & 1) as f32)
}

/// ln Z = ln Σ_v e^{−F(v)}, over all 2^V visible vectors, in f64.
fn exact_log_z(rbm: &Rbm) -> f64 {
    let f = rbm.free_energy(all_states(V).view());
    let max = f
        .iter()
        .map(|&f| -(f as f64))
        .fold(f64::NEG_INFINITY, f64::max);
    max + f
        .iter()
        .map(|&f| (-(f as f64) - max).exp())
        .sum::<f64>()
        .ln()
}

fn rbm(seed: u64, std: f32) -> Rbm {
    let mut rng = rng_from_seed(seed);
    let mut rbm = Rbm::new(V, H, 0, std, &mut rng).unwrap();
    rbm.visible_bias = Array1::from_shape_fn(V, |i| 0.2 * (i % 5) as f32 - 0.5);
    rbm.hidden_bias = Array1::from_shape_fn(H, |j| 0.3 - 0.1 * j as f32);
    rbm
}

#[test]
fn ais_finds_the_exact_partition_function() {
    for (seed, std) in [(1, 0.3), (2, 1.0), (3, 2.0)] {
        let rbm = rbm(seed, std);
        let exact = exact_log_z(&rbm);
        let base = Array1::zeros(V);
        let est = estimate_log_z(
            &rbm,
            base.view(),
            &AisConfig::schedule(100, 2000),
            &mut rng_from_seed(seed + 10),
        )
        .unwrap();
        assert!(
            (est.log_z - exact).abs() < 0.05,
            "weights std {std}: AIS {} against exact {exact}",
            est.log_z
        );
        assert!(
            est.log_z_low <= exact && exact <= est.log_z_high,
            "weights std {std}: exact {exact} outside [{}, {}]",
            est.log_z_low,
            est.log_z_high
        );
        assert_eq!(est.log_weights.len(), 100);
    }
}

#[test]
fn a_short_schedule_underestimates_and_a_long_one_does_not() {
    // E[ŵ] = Z, so E[ln ŵ] ≤ ln Z: with too few intermediate distributions the estimate of
    // ln Z falls short (the bias that makes AIS log-probabilities optimistic).
    let rbm = rbm(4, 2.0);
    let exact = exact_log_z(&rbm);
    let run = |steps: usize| {
        estimate_log_z(
            &rbm,
            Array1::zeros(V).view(),
            &AisConfig::schedule(20, steps),
            &mut rng_from_seed(5),
        )
        .unwrap()
        .log_z
    };
    let (short, long) = (run(10), run(3000));
    assert!(short < exact - 0.3, "10 steps: {short} against {exact}");
    assert!(
        (long - exact).abs() < 0.1,
        "3000 steps: {long} against {exact}"
    );
}

#[test]
fn a_data_based_base_rate_model_and_the_mean_log_probability() {
    let rbm = rbm(6, 1.0);
    let states = all_states(V);
    // Data: every state whose first bit is on, so the base rates are 1 and 0.5.
    let data = states.select(
        ndarray::Axis(0),
        &(0..states.nrows())
            .filter(|s| s & 1 == 1)
            .collect::<Vec<_>>(),
    );
    let base = base_rate_biases(data.view());
    let est = estimate_log_z(
        &rbm,
        base.view(),
        &AisConfig::schedule(100, 2000),
        &mut rng_from_seed(7),
    )
    .unwrap();
    let exact = exact_log_z(&rbm);
    // This base (bit 0 always on) is far from the model, so AIS has more to cover.
    assert!(
        (est.log_z - exact).abs() < 0.1,
        "{} against {exact}",
        est.log_z
    );
    assert!(
        est.log_z_low <= exact && exact <= est.log_z_high,
        "{exact} outside [{}, {}]",
        est.log_z_low,
        est.log_z_high
    );
    // With the exact ln Z, the mean log-probability is the exact one.
    let f = rbm.free_energy(data.view());
    let want = f.iter().map(|&f| -(f as f64)).sum::<f64>() / data.nrows() as f64 - exact;
    let got = mean_log_prob(&rbm, data.view(), exact).unwrap();
    assert!((got - want).abs() < 1e-9, "{got} against {want}");
    // Probabilities of all states sum to one.
    let all = mean_log_prob(&rbm, states.view(), exact).unwrap();
    let f = rbm.free_energy(states.view());
    let total: f64 = f.iter().map(|&f| (-(f as f64) - exact).exp()).sum();
    assert!((total - 1.0).abs() < 1e-6, "{total}");
    assert!(all < 0.0);
}

#[test]
fn label_units_and_bad_schedules_are_refused() {
    let mut rng = rng_from_seed(1);
    let with_labels = Rbm::new(V, H, 4, 0.1, &mut rng).unwrap();
    let base = Array1::zeros(V);
    assert!(estimate_log_z(
        &with_labels,
        base.view(),
        &AisConfig::schedule(2, 10),
        &mut rng
    )
    .is_err());
    let plain = rbm(1, 0.1);
    let bad = AisConfig {
        runs: 2,
        betas: vec![0.0, 0.5],
    };
    assert!(estimate_log_z(&plain, base.view(), &bad, &mut rng).is_err());
    let short_base = Array1::zeros(V - 1);
    assert!(estimate_log_z(
        &plain,
        short_base.view(),
        &AisConfig::schedule(2, 10),
        &mut rng
    )
    .is_err());
}
