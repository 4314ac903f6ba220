//! The discriminative term of hybrid up-down (Larochelle & Bengio 2008, applied at the top
//! only): the gradient of log p(label | features) for the top RBM, where p(k | f) ∝
//! exp(−F(f, k)) is exactly what classification by free energy computes.

use ndarray::{s, Array1, Array2, ArrayView2, Axis};

use crate::engine::dbn::{label_scores, top_hidden_input};
use crate::engine::math::{matmul, sigmoid_bias_rows, softmax_bias_rows};
use crate::engine::rbm::Rbm;

/// Gradient of Σ_r log p(y_r | f_r) for the top RBM's weights and biases, where
/// p(k | f) = softmax_k(−F(f, k)) and F is the top's free energy with label k clamped.
/// With a_k = c + f·W_f + w_k (the hidden input with label k on) and d_rk = y_rk − p(k | f_r):
/// ∂/∂W_f = fᵀ Σ_k d_k ⊙ σ(a_k), ∂/∂w_k = Σ_r d_rk σ(a_rk), ∂/∂c = Σ_r Σ_k d_rk σ(a_rk),
/// ∂/∂b_k = Σ_r d_rk (the feature biases cancel out of p). f: [batch, features],
/// labels: one-hot [batch, classes]. Returns (∂W, ∂b visible, ∂c hidden).
pub(crate) fn label_log_likelihood_gradient(
    top: &Rbm,
    f: ArrayView2<f32>,
    labels: ArrayView2<f32>,
) -> (Array2<f32>, Array1<f32>, Array1<f32>) {
    let nf = top.n_features();
    let classes = labels.ncols();
    let base = top_hidden_input(top, f);
    let mut p = label_scores(top, base.view());
    softmax_bias_rows(p.view_mut(), Array1::zeros(classes).view());
    let d = &labels - &p;
    let mut grad_w = Array2::zeros(top.weights.dim());
    let mut grad_vb = Array1::zeros(top.n_visible());
    grad_vb.slice_mut(s![nf..]).assign(&d.sum_axis(Axis(0)));
    let mut weighted = Array2::<f32>::zeros(base.dim());
    for k in 0..classes {
        let mut sig = base.clone();
        sigmoid_bias_rows(sig.view_mut(), top.weights.row(nf + k));
        grad_w.row_mut(nf + k).assign(&sig.t().dot(&d.column(k)));
        sig *= &d.column(k).insert_axis(Axis(1));
        weighted += &sig;
    }
    matmul(
        grad_w.slice_mut(s![..nf, ..]),
        true,
        f.t(),
        weighted.view(),
        1.0,
    );
    let grad_hb = weighted.sum_axis(Axis(0));
    (grad_w, grad_vb, grad_hb)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::math::{fill_normal, fill_uniform};

    /// The top RBM's parameters in one list: its weights row by row, then the visible and
    /// the hidden biases.
    fn parameters(top: &Rbm) -> Vec<f64> {
        let all = top
            .weights
            .iter()
            .chain(&top.visible_bias)
            .chain(&top.hidden_bias);
        all.map(|&x| f64::from(x)).collect()
    }

    /// Σ_r log p(y_r | f_r) by a top RBM with parameters `theta` (as [`parameters`] lists
    /// them; `hidden` units), in f64 and by the definition: F(f, k) with label k clamped,
    /// p = softmax(−F).
    fn label_log_likelihood(theta: &[f64], hidden: usize, f: &Array2<f64>, y: &[usize]) -> f64 {
        let nf = f.ncols();
        let visible = (theta.len() - hidden) / (hidden + 1);
        let w = |i: usize, j: usize| theta[i * hidden + j];
        let b = |i: usize| theta[visible * hidden + i];
        let c = |j: usize| theta[visible * hidden + visible + j];
        let mut total = 0.0;
        for (r, &label) in y.iter().enumerate() {
            let neg_f: Vec<f64> = (0..visible - nf)
                .map(|k| {
                    let feature_term: f64 = (0..nf).map(|i| f[[r, i]] * b(i)).sum();
                    let hidden_term: f64 = (0..hidden)
                        .map(|j| {
                            let a = c(j) + (0..nf).map(|i| f[[r, i]] * w(i, j)).sum::<f64>();
                            (a + w(nf + k, j)).exp().ln_1p()
                        })
                        .sum();
                    feature_term + b(nf + k) + hidden_term
                })
                .collect();
            let max = neg_f.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let log_z = max + neg_f.iter().map(|x| (x - max).exp()).sum::<f64>().ln();
            total += neg_f[label] - log_z;
        }
        total
    }

    /// The gradient matches central differences of log p(y | f) written from the definition.
    /// Batches of 4 and of 40 rows take the two paths of the per-label sums (split by columns
    /// for a few rows, by rows for many).
    #[test]
    fn the_gradient_is_that_of_the_label_log_likelihood() {
        for rows in [4usize, 40] {
            let mut rng = crate::engine::rng_from_seed(5 + rows as u64);
            let mut top = Rbm::new(7, 6, 3, 0.5, &mut rng).unwrap();
            fill_normal(&mut rng, top.visible_bias.as_slice_mut().unwrap(), 0.0, 0.5);
            fill_normal(&mut rng, top.hidden_bias.as_slice_mut().unwrap(), 0.0, 0.5);
            let nf = top.n_features();
            let mut f = Array2::zeros((rows, nf));
            fill_uniform(&mut rng, f.as_slice_mut().unwrap());
            let y_idx: Vec<usize> = (0..rows).map(|r| (r * 7 + 1) % 3).collect();
            let mut y = Array2::zeros((rows, 3));
            for (r, &k) in y_idx.iter().enumerate() {
                y[[r, k]] = 1.0;
            }
            let (gw, gb, gc) = label_log_likelihood_gradient(&top, f.view(), y.view());
            let grad: Vec<f64> = gw.iter().chain(&gb).chain(&gc).map(|&g| g.into()).collect();

            let f64s = f.mapv(f64::from);
            let mut theta = parameters(&top);
            let h = 1e-5;
            for i in 0..theta.len() {
                let keep = theta[i];
                theta[i] = keep + h;
                let up = label_log_likelihood(&theta, top.n_hidden(), &f64s, &y_idx);
                theta[i] = keep - h;
                let down = label_log_likelihood(&theta, top.n_hidden(), &f64s, &y_idx);
                theta[i] = keep;
                let expected = (up - down) / (2.0 * h);
                assert!(
                    (grad[i] - expected).abs() < 1e-4 + 1e-3 * expected.abs(),
                    "{rows} rows, parameter {i}: gradient {}, central difference {expected}",
                    grad[i]
                );
            }
            // The feature biases cancel out of p(k | f).
            assert!(gb.slice(s![..nf]).iter().all(|&g| g == 0.0));
        }
    }
}
