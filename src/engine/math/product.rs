//! Matrix products. Dense products go to faer (the fastest f32 GEMM measured on the target
//! machine, threaded over rayon's current pool). Products whose left operand is mostly zeros
//! (MNIST pixels are ~81 % zeros; sampled hidden states are often sparse too) instead add up
//! only the rows of the right operand that non-zeros select, which also makes single-image
//! inference a fast row-gathering GEMV.

use faer::linalg::matmul::matmul as faer_matmul;
use faer::{Accum, MatMut, MatRef, Par};
use ndarray::{ArrayView2, ArrayViewMut2, Axis};

use super::sparse::SparseRows;

/// Below this fraction of non-zeros the row-gathering kernels beat dense GEMM (measured: at
/// 19 % they take about half the time; per useful multiply-add they are ~3× slower).
const SPARSE_DENSITY: f32 = 0.3;
/// Up to this many rows a product is a few GEMVs, done by row gathering (on the team).
const GEMV_ROWS: usize = super::sparse::TEAM_ROWS;
/// Work (multiply-adds) below which a product stays on one thread.
pub(crate) const PAR_MIN_WORK: usize = 1 << 17;

/// `dst = alpha·lhs·rhs` (or `dst += alpha·lhs·rhs` when `accumulate`), any strides.
/// dst: [m, n], lhs: [m, k], rhs: [k, n].
///
/// With several threads the output is cut into one block per thread along its longer side
/// and each block is a sequential faer product: for the training shapes (m = 100) this runs
/// about 1.7× faster than faer's own parallel split. The cut depends only on the shape and the
/// thread count, so results are reproducible.
pub fn matmul(
    mut dst: ArrayViewMut2<f32>,
    accumulate: bool,
    lhs: ArrayView2<f32>,
    rhs: ArrayView2<f32>,
    alpha: f32,
) {
    let (m, k) = lhs.dim();
    let n = rhs.ncols();
    assert_eq!(rhs.nrows(), k, "inner dimensions");
    assert_eq!(dst.dim(), (m, n), "output shape");
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            dst.fill(0.0);
        }
        return;
    }
    let threads = rayon::current_num_threads();
    if threads <= 1 || (m * n * k) < PAR_MIN_WORK || m.max(n) < 64 {
        matmul_seq(dst, accumulate, lhs, rhs, alpha);
        return;
    }
    let axis = if n >= m { Axis(1) } else { Axis(0) };
    let len = dst.len_of(axis);
    let block = len.div_ceil(threads).div_ceil(16) * 16;
    rayon::scope(|s| {
        let mut start = 0;
        while start < len {
            let width = block.min(len - start);
            let (part, rest) = dst.split_at(axis, width);
            dst = rest;
            let range = start..start + width;
            let (l, r) = if axis == Axis(1) {
                (lhs, rhs.slice_move(ndarray::s![.., range]))
            } else {
                (lhs.slice_move(ndarray::s![range, ..]), rhs)
            };
            s.spawn(move |_| matmul_seq(part, accumulate, l, r, alpha));
            start += width;
        }
    });
}

fn matmul_seq(
    mut dst: ArrayViewMut2<f32>,
    accumulate: bool,
    lhs: ArrayView2<f32>,
    rhs: ArrayView2<f32>,
    alpha: f32,
) {
    let ((m, k), n) = (lhs.dim(), rhs.ncols());
    let (ds, ls, rs) = (dst.strides().to_vec(), lhs.strides(), rhs.strides());
    // SAFETY: each pointer, shape and element stride comes from a live ndarray view of
    // exactly that shape; `dst` is borrowed mutably for the call, so it aliases nothing.
    let (d, l, r) = unsafe {
        (
            MatMut::<f32>::from_raw_parts_mut(dst.as_mut_ptr(), m, n, ds[0], ds[1]),
            MatRef::<f32>::from_raw_parts(lhs.as_ptr(), m, k, ls[0], ls[1]),
            MatRef::<f32>::from_raw_parts(rhs.as_ptr(), k, n, rs[0], rs[1]),
        )
    };
    let beta = if accumulate {
        Accum::Add
    } else {
        Accum::Replace
    };
    faer_matmul(d, beta, l, r, alpha, Par::Seq);
}

/// Whether `x` is sparse enough for the gathering kernels, judged on its first rows.
pub fn looks_sparse(x: &ArrayView2<f32>) -> bool {
    let head = x.slice(ndarray::s![..x.nrows().min(16), ..]);
    let nnz = head.iter().filter(|&&v| v != 0.0).count();
    (nnz as f32) < SPARSE_DENSITY * head.len().max(1) as f32
}

/// Whether gathering kernels beat dense GEMM for whole batches of sparse rows on this CPU.
/// Measured for a 100×784 MNIST batch against 784×500 weights: on the AVX-512 Xeon dense GEMM
/// takes 0.30–0.42 ms and the 128-wide gathering kernel 0.52 ms (one thread); on AVX2 machines
/// the reference measurements found gathering about 2× faster than dense. Depends on the CPU
/// alone, so results stay reproducible on a given machine.
pub fn sparse_batches_pay_off() -> bool {
    !super::simd::has_avx512()
}

/// `out = x·w`. x: [batch, k], w: [k, n], out: [batch, n].
///
/// Gathers rows of `w` for the non-zeros of `x` when `x` has few rows (a GEMV), or is sparse
/// and [`sparse_batches_pay_off`], and `w` is row-major; dense GEMM otherwise.
pub fn x_times_w(x: ArrayView2<f32>, w: ArrayView2<f32>, out: ArrayViewMut2<f32>) {
    assert_eq!(x.ncols(), w.nrows(), "inner dimensions");
    assert_eq!(out.dim(), (x.nrows(), w.ncols()), "output shape");
    if w.is_standard_layout()
        && out.is_standard_layout()
        && (x.nrows() <= GEMV_ROWS || (sparse_batches_pay_off() && looks_sparse(&x)))
    {
        SparseRows::from_dense(x, 1.0).times_w(w, out);
    } else {
        matmul(out, false, x, w, 1.0);
    }
}

