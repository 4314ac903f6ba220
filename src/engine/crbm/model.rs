//! The conditional RBM's extra parameters and its two conditionals. Given the previous n
//! frames p = (v_{t−1}, …, v_{t−n}) concatenated, the frame v_t and the hidden units h_t form
//! an ordinary RBM whose biases move with the past (Taylor, Hinton & Roweis 2006):
//! b̃ = b + p·A (visible) and c̃ = c + p·B (hidden). A are the autoregressive weights from past
//! frames to the visible units, B the weights from past frames to the hidden units.

use ndarray::{Array1, Array2, ArrayView2, Axis, Zip};
use rand::Rng;

use crate::engine::error::{EngineError, Result};
use crate::engine::math::{fill_normal, matmul, sigmoid_bias_rows};
use crate::engine::rbm::{Rbm, Units};

/// The weights from the previous `order` frames of one layer's visible units.
#[derive(Debug, Clone, PartialEq)]
pub struct Conditioning {
    /// A: [order·V, V]. Row block k (0-based) holds the weights from frame t−1−k.
    pub past_visible: Array2<f32>,
    /// B: [order·V, H].
    pub past_hidden: Array2<f32>,
}

impl Conditioning {
    /// Weights drawn from N(0, init_std²) for a layer of `visible` and `hidden` units.
    pub fn random<R: Rng + ?Sized>(
        order: usize,
        visible: usize,
        hidden: usize,
        init_std: f32,
        rng: &mut R,
    ) -> Self {
        let draw = |rows: usize, cols: usize, rng: &mut R| {
            let mut w = vec![0.0f32; rows * cols];
            fill_normal(rng, &mut w, 0.0, init_std);
            Array2::from_shape_vec((rows, cols), w).expect("sized above")
        };
        Conditioning {
            past_visible: draw(order * visible, visible, rng),
            past_hidden: draw(order * visible, hidden, rng),
        }
    }

    /// Checks the shapes for `order` past frames of `rbm`'s visible units, and the values.
    pub fn check_order(&self, order: usize, rbm: &Rbm, layer: usize) -> Result<()> {
        let (v, h) = (rbm.n_visible(), rbm.n_hidden());
        if self.past_visible.dim() != (order * v, v) || self.past_hidden.dim() != (order * v, h) {
            return Err(EngineError::Model(format!(
                "layer {layer}: conditioning weights of shape {:?} and {:?} do not fit order \
                 {order} with {v} visible and {h} hidden units",
                self.past_visible.dim(),
                self.past_hidden.dim()
            )));
        }
        if !self
            .past_visible
            .iter()
            .chain(&self.past_hidden)
            .all(|x| x.is_finite())
        {
            return Err(EngineError::Model(format!(
                "layer {layer}: conditioning weights are not finite"
            )));
        }
        Ok(())
    }
}

/// What makes a stack of RBMs a stack of conditional RBMs: the order and each layer's
/// conditioning weights. Layer l's past is the previous `order` states of its visible units.
#[derive(Debug, Clone, PartialEq)]
pub struct Temporal {
    pub order: usize,
    pub layers: Vec<Conditioning>,
}

/// The largest order accepted.
pub const MAX_ORDER: usize = 32;

impl Temporal {
    /// Checks the conditioning against the stack: one per layer, shapes, finite values;
    /// the layers must be free of label units and lateral weights, with binary hidden units.
    pub fn check(&self, layers: &[Rbm]) -> Result<()> {
        if !(1..=MAX_ORDER).contains(&self.order) {
            return Err(EngineError::Model(format!(
                "order {} is outside 1..={MAX_ORDER}",
                self.order
            )));
        }
        if self.layers.len() != layers.len() {
            return Err(EngineError::Model(format!(
                "{} conditioning blocks for {} layers",
                self.layers.len(),
                layers.len()
            )));
        }
        for (l, (cond, rbm)) in self.layers.iter().zip(layers).enumerate() {
            if rbm.label_units > 0 || rbm.lateral.is_some() || !rbm.hidden_units.is_binary() {
                return Err(EngineError::Model(format!(
                    "layer {l}: a conditional RBM has no label units or lateral weights and \
                     binary hidden units"
                )));
            }
            cond.check_order(self.order, rbm, l)?;
        }
        Ok(())
    }
}

/// One layer seen as a conditional RBM.
#[derive(Debug, Clone, Copy)]
pub struct Crbm<'a> {
    pub rbm: &'a Rbm,
    pub cond: &'a Conditioning,
}

/// The biases of a batch of frames, each set by its own past: visible [B, V], hidden [B, H].
#[derive(Debug, Clone, PartialEq)]
pub struct DynamicBiases {
    pub visible: Array2<f32>,
    pub hidden: Array2<f32>,
}

impl<'a> Crbm<'a> {
    pub fn n_visible(&self) -> usize {
        self.rbm.n_visible()
    }

    pub fn n_hidden(&self) -> usize {
        self.rbm.n_hidden()
    }

