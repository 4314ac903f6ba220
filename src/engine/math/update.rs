//! Parameter updates with momentum and weight decay, fused into single vectorised passes.
//!
//! Seed Eq. 4 with momentum m and L2 decay λ on weights, per mini-batch t:
//! inc_t = m_t·inc_{t−1} − ελ·W_{t−1} + (ε/B)·(<v h>_data − <v h>_recon),  W_t = W_{t−1} + inc_t.
//! The first two terms depend only on the previous batch, so they are formed in the same pass
//! that applies the previous increment ([`apply_and_prepare`]); the statistics are then
//! accumulated straight into `inc` by the products. Each batch thus makes one pass over W and
//! its increment instead of two.

use rayon::prelude::*;

use super::simd::{dispatch, Fma};

/// Elements per parallel chunk (a multiple of every vector width).
const CHUNK: usize = 1 << 15;

#[inline(always)]
fn apply_body<F: Fma>(w: &mut [f32], inc: &mut [f32], momentum: f32, decay: f32) {
    for (w, inc) in w.iter_mut().zip(inc.iter_mut()) {
        let updated = *w + *inc;
        *w = updated;
        *inc = F::fma(momentum, *inc, -decay * updated);
    }
}

dispatch!(fn apply_chunk(w: &mut [f32], inc: &mut [f32], momentum: f32, decay: f32) => apply_body);

/// `w += inc`, then `inc = momentum·inc − decay·w` for the next batch, in one pass.
pub fn apply_and_prepare(w: &mut [f32], inc: &mut [f32], momentum: f32, decay: f32) {
    assert_eq!(w.len(), inc.len(), "parameter and increment sizes");
    if w.len() < 2 * CHUNK || rayon::current_num_threads() <= 1 {
        apply_chunk(w, inc, momentum, decay);
        return;
    }
    w.par_chunks_mut(CHUNK)
        .zip(inc.par_chunks_mut(CHUNK))
        .for_each(|(w, inc)| apply_chunk(w, inc, momentum, decay));
}

/// `inc = momentum·inc − decay·w`: the part of the first batch's increment that
/// [`apply_and_prepare`] forms for every later batch.
pub fn prepare(w: &[f32], inc: &mut [f32], momentum: f32, decay: f32) {
    for (&w, inc) in w.iter().zip(inc.iter_mut()) {
        *inc = momentum * *inc - decay * w;
    }
}

#[inline(always)]
fn squared_distance_body<F: Fma>(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; 16];
    let n = a.len().min(b.len());
    let full = n - n % 16;
    for (ca, cb) in a[..full].chunks_exact(16).zip(b[..full].chunks_exact(16)) {
        for l in 0..16 {
            let d = ca[l] - cb[l];
            acc[l] = F::fma(d, d, acc[l]);
        }
    }
    let tail: f32 = a[full..n]
        .iter()
        .zip(&b[full..n])
        .map(|(x, y)| (x - y) * (x - y))
        .sum();
    acc.iter().sum::<f32>() + tail
}

dispatch!(
    /// Σ_i (a_i − b_i)² over two equally long slices.
    pub fn squared_distance_slices(a: &[f32], b: &[f32]) -> f32 => squared_distance_body
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fused_update_equals_the_two_step_update() {
        // Reference: w' = w + inc; inc' = m·inc − d·w', element by element in f64.
        let n = 3 * CHUNK + 17;
        let mut w: Vec<f32> = (0..n).map(|i| ((i % 97) as f32 - 48.0) * 0.01).collect();
        let mut inc: Vec<f32> = (0..n).map(|i| ((i % 13) as f32 - 6.0) * 0.001).collect();
        let (w0, inc0) = (w.clone(), inc.clone());
        apply_and_prepare(&mut w, &mut inc, 0.9, 2e-5);
        for i in 0..n {
            let w1 = w0[i] as f64 + inc0[i] as f64;
            let inc1 = 0.9 * inc0[i] as f64 - 2e-5 * w1;
            assert!(
                (w[i] as f64 - w1).abs() < 1e-6 && (inc[i] as f64 - inc1).abs() < 1e-6,
                "element {i}"
            );
        }
    }

    #[test]
    fn fused_updates_follow_the_textbook_recurrence_across_a_momentum_switch() {
        // Oracle, per batch t: inc = m_t·inc − d·W + S_t; W += inc (in f64). The fused form
        // adds S_t to a pre-formed increment and hands the next batch's momentum over.
        let n = 2 * CHUNK + 5;
        let momenta = [0.5f32, 0.5, 0.9, 0.9, 0.9];
        let decay = 2e-5f32;
        let stats = |t: usize, i: usize| ((i * 7 + t * 3) % 11) as f32 * 1e-3 - 5e-3;
        let mut w: Vec<f32> = (0..n).map(|i| ((i % 97) as f32 - 48.0) * 0.01).collect();
        let mut w_ref: Vec<f64> = w.iter().map(|&x| x as f64).collect();
        let mut inc = vec![0f32; n];
        let mut inc_ref = vec![0f64; n];
        prepare(&w, &mut inc, momenta[0], decay);
        for t in 0..momenta.len() {
            for i in 0..n {
                inc[i] += stats(t, i);
                inc_ref[i] =
                    momenta[t] as f64 * inc_ref[i] - decay as f64 * w_ref[i] + stats(t, i) as f64;
                w_ref[i] += inc_ref[i];
            }
            let next = momenta.get(t + 1).copied().unwrap_or(0.9);
            apply_and_prepare(&mut w, &mut inc, next, decay);
        }
        for i in 0..n {
            assert!(
                (w[i] as f64 - w_ref[i]).abs() < 1e-5,
                "element {i}: {} vs {}",
                w[i],
                w_ref[i]
            );
        }
    }

    #[test]
    fn squared_distance_matches_a_plain_sum() {
        let a: Vec<f32> = (0..789).map(|i| (i % 7) as f32 / 7.0).collect();
        let b: Vec<f32> = (0..789).map(|i| (i % 5) as f32 / 5.0).collect();
        let want: f64 = a
            .iter()
            .zip(&b)
            .map(|(&x, &y)| ((x - y) as f64).powi(2))
            .sum();
        assert!((squared_distance_slices(&a, &b) as f64 - want).abs() < 1e-4 * want);
    }
}
