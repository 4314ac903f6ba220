//! Sparse rows (CSR) and the products that gather dense rows for their non-zeros.
//!
//! The kernel works on tiles of output columns (128 with AVX-512, 64 with AVX2): for one sparse
//! row it sums Σ_t x_t · src[i_t][tile] in vector registers (one independent accumulator per
//! vector hides the FMA latency), then writes the tile once. Looping tiles outside rows keeps
//! the `src` columns of a tile in L1/L2 while every row uses them. Measured on the 2-core
//! AVX-512 machine for a 100×784 MNIST batch against 784×500 weights (one thread): 16-wide
//! tiles with four partial sums 1.2 ms, 64-wide 0.62 ms, 128-wide 0.52 ms.

use ndarray::{ArrayView2, ArrayViewMut2, Axis};

use super::product::PAR_MIN_WORK;
use super::simd::{dispatch, Fma};

/// Column blocks handed to threads are multiples of this.
pub(crate) const TILE: usize = 16;

/// A sparse matrix in compressed rows: row r's non-zeros are `index[start[r]..start[r+1]]`
/// (column numbers) with `value[..]`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SparseRows {
    start: Vec<usize>,
    index: Vec<u32>,
    value: Vec<f32>,
    ncols: usize,
}

impl SparseRows {
    /// The non-zeros of `x` (scaled by `scale`), row by row.
    pub fn from_dense(x: ArrayView2<f32>, scale: f32) -> Self {
        let mut sp = SparseRows::default();
        sp.fill_from_dense(x, scale);
        sp
    }

    /// Refills `self` from `x`, reusing its buffers.
    pub fn fill_from_dense(&mut self, x: ArrayView2<f32>, scale: f32) {
        self.ncols = x.ncols();
        self.start.clear();
        self.start.push(0);
        self.index.clear();
        self.value.clear();
        let (mut idx, mut val) = (vec![0u32; x.ncols()], vec![0f32; x.ncols()]);
        for row in x.rows() {
            // Branch-free compaction: write every entry, advance only past non-zeros.
            let mut k = 0;
            let mut put = |i: usize, v: f32| {
                idx[k] = i as u32;
                val[k] = v * scale;
                k += (v != 0.0) as usize;
            };
            match row.as_slice() {
                Some(r) => r.iter().enumerate().for_each(|(i, &v)| put(i, v)),
                None => row.iter().enumerate().for_each(|(i, &v)| put(i, v)),
            }
            self.index.extend_from_slice(&idx[..k]);
            self.value.extend_from_slice(&val[..k]);
            self.start.push(self.index.len());
        }
    }

    pub fn nrows(&self) -> usize {
        self.start.len().saturating_sub(1)
    }

    pub fn ncols(&self) -> usize {
        self.ncols
    }

    pub fn nnz(&self) -> usize {
        self.index.len()
    }

    /// Fraction of entries that are non-zero.
    pub fn density(&self) -> f64 {
        self.nnz() as f64 / (self.nrows() * self.ncols).max(1) as f64
    }

    fn entries(&self, r: usize) -> (&[u32], &[f32]) {
        let (a, b) = (self.start[r], self.start[r + 1]);
        (&self.index[a..b], &self.value[a..b])
    }

    /// Copies the listed rows, in order, into `out` (a mini-batch), reusing its buffers.
    pub fn gather_rows_into(&self, rows: &[usize], out: &mut SparseRows) {
        out.ncols = self.ncols;
        out.start.clear();
        out.start.push(0);
        out.index.clear();
        out.value.clear();
        for &r in rows {
            let (i, v) = self.entries(r);
            out.index.extend_from_slice(i);
            out.value.extend_from_slice(v);
            out.start.push(out.index.len());
        }
    }

    /// The transpose, scaled by `scale`, into `out` (a counting sort by column).
    pub fn transpose_into(&self, scale: f32, out: &mut SparseRows) {
        let n = self.ncols;
        out.ncols = self.nrows();
        out.start.clear();
        out.start.resize(n + 1, 0);
        for &i in &self.index {
            out.start[i as usize + 1] += 1;
        }
        for i in 0..n {
            out.start[i + 1] += out.start[i];
        }
        out.index.resize(self.nnz(), 0);
        out.value.resize(self.nnz(), 0.0);
        let mut next = out.start[..n].to_vec();
        for r in 0..self.nrows() {
            let (idx, val) = self.entries(r);
            for (&i, &v) in idx.iter().zip(val) {
                let slot = &mut next[i as usize];
                out.index[*slot] = r as u32;
                out.value[*slot] = v * scale;
                *slot += 1;
            }
        }
    }

