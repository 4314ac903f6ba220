//! Deep belief nets: a stack of RBMs learned greedily, each on the hidden activities of the
//! one below, whose top RBM may join softmax label units to the features (an associative
//! memory that classifies by free energy or Gibbs sampling and generates digits of a class).

mod checkpoint;
mod classify;
mod codes;
mod finetune_checkpoint;
mod generate;
mod greedy;
mod input_norm;
mod lower_bound;
mod pipeline;

pub use checkpoint::{run_fingerprint, Checkpoint, GreedyCheckpoint, CHECKPOINT_FORMAT};
pub use classify::{argmax_rows, error_rate, ConfusionMatrix};
pub(crate) use classify::{label_scores, top_hidden_input};
pub use finetune_checkpoint::{FinetuneCheckpoint, FINETUNE_CHECKPOINT_FORMAT};
pub use greedy::{resume_greedy, train_greedy, TrainOutcome};
pub use input_norm::{InputNorm, MIN_SCALE};
pub use pipeline::{
    evaluated_card, finetune_model, log_prob_metrics, test_metrics, train_classifier_stage,
    train_model,
};

use ndarray::{Array2, ArrayView2, CowArray, Ix2};

use crate::engine::crbm::Temporal;
use crate::engine::error::{EngineError, Result};
use crate::engine::finetune::{BeliefNet, Classifier, DeepAutoencoder};
use crate::engine::rbm::Rbm;

