//! How well a sequence model predicts: continue held-out sequences from their first frames
//! and compare with what really came next, against the baseline of repeating the last frame.

use std::collections::BTreeMap;

use ndarray::{Array2, ArrayView2, Axis};

use super::generate::ContinueConfig;
use super::SequenceSpec;
use crate::engine::data::Dataset;
use crate::engine::dbn::Dbn;
use crate::engine::error::{EngineError, Result};

/// Frames predicted ahead for the continuation error.
pub const HORIZON: usize = 8;
/// Gibbs steps per predicted frame (mean field).
pub const PREDICT_GIBBS_STEPS: usize = 30;
/// Held-out sequences scored at most.
pub const MAX_TEST_SEQUENCES: usize = 1000;

/// Squared error per frame (summed over pixels) of `dbn`'s mean-field continuations of the
/// held-out sequences of `test`, as the sequence section cuts them:
/// `test_prediction_error` one frame ahead, `test_continuation_error` averaged over the
/// next `HORIZON` frames (fewer if the sequences are shorter), and both for the baseline that
/// repeats the last seen frame (`…_copy_last`).
pub fn sequence_metrics(
    seq: &SequenceSpec,
    dbn: &Dbn,
    test: &Dataset,
) -> Result<BTreeMap<String, f64>> {
    let start = dbn.seed_frames().ok_or_else(|| {
        EngineError::invalid(
            "model",
            "not a sequence model (it has no conditional layers)",
        )
    })?;
    let limit = match &seq.moving {
        Some(_) => MAX_TEST_SEQUENCES,
        None => MAX_TEST_SEQUENCES * seq.length,
    };
    let frames = seq.test_frames(&test.slice(0..test.len().min(limit)))?;
    let horizon = HORIZON.min(seq.length - start);
    if horizon == 0 {
        return Err(EngineError::invalid(
            "sequence.length",
            "the sequences leave no frame to predict",
        ));
    }
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
        mean_field: true,
    };
    // Mean field draws nothing; the generator is only a formality.
    let mut rng = crate::engine::rng_from_seed(0);
    let predicted = dbn.continue_sequences(&views, &config, &mut rng)?;
    let last = &seed[start - 1];
    let (mut model, mut copy) = (Vec::new(), Vec::new());
    for (k, frame) in predicted.iter().enumerate() {
        let truth = at(start + k);
        model.push(per_frame(frame.view(), truth.view()));
        copy.push(per_frame(last.view(), truth.view()));
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    Ok(BTreeMap::from([
        ("test_prediction_error".to_string(), model[0]),
        ("test_prediction_error_copy_last".to_string(), copy[0]),
        ("test_continuation_error".to_string(), mean(&model)),
        ("test_continuation_error_copy_last".to_string(), mean(&copy)),
        ("test_sequences".to_string(), sequences as f64),
    ]))
}

/// Mean over rows of the summed squared difference.
fn per_frame(a: ArrayView2<f32>, b: ArrayView2<f32>) -> f64 {
    let total: f64 = a
        .iter()
        .zip(b.iter())
        .map(|(&x, &y)| ((x - y) as f64).powi(2))
        .sum();
    total / a.nrows().max(1) as f64
}
