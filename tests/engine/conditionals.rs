//! Shapes and ranges of the conditionals, and the batched classifiers against naive loops.

use dbn_serve::engine::dbn::Dbn;
use dbn_serve::engine::rbm::Rbm;
use dbn_serve::engine::rng_from_seed;
use ndarray::{s, Array1, Array2, Axis};

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// A random 20-12-9(+4 labels) net with sizeable weights.
fn small_dbn(seed: u64) -> Dbn {
    let mut rng = rng_from_seed(seed);
    let mut layers = vec![
        Rbm::new(20, 12, 0, 0.8, &mut rng).unwrap(),
        Rbm::new(16, 9, 4, 0.8, &mut rng).unwrap(),
    ];
    for (l, rbm) in layers.iter_mut().enumerate() {
        let (v, h) = (rbm.n_visible(), rbm.n_hidden());
        rbm.visible_bias = Array1::from_shape_fn(v, |i| ((i + l) % 5) as f32 * 0.2 - 0.4);
        rbm.hidden_bias = Array1::from_shape_fn(h, |j| ((j + 2 * l) % 3) as f32 * 0.3 - 0.3);
    }
    Dbn::new(layers).unwrap()
}

fn inputs(n: usize) -> Array2<f32> {
    Array2::from_shape_fn((n, 20), |(r, i)| {
        ((r * 13 + i * 7) % 10) as f32 / 9.0 * ((r + i) % 3 != 0) as u8 as f32
    })
}

#[test]
fn conditionals_have_the_right_shapes_and_lie_in_the_unit_interval() {
    let dbn = small_dbn(1);
    let top = dbn.top();
    let v = Array2::from_shape_fn((7, top.n_visible()), |(r, i)| ((r + i) % 2) as f32);
    let h = top.hidden_probs(v.view());
    assert_eq!(h.dim(), (7, top.n_hidden()));
    assert!(h.iter().all(|p| (0.0..=1.0).contains(p)));
    let back = top.visible_probs(h.view());
    assert_eq!(back.dim(), (7, top.n_visible()));
    assert!(back.iter().all(|p| (0.0..=1.0).contains(p)));
    // The label group is one softmax: its probabilities sum to one in every row.
    for row in back.slice(s![.., top.n_features()..]).rows() {
        assert!((row.sum() - 1.0).abs() < 1e-5, "label probabilities {row}");
    }
}

#[test]
fn receptive_fields_are_the_first_layers_weight_columns() {
    // Row j of the picture is hidden unit j's incoming weights w_ij over the inputs i.
    let dbn = small_dbn(6);
    let fields = dbn.receptive_fields(5);
    assert_eq!(fields.dim(), (5, 20));
    let w = &dbn.layers()[0].weights;
    assert!((0..5).all(|j| (0..20).all(|i| fields[[j, i]] == w[[i, j]])));
    assert_eq!(
        dbn.receptive_fields(100).nrows(),
        12,
        "no more fields than hidden units"
    );
}

#[test]
fn hidden_probabilities_match_the_formula() {
    // p(h_j = 1 | v) = σ(c_j + Σ_i v_i w_ij), seed Eq. 2, in f64 per element.
    let dbn = small_dbn(2);
    let rbm = &dbn.layers()[0];
    let v = inputs(5);
    let got = rbm.hidden_probs(v.view());
    for r in 0..5 {
        for j in 0..rbm.n_hidden() {
            let x: f64 = rbm.hidden_bias[j] as f64
                + (0..20)
                    .map(|i| v[[r, i]] as f64 * rbm.weights[[i, j]] as f64)
                    .sum::<f64>();
            assert!((got[[r, j]] as f64 - sigmoid(x)).abs() < 1e-5);
        }
    }
}

