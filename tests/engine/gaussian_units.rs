//! Oracles for Gaussian units, from the energy function itself. With Gaussian visible units
//! E(v, h) = Σ_i (v_i − b_i)²/2 − Σ_j c_j h_j − Σ_ij v_i w_ij h_j, and with Gaussian hidden
//! units E(v, h) = −Σ_i b_i v_i + Σ_j (h_j − c_j)²/2 − Σ_ij v_i w_ij h_j. Enumerating the
//! binary side and integrating the Gaussian side in closed form gives the exact marginals,
//! means and partition functions the engine is checked against.

use crate::common;

use dbn_serve::engine::rbm::{Rbm, RbmTrainConfig, Units, VisibleBiasInit};
use dbn_serve::engine::{rng_from_seed, EngineRng};
use ndarray::{Array1, Array2};

/// Every binary vector of length n, one per row.
fn all_states(n: usize) -> Array2<f32> {
    Array2::from_shape_fn((1 << n, n), |(s, i)| ((s >> i) & 1) as f32)
}

fn log_sum_exp(t: &[f64]) -> f64 {
    let max = t.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    max + t.iter().map(|x| (x - max).exp()).sum::<f64>().ln()
}

fn gaussian_visible(v: usize, h: usize, seed: u64, std: f32) -> (Rbm, EngineRng) {
    let mut rng = rng_from_seed(seed);
    let mut rbm = Rbm::new(v, h, 0, std, &mut rng)
        .unwrap()
        .with_units(Units::Gaussian, Units::Binary)
        .unwrap();
    rbm.visible_bias = Array1::from_shape_fn(v, |i| 0.4 * i as f32 - 0.5);
    rbm.hidden_bias = Array1::from_shape_fn(h, |j| 0.3 - 0.5 * j as f32);
    (rbm, rng)
}

/// W h for one hidden state, in f64.
fn w_times_h(rbm: &Rbm, h: &[f32]) -> Vec<f64> {
    (0..rbm.n_visible())
        .map(|i| {
            (0..h.len())
                .map(|j| rbm.weights[[i, j]] as f64 * h[j] as f64)
                .sum()
        })
        .collect()
}

/// ln of the unnormalised weight of hidden state h after integrating v out of
/// e^{−E(v,h)} (dropping (2π)^{V/2}): c·h + b·Wh + |Wh|²/2.
fn gaussian_visible_log_weight(rbm: &Rbm, h: &[f32]) -> f64 {
    let wh = w_times_h(rbm, h);
    let ch: f64 = (0..h.len())
        .map(|j| rbm.hidden_bias[j] as f64 * h[j] as f64)
        .sum();
    let bwh: f64 = wh
        .iter()
        .enumerate()
        .map(|(i, x)| rbm.visible_bias[i] as f64 * x)
        .sum();
    ch + bwh + 0.5 * wh.iter().map(|x| x * x).sum::<f64>()
}

/// Exact mean log-density of the rows of `data` under a Gaussian-visible RBM.
fn gaussian_visible_log_likelihood(rbm: &Rbm, data: &Array2<f32>) -> f64 {
    let hs = all_states(rbm.n_hidden());
    let weights: Vec<f64> = hs
        .rows()
        .into_iter()
        .map(|h| gaussian_visible_log_weight(rbm, h.as_slice().unwrap()))
        .collect();
    let v = rbm.n_visible() as f64;
    let log_z = log_sum_exp(&weights) + 0.5 * v * std::f64::consts::TAU.ln();
    let f = rbm.free_energy(data.view());
    -f.iter().map(|&x| x as f64).sum::<f64>() / data.nrows() as f64 - log_z
}

