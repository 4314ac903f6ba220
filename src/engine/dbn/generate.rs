//! Generation: alternating Gibbs sampling in the top-level associative memory with a label
//! clamped (or free), then one top-down pass through the generative weights to pixels.

use ndarray::{s, Array2};
use rand::Rng;

use super::Dbn;
use crate::engine::error::{EngineError, Result};
use crate::engine::math::{sample_categorical_rows, softmax_bias_rows};
use crate::engine::rbm::Clamp;

/// Largest number of images one call may generate.
pub const MAX_SAMPLES: usize = 10_000;
/// Largest number of Gibbs steps one call may run.
pub const MAX_STEPS: usize = 100_000;

impl Dbn {
    /// `count` images ([count, n_inputs] pixel probabilities) after `steps` Gibbs steps in
    /// the top RBM with `label` clamped (None: labels sampled freely too).
    pub fn generate<R: Rng + ?Sized>(
        &self,
        label: Option<usize>,
        count: usize,
        steps: usize,
        rng: &mut R,
    ) -> Result<Array2<f32>> {
        let mut frames = self.generate_frames(label, count, steps, steps.max(1), rng)?;
        Ok(frames
            .pop()
            .map(|(_, images)| images)
            .expect("the last step is always a frame"))
    }

    /// As [`Dbn::generate`], returning the images every `every` steps and at the last step:
    /// the chains settling, as (step, [count, n_inputs]) frames.
    pub fn generate_frames<R: Rng + ?Sized>(
        &self,
        label: Option<usize>,
        count: usize,
        steps: usize,
        every: usize,
        rng: &mut R,
    ) -> Result<Vec<(usize, Array2<f32>)>> {
        self.refuse_sequence_model("free samples")?;
        let top = self.top();
        let (nf, k) = (top.n_features(), top.label_units);
        if let Some(net) = self.belief_net() {
            // A belief net samples ancestrally in one pass: there is no chain to run.
            if label.is_some() {
                return Err(EngineError::invalid(
                    "label",
                    "this model has no label units",
                ));
            }
            if count == 0 || count > MAX_SAMPLES {
                return Err(EngineError::invalid(
                    "count",
                    format!("must be in 1..={MAX_SAMPLES}"),
                ));
            }
            return Ok(vec![(steps, net.sample(count, rng))]);
        }
        if count == 0 || count > MAX_SAMPLES {
            return Err(EngineError::invalid(
                "count",
                format!("must be in 1..={MAX_SAMPLES}"),
            ));
        }
        if steps > MAX_STEPS {
            return Err(EngineError::invalid(
                "steps",
                format!("must be at most {MAX_STEPS}"),
            ));
        }
        if every == 0 {
            return Err(EngineError::invalid("every", "must be at least 1"));
        }
        if let Some(l) = label {
            if l >= k {
                return Err(EngineError::invalid(
                    "label",
                    format!("must be below {k} for this model"),
                ));
            }
        }
        // Start from the top RBM's bias-only beliefs: features ~ σ(b_f) (or N(b_f, 1) for
        // Gaussian units), labels ~ softmax(b_l).
        let mut start = Array2::zeros((count, top.n_visible()));
        let mut feature_p = Array2::zeros((count, nf));
        top.visible_units
            .activate(feature_p.view_mut(), top.visible_bias.slice(s![..nf]));
        top.visible_units
            .sample(rng, feature_p.view(), start.slice_mut(s![.., ..nf]));
        if k > 0 {
            let mut label_p = Array2::zeros((count, k));
            softmax_bias_rows(label_p.view_mut(), top.visible_bias.slice(s![nf..]));
            sample_categorical_rows(rng, label_p.view(), start.slice_mut(s![.., nf..]));
        }
        let one_hot =
            label.map(|l| Array2::from_shape_fn((count, k), |(_, j)| (j == l) as u8 as f32));
        let clamp = one_hot.as_ref().map(|v| Clamp {
            start: nf,
            values: v.view(),
        });

        let mut frames = Vec::new();
        if steps == 0 {
            frames.push((0, self.down_pass(start.slice(s![.., ..nf]).to_owned())));
            return Ok(frames);
        }
        top.gibbs_frames(start, steps, clamp, rng, |step, state| {
            if step % every == 0 || step == steps {
                let features = state.visible_probs.slice(s![.., ..nf]).to_owned();
                frames.push((step, self.down_pass(features)));
            }
        });
        crate::engine::cancel::check()?;
        Ok(frames)
    }

    /// Top-down pass from top-RBM features to pixels, each layer giving p(v | h) of the one
    /// below (mean-field), restored to raw inputs at the bottom (see [`Dbn::to_inputs`]).
    /// [count, top.n_features()] → [count, n_inputs].
    pub fn down_pass(&self, mut act: Array2<f32>) -> Array2<f32> {
        for l in (0..self.layers().len() - 1).rev() {
            act = self.generative_probs(l, act.view());
        }
        self.to_inputs(act)
    }

    /// p(v | h) of layer `l` (below the top) through its top-down weights: the generative
    /// weights once untied, otherwise the RBM's own. h: [batch, H_l] → [batch, V_l].
    pub fn generative_probs(&self, l: usize, h: ndarray::ArrayView2<f32>) -> Array2<f32> {
        let layer = &self.layers()[l];
        if !self.is_untied() {
            return layer.visible_probs(h);
        }
        let mut below = Array2::zeros((h.nrows(), layer.n_visible()));
        crate::engine::math::matmul(below.view_mut(), false, h, self.generative(l).t(), 1.0);
        layer
            .visible_units
            .activate(below.view_mut(), layer.visible_bias.view());
        below
    }
}
