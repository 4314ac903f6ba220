//! A whole training run as the spec describes it: greedy pretraining (fresh or resumed from a
//! checkpoint), then fine-tuning; and the test metrics of the result.

use std::collections::BTreeMap;

use super::greedy::{resume_greedy, train_greedy, TrainOutcome};
use super::{error_rate, run_fingerprint, Checkpoint, Dbn, FinetuneCheckpoint};
use crate::engine::data::Dataset;
use crate::engine::error::{EngineError, Result};
use crate::engine::finetune::{
    evaluate, train_autoencoder, train_backprop, train_up_down, train_wake_sleep, BeliefNet,
    Classifier, DeepAutoencoder, FinetuneRun, FinetuneState, WakeSleepInit, BOUND_SAMPLES,
};
use crate::engine::observer::{EpochMetrics, Observer};
use crate::engine::rbm::Rbm;
use crate::engine::spec::{CheckedSpec, Finetune, TrainingSpec};
use crate::engine::EngineRng;

/// Mixed into the seed for fine-tuning's generator, so that fine-tuning draws the same numbers
/// whether pretraining ran straight through or was resumed.
const FINETUNE_STREAM: u64 = 0x6669_6e65_7475_6e65;

/// Trains the model `spec` describes on `data`: greedy layers from `rng` (or from
/// `checkpoint`, which carries its own generator), then the spec's fine-tuning (continued from
/// `checkpoint` when it was taken in fine-tuning).
pub fn train_model(
    spec: &CheckedSpec,
    data: &Dataset,
    observer: &mut dyn Observer,
    rng: &mut EngineRng,
    checkpoint: Option<Checkpoint>,
) -> Result<TrainOutcome> {
    let started = std::time::Instant::now();
    let mut outcome = match checkpoint {
        Some(Checkpoint::Temporal(cp)) => {
            crate::engine::crbm::train_temporal(spec, data, observer, rng, Some(cp))?
        }
        None if spec.sequence.is_some() => {
            crate::engine::crbm::train_temporal(spec, data, observer, rng, None)?
        }
        Some(_) if spec.sequence.is_some() => {
            return Err(EngineError::Model(
                "checkpoint: it is not a sequence model's".into(),
            ))
        }
        Some(Checkpoint::Finetune(cp)) => resume_finetune(spec, data, observer, cp)?,
        Some(Checkpoint::Greedy(cp)) => {
            let greedy = resume_greedy(spec, data, observer, cp)?;
            finetune_model(spec, greedy, data, observer)?
        }
        None if starts_at_random(spec) => {
            let stack = random_stack(spec, data, rng)?;
            finetune_model(spec, stack, data, observer)?
        }
        None => {
            let greedy = train_greedy(spec, data, observer, rng)?;
            finetune_model(spec, greedy, data, observer)?
        }
    };
    outcome.seconds = started.elapsed().as_secs_f64();
    Ok(outcome)
}

/// Whether the spec skips pretraining: wake-sleep from random weights.
fn starts_at_random(spec: &TrainingSpec) -> bool {
    matches!(&spec.finetune, Some(Finetune::WakeSleep(c)) if c.init == WakeSleepInit::Random)
}

/// The stack of untrained RBMs the spec describes: weights from N(0, init_std²) of each
/// layer's settings, zero biases.
fn random_stack(spec: &CheckedSpec, data: &Dataset, rng: &mut EngineRng) -> Result<TrainOutcome> {
    spec.fits(data)?;
    let (train, valid) = spec.split(data);
    if train.is_empty() {
        return Err(EngineError::invalid(
            "validation_examples",
            "must leave training examples",
        ));
    }
    let mut layers = Vec::with_capacity(spec.architecture.hidden.len());
    for (i, &hidden) in spec.architecture.hidden.iter().enumerate() {
        let visible = spec.layer_visible(i, data.n_pixels(), data.classes);
        layers.push(Rbm::new(
            visible,
            hidden,
            0,
            spec.layer_config(i).init_std,
            rng,
        )?);
    }
    Ok(TrainOutcome {
        dbn: Dbn::new(layers)?,
        history: Vec::new(),
        train_examples: train.len(),
        validation_examples: valid.len(),
        validation_error: None,
        seconds: 0.0,
    })
}

/// Mixed into the seed for the binarisation of wake-sleep's monitoring images, so that it
/// draws nothing from the run's own generator (which checkpoints carry).
const MONITOR_STREAM: u64 = 0x6d6f_6e69_746f_7273;

