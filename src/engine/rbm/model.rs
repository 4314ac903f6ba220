//! The RBM itself: parameters, the two conditionals (seed Eqs. 2 and 3), free energy and
//! mean-field reconstruction, for binary or Gaussian units on either side.

use ndarray::{s, Array1, Array2, ArrayView2, ArrayViewMut2, Axis};
use rand::Rng;
use rayon::prelude::*;

use super::Units;
use crate::engine::error::{EngineError, Result};
use crate::engine::math::{self, fill_normal, sample_categorical_rows};

/// An RBM with `n_visible` visible and `n_hidden` hidden units. The last `label_units`
/// visible units (possibly none) form one softmax group: exactly one of them is on. The
/// other visible units and the hidden units are binary unless `visible_units` or
/// `hidden_units` says Gaussian (at most one side: two Gaussian sides have no proper
/// distribution in general).
#[derive(Debug, Clone, PartialEq)]
pub struct Rbm {
    /// weights: [n_visible, n_hidden]
    pub weights: Array2<f32>,
    /// visible_bias: [n_visible]
    pub visible_bias: Array1<f32>,
    /// hidden_bias: [n_hidden]
    pub hidden_bias: Array1<f32>,
    /// Size of the softmax group at the end of the visible layer (0 for none).
    pub label_units: usize,
    /// The kind of the visible units before the softmax group (default binary).
    pub visible_units: Units,
    /// The kind of the hidden units (default binary).
    pub hidden_units: Units,
    /// Lateral connections between the binary feature units ([F, F], symmetric, zero
    /// diagonal): a semi-restricted Boltzmann machine (see `lateral.rs`).
    pub lateral: Option<Array2<f32>>,
}

/// Rows per chunk when a whole dataset goes through a conditional.
const CHUNK_ROWS: usize = 2000;

impl Rbm {
    /// A new RBM with weights drawn from N(0, init_std²) and zero biases.
    pub fn new<R: Rng + ?Sized>(
        n_visible: usize,
        n_hidden: usize,
        label_units: usize,
        init_std: f32,
        rng: &mut R,
    ) -> Result<Self> {
        if n_visible == 0 || n_hidden == 0 {
            return Err(EngineError::invalid(
                "layer size",
                "an RBM needs at least one visible and one hidden unit",
            ));
        }
        if label_units > n_visible {
            return Err(EngineError::invalid(
                "label_units",
                "more label units than visible units",
            ));
        }
        let mut w = vec![0.0f32; n_visible * n_hidden];
        fill_normal(rng, &mut w, 0.0, init_std);
        Ok(Rbm {
            weights: Array2::from_shape_vec((n_visible, n_hidden), w).expect("sized above"),
            visible_bias: Array1::zeros(n_visible),
            hidden_bias: Array1::zeros(n_hidden),
            label_units,
            visible_units: Units::Binary,
            hidden_units: Units::Binary,
            lateral: None,
        })
    }

    /// The same RBM with the given unit kinds; both Gaussian is refused.
    pub fn with_units(mut self, visible: Units, hidden: Units) -> Result<Self> {
        if !visible.is_binary() && !hidden.is_binary() {
            return Err(EngineError::invalid(
                "units",
                "an RBM cannot have Gaussian units on both sides",
            ));
        }
        if !hidden.is_binary() && self.label_units > 0 {
            return Err(EngineError::invalid(
                "units",
                "label units need binary hidden units (free-energy classification sums them \
                 out as binary)",
            ));
        }
        self.visible_units = visible;
        self.hidden_units = hidden;
        Ok(self)
    }

    pub fn n_visible(&self) -> usize {
        self.weights.nrows()
    }

    pub fn n_hidden(&self) -> usize {
        self.weights.ncols()
    }

    /// The number of Bernoulli visible units (those before the softmax group).
    pub fn n_features(&self) -> usize {
        self.n_visible() - self.label_units
    }

    /// Rejects a batch that does not fit the visible layer or holds NaN/inf.
    pub fn check_visible(&self, v: &ArrayView2<f32>) -> Result<()> {
        if v.ncols() != self.n_visible() {
            return Err(EngineError::Shape(format!(
                "{} values per example, the visible layer has {}",
                v.ncols(),
                self.n_visible()
            )));
        }
        if v.iter().any(|x| !x.is_finite()) {
            return Err(EngineError::invalid("input", "values must be finite"));
        }
        Ok(())
    }

