//! Standardisation of real-valued inputs for a first RBM with Gaussian visible units: each
//! input is shifted by its training-set mean and divided by its standard deviation, so that
//! unit-variance Gaussian units fit it (Hinton & Salakhutdinov 2006). The model keeps the
//! statistics, so callers send raw inputs and receive raw reconstructions.

use ndarray::{Array1, Array2, ArrayView2, Axis, Zip};

use crate::engine::error::{EngineError, Result};

/// The smallest standard deviation divided by: inputs that (almost) never vary in the
/// training set, such as MNIST's border pixels, are scaled as if they varied this much, so an
/// unusual value at test time gives a large but bounded standardised input.
pub const MIN_SCALE: f32 = 0.1;

/// Per-input mean and scale: x' = (x − mean) / scale.
#[derive(Debug, Clone, PartialEq)]
pub struct InputNorm {
    pub mean: Array1<f32>,
    pub scale: Array1<f32>,
}

impl InputNorm {
    /// The statistics of `data` ([n, inputs]), with scales floored at [`MIN_SCALE`].
    pub fn fit(data: ArrayView2<f32>) -> Result<Self> {
        let n = data.nrows();
        if n == 0 {
            return Err(EngineError::invalid("dataset", "no training examples"));
        }
        let mut mean = Array1::<f64>::zeros(data.ncols());
        let mut square = Array1::<f64>::zeros(data.ncols());
        for row in data.rows() {
            Zip::from(&mut mean)
                .and(&mut square)
                .and(&row)
                .for_each(|m, s, &x| {
                    *m += x as f64;
                    *s += x as f64 * x as f64;
                });
        }
        let mean = mean.mapv(|m| m / n as f64);
        let scale = Zip::from(&square)
            .and(&mean)
            .map_collect(|&s, &m| ((s / n as f64 - m * m).max(0.0).sqrt() as f32).max(MIN_SCALE));
        Ok(InputNorm {
            mean: mean.mapv(|m| m as f32),
            scale,
        })
    }

    /// Checks the statistics against the number of inputs and for finite, positive scales.
    pub fn check(&self, inputs: usize) -> Result<()> {
        if self.mean.len() != inputs || self.scale.len() != inputs {
            return Err(EngineError::Model(format!(
                "input statistics for {} inputs, the model takes {inputs}",
                self.mean.len()
            )));
        }
        if !self.mean.iter().all(|m| m.is_finite())
            || !self.scale.iter().all(|s| s.is_finite() && *s > 0.0)
        {
            return Err(EngineError::Model(
                "input statistics must be finite with positive scales".into(),
            ));
        }
        Ok(())
    }

    /// Standardised copies of the rows of `x`.
    pub fn apply(&self, x: ArrayView2<f32>) -> Array2<f32> {
        let mut out = x.to_owned();
        for mut row in out.axis_iter_mut(Axis(0)) {
            Zip::from(&mut row)
                .and(&self.mean)
                .and(&self.scale)
                .for_each(|x, &m, &s| *x = (*x - m) / s);
        }
        out
    }

    /// Back to raw inputs, in place: x = x' · scale + mean.
    pub fn invert(&self, x: &mut Array2<f32>) {
        for mut row in x.axis_iter_mut(Axis(0)) {
            Zip::from(&mut row)
                .and(&self.mean)
                .and(&self.scale)
                .for_each(|x, &m, &s| *x = *x * s + m);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    #[test]
    fn standardised_columns_have_zero_mean_and_unit_variance_and_invert_exactly() {
        let x = array![[0.0f32, 0.5, 0.2], [1.0, 0.5, 0.4], [0.5, 0.5, 0.9]];
        let norm = InputNorm::fit(x.view()).unwrap();
        let z = norm.apply(x.view());
        let mean0 = z.column(0).mean().unwrap();
        let var0 = z.column(0).mapv(|v| v * v).mean().unwrap();
        assert!(
            mean0.abs() < 1e-6 && (var0 - 1.0).abs() < 1e-5,
            "{mean0} {var0}"
        );
        // The constant column is centred and scaled by the floor, not divided by zero.
        assert_eq!(norm.scale[1], MIN_SCALE);
        assert!(z.column(1).iter().all(|&v| v == 0.0));
        let mut back = z.clone();
        norm.invert(&mut back);
        assert!(back.iter().zip(&x).all(|(a, b)| (a - b).abs() < 1e-6));
        assert!(norm.check(3).is_ok() && norm.check(4).is_err());
    }
}