/// p(k | x) one example at a time: up-pass, then F(f, k) of the top RBM with the visible
/// vector [f, onehot(k)] by the free-energy formula in f64, then a softmax over −F.
fn naive_label_probs(dbn: &Dbn, x: &Array2<f32>) -> Array2<f64> {
    let (bottom, top) = (&dbn.layers()[0], dbn.top());
    let k = top.label_units;
    let mut out = Array2::zeros((x.nrows(), k));
    for r in 0..x.nrows() {
        let f: Vec<f64> = (0..bottom.n_hidden())
            .map(|j| {
                sigmoid(
                    bottom.hidden_bias[j] as f64
                        + (0..20)
                            .map(|i| x[[r, i]] as f64 * bottom.weights[[i, j]] as f64)
                            .sum::<f64>(),
                )
            })
            .collect();
        let neg_f: Vec<f64> = (0..k)
            .map(|label| {
                let mut v = f.clone();
                v.extend((0..k).map(|l| (l == label) as u8 as f64));
                let vb: f64 = v
                    .iter()
                    .enumerate()
                    .map(|(i, &vi)| vi * top.visible_bias[i] as f64)
                    .sum();
                let soft: f64 = (0..top.n_hidden())
                    .map(|j| {
                        let a = top.hidden_bias[j] as f64
                            + v.iter()
                                .enumerate()
                                .map(|(i, &vi)| vi * top.weights[[i, j]] as f64)
                                .sum::<f64>();
                        (1.0 + a.exp()).ln()
                    })
                    .sum();
                vb + soft
            })
            .collect();
        let max = neg_f.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let z: f64 = neg_f.iter().map(|a| (a - max).exp()).sum();
        for label in 0..k {
            out[[r, label]] = (neg_f[label] - max).exp() / z;
        }
    }
    out
}

#[test]
fn batched_free_energy_classifier_agrees_with_a_naive_loop() {
    let dbn = small_dbn(3);
    let x = inputs(40);
    let batched = dbn.classify_free_energy(x.view()).unwrap();
    let naive = naive_label_probs(&dbn, &x);
    for (b, n) in batched.iter().zip(naive.iter()) {
        assert!((*b as f64 - n).abs() < 1e-4, "{b} vs {n}");
    }
    // One image at a time goes through the single-row kernels: same answer.
    for r in [0, 17, 39] {
        let one = dbn.classify_free_energy(x.slice(s![r..r + 1, ..])).unwrap();
        for (a, b) in one.row(0).iter().zip(batched.row(r)) {
            assert!((a - b).abs() < 1e-5);
        }
    }
}

#[test]
fn gibbs_classifier_estimates_the_same_posterior() {
    // Counting labels over many Gibbs steps estimates p(k | f); with 4,000 steps the
    // frequencies should be within a few hundredths of the exact posterior.
    let dbn = small_dbn(4);
    let x = inputs(6);
    let exact = dbn.classify_free_energy(x.view()).unwrap();
    let mut rng = rng_from_seed(9);
    let gibbs = dbn.classify_gibbs(x.view(), 4000, &mut rng).unwrap();
    assert_eq!(gibbs.dim(), exact.dim());
    for row in gibbs.axis_iter(Axis(0)) {
        assert!((row.sum() - 1.0).abs() < 1e-4);
    }
    let worst = (&gibbs - &exact)
        .mapv(f32::abs)
        .fold(0.0f32, |a, &b| a.max(b));
    assert!(
        worst < 0.06,
        "Gibbs frequencies differ from the exact posterior by {worst}"
    );
}

#[test]
fn bad_inputs_are_errors_not_panics() {
    let dbn = small_dbn(5);
    assert!(
        dbn.classify_free_energy(Array2::zeros((2, 19)).view())
            .is_err(),
        "wrong width"
    );
    assert!(
        dbn.classify_free_energy(Array2::from_elem((2, 20), 1.5).view())
            .is_err(),
        "outside [0,1]"
    );
    assert!(
        dbn.classify_free_energy(Array2::from_elem((2, 20), f32::NAN).view())
            .is_err(),
        "NaN"
    );
    let mut rng = rng_from_seed(1);
    assert!(
        dbn.classify_gibbs(inputs(2).view(), 0, &mut rng).is_err(),
        "zero steps"
    );
    assert!(
        dbn.generate(Some(4), 3, 10, &mut rng).is_err(),
        "label out of range"
    );
    assert!(
        dbn.generate(Some(1), 0, 10, &mut rng).is_err(),
        "no samples"
    );
    let samples = dbn.generate(Some(1), 3, 10, &mut rng).unwrap();
    assert_eq!(samples.dim(), (3, 20));
    assert!(samples.iter().all(|p| (0.0..=1.0).contains(p)));
    let no_labels = Dbn::new(vec![Rbm::new(20, 5, 0, 0.1, &mut rng).unwrap()]).unwrap();
    assert!(
        no_labels.classify_free_energy(inputs(1).view()).is_err(),
        "a model without labels cannot classify"
    );
}
