//! Codes and reconstructions: a model's deterministic representation of an input at its top,
//! and the input rebuilt from it. A fine-tuned deep autoencoder answers with its own encoder
//! and decoder, a wake-sleep belief net with its recognition and generative weights (mean
//! field), any other DBN with its mean-field up-pass, its top RBM and its top-down pass.

use ndarray::{concatenate, s, Array2, ArrayView2, Axis};

use super::Dbn;
use crate::engine::error::{EngineError, Result};

impl Dbn {
    /// Width of the codes [`Dbn::encode`] returns.
    pub fn code_size(&self) -> usize {
        if let Some(net) = self.belief_net() {
            return net.code_size();
        }
        match &self.autoencoder() {
            Some(net) => net.code_size(),
            None if self.label_classes() > 0 => self.top().n_features(),
            None => self.top().n_hidden(),
        }
    }

    /// The code of each input: the deep autoencoder's code layer; otherwise the top RBM's
    /// hidden probabilities (means, for Gaussian units), or, for a top RBM with label units,
    /// the features it joins to the labels. x: [batch, n_inputs] → [batch, code_size()].
    pub fn encode(&self, x: ArrayView2<f32>) -> Result<Array2<f32>> {
        self.check_input(&x)?;
        self.refuse_sequence_model("codes")?;
        if let Some(net) = self.autoencoder() {
            return Ok(net.encode(x));
        }
        if let Some(net) = self.belief_net() {
            return Ok(net.up_probs(x).pop().expect("at least one layer"));
        }
        let features = self.features(x)?;
        if self.label_classes() > 0 {
            return Ok(features);
        }
        Ok(self.top().hidden_probs_all(features.view()))
    }

    /// Each input rebuilt from its code, as inputs (pixel intensities in [0, 1]): the deep
    /// autoencoder's decoder; otherwise one mean-field pass up to the top RBM's hidden units
    /// (with the label units set to p(label | x) by free energy) and back down.
    /// x: [batch, n_inputs] → [batch, n_inputs].
    pub fn reconstruct(&self, x: ArrayView2<f32>) -> Result<Array2<f32>> {
        self.check_input(&x)?;
        self.refuse_sequence_model("reconstructions")?;
        if let Some(net) = self.autoencoder() {
            return Ok(net.reconstruct(x));
        }
        if let Some(net) = self.belief_net() {
            let top = net.up_probs(x).pop().expect("at least one layer");
            return Ok(net.down_probs(top.view()));
        }
        let top = self.top();
        let features = self.features(x)?;
        let visible = if self.label_classes() > 0 {
            let labels = self.classify_free_energy(x)?;
            concatenate(Axis(1), &[features.view(), labels.view()])
                .map_err(|e| EngineError::Shape(e.to_string()))?
        } else {
            features
        };
        let hidden = top.hidden_probs_all(visible.view());
        let back = top.visible_probs(hidden.view());
        Ok(self.down_pass(back.slice(s![.., ..top.n_features()]).to_owned()))
    }
}
