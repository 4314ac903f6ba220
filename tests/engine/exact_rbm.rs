//! Oracles from enumeration: on an RBM small enough to list every state, the partition
//! function, the log-likelihood and its gradient are computed exactly (in f64) and the
//! engine's free energy, Gibbs sampler and learning rule are checked against them.

use crate::common;

use dbn_serve::engine::rbm::{Rbm, RbmTrainConfig, VisibleBiasInit};
use dbn_serve::engine::{rng_from_seed, EngineRng};
use ndarray::{Array1, Array2};

const V: usize = 6;
const H: usize = 4;

/// Every binary vector of length n, one per row.
fn all_states(n: usize) -> Array2<f32> {
    Array2::from_shape_fn((1 << n, n), |(s, i)| ((s >> i) & 1) as f32)
}

/// E(v, h) = −bᵀv − cᵀh − vᵀWh, in f64.
fn energy(rbm: &Rbm, v: &[f32], h: &[f32]) -> f64 {
    let mut e = 0.0;
    for i in 0..v.len() {
        e -= rbm.visible_bias[i] as f64 * v[i] as f64;
        for j in 0..h.len() {
            e -= v[i] as f64 * rbm.weights[[i, j]] as f64 * h[j] as f64;
        }
    }
    for j in 0..h.len() {
        e -= rbm.hidden_bias[j] as f64 * h[j] as f64;
    }
    e
}

/// ln Z by summing e^{−E(v,h)} over all 2^(V+H) joint states.
fn log_partition(rbm: &Rbm) -> f64 {
    let (vs, hs) = (all_states(V), all_states(H));
    let mut terms = Vec::new();
    for v in vs.rows() {
        for h in hs.rows() {
            terms.push(-energy(rbm, v.as_slice().unwrap(), h.as_slice().unwrap()));
        }
    }
    let max = terms.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    max + terms.iter().map(|t| (t - max).exp()).sum::<f64>().ln()
}

/// Mean exact log-likelihood of the rows of `data`: −F(v) − ln Z, with F from brute force.
fn log_likelihood(rbm: &Rbm, data: &Array2<f32>) -> f64 {
    let log_z = log_partition(rbm);
    let hs = all_states(H);
    let mean: f64 = data
        .rows()
        .into_iter()
        .map(|v| {
            let t: Vec<f64> = hs
                .rows()
                .into_iter()
                .map(|h| -energy(rbm, v.as_slice().unwrap(), h.as_slice().unwrap()))
                .collect();
            let max = t.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            max + t.iter().map(|x| (x - max).exp()).sum::<f64>().ln()
        })
        .sum::<f64>()
        / data.nrows() as f64;
    mean - log_z
}

/// <v_i p(h_j | v)> under the model: Σ_v p(v) v_i σ(c_j + Σ_i v_i w_ij), by enumeration.
fn model_statistics(rbm: &Rbm) -> Array2<f64> {
    let vs = all_states(V);
    let f = rbm.free_energy(vs.view());
    let log_z = log_partition(rbm);
    let hp = rbm.hidden_probs(vs.view());
    let mut out = Array2::zeros((V, H));
    for s in 0..vs.nrows() {
        let p = (-(f[s] as f64) - log_z).exp();
        for i in 0..V {
            for j in 0..H {
                out[[i, j]] += p * vs[[s, i]] as f64 * hp[[s, j]] as f64;
            }
        }
    }
    out
}

fn random_rbm(seed: u64, std: f32) -> (Rbm, EngineRng) {
    let mut rng = rng_from_seed(seed);
    let mut rbm = Rbm::new(V, H, 0, std, &mut rng).unwrap();
    rbm.visible_bias = Array1::from_shape_fn(V, |i| 0.3 * i as f32 - 0.7);
    rbm.hidden_bias = Array1::from_shape_fn(H, |j| 0.5 - 0.4 * j as f32);
    (rbm, rng)
}

/// A small dataset: two prototypes with a flipped bit here and there.
fn toy_data() -> Array2<f32> {
    let protos = [
        [1.0, 1.0, 1.0, 0.0, 0.0, 0.0],
        [0.0, 0.0, 1.0, 1.0, 1.0, 1.0],
    ];
    Array2::from_shape_fn((40, V), |(r, i)| {
        let bit = protos[r % 2][i];
        if (r * 7 + i * 3) % 11 == 0 {
            1.0 - bit
        } else {
            bit
        }
    })
}