    /// p(h_j = 1 | v) = σ(c_j + Σ_i v_i w_ij) (seed Eq. 2), or for Gaussian hidden units
    /// their mean c_j + Σ_i v_i w_ij. v: [batch, V] → out: [batch, H].
    pub fn hidden_probs_into(&self, v: ArrayView2<f32>, mut out: ArrayViewMut2<f32>) {
        math::x_times_w(v, self.weights.view(), out.view_mut());
        self.activate_hidden(out);
    }

    /// Adds the hidden biases to the total inputs a product left in `x` and applies the
    /// hidden units' activation. x: [batch, H].
    pub fn activate_hidden(&self, x: ArrayViewMut2<f32>) {
        self.hidden_units.activate(x, self.hidden_bias.view());
    }

    /// Draws hidden states from their means (see [`Units::sample`]). [batch, H].
    pub fn sample_hidden_into<R: Rng + ?Sized>(
        &self,
        rng: &mut R,
        means: ArrayView2<f32>,
        out: ArrayViewMut2<f32>,
    ) {
        self.hidden_units.sample(rng, means, out);
    }

    /// p(h | v) for a batch, allocated. v: [batch, V] → [batch, H].
    pub fn hidden_probs(&self, v: ArrayView2<f32>) -> Array2<f32> {
        let mut out = Array2::zeros((v.nrows(), self.n_hidden()));
        self.hidden_probs_into(v, out.view_mut());
        out
    }

    /// p(h | v) for a whole dataset, in chunks so that the sparse kernels' work lists stay small.
    pub fn hidden_probs_all(&self, v: ArrayView2<f32>) -> Array2<f32> {
        let mut out = Array2::zeros((v.nrows(), self.n_hidden()));
        for (vc, oc) in v
            .axis_chunks_iter(Axis(0), CHUNK_ROWS)
            .zip(out.axis_chunks_iter_mut(Axis(0), CHUNK_ROWS))
        {
            self.hidden_probs_into(vc, oc);
        }
        out
    }

    /// p(v | h) (seed Eq. 3): logistic for binary units, the mean b_i + Σ_j w_ij h_j for
    /// Gaussian ones, softmax over the label group. h: [batch, H] → out: [batch, V].
    pub fn visible_probs_into(&self, h: ArrayView2<f32>, mut out: ArrayViewMut2<f32>) {
        math::matmul(out.view_mut(), false, h, self.weights.t(), 1.0);
        let f = self.n_features();
        if self.lateral.is_some() {
            let mut x = out.slice_mut(s![.., ..f]);
            x += &self.visible_bias.slice(s![..f]);
            self.settle(x);
        } else {
            self.visible_units
                .activate(out.slice_mut(s![.., ..f]), self.visible_bias.slice(s![..f]));
        }
        if self.label_units > 0 {
            math::softmax_bias_rows(out.slice_mut(s![.., f..]), self.visible_bias.slice(s![f..]));
        }
    }

    /// p(v | h) for a batch, allocated. h: [batch, H] → [batch, V].
    pub fn visible_probs(&self, h: ArrayView2<f32>) -> Array2<f32> {
        let mut out = Array2::zeros((h.nrows(), self.n_visible()));
        self.visible_probs_into(h, out.view_mut());
        out
    }

    /// Samples visible states from their means: independent Bernoulli draws (or Gaussian
    /// draws of unit variance), and one one-hot draw for the softmax group.
    pub fn sample_visible_into<R: Rng + ?Sized>(
        &self,
        rng: &mut R,
        probs: ArrayView2<f32>,
        mut out: ArrayViewMut2<f32>,
    ) {
        let f = self.n_features();
        self.visible_units
            .sample(rng, probs.slice(s![.., ..f]), out.slice_mut(s![.., ..f]));
        if self.label_units > 0 {
            sample_categorical_rows(rng, probs.slice(s![.., f..]), out.slice_mut(s![.., f..]));
        }
    }

