//! Annealed importance sampling against the exact partition function of RBMs small enough to
//! enumerate (2^16 visible states, hidden units summed out analytically by the free energy,
//! which tests/engine/exact_rbm.rs checks against brute force).

use crate::common;

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
        common::assert_ais_matches(&est, exact, 0.05, &format!("weights std {std}"));
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

mod dbn_bound {
    use dbn_serve::engine::dbn::Dbn;
    use dbn_serve::engine::rbm::Rbm;
    use dbn_serve::engine::rng_from_seed;
    use ndarray::{Array1, Array2};

    const V: usize = 6;
    const H1: usize = 4;
    const H2: usize = 3;

    fn states(n: usize) -> Array2<f32> {
        Array2::from_shape_fn((1 << n, n), |(s, i)| ((s >> i) & 1) as f32)
    }

    fn logsumexp(t: impl Iterator<Item = f64>) -> f64 {
        let t: Vec<f64> = t.collect();
        let m = t.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        m + t.iter().map(|x| (x - m).exp()).sum::<f64>().ln()
    }

    fn sigmoid(x: f64) -> f64 {
        1.0 / (1.0 + (-x).exp())
    }

    /// ln p(x | h) of RBM `r`'s visible layer given its hidden state, in f64.
    fn ln_visible_given(r: &Rbm, x: &[f32], h: &[f32]) -> f64 {
        (0..r.n_visible())
            .map(|i| {
                let a = r.visible_bias[i] as f64
                    + (0..h.len())
                        .map(|j| r.weights[[i, j]] as f64 * h[j] as f64)
                        .sum::<f64>();
                let p = sigmoid(a);
                if x[i] > 0.5 {
                    p.ln()
                } else {
                    (1.0 - p).ln()
                }
            })
            .sum()
    }

    fn tiny_dbn(seed: u64) -> Dbn {
        let mut rng = rng_from_seed(seed);
        let mut a = Rbm::new(V, H1, 0, 1.0, &mut rng).unwrap();
        a.visible_bias = Array1::from_shape_fn(V, |i| 0.4 * i as f32 - 1.0);
        a.hidden_bias = Array1::from_shape_fn(H1, |j| 0.3 - 0.2 * j as f32);
        let mut b = Rbm::new(H1, H2, 0, 1.0, &mut rng).unwrap();
        b.visible_bias = Array1::from_shape_fn(H1, |i| 0.2 * i as f32 - 0.3);
        Dbn::new(vec![a, b]).unwrap()
    }

    /// The bound is below the exact ln p(v), and the engine's sampled estimate of it matches
    /// the bound computed by enumerating h1.
    #[test]
    fn the_dbn_bound_is_exact_by_enumeration_and_below_the_true_log_probability() {
        let dbn = tiny_dbn(3);
        let (low, top) = (&dbn.layers()[0], &dbn.layers()[1]);
        let h1s = states(H1);
        let f_top = top.free_energy(h1s.view());
        let log_z = logsumexp(f_top.iter().map(|&f| -(f as f64)));
        let data = states(V);
        let q_all = low.hidden_probs(data.view());
        let mut exact_total = 0.0;
        let mut bound_total = 0.0;
        for (r, v) in data.rows().into_iter().enumerate() {
            let v = v.as_slice().unwrap();
            let joint: Vec<f64> = (0..h1s.nrows())
                .map(|s| {
                    -(f_top[s] as f64) - log_z
                        + ln_visible_given(low, v, h1s.row(s).as_slice().unwrap())
                })
                .collect();
            let exact = logsumexp(joint.iter().copied());
            let mut bound = 0.0;
            for s in 0..h1s.nrows() {
                let q: f64 = (0..H1)
                    .map(|j| {
                        let p = q_all[[r, j]] as f64;
                        if h1s[[s, j]] > 0.5 {
                            p
                        } else {
                            1.0 - p
                        }
                    })
                    .product();
                if q > 0.0 {
                    bound += q * (joint[s] - q.ln());
                }
            }
            assert!(
                bound <= exact + 1e-9,
                "state {r}: bound {bound} above {exact}"
            );
            exact_total += exact;
            bound_total += bound;
        }
        let n = data.nrows() as f64;
        // The exact probabilities sum to one.
        let sum: f64 = data
            .rows()
            .into_iter()
            .map(|v| {
                let v = v.as_slice().unwrap();
                (0..h1s.nrows())
                    .map(|s| {
                        (-(f_top[s] as f64) - log_z
                            + ln_visible_given(low, v, h1s.row(s).as_slice().unwrap()))
                        .exp()
                    })
                    .sum::<f64>()
            })
            .sum();
        assert!((sum - 1.0).abs() < 1e-6, "{sum}");
        let sampled = dbn
            .log_prob_lower_bound(data.view(), log_z, 4000, &mut rng_from_seed(9))
            .unwrap();
        assert!(
            (sampled - bound_total / n).abs() < 0.02,
            "sampled {sampled} against enumerated {}",
            bound_total / n
        );
        assert!(bound_total / n < exact_total / n);
    }

    /// With the first RBM turned upside down as the top RBM, the top's marginal over h1 is the
    /// first RBM's own, so q(h1 | v) is the exact posterior and the bound is ln p(v) of the
    /// first RBM exactly (Hinton, Osindero & Teh 2006).
    #[test]
    fn with_the_first_rbm_flipped_on_top_the_bound_is_the_rbms_log_probability() {
        let mut rng = rng_from_seed(11);
        let mut low = Rbm::new(V, H1, 0, 1.0, &mut rng).unwrap();
        low.visible_bias = Array1::from_shape_fn(V, |i| 0.3 * i as f32 - 0.8);
        low.hidden_bias = Array1::from_shape_fn(H1, |j| 0.5 - 0.3 * j as f32);
        let mut top = Rbm::new(H1, V, 0, 0.1, &mut rng).unwrap();
        top.weights = low.weights.t().to_owned();
        top.visible_bias = low.hidden_bias.clone();
        top.hidden_bias = low.visible_bias.clone();
        let data = states(V);
        let f_low = low.free_energy(data.view());
        let log_z = logsumexp(f_low.iter().map(|&f| -(f as f64)));
        let exact = f_low.iter().map(|&f| -(f as f64) - log_z).sum::<f64>() / data.nrows() as f64;
        let dbn = Dbn::new(vec![low, top]).unwrap();
        // The flipped RBM has the same partition function.
        let bound = dbn
            .log_prob_lower_bound(data.view(), log_z, 2000, &mut rng_from_seed(12))
            .unwrap();
        assert!(
            (bound - exact).abs() < 0.01,
            "bound {bound} against ln p(v) {exact}"
        );
    }

    #[test]
    fn a_top_rbm_with_labels_has_no_bound() {
        let mut rng = rng_from_seed(1);
        let a = Rbm::new(V, H1, 0, 0.1, &mut rng).unwrap();
        let b = Rbm::new(H1 + 2, H2, 2, 0.1, &mut rng).unwrap();
        let dbn = Dbn::new(vec![a, b]).unwrap();
        assert!(dbn
            .log_prob_lower_bound(states(V).view(), 0.0, 1, &mut rng)
            .is_err());
    }
}
