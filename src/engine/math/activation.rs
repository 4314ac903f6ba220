//! Elementwise activations over rows of a batch, vectorised (see `simd`).

use ndarray::{ArrayView1, ArrayViewMut2, Axis};

use super::simd::{self, dispatch, Fma};

#[inline(always)]
fn sigmoid_bias_body<F: Fma>(row: &mut [f32], bias: &[f32]) {
    for (x, &b) in row.iter_mut().zip(bias) {
        *x = simd::sigmoid::<F>(*x + b);
    }
}

dispatch!(fn sigmoid_bias_slice(row: &mut [f32], bias: &[f32]) => sigmoid_bias_body);

/// `x[r, j] = σ(x[r, j] + bias[j])` for every row: the logistic units of seed Eqs. 2 and 3
/// applied to the total input a product has left in `x`.
/// x: [batch, n], bias: [n].
pub fn sigmoid_bias_rows(mut x: ArrayViewMut2<f32>, bias: ArrayView1<f32>) {
    assert_eq!(x.ncols(), bias.len(), "bias length");
    let bias = bias.to_vec();
    for mut row in x.axis_iter_mut(Axis(0)) {
        match row.as_slice_mut() {
            Some(s) => sigmoid_bias_slice(s, &bias),
            None => row
                .iter_mut()
                .zip(&bias)
                .for_each(|(x, &b)| *x = simd::sigmoid::<simd::Plain>(*x + b)),
        }
    }
}

/// Softmax over each row of `x + bias`: a group of winner-take-all units (the label units of
/// the top-level RBM). x: [batch, k], bias: [k]. Small k, so plain `exp` is fine here.
pub fn softmax_bias_rows(mut x: ArrayViewMut2<f32>, bias: ArrayView1<f32>) {
    assert_eq!(x.ncols(), bias.len(), "bias length");
    for mut row in x.axis_iter_mut(Axis(0)) {
        let mut max = f32::NEG_INFINITY;
        for (v, &b) in row.iter_mut().zip(bias.iter()) {
            *v += b;
            max = max.max(*v);
        }
        let mut sum = 0.0f32;
        for v in row.iter_mut() {
            *v = (*v - max).exp();
            sum += *v;
        }
        row.mapv_inplace(|v| {
            if v / sum < simd::TINY_PROBABILITY {
                0.0
            } else {
                v / sum
            }
        });
    }
}

#[inline(always)]
fn softplus_sum_body<F: Fma>(base: &[f32], shift: &[f32]) -> f32 {
    // Σ softplus(z) = Σ max(z, 0) + Σ ln(1 + e^-|z|). Every factor 1 + e^-|z| lies in (1, 2],
    // so a product of ROUNDS of them stays below 2^16 and its one logarithm replaces ROUNDS
    // logarithms. Rounding 1 + y drops y's low digits (all of y below 6e-8); those are kept in
    // a compensation sum, y − ((1 + y) − 1), so tiny terms keep their relative precision. The
    // work is laid out as elementwise maps over LANES-wide rows (the loop vectoriser's shape);
    // scalar accumulators inside the map would leave it scalar.
    const LANES: usize = 64;
    const ROUNDS: usize = 16;
    let n = base.len().min(shift.len());
    let mut positive = [0.0f32; LANES];
    let mut logs = [0.0f32; LANES];
    let mut product = [1.0f32; LANES];
    let mut dropped = [0.0f32; LANES];
    let mut start = 0;
    let mut round = 0;
    while start + LANES <= n {
        let (b, s) = (&base[start..start + LANES], &shift[start..start + LANES]);
        for l in 0..LANES {
            let z = b[l] + s[l];
            let y = simd::exp::<F>(-z.abs());
            let u = 1.0 + y;
            positive[l] += z.max(0.0);
            dropped[l] += y - (u - 1.0);
            product[l] *= u;
        }
        round += 1;
        if round == ROUNDS {
            for l in 0..LANES {
                logs[l] += simd::ln_at_least_1::<F>(product[l]);
                product[l] = 1.0;
            }
            round = 0;
        }
        start += LANES;
    }
    let mut total = 0.0f32;
    for l in 0..LANES {
        total += positive[l] + logs[l] + simd::ln_at_least_1::<F>(product[l]) + dropped[l];
    }
    for j in start..n {
        total += simd::softplus::<F>(base[j] + shift[j]);
    }
    total
}