/// Applies the spec's fine-tuning (if any) to a greedily trained model. The model must come
/// from pretraining as `spec` describes it on `data` (the caller checks); fine-tuning uses
/// the same split and draws from its own generator seeded by the spec.
pub fn finetune_model(
    spec: &CheckedSpec,
    outcome: TrainOutcome,
    data: &Dataset,
    observer: &mut dyn Observer,
) -> Result<TrainOutcome> {
    spec.fits(data)?;
    let rng = crate::engine::rng_from_seed(spec.seed ^ FINETUNE_STREAM);
    run_finetune(spec, outcome, data, observer, rng, None)
}

/// Mixed into the seed for a classifier stage trained on its own, after the model's
/// generative fine-tuning was done by an earlier run.
const CLASSIFIER_STREAM: u64 = 0x636c_6173_7369_6679;

/// Trains only the spec's `classifier` stage on a model whose pretraining and generative
/// fine-tuning were already done as the spec says (the caller checks): the model's own
/// classifier, if it has one, is replaced by a new one started from its recognition weights.
pub fn train_classifier_stage(
    spec: &CheckedSpec,
    outcome: TrainOutcome,
    data: &Dataset,
    observer: &mut dyn Observer,
) -> Result<TrainOutcome> {
    spec.fits(data)?;
    if spec.classifier.is_none() {
        return Err(EngineError::invalid(
            "classifier",
            "the spec has no classifier stage",
        ));
    }
    let rng = crate::engine::rng_from_seed(spec.seed ^ CLASSIFIER_STREAM);
    let only = TrainingSpec {
        finetune: None,
        ..(**spec).clone()
    };
    run_finetune(&only, outcome, data, observer, rng, None)
}

/// Continues fine-tuning from `checkpoint`, which must come from a run of the same `spec` on
/// the same `data`: the result is bit-identical to the uninterrupted run's (for the same
/// thread count and kernel set).
fn resume_finetune(
    spec: &CheckedSpec,
    data: &Dataset,
    observer: &mut dyn Observer,
    checkpoint: FinetuneCheckpoint,
) -> Result<TrainOutcome> {
    spec.fits(data)?;
    let FinetuneCheckpoint {
        dbn,
        state,
        history,
        rng,
        fingerprint,
    } = checkpoint;
    // run_finetune fills in the split's sizes.
    let outcome = TrainOutcome {
        dbn,
        history,
        train_examples: 0,
        validation_examples: 0,
        validation_error: None,
        seconds: 0.0,
    };
    run_finetune(
        spec,
        outcome,
        data,
        observer,
        rng,
        Some((state, fingerprint)),
    )
}

fn another_run() -> EngineError {
    EngineError::Model("checkpoint: it was taken with another spec or other training data".into())
}

/// The fingerprint of a fine-tuning run: the whole spec but its name, and the data.
fn finetune_fingerprint(spec: &TrainingSpec, train: &Dataset, held_out: usize) -> Result<u64> {
    // Neither the name nor the measurement after training changes what is learned.
    let unnamed = TrainingSpec {
        name: None,
        alias: None,
        ais: None,
        ..spec.clone()
    };
    let json =
        serde_json::to_string(&unnamed).map_err(|e| EngineError::invalid("spec", e.to_string()))?;
    Ok(run_fingerprint(&json, train, held_out))
}

/// Fine-tunes `outcome`'s model as the spec says, from the start or from `resume` (a
/// checkpoint's learning state and the fingerprint it was taken with).
fn run_finetune(
    spec: &TrainingSpec,
    mut outcome: TrainOutcome,
    data: &Dataset,
    observer: &mut dyn Observer,
    mut rng: EngineRng,
    resume: Option<(FinetuneState, u64)>,
) -> Result<TrainOutcome> {
    let stages = spec.finetune_stages();
    if stages.is_empty() {
        return match resume {
            Some(_) => Err(another_run()),
            None => Ok(outcome),
        };
    }
    let started = std::time::Instant::now();
    let (train, valid) = spec.split(data);
    (outcome.train_examples, outcome.validation_examples) = (train.len(), valid.len());
    let fingerprint = if resume.is_some() || observer.wants_checkpoints() {
        finetune_fingerprint(spec, &train, valid.len())?
    } else {
        0
    };
    let mut resume = match resume {
        Some((_, taken_with)) if taken_with != fingerprint => return Err(another_run()),
        Some((state, _)) => Some(state),
        None => None,
    };
    // A checkpoint belongs to the stage that took it: only backpropagation keeps momentum
    // increments, and a classifier stage can only follow up-down, so a checkpoint with
    // increments in a two-stage run is the second stage's.
    let first = match &resume {
        Some(state) if stages.len() > 1 && !state.increments.is_empty() => 1,
        _ => 0,
    };
    let share = spec.finetune_share(data.n_pixels(), data.classes, train.len());
    let stage_shares = spec.stage_shares(data.n_pixels(), data.classes, train.len());
    let mut history = std::mem::take(&mut outcome.history);
    let mut from = 1.0 - share;
    for (i, stage) in stages.iter().enumerate() {
        let to = from + share * stage_shares[i];
        if i >= first {
            let run = FinetuneRun {
                observer: &mut *observer,
                fraction: (from, if i + 1 == stages.len() { 1.0 } else { to }),
                validation: (!valid.is_empty())
                    .then(|| (valid.images.view(), valid.labels.as_slice())),
                resume: resume.take(),
                base: None,
                earlier: &history,
                fingerprint,
            };
            let (dbn, learned) =
                run_stage(stage, outcome.dbn, run, &train, &valid, spec, &mut rng)?;
            outcome.dbn = dbn;
            history.extend(learned);
        }
        from = to;
    }
    outcome.history = history;
    // Every fine-tuning epoch measured the held-out error of the model as it then was (the
    // classifier's, or free energy after up-down); the last one is the final model's.
    outcome.validation_error = outcome.history.last().and_then(|m| m.validation_error);
    outcome.seconds += started.elapsed().as_secs_f64();
    Ok(outcome)
}

