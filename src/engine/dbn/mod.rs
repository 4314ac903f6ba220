//! Deep belief nets: a stack of RBMs learned greedily, each on the hidden activities of the
//! one below, whose top RBM may join softmax label units to the features (an associative
//! memory that classifies by free energy or Gibbs sampling and generates digits of a class).

mod checkpoint;
mod classify;
mod generate;
mod greedy;
mod pipeline;

pub use checkpoint::{run_fingerprint, Checkpoint, CHECKPOINT_FORMAT};
pub use classify::{argmax_rows, error_rate, ConfusionMatrix};
pub use greedy::{resume_greedy, train_greedy, TrainOutcome};
pub use pipeline::{test_metrics, train_model};

use ndarray::{Array2, ArrayView2};

use crate::engine::error::{EngineError, Result};
use crate::engine::finetune::Classifier;
use crate::engine::rbm::Rbm;

/// A stack of RBMs. Layer 0 sees the data; layer i+1's Bernoulli visible units are layer i's
/// hidden units; only the top layer may carry label units.
#[derive(Debug, Clone, PartialEq)]
pub struct Dbn {
    layers: Vec<Rbm>,
    /// The unrolled network after discriminative fine-tuning, if there was any.
    classifier: Option<Classifier>,
}

impl Dbn {
    /// Checks that the layers chain (sizes match, labels only on top) and builds the net.
    pub fn new(layers: Vec<Rbm>) -> Result<Self> {
        if layers.is_empty() {
            return Err(EngineError::Model("a DBN needs at least one layer".into()));
        }
        for (i, pair) in layers.windows(2).enumerate() {
            if pair[0].label_units != 0 {
                return Err(EngineError::Model(format!(
                    "layer {i} has label units but is not the top layer"
                )));
            }
            if pair[0].n_hidden() != pair[1].n_features() {
                return Err(EngineError::Model(format!(
                    "layer {i} has {} hidden units but layer {} expects {} inputs",
                    pair[0].n_hidden(),
                    i + 1,
                    pair[1].n_features()
                )));
            }
        }
        Ok(Dbn {
            layers,
            classifier: None,
        })
    }

    /// Attaches the network that discriminative fine-tuning made from this DBN.
    pub fn with_classifier(mut self, classifier: Classifier) -> Result<Self> {
        if classifier.n_inputs() != self.n_inputs() {
            return Err(EngineError::Model(format!(
                "the classifier takes {} inputs, the DBN {}",
                classifier.n_inputs(),
                self.n_inputs()
            )));
        }
        self.classifier = Some(classifier);
        Ok(self)
    }

    /// The fine-tuned feed-forward classifier, if the model has one.
    pub fn classifier(&self) -> Option<&Classifier> {
        self.classifier.as_ref()
    }

    /// p(label | x) from the fine-tuned classifier. x: [batch, n_inputs] → [batch, classes].
    pub fn classify_discriminative(
        &self,
        x: ndarray::ArrayView2<f32>,
    ) -> Result<ndarray::Array2<f32>> {
        self.classifier
            .as_ref()
            .ok_or_else(|| {
                EngineError::invalid(
                    "method",
                    "the model was not fine-tuned discriminatively; use free_energy or gibbs",
                )
            })?
            .classify(x)
    }

    pub fn layers(&self) -> &[Rbm] {
        &self.layers
    }

    pub fn top(&self) -> &Rbm {
        self.layers.last().expect("a DBN has at least one layer")
    }

    /// Size of the input vector (pixels).
    pub fn n_inputs(&self) -> usize {
        self.layers[0].n_features()
    }

    /// Number of label units on the top RBM (0: the net cannot classify).
    pub fn label_classes(&self) -> usize {
        self.top().label_units
    }

    /// Layer sizes from the input up, e.g. [784, 500, 500, 2000].
    pub fn sizes(&self) -> Vec<usize> {
        std::iter::once(self.n_inputs())
            .chain(self.layers.iter().map(Rbm::n_hidden))
            .collect()
    }

    /// Rejects input of the wrong width, or values outside [0, 1] or not finite.
    pub fn check_input(&self, x: &ArrayView2<f32>) -> Result<()> {
        if x.ncols() != self.n_inputs() {
            return Err(EngineError::Shape(format!(
                "{} values per example, the model takes {}",
                x.ncols(),
                self.n_inputs()
            )));
        }
        if let Some(bad) = x.iter().find(|v| !(0.0..=1.0).contains(*v)) {
            return Err(EngineError::invalid(
                "input",
                format!("values must lie in [0, 1], found {bad}"),
            ));
        }
        Ok(())
    }

    /// The deterministic up-pass: hidden probabilities of every layer below the top, giving
    /// the top RBM's feature inputs. x: [batch, n_inputs] → [batch, top.n_features()].
    pub fn features(&self, x: ArrayView2<f32>) -> Result<Array2<f32>> {
        self.check_input(&x)?;
        let below = &self.layers[..self.layers.len() - 1];
        let Some((first, rest)) = below.split_first() else {
            return Ok(x.to_owned());
        };
        let mut act = first.hidden_probs_all(x);
        for layer in rest {
            act = layer.hidden_probs_all(act.view());
        }
        Ok(act)
    }

    /// The first layer's receptive fields: the weights into each of the first `count` hidden
    /// units, one row per unit. → [count, n_inputs].
    pub fn receptive_fields(&self, count: usize) -> Array2<f32> {
        let w = &self.layers[0].weights;
        let count = count.min(w.ncols());
        w.slice(ndarray::s![..self.n_inputs(), ..count])
            .t()
            .to_owned()
    }
}