#[test]
fn free_energy_is_the_brute_force_marginal() {
    // F(v) = −ln Σ_h e^{−E(v,h)} for every v; checked for all 64 visible states.
    let (rbm, _) = random_rbm(1, 1.0);
    let (vs, hs) = (all_states(V), all_states(H));
    let f = rbm.free_energy(vs.view());
    for (s, v) in vs.rows().into_iter().enumerate() {
        let sum: f64 = hs
            .rows()
            .into_iter()
            .map(|h| (-energy(&rbm, v.as_slice().unwrap(), h.as_slice().unwrap())).exp())
            .sum();
        let want = -sum.ln();
        assert!(
            (f[s] as f64 - want).abs() < 1e-4 * (1.0 + want.abs()),
            "state {s}: {} vs {want}",
            f[s]
        );
    }
}

#[test]
fn long_gibbs_chains_reach_the_model_statistics() {
    // The negative statistic of CD-k, <v_i p(h_j|v)> after k steps from the data, tends to the
    // exact model expectation as k grows. 4,000 chains: Monte Carlo error ≈ 0.5/√4000 ≈ 0.008.
    let (rbm, mut rng) = random_rbm(2, 1.5);
    let exact = model_statistics(&rbm);
    let data = toy_data();
    let start = Array2::from_shape_fn((4000, V), |(r, i)| data[[r % data.nrows(), i]]);
    let negative = |steps: usize, rng: &mut EngineRng| {
        let state = rbm.gibbs(start.clone(), steps, None, rng);
        let hp = rbm.hidden_probs(state.visible.view());
        state
            .visible
            .t()
            .mapv(|x| x as f64)
            .dot(&hp.mapv(|x| x as f64))
            / start.nrows() as f64
    };
    let far = (negative(200, &mut rng) - &exact)
        .mapv(f64::abs)
        .fold(0.0f64, |a, &b| a.max(b));
    assert!(far < 0.04, "CD-200 statistic is {far} from the exact one");
    // CD-1 from the data is biased towards the data on this strongly coupled model: the test
    // above would fail if the sampler did not mix.
    let near = (negative(1, &mut rng) - &exact)
        .mapv(f64::abs)
        .fold(0.0f64, |a, &b| a.max(b));
    assert!(
        near > far,
        "CD-1 {near} should be further from the model than CD-200 {far}"
    );
}

/// Trains from small random weights and the data's own visible biases (so that the gain is
/// the learning rule's alone) and returns the exact log-likelihood before and after.
fn likelihood_gain(seed: u64, config: &RbmTrainConfig) -> (f64, f64) {
    let (mut rbm, mut rng) = random_rbm(seed, 0.01);
    let data = toy_data();
    rbm.init_visible_bias_from_data(data.view());
    let before = log_likelihood(&rbm, &data);
    common::train_quietly(&mut rbm, data.view(), config, &mut rng);
    (before, log_likelihood(&rbm, &data))
}

#[test]
fn cd_training_increases_the_exact_log_likelihood() {
    let config = RbmTrainConfig {
        epochs: 150,
        batch_size: 10,
        visible_bias_init: VisibleBiasInit::Data,
        ..RbmTrainConfig::default()
    };
    let (before, after) = likelihood_gain(3, &config);
    // Uniform over 64 states is ln(1/64) ≈ −4.16 per example; the data has two modes with
    // some noise, so a learned model does far better. Require a gain of at least 1 nat.
    assert!(
        after > before + 1.0,
        "log-likelihood {before:.3} → {after:.3}"
    );
}

#[test]
fn persistent_cd_also_increases_the_log_likelihood() {
    // PCD's fantasy particles must mix faster than the weights move: low momentum throughout
    // (Tieleman 2008 used none).
    let config = RbmTrainConfig {
        epochs: 300,
        batch_size: 10,
        persistent: true,
        momentum_final: 0.5,
        ..RbmTrainConfig::default()
    };
    let (before, after) = likelihood_gain(4, &config);
    assert!(
        after > before + 1.0,
        "log-likelihood {before:.3} → {after:.3}"
    );
}