/// Runs one fine-tuning stage on `dbn` (from `run.resume` when that holds a checkpoint's
/// state) and returns the model and the stage's epochs.
fn run_stage(
    stage: &Finetune,
    mut dbn: Dbn,
    mut run: FinetuneRun,
    train: &Dataset,
    valid: &Dataset,
    spec: &TrainingSpec,
    rng: &mut EngineRng,
) -> Result<(Dbn, Vec<EpochMetrics>)> {
    let resumed = run.resume.is_some();
    let (x, y) = (train.images.view(), train.labels.as_slice());
    let history = match stage {
        Finetune::Backprop(config) => {
            let mut net = match dbn.take_classifier() {
                Some(net) if resumed => net,
                _ if resumed => {
                    return Err(EngineError::Model(
                        "checkpoint: no classifier to go on fine-tuning".into(),
                    ))
                }
                _ => Classifier::from_dbn(&dbn, train.classes, config.init_std, rng)?,
            };
            // Checkpoints hold the model the classifier belongs to; the run is rebuilt around
            // a borrow of it that lives only as long as the stage.
            let mut run = FinetuneRun {
                observer: run.observer,
                fraction: run.fraction,
                validation: run.validation,
                resume: run.resume,
                base: Some(&dbn),
                earlier: run.earlier,
                fingerprint: run.fingerprint,
            };
            let history = train_backprop(&mut net, x, y, config, &mut run, rng)?;
            dbn = dbn.with_classifier(net)?;
            history
        }
        Finetune::Autoencoder(config) => {
            let mut net = match dbn.take_autoencoder() {
                Some(net) if resumed => net,
                _ if resumed => {
                    return Err(EngineError::Model(
                        "checkpoint: no autoencoder to go on fine-tuning".into(),
                    ))
                }
                _ => DeepAutoencoder::from_dbn(&dbn)?,
            };
            let held_out = (!valid.is_empty()).then(|| valid.images.view());
            let history = train_autoencoder(&mut net, &dbn, x, held_out, config, &mut run, rng)?;
            dbn = dbn.with_autoencoder(net)?;
            history
        }
        Finetune::WakeSleep(config) => {
            let mut net = match dbn.take_belief_net() {
                Some(net) if resumed => net,
                _ if resumed => {
                    return Err(EngineError::Model(
                        "checkpoint: no belief net to go on learning".into(),
                    ))
                }
                _ => BeliefNet::from_dbn(&dbn, x)?,
            };
            // Progress is measured on held-out images, or else on the first training ones.
            let monitor = if valid.is_empty() {
                x
            } else {
                valid.images.view()
            };
            let monitor = monitor.slice(ndarray::s![..monitor.nrows().min(1000), ..]);
            let mut binarise = crate::engine::rng_from_seed(spec.seed ^ MONITOR_STREAM);
            let monitor = crate::engine::rbm::sample_binary(monitor, &mut binarise);
            let history =
                train_wake_sleep(&mut net, &dbn, x, monitor.view(), config, &mut run, rng)?;
            dbn = dbn.with_belief_net(net)?;
            history
        }
        Finetune::UpDown(config) => {
            if resumed && !dbn.is_untied() {
                return Err(EngineError::Model(
                    "checkpoint: the model's weights are not untied".into(),
                ));
            }
            train_up_down(&mut dbn, x, y, config, &mut run, rng)?
        }
    };
    Ok((dbn, history))
}