    /// The transpose (see [`SparseRows::transpose_into`]).
    pub fn transpose(&self) -> SparseRows {
        let mut out = SparseRows::default();
        self.transpose_into(1.0, &mut out);
        out
    }

    /// `out = self · w`. w: [ncols, n] row-major, out: [nrows, n] row-major.
    pub fn times_w(&self, w: ArrayView2<f32>, out: ArrayViewMut2<f32>) {
        self.product(w, out, 1.0, false);
    }

    /// `out += alpha · self · w`. w: [ncols, n] row-major, out: [nrows, n] row-major.
    pub fn times_w_add(&self, w: ArrayView2<f32>, alpha: f32, out: ArrayViewMut2<f32>) {
        self.product(w, out, alpha, true);
    }

    fn product(&self, w: ArrayView2<f32>, out: ArrayViewMut2<f32>, alpha: f32, accumulate: bool) {
        assert_eq!(w.nrows(), self.ncols, "inner dimensions");
        assert_eq!(out.dim(), (self.nrows(), w.ncols()), "output shape");
        let src = w.as_slice().expect("row-major right operand");
        let stride = w.ncols();
        let work = self.nnz() * stride;
        let threads = rayon::current_num_threads();
        let n = out.ncols();
        if threads <= 1 || work < PAR_MIN_WORK || n < 2 * TILE {
            gather_block(self, src, stride, out, 0, alpha, accumulate);
            return;
        }
        let block = n.div_ceil(threads).div_ceil(TILE) * TILE;
        let mut rest = out;
        rayon::scope(|s| {
            let mut col0 = 0;
            while col0 < n {
                let width = block.min(n - col0);
                let (part, tail) = rest.split_at(Axis(1), width);
                rest = tail;
                let c = col0;
                s.spawn(move |_| gather_block(self, src, stride, part, c, alpha, accumulate));
                col0 += width;
            }
        });
    }
}

/// acc = Σ_t val[t] · src[idx[t]·stride + col ..][..T]: T/16 (or T/8) independent vector
/// accumulators, one contiguous `src` segment per non-zero.
#[inline(always)]
fn tile_sum<F: Fma, const T: usize>(
    src: &[f32],
    stride: usize,
    col: usize,
    idx: &[u32],
    val: &[f32],
) -> [f32; T] {
    let mut acc = [0f32; T];
    for (&i, &x) in idx.iter().zip(val) {
        let off = i as usize * stride + col;
        let row: &[f32; T] = src[off..off + T].try_into().expect("slice of length T");
        for l in 0..T {
            acc[l] = F::fma(x, row[l], acc[l]);
        }
    }
    acc
}

/// Writes (or adds, scaled) one tile of the product for every row of `sp`.
#[inline(always)]
fn tile_rows<F: Fma, const T: usize>(
    sp: &SparseRows,
    src: &[f32],
    stride: usize,
    out: &mut ArrayViewMut2<f32>,
    c: usize,
    col: usize,
    alpha: f32,
    accumulate: bool,
) {
    for (r, mut row) in out.axis_iter_mut(Axis(0)).enumerate() {
        let (idx, val) = sp.entries(r);
        if accumulate && idx.is_empty() {
            continue;
        }
        let acc = tile_sum::<F, T>(src, stride, col, idx, val);
        let dst: &mut [f32; T] = (&mut row
            .as_slice_mut()
            .expect("rows of a column block are contiguous")[c..c + T])
            .try_into()
            .expect("slice of length T");
        for l in 0..T {
            dst[l] = if accumulate {
                F::fma(alpha, acc[l], dst[l])
            } else {
                alpha * acc[l]
            };
        }
    }
}

