//! Greedy layer-wise learning (Hinton, Osindero & Teh 2006): each RBM learns from the hidden
//! probabilities that the trained layers below produce for the training set; the top RBM sees
//! the features joined with one-hot labels.

use std::time::Instant;

use ndarray::{concatenate, Array2, ArrayView2, Axis};

use super::checkpoint::run_fingerprint;
use super::{error_rate, Dbn, GreedyCheckpoint, InputNorm};
use crate::engine::data::Dataset;
use crate::engine::error::{EngineError, Result};
use crate::engine::observer::{EpochMetrics, Observer, Phase};
use crate::engine::rbm::{train_rbm, LayerRun, Rbm};
use crate::engine::spec::CheckedSpec;
use crate::engine::EngineRng;

/// The result of greedy training.
#[derive(Debug, Clone)]
pub struct TrainOutcome {
    pub dbn: Dbn,
    /// Metrics of every epoch of every layer, in order.
    pub history: Vec<EpochMetrics>,
    /// Examples learned from, and held out.
    pub train_examples: usize,
    pub validation_examples: usize,
    /// Error on the held-out examples (free energy), when any were held out and there are labels.
    pub validation_error: Option<f64>,
    pub seconds: f64,
}

/// Learns the DBN `spec` describes from `data`, drawing every random number from `rng`.
pub fn train_greedy(
    spec: &CheckedSpec,
    data: &Dataset,
    observer: &mut dyn Observer,
    rng: &mut EngineRng,
) -> Result<TrainOutcome> {
    run_greedy(spec, data, observer, rng, None)
}

/// Continues greedy training from `checkpoint`, which must come from a run of the same `spec`
/// on the same `data`: the result is bit-identical to the uninterrupted run's (for the same
/// thread count and kernel set).
pub fn resume_greedy(
    spec: &CheckedSpec,
    data: &Dataset,
    observer: &mut dyn Observer,
    checkpoint: GreedyCheckpoint,
) -> Result<TrainOutcome> {
    let mut rng = checkpoint.rng.clone();
    run_greedy(spec, data, observer, &mut rng, Some(checkpoint))
}