/// `out += alpha · xᵀ·p`. x: [batch, k], p: [batch, n], out: [k, n].
///
/// The statistics <v_i h_j> of contrastive divergence: for sparse `x` each row of `out`
/// gathers the rows of `p` where column i of `x` is non-zero.
pub fn xt_times_p_add(x: ArrayView2<f32>, p: ArrayView2<f32>, alpha: f32, out: ArrayViewMut2<f32>) {
    assert_eq!(x.nrows(), p.nrows(), "batch sizes");
    assert_eq!(out.dim(), (x.ncols(), p.ncols()), "output shape");
    if p.is_standard_layout()
        && out.is_standard_layout()
        && sparse_batches_pay_off()
        && looks_sparse(&x)
    {
        SparseRows::from_dense(x, 1.0)
            .transpose()
            .times_w_add(p, alpha, out);
    } else {
        matmul(out, true, x.t(), p, alpha);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array2;

    fn naive(x: &Array2<f32>, w: &Array2<f32>) -> Array2<f32> {
        Array2::from_shape_fn((x.nrows(), w.ncols()), |(i, j)| {
            (0..x.ncols())
                .map(|k| x[[i, k]] as f64 * w[[k, j]] as f64)
                .sum::<f64>() as f32
        })
    }

    fn sparse_matrix(rows: usize, cols: usize, keep_every: usize) -> Array2<f32> {
        Array2::from_shape_fn((rows, cols), |(i, j)| {
            if (i * 7 + j * 3) % keep_every == 0 {
                ((i + 2 * j) % 11) as f32 / 10.0
            } else {
                0.0
            }
        })
    }

    fn assert_close(a: &Array2<f32>, b: &Array2<f32>) {
        assert_eq!(a.dim(), b.dim());
        for (x, y) in a.iter().zip(b) {
            assert!((x - y).abs() <= 1e-4 * (1.0 + y.abs()), "{x} vs {y}");
        }
    }

    #[test]
    fn sparse_dense_and_gemv_paths_agree_with_naive_product() {
        let w = Array2::from_shape_fn((70, 90), |(i, j)| {
            ((i * 31 + j * 17) % 23) as f32 / 23.0 - 0.5
        });
        for (rows, keep) in [(1, 1), (3, 5), (40, 7), (40, 1)] {
            let x = sparse_matrix(rows, 70, keep);
            let mut out = Array2::zeros((rows, 90));
            x_times_w(x.view(), w.view(), out.view_mut());
            assert_close(&out, &naive(&x, &w));
            // Transposed right operand takes the dense path.
            let wt = w.t().to_owned();
            x_times_w(x.view(), wt.t(), out.view_mut());
            assert_close(&out, &naive(&x, &w));
        }
    }

    #[test]
    fn threaded_dense_products_match_the_naive_product_on_both_split_axes() {
        // Training-sized shapes, large enough for the per-thread split: columns are cut when
        // n >= m, rows when m > n; one operand transposed as CD uses it.
        let w = Array2::from_shape_fn((784, 500), |(i, j)| {
            ((i * 31 + j * 17) % 23) as f32 / 23.0 - 0.5
        });
        let x = Array2::from_shape_fn((100, 784), |(i, j)| ((i * 5 + j * 3) % 13) as f32 / 13.0);
        let p = Array2::from_shape_fn((100, 500), |(i, j)| ((i * 11 + j) % 7) as f32 / 7.0);
        let two = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap();
        let mut out = Array2::zeros((100, 500));
        two.install(|| matmul(out.view_mut(), false, x.view(), w.view(), 1.0));
        assert_close(&out, &naive(&x, &w));
        let mut stats = Array2::from_elem((784, 500), 0.5f32);
        two.install(|| matmul(stats.view_mut(), true, x.t(), p.view(), 2.0));
        let want = naive(&x.t().to_owned(), &p).mapv(|v| 0.5 + 2.0 * v);
        assert_close(&stats, &want);
    }

    #[test]
    fn transposed_statistics_accumulate_in_both_paths() {
        let p = Array2::from_shape_fn((40, 90), |(i, j)| ((i * 13 + j) % 17) as f32 / 17.0);
        for keep in [7, 1] {
            let x = sparse_matrix(40, 70, keep);
            let mut out = Array2::from_elem((70, 90), 1.0f32);
            xt_times_p_add(x.view(), p.view(), -0.5, out.view_mut());
            let want = naive(&x.t().to_owned(), &p).mapv(|v| 1.0 - 0.5 * v);
            assert_close(&out, &want);
        }
    }

    #[test]
    fn parallel_column_blocks_match_single_thread() {
        let w = Array2::from_shape_fn((784, 500), |(i, j)| {
            ((i * 31 + j * 17) % 23) as f32 / 23.0 - 0.5
        });
        let x = sparse_matrix(100, 784, 6);
        let one = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap();
        let two = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap();
        let mut a = Array2::zeros((100, 500));
        let mut b = Array2::zeros((100, 500));
        one.install(|| x_times_w(x.view(), w.view(), a.view_mut()));
        two.install(|| x_times_w(x.view(), w.view(), b.view_mut()));
        assert_eq!(a, b, "column blocks change no summation order");
        assert_close(&a, &naive(&x, &w));
    }
}