    /// b̃ = b + p·A and c̃ = c + p·B for every row of `past` ([B, order·V]).
    pub fn biases(&self, past: ArrayView2<f32>) -> DynamicBiases {
        let shift = |bias: &Array1<f32>, weights: &Array2<f32>| {
            let mut out = Array2::zeros((past.nrows(), bias.len()));
            out += bias;
            matmul(out.view_mut(), true, past, weights.view(), 1.0);
            out
        };
        DynamicBiases {
            visible: shift(&self.rbm.visible_bias, &self.cond.past_visible),
            hidden: shift(&self.rbm.hidden_bias, &self.cond.past_hidden),
        }
    }

    /// p(h_j = 1 | v, past) = σ(c̃_j + Σ_i v_i w_ij) for every row.
    pub fn hidden_means(&self, v: ArrayView2<f32>, biases: &DynamicBiases) -> Array2<f32> {
        let mut out = biases.hidden.clone();
        matmul(out.view_mut(), true, v, self.rbm.weights.view(), 1.0);
        let zero = Array1::zeros(out.ncols());
        sigmoid_bias_rows(out.view_mut(), zero.view());
        out
    }

    /// E[v_i | h, past]: b̃_i + Σ_j w_ij h_j for Gaussian units (unit variance), its logistic
    /// for binary ones.
    pub fn visible_means(&self, h: ArrayView2<f32>, biases: &DynamicBiases) -> Array2<f32> {
        let mut out = biases.visible.clone();
        matmul(out.view_mut(), true, h, self.rbm.weights.t(), 1.0);
        self.activate_visible(out)
    }

    /// E[v | h = 0, past]: the autoregressive part alone, every hidden unit off.
    pub fn autoregressive_means(&self, biases: &DynamicBiases) -> Array2<f32> {
        self.activate_visible(biases.visible.clone())
    }

    /// Visible means from total inputs: the inputs themselves for Gaussian units.
    fn activate_visible(&self, mut x: Array2<f32>) -> Array2<f32> {
        if self.rbm.visible_units.is_binary() {
            let zero = Array1::zeros(x.ncols());
            sigmoid_bias_rows(x.view_mut(), zero.view());
        }
        x
    }

    /// The free energy of each frame given its past, in f64: for Gaussian visible units
    /// Σ_i (v_i − b̃_i)²/2 − Σ_j softplus(c̃_j + v·w_j), for binary ones −v·b̃ − Σ_j softplus(…).
    /// p(v | past) ∝ exp(−F), so differences of F between frames of one past are exact.
    pub fn free_energy(&self, v: ArrayView2<f32>, biases: &DynamicBiases) -> Array1<f64> {
        let mut input = biases.hidden.clone();
        matmul(input.view_mut(), true, v, self.rbm.weights.view(), 1.0);
        let gaussian = self.rbm.visible_units == Units::Gaussian;
        let mut out = Array1::zeros(v.nrows());
        Zip::from(&mut out)
            .and(v.axis_iter(Axis(0)))
            .and(biases.visible.axis_iter(Axis(0)))
            .and(input.axis_iter(Axis(0)))
            .for_each(|f, v, b, x| {
                let visible: f64 = if gaussian {
                    v.iter()
                        .zip(b)
                        .map(|(&v, &b)| 0.5 * (v as f64 - b as f64).powi(2))
                        .sum()
                } else {
                    -v.iter()
                        .zip(b)
                        .map(|(&v, &b)| v as f64 * b as f64)
                        .sum::<f64>()
                };
                let hidden: f64 = x
                    .iter()
                    .map(|&x| crate::engine::math::softplus64(x as f64))
                    .sum();
                *f = visible - hidden;
            });
        out
    }
}

/// The past of each target row of `frames` ([N, V]): rows t−1, …, t−order side by side,
/// most recent first. `targets` are row indices at least `order` into their sequence.
pub fn gather_past(frames: ArrayView2<f32>, targets: &[usize], order: usize) -> Array2<f32> {
    let v = frames.ncols();
    let mut out = Array2::zeros((targets.len(), order * v));
    for (mut row, &t) in out.axis_iter_mut(Axis(0)).zip(targets) {
        for k in 0..order {
            row.slice_mut(ndarray::s![k * v..(k + 1) * v])
                .assign(&frames.row(t - 1 - k));
        }
    }
    out
}

/// Frames t−1, …, t−order of a batch of sequences held time-major (`frames[t]` is frame t of
/// every sequence, [B, V]), side by side most recent first: [B, order·V], as
/// [`gather_past`] lays out the past of a training window.
pub fn stack_past(frames: &[Array2<f32>], t: usize, order: usize) -> Array2<f32> {
    let views: Vec<ArrayView2<f32>> = (1..=order).map(|k| frames[t - k].view()).collect();
    ndarray::concatenate(Axis(1), &views).expect("frames of one layer have one width")
}

/// Rows of `frames` at `targets`.
pub fn gather_rows(frames: ArrayView2<f32>, targets: &[usize]) -> Array2<f32> {
    frames.select(Axis(0), targets)
}