/// A stack of RBMs. Layer 0 sees the data; layer i+1's Bernoulli visible units are layer i's
/// hidden units; only the top layer may carry label units.
#[derive(Debug, Clone, PartialEq)]
pub struct Dbn {
    layers: Vec<Rbm>,
    /// The unrolled network after discriminative fine-tuning, if there was any.
    classifier: Option<Classifier>,
    /// Top-down weights of the layers below the top, once up-down fine-tuning has untied
    /// them from the (recognition) weights of the RBMs: generative[l] is [V_l, H_l].
    generative: Option<Vec<Array2<f32>>>,
    /// Standardisation of the inputs, for a first RBM with Gaussian visible units.
    input_norm: Option<InputNorm>,
    /// The deep autoencoder fine-tuned from this DBN, if there was one.
    autoencoder: Option<DeepAutoencoder>,
    /// The belief net learned by wake-sleep from this DBN (or from random weights).
    belief_net: Option<BeliefNet>,
    /// The conditioning weights that make every layer a conditional RBM of a sequence model.
    temporal: Option<Temporal>,
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
            generative: None,
            input_norm: None,
            autoencoder: None,
            belief_net: None,
            temporal: None,
        })
    }

    /// Attaches conditioning weights, making the stack a sequence model of conditional RBMs.
    pub fn with_temporal(mut self, temporal: Temporal) -> Result<Self> {
        temporal.check(&self.layers)?;
        if self.classifier.is_some()
            || self.generative.is_some()
            || self.autoencoder.is_some()
            || self.belief_net.is_some()
        {
            return Err(EngineError::Model(
                "a sequence model has no fine-tuned parts".into(),
            ));
        }
        self.temporal = Some(temporal);
        Ok(self)
    }

    /// An error for uses that ignore a sequence model's past (its frames only make sense
    /// given the frames before them): `what` names the use.
    pub(crate) fn refuse_sequence_model(&self, what: &str) -> Result<()> {
        match self.temporal {
            Some(_) => Err(EngineError::invalid(
                "model",
                format!("a sequence model gives no {what} without a past: continue a sequence"),
            )),
            None => Ok(()),
        }
    }

    /// An error when a fine-tuned part (`what`) would join a sequence model, which has none.
    fn refuse_head(&self, what: &str) -> Result<()> {
        match self.temporal {
            Some(_) => Err(EngineError::Model(format!(
                "a sequence model has no {what}"
            ))),
            None => Ok(()),
        }
    }

    /// The conditional RBMs' conditioning weights, if this is a sequence model.
    pub fn temporal(&self) -> Option<&Temporal> {
        self.temporal.as_ref()
    }

    /// Attaches the belief net that wake-sleep learned for this DBN's layer sizes.
    pub fn with_belief_net(mut self, net: BeliefNet) -> Result<Self> {
        self.refuse_head("belief net")?;
        let sizes: Vec<usize> = std::iter::once(net.n_inputs())
            .chain(net.recognition.iter().map(|r| r.weights.ncols()))
            .collect();
        if sizes != self.sizes() || self.label_classes() > 0 {
            return Err(EngineError::Model(
                "the belief net does not match the DBN's layers".into(),
            ));
        }
        self.belief_net = Some(net);
        Ok(self)
    }

    /// The belief net learned by wake-sleep, if the model has one.
    pub fn belief_net(&self) -> Option<&BeliefNet> {
        self.belief_net.as_ref()
    }

    /// Detaches the belief net, if the model has one.
    pub(crate) fn take_belief_net(&mut self) -> Option<BeliefNet> {
        self.belief_net.take()
    }

    /// Attaches the deep autoencoder fine-tuned from this DBN.
    pub fn with_autoencoder(mut self, net: DeepAutoencoder) -> Result<Self> {
        self.refuse_head("deep autoencoder")?;
        net.check_fits(&self)?;
        self.autoencoder = Some(net);
        Ok(self)
    }

    /// The fine-tuned deep autoencoder, if the model has one.
    pub fn autoencoder(&self) -> Option<&DeepAutoencoder> {
        self.autoencoder.as_ref()
    }

    /// Detaches the deep autoencoder, if the model has one.
    pub(crate) fn take_autoencoder(&mut self) -> Option<DeepAutoencoder> {
        self.autoencoder.take()
    }

    /// Attaches the input standardisation that the first RBM's Gaussian units were trained
    /// on; inputs are standardised before the up-pass and outputs of the down-pass restored.
    pub fn with_input_norm(mut self, norm: InputNorm) -> Result<Self> {
        norm.check(self.n_inputs())?;
        if self.layers[0].visible_units.is_binary() {
            return Err(EngineError::Model(
                "input statistics belong to a first layer with Gaussian visible units".into(),
            ));
        }
        self.input_norm = Some(norm);
        Ok(self)
    }

    /// The input standardisation, if the first RBM has Gaussian visible units.
    pub fn input_norm(&self) -> Option<&InputNorm> {
        self.input_norm.as_ref()
    }

    /// The first RBM's visible states for raw inputs: standardised when its units are
    /// Gaussian, otherwise the inputs themselves.
    pub fn to_visible<'a>(&self, x: ArrayView2<'a, f32>) -> CowArray<'a, f32, Ix2> {
        match &self.input_norm {
            Some(norm) => CowArray::from(norm.apply(x)),
            None => CowArray::from(x),
        }
    }

    /// Raw inputs from the first RBM's visible means (the end of a down-pass): restored from
    /// standardised units and clipped to [0, 1] when the units are Gaussian.
    pub fn to_inputs(&self, mut v: Array2<f32>) -> Array2<f32> {
        if let Some(norm) = &self.input_norm {
            norm.invert(&mut v);
            v.mapv_inplace(|x| x.clamp(0.0, 1.0));
        }
        v
    }

    /// Attaches the network that discriminative fine-tuning made from this DBN.
    pub fn with_classifier(mut self, classifier: Classifier) -> Result<Self> {
        self.refuse_head("classifier")?;
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

    /// Gives the layers below the top separate generative weights, starting as copies of the
    /// RBMs' weights (which stay as the recognition weights). Does nothing if already untied.
    pub fn untie(&mut self) {
        if self.generative.is_none() {
            let below = &self.layers[..self.layers.len() - 1];
            self.generative = Some(below.iter().map(|l| l.weights.clone()).collect());
        }
    }

    /// Attaches generative weights ([V_l, H_l] for each layer below the top).
    pub fn with_generative(mut self, weights: Vec<Array2<f32>>) -> Result<Self> {
        self.refuse_head("untied generative weights")?;
        let below = &self.layers[..self.layers.len() - 1];
        if weights.len() != below.len()
            || weights
                .iter()
                .zip(below)
                .any(|(g, l)| g.dim() != l.weights.dim())
        {
            return Err(EngineError::Model(
                "generative weights do not match the layers".into(),
            ));
        }
        self.generative = Some(weights);
        Ok(self)
    }

    /// Whether up-down fine-tuning has untied the weights.
    pub fn is_untied(&self) -> bool {
        self.generative.is_some()
    }

    /// The top-down weights of layer `l` (below the top): its own generative weights when
    /// untied, otherwise the RBM's. [V_l, H_l].
    pub fn generative(&self, l: usize) -> ArrayView2<'_, f32> {
        match &self.generative {
            Some(g) => g[l].view(),
            None => self.layers[l].weights.view(),
        }
    }

    pub(crate) fn generative_mut(&mut self, l: usize) -> &mut Array2<f32> {
        self.untie();
        &mut self.generative.as_mut().expect("untied above")[l]
    }

    pub(crate) fn layers_mut(&mut self) -> &mut [Rbm] {
        &mut self.layers
    }

    /// Detaches the classifier, if the model has one.
    pub(crate) fn take_classifier(&mut self) -> Option<Classifier> {
        self.classifier.take()
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

    /// Weights across all layers, a sequence model's conditioning weights included; the
    /// count [`crate::engine::spec::Limits`] bounds.
    pub fn parameter_count(&self) -> usize {
        let order = self.temporal().map_or(0, |t| t.order);
        self.layers
            .iter()
            .map(|l| crate::engine::spec::layer_parameters(l.n_visible(), l.n_hidden(), order))
            .fold(0, usize::saturating_add)
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
        let x = self.to_visible(x);
        let below = &self.layers[..self.layers.len() - 1];
        let Some((first, rest)) = below.split_first() else {
            return Ok(x.into_owned());
        };
        let mut act = first.hidden_probs_all(x.view());
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