dispatch!(
    /// Σ_j softplus(base[j] + shift[j]): the hidden units' part of an RBM's free energy for one
    /// visible vector, when `base` holds c + vW without one term and `shift` adds it back.
    pub fn softplus_sum_shifted(base: &[f32], shift: &[f32]) -> f32 => softplus_sum_body
);

/// ln(1 + eˣ) in f64, without overflow.
pub fn softplus64(x: f64) -> f64 {
    if x > 0.0 {
        x + (-x).exp().ln_1p()
    } else {
        x.exp().ln_1p()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    #[test]
    fn softmax_rows_sum_to_one() {
        let mut x = array![[1.0f32, 2.0, 3.0], [-1000.0, 0.0, 1000.0]];
        softmax_bias_rows(x.view_mut(), array![0.5f32, 0.0, -0.5].view());
        for row in x.rows() {
            assert!((row.sum() - 1.0).abs() < 1e-6);
            assert!(row.iter().all(|&p| (0.0..=1.0).contains(&p)));
        }
    }

    #[test]
    fn vectorised_sigmoid_matches_scalar_definition() {
        let mut x = ndarray::Array2::from_shape_fn((3, 37), |(i, j)| {
            (i as f32 - 1.0) * (j as f32 - 18.0) * 0.7
        });
        let bias = ndarray::Array1::from_shape_fn(37, |j| 0.1 * j as f32 - 1.0);
        let want = ndarray::Array2::from_shape_fn((3, 37), |(i, j)| {
            1.0 / (1.0 + (-(x[[i, j]] as f64 + bias[j] as f64)).exp())
        });
        sigmoid_bias_rows(x.view_mut(), bias.view());
        for (g, w) in x.iter().zip(want.iter()) {
            assert!((*g as f64 - w).abs() < 1e-6, "{g} vs {w}");
        }
    }

    #[test]
    fn blocked_softplus_sum_matches_f64_over_a_top_layer_row() {
        // 2,000 + 37 terms (the lane path, its log-of-products rounds and the tail), inputs
        // from −40 to +40 as a top RBM's hidden units see them. Oracle: ln_1p in f64.
        let n = 2037;
        let base: Vec<f32> = (0..n)
            .map(|j| ((j * 7919) % 8001) as f32 / 100.0 - 40.0)
            .collect();
        let shift: Vec<f32> = (0..n).map(|j| ((j % 13) as f32 - 6.0) * 0.05).collect();
        let want: f64 = base
            .iter()
            .zip(&shift)
            .map(|(&b, &s)| {
                let z = (b + s) as f64;
                z.max(0.0) + (-z.abs()).exp().ln_1p()
            })
            .sum();
        let got = softplus_sum_shifted(&base, &shift) as f64;
        assert!((got - want).abs() < 2e-6 * want.abs(), "{got} vs {want}");
        // All strongly negative: the sum is tiny and must keep its relative precision.
        let neg: Vec<f32> = (0..n).map(|j| -20.0 - (j % 7) as f32).collect();
        let zero = vec![0.0f32; n];
        let want: f64 = neg.iter().map(|&z| (z as f64).exp().ln_1p()).sum();
        let got = softplus_sum_shifted(&neg, &zero) as f64;
        assert!((got - want).abs() < 1e-4 * want, "{got} vs {want}");
    }

    #[test]
    fn softplus_sum_matches_naive_sum() {
        let base: Vec<f32> = (0..53).map(|j| (j as f32 - 26.0) * 0.9).collect();
        let shift: Vec<f32> = (0..53).map(|j| (j % 5) as f32 - 2.0).collect();
        let want: f64 = base
            .iter()
            .zip(&shift)
            .map(|(&b, &s)| (1.0 + ((b + s) as f64).exp()).ln())
            .sum();
        let got = softplus_sum_shifted(&base, &shift) as f64;
        assert!((got - want).abs() < 1e-4 * want.abs(), "{got} vs {want}");
    }
}
