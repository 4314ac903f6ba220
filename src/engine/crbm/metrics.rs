//! How well a sequence model predicts: continue held-out sequences from their first frames
//! and compare with what really came next, against two baselines: repeating the last frame,
//! and the first layer's autoregressive part alone (its dynamic visible biases, the mean of
//! the next frame with every hidden unit off), which shows what the hidden units add.

use std::collections::BTreeMap;

use ndarray::{Array2, ArrayView2, Axis};

use super::generate::ContinueConfig;
use super::model::{stack_past, Crbm};
use super::SequenceSpec;
use crate::engine::data::Dataset;
use crate::engine::dbn::Dbn;
use crate::engine::error::{EngineError, Result};
use crate::engine::finetune::mean_squared_distance;

/// Frames predicted ahead for the continuation error.
pub const HORIZON: usize = 8;
/// Gibbs steps per predicted frame.
pub const PREDICT_GIBBS_STEPS: usize = 30;
/// Sampled continuations averaged into the prediction.
pub const PREDICT_SAMPLES: usize = 10;
/// Held-out sequences scored at most.
pub const MAX_TEST_SEQUENCES: usize = 300;

/// Squared error per frame (summed over pixels) of `dbn`'s predictions of the held-out
/// sequences of `test`, as the sequence section cuts them. The prediction of a frame is the
/// model's E[v | past], estimated by averaging `PREDICT_SAMPLES` sampled continuations
/// (the squared-error-optimal guess under the model). `test_prediction_error` is one frame
/// ahead, `test_continuation_error` the average over the next `HORIZON` frames (fewer if the
/// sequences are shorter); `…_copy_last` repeats the last seen frame, and
/// `test_prediction_error_autoregressive` is the first layer's autoregressive part alone.
pub fn sequence_metrics(
    seq: &SequenceSpec,
    dbn: &Dbn,
    test: &Dataset,
) -> Result<BTreeMap<String, f64>> {
    let (start, temporal) = match (dbn.seed_frames(), dbn.temporal()) {
        (Some(start), Some(temporal)) => (start, temporal),
        _ => {
            return Err(EngineError::invalid(
                "model",
                "not a sequence model (it has no conditional layers)",
            ))
        }
    };
    let horizon = HORIZON.min(seq.length.saturating_sub(start));
    if horizon == 0 {
        return Err(EngineError::invalid(
            "sequence.length",
            "the sequences leave no frame to predict",
        ));
    }
    // As many test sequences as there are, up to the cap and the frame limit.
    let per_sequence = seq.examples_per_sequence();
    let count = (test.len() / per_sequence)
        .min(MAX_TEST_SEQUENCES)
        .min(seq.max_sequences(dbn.n_inputs()));
    if count == 0 {
        // A test split too short for one sequence: nothing to score.
        return Ok(BTreeMap::new());
    }
    let frames = seq.test_frames(&test.slice(0..count * per_sequence))?;
    let sequences = frames.len() / seq.length;
    let at = |t: usize| -> Array2<f32> {
        let rows: Vec<usize> = (0..sequences).map(|s| s * seq.length + t).collect();
        frames.images.select(Axis(0), &rows)
    };
    let seed: Vec<Array2<f32>> = (0..start).map(at).collect();
    let views: Vec<ArrayView2<f32>> = seed.iter().map(|f| f.view()).collect();
    let config = ContinueConfig {
        frames: horizon,
        gibbs_steps: PREDICT_GIBBS_STEPS,
        mean_field: false,
    };
    let mut predicted: Vec<Array2<f32>> = Vec::new();
    for r in 0..PREDICT_SAMPLES {
        let mut rng = crate::engine::rng_from_seed(r as u64);
        let sample = dbn.continue_sequences(&views, &config, &mut rng)?;
        if predicted.is_empty() {
            predicted = sample;
        } else {
            predicted.iter_mut().zip(&sample).for_each(|(p, s)| *p += s);
        }
    }
    predicted
        .iter_mut()
        .for_each(|p| *p /= PREDICT_SAMPLES as f32);
    let last = &seed[start - 1];
    let (mut model, mut copy) = (Vec::new(), Vec::new());
    for (k, frame) in predicted.iter().enumerate() {
        let truth = at(start + k);
        model.push(mean_squared_distance(frame.view(), truth.view()));
        copy.push(mean_squared_distance(last.view(), truth.view()));
    }
    // The autoregressive part: E[v_t | h = 0, past] through the first layer alone.
    let first = Crbm {
        rbm: &dbn.layers()[0],
        cond: &temporal.layers[0],
    };
    let visible: Vec<Array2<f32>> = seed
        .iter()
        .map(|f| dbn.to_visible(f.view()).into_owned())
        .collect();
    let past = stack_past(&visible, start, temporal.order);
    let ar = dbn.to_inputs(first.autoregressive_means(&first.biases(past.view())));
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    Ok(BTreeMap::from([
        ("test_prediction_error".to_string(), model[0]),
        ("test_prediction_error_copy_last".to_string(), copy[0]),
        (
            "test_prediction_error_autoregressive".to_string(),
            mean_squared_distance(ar.view(), at(start).view()),
        ),
        ("test_continuation_error".to_string(), mean(&model)),
        ("test_continuation_error_copy_last".to_string(), mean(&copy)),
        ("test_sequences".to_string(), sequences as f64),
    ]))
}