/// Columns `col0 ..` of the product for every row of `sp`, written to `out` (a column block):
/// the widest tiles the instruction set allows first, then narrower ones, then single columns.
#[inline(always)]
fn gather_block_body<F: Fma>(
    sp: &SparseRows,
    src: &[f32],
    stride: usize,
    mut out: ArrayViewMut2<f32>,
    col0: usize,
    alpha: f32,
    accumulate: bool,
) {
    let width = out.ncols();
    let mut c = 0;
    while c < width {
        let left = width - c;
        let step = if F::TILE >= 128 && left >= 128 {
            tile_rows::<F, 128>(sp, src, stride, &mut out, c, col0 + c, alpha, accumulate);
            128
        } else if F::TILE >= 64 && left >= 64 {
            tile_rows::<F, 64>(sp, src, stride, &mut out, c, col0 + c, alpha, accumulate);
            64
        } else if left >= 16 {
            tile_rows::<F, 16>(sp, src, stride, &mut out, c, col0 + c, alpha, accumulate);
            16
        } else {
            tile_rows::<F, 1>(sp, src, stride, &mut out, c, col0 + c, alpha, accumulate);
            1
        };
        c += step;
    }
}

dispatch!(fn gather_block(sp: &SparseRows, src: &[f32], stride: usize, out: ArrayViewMut2<f32>, col0: usize, alpha: f32, accumulate: bool) => gather_block_body);

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array2;

    fn naive(x: &Array2<f32>, w: &Array2<f32>) -> Array2<f64> {
        Array2::from_shape_fn((x.nrows(), w.ncols()), |(i, j)| {
            (0..x.ncols())
                .map(|k| x[[i, k]] as f64 * w[[k, j]] as f64)
                .sum::<f64>()
        })
    }

    #[test]
    fn sparse_products_match_the_naive_product_with_tails_and_threads() {
        // 500 output columns: 128-, 64- and 16-wide tiles plus single-column tails, split over
        // two threads; 20 % of the inputs non-zero, as in MNIST.
        let w = Array2::from_shape_fn((300, 500), |(i, j)| {
            ((i * 31 + j * 17) % 23) as f32 / 23.0 - 0.5
        });
        let x = Array2::from_shape_fn((60, 300), |(i, j)| {
            if (i * 7 + j * 13) % 5 == 0 {
                ((i + j) % 9) as f32 / 8.0
            } else {
                0.0
            }
        });
        let sp = SparseRows::from_dense(x.view(), 1.0);
        assert!((sp.density() - 0.2).abs() < 0.05);
        let want = naive(&x, &w);
        for threads in [1, 2] {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            let mut out = Array2::from_elem((60, 500), 9.0f32);
            pool.install(|| sp.times_w(w.view(), out.view_mut()));
            for (g, e) in out.iter().zip(want.iter()) {
                assert!(
                    (*g as f64 - e).abs() < 1e-4 * (1.0 + e.abs()),
                    "{threads} threads: {g} vs {e}"
                );
            }
            // out += 0.5 · xᵀ·p through the transpose, as the CD statistics use it.
            let p = Array2::from_shape_fn((60, 500), |(i, j)| ((i * 3 + j) % 10) as f32 / 10.0);
            let mut stats = Array2::from_elem((300, 500), 1.0f32);
            let mut cols = SparseRows::default();
            sp.transpose_into(0.5, &mut cols);
            pool.install(|| cols.times_w_add(p.view(), 1.0, stats.view_mut()));
            let want_stats = naive(&x.t().to_owned(), &p);
            for (g, e) in stats.iter().zip(want_stats.iter()) {
                assert!((*g as f64 - (1.0 + 0.5 * e)).abs() < 1e-4 * (1.0 + e.abs()));
            }
        }
    }

    #[test]
    fn gather_and_transpose_preserve_entries() {
        let x = Array2::from_shape_fn((5, 7), |(i, j)| {
            if (i + 2 * j) % 3 == 0 {
                (i * 7 + j) as f32
            } else {
                0.0
            }
        });
        let sp = SparseRows::from_dense(x.view(), 1.0);
        let mut batch = SparseRows::default();
        sp.gather_rows_into(&[3, 0], &mut batch);
        let eye = Array2::from_shape_fn((7, 7), |(i, j)| (i == j) as u8 as f32);
        let mut out = Array2::zeros((2, 7));
        batch.times_w(eye.view(), out.view_mut());
        assert_eq!(out.row(0), x.row(3));
        assert_eq!(out.row(1), x.row(0));
        let eye5 = Array2::from_shape_fn((5, 5), |(i, j)| (i == j) as u8 as f32);
        let mut xt = Array2::zeros((7, 5));
        sp.transpose().times_w(eye5.view(), xt.view_mut());
        assert_eq!(xt, x.t());
    }
}
