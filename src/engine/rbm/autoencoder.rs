//! Layer-by-layer learning with autoencoders instead of RBMs (the seed: "it is possible to
//! use autoencoders with a single hidden layer instead of restricted Boltzmann machines";
//! Bengio, Lamblin, Popovici & Larochelle 2007). The layer has the parameters of an RBM and
//! uses them the same way: the code is h = f(c + v W) and the reconstruction
//! v̂ = g(b + h Wᵀ), with f and g the units' activations (logistic, or identity for Gaussian
//! units). Learning follows the gradient of the reconstruction's cross-entropy for logistic
//! outputs, or its squared error for linear ones: in both cases the error signal at the
//! output is v̂ − v. With tied weights, W collects the gradients of both the encoder and the
//! decoder:
//!   δ_v = v̂ − v,  δ_h = (δ_v W) ⊙ f'(h),  ∂L/∂W = vᵀ δ_h + δ_vᵀ h,  ∂L/∂b = Σ δ_v,
//!   ∂L/∂c = Σ δ_h.

use ndarray::{s, Axis, Zip};

use super::model::squared_distance;
use super::train::{column_difference, CdState};
use super::{Rbm, RbmTrainConfig};
use crate::engine::math::{update, x_times_w, xt_times_p_add};

impl CdState {
    /// One mini-batch of gradient descent on the autoencoder's reconstruction loss, with the
    /// same momentum and weight decay as CD. Returns the summed squared reconstruction error.
    pub(super) fn autoencoder_step(
        &mut self,
        rbm: &mut Rbm,
        b: usize,
        cfg: &RbmTrainConfig,
        (momentum, next_momentum): (f32, f32),
    ) -> f64 {
        let v0 = self.v0.slice(s![..b, ..]);
        let mut h = self.p0.slice_mut(s![..b, ..]);
        let mut recon = self.vn.slice_mut(s![..b, ..]);
        let mut dv = self.vs.slice_mut(s![..b, ..]);
        let mut dh = self.p1.slice_mut(s![..b, ..]);

        rbm.hidden_probs_into(v0, h.view_mut());
        rbm.visible_probs_into(h.view(), recon.view_mut());
        let error = squared_distance(v0, recon.view());
        Zip::from(&mut dv)
            .and(&recon)
            .and(&v0)
            .for_each(|d, &r, &v| *d = r - v);
        x_times_w(dv.view(), rbm.weights.view(), dh.view_mut());
        if rbm.hidden_units.is_binary() {
            Zip::from(&mut dh)
                .and(&h)
                .for_each(|d, &a| *d *= a * (1.0 - a));
        }

        // w_inc already holds m·inc − ελ·W (see math::update); add −ε ∂L/∂W.
        let scale = cfg.learning_rate / b as f32;
        xt_times_p_add(v0, dh.view(), -scale, self.w_inc.view_mut());
        xt_times_p_add(dv.view(), h.view(), -scale, self.w_inc.view_mut());
        update::apply_and_prepare(
            rbm.weights
                .as_slice_mut()
                .expect("owned weights are contiguous"),
            self.w_inc
                .as_slice_mut()
                .expect("owned increments are contiguous"),
            next_momentum,
            cfg.learning_rate * cfg.weight_decay,
        );

        // Descending: the visible biases move by −Σ δ_v = Σ (v − v̂), the hidden by −Σ δ_h.
        let bias_scale = cfg.bias_learning_rate / b as f32;
        column_difference(v0, recon.view(), &mut self.v_sum);
        self.h_sum.assign(&dh.sum_axis(Axis(0)).mapv(|x| -x));
        self.move_biases(rbm, bias_scale, momentum);
        error
    }
}
