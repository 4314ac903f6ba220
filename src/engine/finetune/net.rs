//! The unrolled network: the DBN's recognition weights as a feed-forward sigmoid network with
//! a softmax output layer on top (Hinton & Salakhutdinov 2006).

use ndarray::{s, Array1, Array2, ArrayView2, Axis};
use rand::Rng;

use crate::engine::dbn::Dbn;
use crate::engine::error::{EngineError, Result};
use crate::engine::math::{fill_normal, matmul, sigmoid_bias_rows, softmax_bias_rows};

/// Rows classified at a time, bounding the activations' memory.
const BLOCK_ROWS: usize = 1000;

/// One fully connected layer.
#[derive(Debug, Clone, PartialEq)]
pub struct Dense {
    /// weights: [n_in, n_out]
    pub weights: Array2<f32>,
    /// bias: [n_out]
    pub bias: Array1<f32>,
}

impl Dense {
    /// One step of gradient descent with momentum and L2 decay of the weights:
    /// inc = momentum·inc − ε(∇ + λW), then W += inc (the biases alike, without decay).
    pub(crate) fn momentum_step(
        &mut self,
        inc: &mut Dense,
        (grad_w, grad_b): (&Array2<f32>, &Array1<f32>),
        lr: f32,
        momentum: f32,
        decay: f32,
    ) {
        ndarray::Zip::from(&mut inc.weights)
            .and(grad_w)
            .and(&self.weights)
            .for_each(|inc, &g, &w| *inc = momentum * *inc - lr * (g + decay * w));
        ndarray::Zip::from(&mut inc.bias)
            .and(grad_b)
            .for_each(|inc, &g| *inc = momentum * *inc - lr * g);
        self.weights += &inc.weights;
        self.bias += &inc.bias;
    }
}

/// Sigmoid hidden layers and a softmax output layer.
#[derive(Debug, Clone, PartialEq)]
pub struct Classifier {
    layers: Vec<Dense>,
}

impl Classifier {
    /// Checks that the layers chain (each one's outputs are the next one's inputs).
    pub fn new(layers: Vec<Dense>) -> Result<Self> {
        if layers.is_empty() {
            return Err(EngineError::Shape("a classifier needs layers".into()));
        }
        for (i, l) in layers.iter().enumerate() {
            if l.bias.len() != l.weights.ncols() {
                return Err(EngineError::Shape(format!(
                    "layer {i}: bias and weights differ"
                )));
            }
            if i > 0 && layers[i - 1].weights.ncols() != l.weights.nrows() {
                return Err(EngineError::Shape(format!(
                    "layer {i} does not take layer {}'s outputs",
                    i - 1
                )));
            }
        }
        Ok(Classifier { layers })
    }

    /// The DBN unrolled: every RBM's recognition weights and hidden biases (the top RBM's
    /// label rows dropped; the input standardisation folded into the first layer), then a new softmax layer of `classes` units with weights drawn
    /// from N(0, init_std²) and zero biases.
    pub fn from_dbn<R: Rng + ?Sized>(
        dbn: &Dbn,
        classes: usize,
        init_std: f32,
        rng: &mut R,
    ) -> Result<Self> {
        if classes < 2 {
            return Err(EngineError::invalid(
                "classes",
                "a classifier needs at least 2 classes",
            ));
        }
        if !dbn.top().hidden_units.is_binary() {
            return Err(EngineError::invalid(
                "finetune",
                "the classifier's hidden layers are logistic: the top RBM needs binary units",
            ));
        }
        let mut layers: Vec<Dense> = dbn
            .layers()
            .iter()
            .map(|rbm| Dense {
                weights: rbm.weights.slice(s![..rbm.n_features(), ..]).to_owned(),
                bias: rbm.hidden_bias.clone(),
            })
            .collect();
        // Standardisation of the inputs is linear: fold it into the first layer, so the
        // network takes raw inputs. W'_ij = W_ij / s_i, c'_j = c_j − Σ_i (m_i / s_i) W_ij.
        if let (Some(norm), Some(first)) = (dbn.input_norm(), layers.first_mut()) {
            for (mut row, (&m, &s)) in first
                .weights
                .rows_mut()
                .into_iter()
                .zip(norm.mean.iter().zip(&norm.scale))
            {
                row.mapv_inplace(|w| w / s);
                first.bias.scaled_add(-m, &row);
            }
        }
        let top = layers.last().map_or(0, |l| l.weights.ncols());
        let mut w = Array2::zeros((top, classes));
        fill_normal(
            rng,
            w.as_slice_mut().expect("standard layout"),
            0.0,
            init_std,
        );
        layers.push(Dense {
            weights: w,
            bias: Array1::zeros(classes),
        });
        Classifier::new(layers)
    }

    pub fn layers(&self) -> &[Dense] {
        &self.layers
    }

    pub(crate) fn layers_mut(&mut self) -> &mut [Dense] {
        &mut self.layers
    }

    pub fn n_inputs(&self) -> usize {
        self.layers[0].weights.nrows()
    }

    pub fn classes(&self) -> usize {
        self.layers[self.layers.len() - 1].weights.ncols()
    }

    /// p(class | x) for a batch. x: [batch, n_inputs] → [batch, classes].
    pub fn classify(&self, x: ArrayView2<f32>) -> Result<Array2<f32>> {
        if x.ncols() != self.n_inputs() {
            return Err(EngineError::Shape(format!(
                "inputs have {} values, the classifier takes {}",
                x.ncols(),
                self.n_inputs()
            )));
        }
        let mut out = Array2::zeros((x.nrows(), self.classes()));
        for (xb, mut ob) in x
            .axis_chunks_iter(Axis(0), BLOCK_ROWS)
            .zip(out.axis_chunks_iter_mut(Axis(0), BLOCK_ROWS))
        {
            ob.assign(&self.forward_block(xb));
        }
        Ok(out)
    }

    fn forward_block(&self, x: ArrayView2<f32>) -> Array2<f32> {
        let last = self.layers.len() - 1;
        let mut act = x.to_owned();
        for (i, l) in self.layers.iter().enumerate() {
            let mut z = Array2::zeros((act.nrows(), l.weights.ncols()));
            matmul(z.view_mut(), false, act.view(), l.weights.view(), 1.0);
            if i == last {
                softmax_bias_rows(z.view_mut(), l.bias.view());
            } else {
                sigmoid_bias_rows(z.view_mut(), l.bias.view());
            }
            act = z;
        }
        act
    }
}