/// The spec's log-probability measurement (`spec.ais`) of the first RBM, on the training
/// images and, when given, the test images, binarised by sampling with `seed`.
pub fn log_prob_metrics(
    dbn: &Dbn,
    ais: &crate::engine::spec::AisSpec,
    train: &Dataset,
    test: Option<&Dataset>,
    seed: u64,
) -> Result<BTreeMap<String, f64>> {
    use crate::engine::rbm::{log_prob_report, sample_binary};
    let mut rng = crate::engine::rng_from_seed(seed);
    let train = sample_binary(train.images.view(), &mut rng);
    let test = test.map(|t| sample_binary(t.images.view(), &mut rng));
    let report = log_prob_report(
        &dbn.layers()[0],
        train.view(),
        test.as_ref().map(|t| t.view()),
        &ais.config(),
        &mut rng,
    )?;
    let mut metrics: BTreeMap<String, f64> = report.metrics().into_iter().collect();
    // A deeper net without labels on top also gets the variational bound of the whole DBN
    // (for restricted layers: the bound's posterior ignores lateral weights).
    if let Some(test) = test.as_ref().filter(|_| dbn.layers()[0].lateral.is_none()) {
        let bound =
            dbn.log_prob_bound_with_ais(train.view(), test.view(), &ais.config(), 10, &mut rng)?;
        if let Some((top, bound)) = bound {
            metrics.insert("dbn_top_log_z".into(), top.log_z);
            metrics.insert("test_log_prob_dbn_bound".into(), bound);
        }
    }
    Ok(metrics)
}

/// Test errors of `dbn` on `test`: `test_error_free_energy` (when it has labels),
/// `test_error_discriminative` (when it was fine-tuned by backpropagation), and `test_error`,
/// the error of its default method (discriminative when there is a classifier); and
/// `test_reconstruction_error` (summed squared pixel error, mean per image) for a model
/// without labels (its deep autoencoder's, when it has one). A sequence model is scored on
/// the test sequences that `spec`'s sequence section makes (see `crbm::sequence_metrics`).
pub fn test_metrics(
    spec: Option<&TrainingSpec>,
    dbn: &Dbn,
    test: &Dataset,
) -> Result<BTreeMap<String, f64>> {
    if dbn.temporal().is_some() {
        let seq = spec.and_then(|s| s.sequence.as_ref()).ok_or_else(|| {
            EngineError::invalid("spec", "a sequence model is scored by its sequence section")
        })?;
        return crate::engine::crbm::sequence_metrics(seq, dbn, test);
    }
    let mut metrics = BTreeMap::new();
    if dbn.label_classes() > 0 {
        let probs = dbn.classify_free_energy(test.images.view())?;
        let e = error_rate(probs.view(), &test.labels);
        metrics.insert("test_error_free_energy".to_string(), e);
        metrics.insert("test_error".to_string(), e);
    }
    if let Some(net) = dbn.belief_net() {
        let mut rng = crate::engine::rng_from_seed(0);
        let binary = crate::engine::rbm::sample_binary(test.images.view(), &mut rng);
        let bound = net.log_prob_bound(binary.view(), BOUND_SAMPLES, &mut rng)?;
        metrics.insert("test_log_prob_bound".to_string(), bound);
    }
    if dbn.label_classes() == 0 && dbn.n_inputs() == test.n_pixels() {
        let x = test.images.view();
        let e = crate::engine::finetune::mean_squared_distance(x, dbn.reconstruct(x)?.view());
        metrics.insert("test_reconstruction_error".to_string(), e);
    }
    if let Some(net) = dbn.classifier() {
        let (e, _) = evaluate(net, test.images.view(), &test.labels)?;
        metrics.insert("test_error_discriminative".to_string(), e);
        metrics.insert("test_error".to_string(), e);
    }
    Ok(metrics)
}

/// The card of a finished run, with what it measured: the test metrics when `test` is given
/// ([`test_metrics`]) and, when `measure_log_prob` and the spec asks for it, the
/// log-probability measurement on the run's training part and the test set
/// ([`log_prob_metrics`]). The one evaluation both the command line and the job worker use.
pub fn evaluated_card(
    spec: &TrainingSpec,
    outcome: &TrainOutcome,
    train: &Dataset,
    test: Option<&Dataset>,
    threads: usize,
    measure_log_prob: bool,
) -> Result<crate::engine::persist::ModelCard> {
    let shape = spec.image_shape(train.image_rows, train.image_cols);
    let mut card =
        crate::engine::persist::ModelCard::for_training(spec, outcome, Some(shape), threads);
    if let Some(test) = test {
        card.metrics
            .extend(test_metrics(Some(spec), &outcome.dbn, test)?);
    }
    if let Some(ais) = spec.ais.as_ref().filter(|_| measure_log_prob) {
        let (used, _) = spec.split(train);
        card.metrics
            .extend(log_prob_metrics(&outcome.dbn, ais, &used, test, spec.seed)?);
    }
    Ok(card)
}
