//! Random draws. Every function takes the generator as an argument: the engine never owns a
//! hidden or global generator, so a job's seed fixes every draw it makes.

use ndarray::{ArrayView2, ArrayViewMut2, Axis};
use rand::Rng;

use super::simd::{dispatch, Fma};

const INV_2_24: f32 = 1.0 / (1u32 << 24) as f32;

/// Fills `out` with independent uniform draws from [0, 1), two 24-bit draws per u64.
pub fn fill_uniform<R: Rng + ?Sized>(rng: &mut R, out: &mut [f32]) {
    let mut pairs = out.chunks_exact_mut(2);
    for pair in &mut pairs {
        let bits = rng.next_u64();
        pair[0] = (bits >> 40) as f32 * INV_2_24;
        pair[1] = ((bits >> 8) & 0xFF_FFFF) as f32 * INV_2_24;
    }
    for last in pairs.into_remainder() {
        *last = (rng.next_u64() >> 40) as f32 * INV_2_24;
    }
}

/// Fills `out` with draws from N(mean, std²) by the Box–Muller transform (in f64).
pub fn fill_normal<R: Rng + ?Sized>(rng: &mut R, out: &mut [f32], mean: f32, std: f32) {
    let unit = |rng: &mut R| ((rng.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
    for pair in out.chunks_mut(2) {
        let (u1, u2) = (unit(rng), unit(rng));
        let radius = (-2.0 * u1.ln()).sqrt();
        let angle = std::f64::consts::TAU * u2;
        pair[0] = mean + std * (radius * angle.cos()) as f32;
        if let Some(second) = pair.get_mut(1) {
            *second = mean + std * (radius * angle.sin()) as f32;
        }
    }
}

#[inline(always)]
fn bernoulli_body<F: Fma>(p: &[f32], u: &mut [f32]) {
    for (u, &p) in u.iter_mut().zip(p) {
        *u = if *u < p { 1.0 } else { 0.0 };
    }
}

dispatch!(fn threshold(p: &[f32], u: &mut [f32]) => bernoulli_body);

/// Binary states with P(state = 1) = p, written to `out` (same shape as `p`, standard layout).
pub fn sample_bernoulli<R: Rng + ?Sized>(
    rng: &mut R,
    p: ArrayView2<f32>,
    mut out: ArrayViewMut2<f32>,
) {
    assert_eq!(p.dim(), out.dim(), "shapes");
    for (p_row, mut o_row) in p.rows().into_iter().zip(out.rows_mut()) {
        let o = o_row.as_slice_mut().expect("standard layout output");
        fill_uniform(rng, o);
        match p_row.as_slice() {
            Some(p) => threshold(p, o),
            None => o
                .iter_mut()
                .zip(p_row.iter())
                .for_each(|(u, &p)| *u = (*u < p) as u8 as f32),
        }
    }
}

/// One-hot draws, one per row, from the categorical distribution each row of `probs` holds.
/// probs and out: [batch, k].
pub fn sample_categorical_rows<R: Rng + ?Sized>(
    rng: &mut R,
    probs: ArrayView2<f32>,
    mut out: ArrayViewMut2<f32>,
) {
    assert_eq!(probs.dim(), out.dim(), "shapes");
    let mut u = [0.0f32; 1];
    for (p, mut o) in probs.axis_iter(Axis(0)).zip(out.axis_iter_mut(Axis(0))) {
        fill_uniform(rng, &mut u);
        let target = u[0] * p.sum();
        let mut acc = 0.0;
        let mut chosen = p.len().saturating_sub(1);
        for (k, &pk) in p.iter().enumerate() {
            acc += pk;
            if target < acc {
                chosen = k;
                break;
            }
        }
        o.fill(0.0);
        if !o.is_empty() {
            o[chosen] = 1.0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_xoshiro::Xoshiro256PlusPlus;

    #[test]
    fn uniform_draws_have_the_right_moments() {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(1);
        let mut u = vec![0.0f32; 100_001];
        fill_uniform(&mut rng, &mut u);
        let mean = u.iter().map(|&x| x as f64).sum::<f64>() / u.len() as f64;
        // Uniform(0,1): mean 1/2, standard error sqrt(1/12/n) ≈ 0.0009.
        assert!((mean - 0.5).abs() < 0.005, "mean {mean}");
        assert!(u.iter().all(|&x| (0.0..1.0).contains(&x)));
    }

    #[test]
    fn normal_draws_have_the_right_moments() {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(2);
        let mut z = vec![0.0f32; 100_000];
        fill_normal(&mut rng, &mut z, 1.0, 0.5);
        let n = z.len() as f64;
        let mean = z.iter().map(|&x| x as f64).sum::<f64>() / n;
        let var = z.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / n;
        assert!((mean - 1.0).abs() < 0.01, "mean {mean}");
        assert!((var - 0.25).abs() < 0.01, "variance {var}");
    }

    #[test]
    fn categorical_draws_follow_the_probabilities() {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(3);
        let probs = ndarray::Array2::from_shape_fn((20_000, 3), |(_, k)| [0.2f32, 0.5, 0.3][k]);
        let mut out = ndarray::Array2::zeros((20_000, 3));
        sample_categorical_rows(&mut rng, probs.view(), out.view_mut());
        let freq = out.sum_axis(Axis(0)) / 20_000.0;
        assert!(out.rows().into_iter().all(|r| r.sum() == 1.0));
        for (f, p) in freq.iter().zip([0.2, 0.5, 0.3]) {
            assert!((f - p).abs() < 0.015, "{freq}");
        }
    }
}
