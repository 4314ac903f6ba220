//! Alternating Gibbs sampling: h ~ p(h | v), then v ~ p(v | h), repeated. Run long enough it
//! draws from the model's own distribution — its "fantasies".

use ndarray::{s, Array2, ArrayView2};
use rand::Rng;

use super::Rbm;

/// Visible units held fixed during sampling: columns `start .. start + values.ncols()` are
/// reset to `values` after every visible update.
#[derive(Debug, Clone, Copy)]
pub struct Clamp<'a> {
    pub start: usize,
    /// values: [batch, width]
    pub values: ArrayView2<'a, f32>,
}

/// Where a set of chains stands after sampling.
#[derive(Debug, Clone)]
pub struct GibbsState {
    /// Sampled visible states: [batch, V].
    pub visible: Array2<f32>,
    /// p(v | h) of the last step: [batch, V] (clamped columns hold the clamped values).
    pub visible_probs: Array2<f32>,
    /// Sampled hidden states of the last step: [batch, H].
    pub hidden: Array2<f32>,
}

impl Rbm {
    /// Runs `steps` full steps of alternating Gibbs sampling from the visible states `start`
    /// ([batch, V]), with optional clamped columns. `steps` = 0 returns the start unchanged.
    pub fn gibbs<R: Rng + ?Sized>(
        &self,
        start: Array2<f32>,
        steps: usize,
        clamp: Option<Clamp>,
        rng: &mut R,
    ) -> GibbsState {
        self.gibbs_frames(start, steps, clamp, rng, |_, _| {})
    }

    /// As [`Rbm::gibbs`], calling `on_step(step, state)` after each step (1-based) so that a
    /// caller can record frames of a chain settling.
    pub fn gibbs_frames<R: Rng + ?Sized>(
        &self,
        start: Array2<f32>,
        steps: usize,
        clamp: Option<Clamp>,
        rng: &mut R,
        mut on_step: impl FnMut(usize, &GibbsState),
    ) -> GibbsState {
        let batch = start.nrows();
        let apply = |v: &mut Array2<f32>| {
            if let Some(c) = clamp {
                v.slice_mut(s![.., c.start..c.start + c.values.ncols()])
                    .assign(&c.values);
            }
        };
        let mut state = GibbsState {
            visible: start,
            visible_probs: Array2::zeros((batch, self.n_visible())),
            hidden: Array2::zeros((batch, self.n_hidden())),
        };
        apply(&mut state.visible);
        state.visible_probs.assign(&state.visible);
        let mut hp = Array2::zeros((batch, self.n_hidden()));
        for step in 1..=steps {
            // Given up by the caller: the chain ends where it is (see engine::cancel).
            if crate::engine::cancel::requested() {
                break;
            }
            self.hidden_probs_into(state.visible.view(), hp.view_mut());
            self.sample_hidden_into(rng, hp.view(), state.hidden.view_mut());
            self.visible_probs_into(state.hidden.view(), state.visible_probs.view_mut());
            if self.lateral.is_some() {
                // The visible units interact: a sequential sweep from the current states
                // (the softmax group, if any, is drawn as usual).
                let visible = state.visible.clone();
                self.sample_visible_into(rng, state.visible_probs.view(), state.visible.view_mut());
                let f = self.n_features();
                state
                    .visible
                    .slice_mut(s![.., ..f])
                    .assign(&visible.slice(s![.., ..f]));
                self.visible_sweep(rng, state.hidden.view(), state.visible.view_mut());
            } else {
                self.sample_visible_into(rng, state.visible_probs.view(), state.visible.view_mut());
            }
            apply(&mut state.visible);
            apply(&mut state.visible_probs);
            on_step(step, &state);
        }
        state
    }
}