    /// Free energy F(v) = −Σ_i b_i v_i − Σ_j ln(1 + e^{c_j + Σ_i v_i w_ij}), so that
    /// p(v) = e^{−F(v)} / Z. Gaussian visible units contribute Σ_i (v_i − b_i)²/2 instead of
    /// −b_i v_i; Gaussian hidden units −x_j²/2 instead of −ln(1 + e^{x_j}), with
    /// x_j = c_j + Σ_i v_i w_ij (dropping the constant ln √(2π) per unit).
    /// v: [batch, V] → [batch].
    pub fn free_energy(&self, v: ArrayView2<f32>) -> Array1<f32> {
        let mut x = Array2::zeros((v.nrows(), self.n_hidden()));
        math::x_times_w(v, self.weights.view(), x.view_mut());
        let hb = self
            .hidden_bias
            .as_slice()
            .expect("owned array is contiguous");
        let f = self.n_features();
        let mut out = match self.visible_units {
            Units::Binary => v.dot(&self.visible_bias).mapv(|e| -e),
            Units::Gaussian => {
                let labels = v.slice(s![.., f..]).dot(&self.visible_bias.slice(s![f..]));
                let b = self.visible_bias.slice(s![..f]);
                Array1::from_iter(v.slice(s![.., ..f]).rows().into_iter().zip(&labels).map(
                    |(row, &l)| {
                        let sq: f32 = row.iter().zip(&b).map(|(&v, &b)| (v - b) * (v - b)).sum();
                        0.5 * sq - l
                    },
                ))
            }
        };
        for (f, e) in out.iter_mut().zip(self.lateral_energy(v)) {
            *f += e;
        }
        let hidden = self.hidden_units;
        out.as_slice_mut()
            .expect("owned array is contiguous")
            .par_iter_mut()
            .zip(x.axis_iter(Axis(0)).into_par_iter())
            .for_each(|(f, row)| {
                let row = row.as_slice().expect("row of an owned array");
                *f -= match hidden {
                    Units::Binary => math::softplus_sum_shifted(row, hb),
                    Units::Gaussian => row
                        .iter()
                        .zip(hb)
                        .map(|(&x, &c)| 0.5 * (x + c) * (x + c))
                        .sum(),
                };
            });
        out
    }

    /// Mean-field reconstruction p(v | p(h | v)). v: [batch, V] → [batch, V].
    pub fn reconstruct(&self, v: ArrayView2<f32>) -> Array2<f32> {
        self.visible_probs(self.hidden_probs(v).view())
    }

    /// Mean over examples of Σ_i (v_i − v̂_i)² with v̂ the mean-field reconstruction.
    pub fn reconstruction_error(&self, v: ArrayView2<f32>) -> f64 {
        if v.nrows() == 0 {
            return 0.0;
        }
        let mut total = 0.0f64;
        for chunk in v.axis_chunks_iter(Axis(0), CHUNK_ROWS) {
            let r = self.reconstruct(chunk);
            total += squared_distance(chunk, r.view());
        }
        total / v.nrows() as f64
    }

    /// Visible biases from the data: b_i = ln(p_i / (1 − p_i)) with p_i the mean of unit i
    /// (clipped to [1e-3, 1 − 1e-3]); b_i = the mean for Gaussian units; for the softmax group
    /// b_k = ln p_k.
    pub fn init_visible_bias_from_data(&mut self, data: ArrayView2<f32>) {
        let Some(mean) = data.mean_axis(Axis(0)) else {
            return;
        };
        let f = self.n_features();
        let gaussian = !self.visible_units.is_binary();
        for (i, (&m, b)) in mean.iter().zip(self.visible_bias.iter_mut()).enumerate() {
            let p = m.clamp(1e-3, 1.0 - 1e-3);
            *b = match (i < f, gaussian) {
                (true, true) => m,
                (true, false) => (p / (1.0 - p)).ln(),
                (false, _) => p.ln(),
            };
        }
    }

    /// True when every parameter is finite.
    pub fn is_finite(&self) -> bool {
        self.weights
            .iter()
            .chain(&self.visible_bias)
            .chain(&self.hidden_bias)
            .chain(self.lateral.iter().flatten())
            .all(|x| x.is_finite())
    }
}

/// Σ (a − b)² over all elements, in f64.
pub(crate) fn squared_distance(a: ArrayView2<f32>, b: ArrayView2<f32>) -> f64 {
    a.iter()
        .zip(b.iter())
        .map(|(&x, &y)| ((x - y) as f64).powi(2))
        .sum()
}
