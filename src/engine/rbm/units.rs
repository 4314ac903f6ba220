//! The kinds of unit a layer of an RBM can have: binary (logistic) units, and Gaussian units
//! of unit variance for real-valued data (Hinton & Salakhutdinov 2006; "A Practical Guide to
//! Training RBMs", section 13.2), whose mean is their total input.

use ndarray::{ArrayView1, ArrayView2, ArrayViewMut2, Axis, Zip};
use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::engine::math::{fill_normal, sample_bernoulli, sigmoid_bias_rows};

/// How a layer of units turns its total input into a state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Units {
    /// Stochastic binary units: p(s = 1) = σ(input); the mean is that probability.
    #[default]
    Binary,
    /// Real-valued units drawn from N(input, 1): the mean is the total input itself. For
    /// data, standardise it first (zero mean, unit variance per unit).
    Gaussian,
}

impl Units {
    /// Turns the total input `x` (bias not yet added) into the units' means, in place.
    pub fn activate(self, mut x: ArrayViewMut2<f32>, bias: ArrayView1<f32>) {
        match self {
            Units::Binary => sigmoid_bias_rows(x, bias),
            Units::Gaussian => {
                for mut row in x.axis_iter_mut(Axis(0)) {
                    Zip::from(&mut row).and(&bias).for_each(|x, &b| *x += b);
                }
            }
        }
    }

    /// Draws states given their means: Bernoulli draws, or the mean plus unit-variance noise.
    pub fn sample<R: Rng + ?Sized>(
        self,
        rng: &mut R,
        means: ArrayView2<f32>,
        mut out: ArrayViewMut2<f32>,
    ) {
        match self {
            Units::Binary => sample_bernoulli(rng, means, out),
            Units::Gaussian => {
                assert_eq!(means.dim(), out.dim(), "shapes");
                for (m_row, mut o_row) in means.rows().into_iter().zip(out.rows_mut()) {
                    let o = o_row.as_slice_mut().expect("standard layout output");
                    fill_normal(rng, o, 0.0, 1.0);
                    o.iter_mut().zip(m_row.iter()).for_each(|(o, &m)| *o += m);
                }
            }
        }
    }

    pub fn is_binary(self) -> bool {
        self == Units::Binary
    }

    /// For serde's `skip_serializing_if`.
    pub fn is_binary_ref(units: &Units) -> bool {
        units.is_binary()
    }
}