fn run_greedy(
    spec: &CheckedSpec,
    data: &Dataset,
    observer: &mut dyn Observer,
    rng: &mut EngineRng,
    resume: Option<GreedyCheckpoint>,
) -> Result<TrainOutcome> {
    let started = Instant::now();
    spec.fits(data)?;
    let used = spec
        .train_examples
        .map_or(data.len(), |n| n.min(data.len()));
    if spec.validation_examples >= used {
        return Err(EngineError::invalid(
            "validation_examples",
            format!(
                "must leave training examples: {} of {used} requested",
                spec.validation_examples
            ),
        ));
    }
    let (train, valid) = spec.split(data);
    // Fine-tuning, if any, takes the last part of the run's progress.
    let scale = 1.0 - spec.finetune_share(data.n_pixels(), data.classes, train.len());
    let n_layers = spec.architecture.hidden.len();
    // The name and the fine-tuning settings do not change pretraining, so they are left out
    // of the fingerprint: a finished greedy run's checkpoint can be fine-tuned in several ways.
    let spec_json = serde_json::to_string(&spec.pretraining())
        .map_err(|e| EngineError::invalid("spec", e.to_string()))?;
    let fingerprint = run_fingerprint(&spec_json, &train, valid.len());

    // Each layer's share of the run, by its multiply-adds (see TrainingSpec::layer_work).
    let work: Vec<f64> = (0..n_layers)
        .map(|i| spec.layer_work(i, data.n_pixels(), data.classes, train.len()))
        .collect();
    let total: f64 = work.iter().sum();

    let (mut layers, mut history, first, mut current) = match resume {
        Some(cp) => {
            if cp.fingerprint != fingerprint {
                return Err(EngineError::Model(
                    "checkpoint: it was taken with another spec or other training data".into(),
                ));
            }
            if cp.layer >= n_layers || cp.done.len() != cp.layer {
                return Err(EngineError::Model(format!(
                    "checkpoint: layer {} of a {n_layers}-layer spec",
                    cp.layer
                )));
            }
            (cp.done, cp.history, cp.layer, Some((cp.rbm, cp.state)))
        }
        None => (Vec::with_capacity(n_layers), Vec::new(), 0, None),
    };
    // Gaussian visible units see the data standardised by the training set's statistics.
    let norm = if spec.architecture.visible_units.is_binary() {
        None
    } else {
        Some(InputNorm::fit(train.images.view())?)
    };
    // The inputs of the first layer to train: the data, passed up through finished layers.
    let (mut input, mut valid_input) = match &norm {
        Some(norm) => (
            norm.apply(train.images.view()),
            norm.apply(valid.images.view()),
        ),
        None => (train.images.clone(), valid.images.clone()),
    };
    // A greedy checkpoint does not record unit kinds: the spec decides them.
    for (i, rbm) in layers.iter_mut().enumerate() {
        (rbm.visible_units, rbm.hidden_units) = spec.layer_units(i);
    }
    for (i, rbm) in layers.iter().enumerate() {
        let (visible, labels) = (
            spec.layer_visible(i, data.n_pixels(), data.classes),
            spec.layer_labels(i, data.classes),
        );
        if rbm.weights.dim() != (visible, spec.architecture.hidden[i]) || rbm.label_units != labels
        {
            return Err(EngineError::Model(format!(
                "checkpoint: layer {i} does not match the spec"
            )));
        }
        input = rbm.hidden_probs_all(input.view());
        valid_input = rbm.hidden_probs_all(valid_input.view());
    }
    let mut done: f64 = work[..first].iter().sum();
    for (i, &hidden) in spec.architecture.hidden.iter().enumerate().skip(first) {
        let config = spec.layer_config(i);
        let labels = spec.layer_labels(i, data.classes);
        let visible = input.ncols() + labels;
        let (mut rbm, resume) = match current.take() {
            Some((mut rbm, state)) => {
                if rbm.weights.dim() != (visible, hidden) || rbm.label_units != labels {
                    return Err(EngineError::Model(format!(
                        "checkpoint: layer {i} does not match the spec"
                    )));
                }
                (rbm.visible_units, rbm.hidden_units) = spec.layer_units(i);
                (rbm, Some(state))
            }
            None => {
                let (v_units, h_units) = spec.layer_units(i);
                let mut rbm = Rbm::new(visible, hidden, labels, config.init_std, rng)?
                    .with_units(v_units, h_units)?;
                if i == 0 && spec.architecture.lateral {
                    rbm = rbm.with_lateral()?;
                }
                (rbm, None)
            }
        };
        // The top layer sees [features | labels]; the others see their input as it is.
        let joined = if labels > 0 {
            Some((
                with_labels(input.view(), &train)?,
                with_labels(valid_input.view(), &valid)?,
            ))
        } else {
            None
        };
        let (x, xv) = match &joined {
            Some((x, xv)) => (x.view(), xv.view()),
            None => (input.view(), valid_input.view()),
        };
        let new_epochs = {
            let mut run = LayerRun {
                resume,
                done: &layers,
                history: &history,
                fingerprint,
                phase: Phase::Pretrain,
                layer: i,
                layers: n_layers,
                fraction: (scale * done / total, scale * (done + work[i]) / total),
                validation: (xv.nrows() > 0).then_some(xv),
                observer: &mut *observer,
            };
            train_rbm(&mut rbm, x, &config, &mut run, rng)?
        };
        history.extend(new_epochs);
        done += work[i];
        if i + 1 < n_layers {
            input = rbm.hidden_probs_all(input.view());
            valid_input = rbm.hidden_probs_all(valid_input.view());
        }
        layers.push(rbm);
    }
    let mut dbn = Dbn::new(layers)?;
    if let Some(norm) = norm {
        dbn = dbn.with_input_norm(norm)?;
    }
    let validation_error = if !valid.is_empty() && dbn.label_classes() > 0 {
        Some(error_rate(
            dbn.classify_free_energy(valid.images.view())?.view(),
            &valid.labels,
        ))
    } else {
        None
    };
    Ok(TrainOutcome {
        dbn,
        history,
        train_examples: train.len(),
        validation_examples: valid.len(),
        validation_error,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// [features | one-hot labels]: the visible layer of the associative memory.
fn with_labels(features: ArrayView2<f32>, data: &Dataset) -> Result<Array2<f32>> {
    let labels = data.one_hot_labels();
    concatenate(Axis(1), &[features, labels.view()]).map_err(|e| EngineError::Shape(e.to_string()))
}
