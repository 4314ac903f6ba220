//! Up-down's step against the seed's delta rule and the hybrid term's gradient.

use super::*;
use crate::engine::math::{fill_normal, fill_uniform};
use crate::engine::rbm::Rbm;

fn tiny_dbn(rng: &mut crate::engine::EngineRng) -> Dbn {
    let mut rbm = |v: usize, h: usize, labels: usize| {
        let mut r = Rbm::new(v, h, labels, 0.5, rng).unwrap();
        fill_normal(rng, r.visible_bias.as_slice_mut().unwrap(), 0.0, 0.5);
        fill_normal(rng, r.hidden_bias.as_slice_mut().unwrap(), 0.0, 0.5);
        r
    };
    Dbn::new(vec![rbm(6, 5, 0), rbm(5, 4, 0), rbm(7, 6, 3)]).unwrap()
}

/// An untied [`tiny_dbn`] and a batch for it: binary images and one-hot `labels`.
fn untied_with_batch(seed: u64, labels: &[usize]) -> (Dbn, Array2<f32>, Array2<f32>) {
    let mut rng = crate::engine::rng_from_seed(seed);
    let mut dbn = tiny_dbn(&mut rng);
    dbn.untie();
    let mut v = Array2::zeros((labels.len(), 6));
    fill_uniform(&mut rng, v.as_slice_mut().unwrap());
    v.mapv_inplace(|p| f32::from(p > 0.5));
    let mut y = Array2::zeros((labels.len(), 3));
    for (r, &k) in labels.iter().enumerate() {
        y[[r, k]] = 1.0;
    }
    (dbn, v, y)
}

/// The generative weights of the bottom layer move by the delta rule of the seed's
/// Eq. 1, computed here from the same wake sample: ΔG = ε/B (v − σ(s₁Gᵀ + b))ᵀ s₁.
#[test]
fn generative_weights_follow_the_delta_rule() {
    let (mut dbn, v, y) = untied_with_batch(8, &[0, 1, 2, 0]);
    let before = dbn.clone();
    let lr = 0.1;
    let mut step_rng = crate::engine::rng_from_seed(99);
    let step = Step {
        k: 2,
        lr,
        discriminative: 0.0,
    };
    up_down_step(&mut dbn, v.view(), y.view(), step, None, &mut step_rng).unwrap();

    // The wake sample is the step's first draw.
    let mut replay = crate::engine::rng_from_seed(99);
    let r0 = &before.layers()[0];
    let mut s1 = Array2::zeros((4, 5));
    for r in 0..4 {
        for j in 0..5 {
            let z: f32 =
                (0..6).map(|i| v[[r, i]] * r0.weights[[i, j]]).sum::<f32>() + r0.hidden_bias[j];
            s1[[r, j]] = 1.0 / (1.0 + (-z).exp());
        }
    }
    let p1 = s1.clone();
    sample_bernoulli(&mut replay, p1.view(), s1.view_mut());
    let g0 = before.generative(0);
    for i in 0..6 {
        for j in 0..5 {
            let mut expected = 0.0f32;
            for r in 0..4 {
                let z: f32 =
                    (0..5).map(|k| s1[[r, k]] * g0[[i, k]]).sum::<f32>() + r0.visible_bias[i];
                let pred = 1.0 / (1.0 + (-z).exp());
                expected += (v[[r, i]] - pred) * s1[[r, j]];
            }
            expected *= lr / 4.0;
            let moved = dbn.generative(0)[[i, j]] - g0[[i, j]];
            assert!(
                (moved - expected).abs() < 1e-5,
                "G0[{i},{j}] moved {moved}, delta rule {expected}"
            );
        }
    }
    // Untied: the recognition weights moved differently from the generative ones.
    assert_ne!(dbn.layers()[0].weights, dbn.generative(0).to_owned());
}

/// The discriminative term moves the top RBM by exactly ε/B · weight · ∇ Σ log p(y | f),
/// with f the mean-field features of the recognition up-pass (the gradient itself is
/// checked against the definition in `hybrid`); everything else in the step is the same
/// as without it (same draws).
#[test]
fn the_discriminative_term_adds_the_scaled_label_gradient() {
    let (dbn, v, y) = untied_with_batch(5, &[0, 2, 1, 2]);
    let (lr, weight) = (0.1f32, 2.0f32);
    let run = |discriminative: f32| {
        let mut d = dbn.clone();
        let step = Step {
            k: 1,
            lr,
            discriminative,
        };
        let mut step_rng = crate::engine::rng_from_seed(31);
        up_down_step(&mut d, v.view(), y.view(), step, None, &mut step_rng).unwrap();
        d.layers()[2].clone()
    };
    let (plain, hybrid) = (run(0.0), run(weight));

    // The features by hand: the mean-field up-pass through the two lower layers.
    let sig = |z: f32| 1.0 / (1.0 + (-z).exp());
    let mut f = v.clone();
    for rbm in &dbn.layers()[..2] {
        f = (f.dot(&rbm.weights) + &rbm.hidden_bias).mapv(sig);
    }
    let (gw, gb, gc) = label_log_likelihood_gradient(dbn.top(), f.view(), y.view());
    let scale = lr / 4.0 * weight;
    let pairs = [
        (&hybrid.weights - &plain.weights).into_dyn(),
        (&hybrid.visible_bias - &plain.visible_bias).into_dyn(),
        (&hybrid.hidden_bias - &plain.hidden_bias).into_dyn(),
    ]
    .into_iter()
    .zip([gw.into_dyn(), gb.into_dyn(), gc.into_dyn()]);
    let mut moved_any = false;
    for (moved, grad) in pairs {
        for (&m, &g) in moved.iter().zip(grad.iter()) {
            moved_any |= m.abs() > 1e-4;
            let expected = scale * g;
            assert!(
                (m - expected).abs() < 1e-5 + 1e-3 * expected.abs(),
                "the term moved a parameter by {m}, the gradient says {expected}"
            );
        }
    }
    assert!(moved_any, "the term moved no weight");
}

#[test]
fn the_k_schedule_rises_through_the_run() {
    let cfg = UpDownConfig {
        epochs: 9,
        ..UpDownConfig::default()
    };
    let ks: Vec<usize> = (0..9).map(|e| cfg.k_at(e)).collect();
    assert_eq!(ks, [3, 3, 3, 6, 6, 6, 10, 10, 10]);
}
