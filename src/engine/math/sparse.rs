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
use super::team::{self, Team};

/// Column blocks handed to threads are multiples of this.
pub(crate) const TILE: usize = 16;
/// Products of up to this many rows go to the persistent team when they are large enough
/// (measured on the 784-500-500-2000 model: 4 to 16 rows cost the same per image as one, so
/// from 5 rows the GEMM paths, which reuse weights across rows in registers, take over).
pub(crate) const TEAM_ROWS: usize = 4;
/// Multiply-adds from which a few-row product is split over the team (a fork and join costs
/// about a microsecond; 32k multiply-adds take about ten on one core).
const TEAM_MIN_WORK: usize = 1 << 15;

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
        let n = out.ncols();
        if self.nrows() <= TEAM_ROWS && work >= TEAM_MIN_WORK && n >= 2 * TILE {
            // A few rows (one image's layer): split by columns over the persistent team, so
            // each core always reads the same columns of `w`.
            let team = Team::global();
            let blocks: Vec<_> = team::split(n, team.parts(), TILE).collect();
            let (idx, vals) = common_columns(self);
            let vals: Vec<&[f32]> = vals.iter().map(Vec::as_slice).collect();
            let mut parts = Vec::with_capacity(blocks.len());
            let mut rest = out;
            for range in blocks {
                let (part, tail) = rest.split_at(Axis(1), range.len());
                rest = tail;
                parts.push((part, range.start));
            }
            team.map(parts, |_, (mut view, col0)| {
                if view.ncols() > 0 {
                    let mut rows: Vec<&mut [f32]> = view
                        .axis_iter_mut(Axis(0))
                        .map(|r| r.into_slice().expect("output rows are contiguous"))
                        .collect();
                    rows_block(&idx, &vals, src, stride, col0, &mut rows, alpha, accumulate);
                }
            });
            return;
        }
        let threads = rayon::current_num_threads();
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

/// Columns `col0 ..` of a few sparse rows that share their non-zero columns `idx` (one value
/// row per output row in `vals`), times `src`, written (or added, scaled) to `outs`. Streams
/// four rows of `src` at a time through the whole block, front to back, which the prefetchers
/// follow, and applies each group to every output row while it is in L1; every column sums
/// its terms in the order of the non-zeros, exactly as [`gather_block`] does.
#[inline(always)]
fn rows_block_body<F: Fma>(
    idx: &[u32],
    vals: &[&[f32]],
    src: &[f32],
    stride: usize,
    col0: usize,
    outs: &mut [&mut [f32]],
    alpha: f32,
    accumulate: bool,
) {
    let w = outs.first().map_or(0, |o| o.len());
    let mut accs = vec![vec![0f32; w]; vals.len()];
    let seg = |t: usize| {
        let off = idx[t] as usize * stride + col0;
        &src[off..off + w]
    };
    let mut t = 0;
    while t + 4 <= idx.len() {
        let (r0, r1, r2, r3) = (seg(t), seg(t + 1), seg(t + 2), seg(t + 3));
        for (acc, val) in accs.iter_mut().zip(vals) {
            let (x0, x1, x2, x3) = (val[t], val[t + 1], val[t + 2], val[t + 3]);
            let acc = &mut acc[..w];
            for ((((a, &w0), &w1), &w2), &w3) in acc.iter_mut().zip(r0).zip(r1).zip(r2).zip(r3) {
                let s = F::fma(x0, w0, *a);
                let s = F::fma(x1, w1, s);
                let s = F::fma(x2, w2, s);
                *a = F::fma(x3, w3, s);
            }
        }
        t += 4;
    }
    while t < idx.len() {
        let r = seg(t);
        for (acc, val) in accs.iter_mut().zip(vals) {
            let x = val[t];
            for (a, &wj) in acc.iter_mut().zip(r) {
                *a = F::fma(x, wj, *a);
            }
        }
        t += 1;
    }
    for (out, acc) in outs.iter_mut().zip(&accs) {
        for (o, a) in out.iter_mut().zip(acc) {
            *o = if accumulate {
                F::fma(alpha, *a, *o)
            } else {
                alpha * *a
            };
        }
    }
}

dispatch!(fn rows_block(idx: &[u32], vals: &[&[f32]], src: &[f32], stride: usize, col0: usize, outs: &mut [&mut [f32]], alpha: f32, accumulate: bool) => rows_block_body);

/// A few sparse rows as one list of columns (the union of their non-zeros) with a value row
/// per input row, zeros filled in: the form [`rows_block`] takes. A zero term adds exactly
/// nothing, so each output is the same as from the row alone.
fn common_columns(sp: &SparseRows) -> (Vec<u32>, Vec<Vec<f32>>) {
    let mut idx: Vec<u32> = (0..sp.nrows())
        .flat_map(|r| sp.entries(r).0.iter().copied())
        .collect();
    idx.sort_unstable();
    idx.dedup();
    let vals = (0..sp.nrows())
        .map(|r| {
            let (ri, rv) = sp.entries(r);
            let mut row = vec![0f32; idx.len()];
            let mut at = 0;
            for (&i, &v) in ri.iter().zip(rv) {
                while idx[at] != i {
                    at += 1;
                }
                row[at] = v;
            }
            row
        })
        .collect();
    (idx, vals)
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
    fn few_row_products_on_the_team_equal_the_one_thread_product_bit_for_bit() {
        // 1 and 3 dense rows against 500 columns: enough work for the team's column split.
        let w = Array2::from_shape_fn((400, 500), |(i, j)| {
            ((i * 29 + j * 13) % 31) as f32 / 31.0 - 0.5
        });
        // 3 rows with different zeros (their union of columns) and 4 rows without zeros
        // (like hidden probabilities) go through the block together.
        for (rows, offset) in [(1, 0.0), (3, 0.0), (4, 0.05)] {
            let x = Array2::from_shape_fn((rows, 400), |(i, j)| {
                offset + ((i + j * 7) % 10) as f32 / 9.0
            });
            let sp = SparseRows::from_dense(x.view(), 1.0);
            assert!(sp.nnz() * 500 >= TEAM_MIN_WORK);
            let mut split = Array2::from_elem((rows, 500), 3.0f32);
            sp.times_w(w.view(), split.view_mut());
            let mut alone = Array2::zeros((rows, 500));
            gather_block(
                &sp,
                w.as_slice().unwrap(),
                500,
                alone.view_mut(),
                0,
                1.0,
                false,
            );
            assert_eq!(split, alone, "{rows} rows");
            let want = naive(&x, &w);
            for (g, e) in split.iter().zip(want.iter()) {
                assert!((*g as f64 - e).abs() < 1e-4 * (1.0 + e.abs()));
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