#[test]
fn gaussian_visible_free_energy_sums_the_hidden_states_exactly() {
    // F(v) = −ln Σ_h e^{−E(v,h)} at arbitrary real points.
    let (rbm, _) = gaussian_visible(5, 4, 1, 0.8);
    let v = Array2::from_shape_fn((7, 5), |(r, i)| (r as f32 - 3.0) * 0.7 + 0.3 * i as f32);
    let f = rbm.free_energy(v.view());
    let hs = all_states(4);
    for (r, row) in v.rows().into_iter().enumerate() {
        let terms: Vec<f64> = hs
            .rows()
            .into_iter()
            .map(|h| {
                let mut e = 0.0;
                for i in 0..5 {
                    e += 0.5 * (row[i] as f64 - rbm.visible_bias[i] as f64).powi(2);
                    for j in 0..4 {
                        e -= row[i] as f64 * rbm.weights[[i, j]] as f64 * h[j] as f64;
                    }
                }
                for j in 0..4 {
                    e -= rbm.hidden_bias[j] as f64 * h[j] as f64;
                }
                -e
            })
            .collect();
        let want = -log_sum_exp(&terms);
        assert!(
            (f[r] as f64 - want).abs() < 1e-4 * (1.0 + want.abs()),
            "row {r}: {} vs {want}",
            f[r]
        );
    }
}

#[test]
fn gaussian_visible_conditional_is_centred_on_the_top_down_input() {
    // p(v | h) = N(b + W h, I): the mean is the hand-computed b_i + Σ_j w_ij h_j, and draws
    // have that mean and unit variance (20,000 draws: standard error of the mean 0.007).
    let (rbm, mut rng) = gaussian_visible(3, 4, 2, 1.0);
    let h = [1.0f32, 0.0, 1.0, 1.0];
    let wh = w_times_h(&rbm, &h);
    let hs = Array2::from_shape_fn((20_000, 4), |(_, j)| h[j]);
    let means = rbm.visible_probs(hs.view());
    for i in 0..3 {
        let want = rbm.visible_bias[i] as f64 + wh[i];
        assert!((means[[0, i]] as f64 - want).abs() < 1e-5);
    }
    let mut draws = Array2::zeros(means.dim());
    rbm.sample_visible_into(&mut rng, means.view(), draws.view_mut());
    for i in 0..3 {
        let col = draws.column(i).mapv(|x| x as f64);
        let mean = col.mean().unwrap();
        let var = col.mapv(|x| (x - mean).powi(2)).mean().unwrap();
        let want = rbm.visible_bias[i] as f64 + wh[i];
        assert!(
            (mean - want).abs() < 0.03,
            "unit {i}: mean {mean} vs {want}"
        );
        assert!((var - 1.0).abs() < 0.05, "unit {i}: variance {var}");
    }
}

#[test]
fn gibbs_chains_with_gaussian_visible_units_reach_the_exact_mean() {
    // E[v] = b + W E[h], with p(h) ∝ e^{c·h + b·Wh + |Wh|²/2} by enumeration. 4,000 chains
    // of 300 steps; the visible marginals have variance of about 1 + ‖W‖², so the standard
    // error of the chain average is near 0.02.
    let (rbm, mut rng) = gaussian_visible(4, 3, 3, 0.6);
    let hs = all_states(3);
    let logw: Vec<f64> = hs
        .rows()
        .into_iter()
        .map(|h| gaussian_visible_log_weight(&rbm, h.as_slice().unwrap()))
        .collect();
    let log_z = log_sum_exp(&logw);
    let mut exact = vec![0.0f64; 4];
    for (s, h) in hs.rows().into_iter().enumerate() {
        let p = (logw[s] - log_z).exp();
        let wh = w_times_h(&rbm, h.as_slice().unwrap());
        for i in 0..4 {
            exact[i] += p * (rbm.visible_bias[i] as f64 + wh[i]);
        }
    }
    let state = rbm.gibbs(Array2::zeros((4000, 4)), 300, None, &mut rng);
    for (i, &want) in exact.iter().enumerate() {
        let got = state.visible.column(i).mapv(|x| x as f64).mean().unwrap();
        assert!((got - want).abs() < 0.1, "unit {i}: {got} vs exact {want}");
    }
    // The same chains with binary visible units would sit in [0, 1]: make sure the oracle
    // is not met by accident (some exact mean lies outside that interval).
    assert!(
        exact.iter().any(|&m| !(0.0..=1.0).contains(&m)),
        "{exact:?}"
    );
}

#[test]
fn cd_on_real_valued_data_increases_the_exact_log_density() {
    // Two clusters in 4 dimensions, standardised: CD-1 must raise the exact mean log-density.
    let mut rng = rng_from_seed(4);
    let mut noise = vec![0.0f32; 200 * 4];
    dbn_serve::engine::math::fill_normal(&mut rng, &mut noise, 0.0, 0.3);
    let data = Array2::from_shape_fn((200, 4), |(r, i)| {
        let centre = if r % 2 == 0 {
            [1.0, -1.0, 1.0, -1.0]
        } else {
            [-1.0, 1.0, -1.0, 1.0]
        };
        centre[i] + noise[r * 4 + i]
    });
    let (mut rbm, mut rng) = gaussian_visible(4, 3, 5, 0.01);
    rbm.init_visible_bias_from_data(data.view());
    let before = gaussian_visible_log_likelihood(&rbm, &data);
    let config = RbmTrainConfig {
        epochs: 100,
        batch_size: 20,
        learning_rate: 0.01,
        bias_learning_rate: 0.01,
        visible_bias_init: VisibleBiasInit::Data,
        ..RbmTrainConfig::default()
    };
    common::train_quietly(&mut rbm, data.view(), &config, &mut rng);
    let after = gaussian_visible_log_likelihood(&rbm, &data);
    // A unit-variance Gaussian around the mean scores about −(4/2)ln 2π − 4/2 ≈ −5.7; the
    // clusters let a trained model do clearly better.
    assert!(after > before + 1.0, "log-density {before:.3} → {after:.3}");
}

#[test]
fn gaussian_hidden_units_give_the_closed_form_free_energy_and_marginal() {
    // Binary visible, Gaussian hidden: integrating h gives F(v) = −b·v − Σ_j x_j²/2 with
    // x_j = c_j + Σ_i v_i w_ij (dropping ln √(2π) per unit). Long Gibbs chains must then visit
    // the 16 visible states with probabilities ∝ e^{−F(v)}.
    let mut rng = rng_from_seed(6);
    let mut rbm = Rbm::new(4, 2, 0, 0.5, &mut rng)
        .unwrap()
        .with_units(Units::Binary, Units::Gaussian)
        .unwrap();
    rbm.visible_bias = Array1::from_vec(vec![-0.5, 0.2, 0.4, -0.1]);
    rbm.hidden_bias = Array1::from_vec(vec![0.3, -0.2]);
    let vs = all_states(4);
    let f = rbm.free_energy(vs.view());
    for (s, v) in vs.rows().into_iter().enumerate() {
        let mut want = 0.0f64;
        for i in 0..4 {
            want -= rbm.visible_bias[i] as f64 * v[i] as f64;
        }
        for j in 0..2 {
            let x: f64 = rbm.hidden_bias[j] as f64
                + (0..4)
                    .map(|i| v[i] as f64 * rbm.weights[[i, j]] as f64)
                    .sum::<f64>();
            want -= 0.5 * x * x;
        }
        assert!(
            (f[s] as f64 - want).abs() < 1e-5,
            "state {s}: {} vs {want}",
            f[s]
        );
    }
    let log_z = log_sum_exp(&f.iter().map(|&x| -(x as f64)).collect::<Vec<_>>());
    let state = rbm.gibbs(Array2::zeros((8000, 4)), 200, None, &mut rng);
    let mut counts = [0usize; 16];
    for row in state.visible.rows() {
        let s: usize = (0..4).map(|i| (row[i] as usize) << i).sum();
        counts[s] += 1;
    }
    for s in 0..16 {
        let p = (-(f[s] as f64) - log_z).exp();
        let got = counts[s] as f64 / 8000.0;
        // Binomial standard error at most 0.0056; allow four of them.
        assert!((got - p).abs() < 0.023, "state {s}: {got} vs exact {p}");
    }
    // Draws of the hidden units are real-valued, not binary.
    assert!(state.hidden.iter().any(|&h| h != 0.0 && h != 1.0));
}

#[test]
fn an_rbm_cannot_be_gaussian_on_both_sides() {
    let mut rng = rng_from_seed(7);
    let rbm = Rbm::new(3, 2, 0, 0.1, &mut rng).unwrap();
    assert!(rbm.with_units(Units::Gaussian, Units::Gaussian).is_err());
}
