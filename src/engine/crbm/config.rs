//! How training data become sequences, and the model's order.

use serde::{Deserialize, Serialize};

use super::model::MAX_ORDER;
use crate::engine::data::{Dataset, MovingImages};
use crate::engine::error::{EngineError, Result};

/// The `sequence` section of a training spec: it makes every layer a conditional RBM.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SequenceSpec {
    /// Previous frames that set each frame's dynamic biases, in every layer (default 3).
    #[serde(default = "default_order")]
    pub order: usize,
    /// Frames per sequence (default 16). Without `moving`, the dataset's examples are the
    /// frames, in order, cut into sequences of this length (a shorter tail is dropped).
    #[serde(default = "default_length")]
    pub length: usize,
    /// Make one sequence per example instead, by moving each image across a larger canvas.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub moving: Option<MovingImages>,
}

fn default_order() -> usize {
    3
}

fn default_length() -> usize {
    16
}

/// Longest sequence accepted.
pub const MAX_LENGTH: usize = 10_000;
/// Most frame values (frames × values per frame) a run may build in memory: 1.2 GB of f32.
pub const MAX_FRAME_VALUES: usize = 300_000_000;

/// Mixed into the moving seed for test sequences, so they never share a path with training.
const TEST_STREAM: u64 = 0x7465_7374_7365_7173;

impl SequenceSpec {
    /// Checks the section for a stack of `layers` on images of `rows` × `cols`.
    pub fn validate(&self, layers: usize, rows: usize, cols: usize) -> Result<()> {
        if !(1..=MAX_ORDER).contains(&self.order) {
            return Err(EngineError::invalid(
                "sequence.order",
                format!("must be in 1..={MAX_ORDER}, got {}", self.order),
            ));
        }
        // Layer l sees the frames from l·order on; its first window needs order more.
        let needed = layers * self.order + 1;
        if self.length < needed || self.length > MAX_LENGTH {
            return Err(EngineError::invalid(
                "sequence.length",
                format!(
                    "must be in {needed}..={MAX_LENGTH} for {layers} layer(s) of order {} \
                     (each layer needs that many past frames before its first), got {}",
                    self.order, self.length
                ),
            ));
        }
        if let Some(m) = &self.moving {
            m.validate(rows, cols, "sequence.moving")?;
        }
        Ok(())
    }

    /// Values per frame for images of `rows` × `cols`.
    pub fn frame_shape(&self, rows: usize, cols: usize) -> (usize, usize) {
        match &self.moving {
            Some(m) => (m.canvas, m.canvas),
            None => (rows, cols),
        }
    }

    /// The training frames: sequence s is rows s·length .. (s+1)·length.
    pub fn frames(&self, data: &Dataset) -> Result<Dataset> {
        self.build(data, None, 0)
    }

    /// The test frames, on paths of their own when the images are moved.
    pub fn test_frames(&self, data: &Dataset) -> Result<Dataset> {
        self.build(data, Some(TEST_STREAM), 0)
    }

    /// Test sequence number `first` and those after it, made from `data`, which starts at
    /// that sequence's first example: the same frames [`SequenceSpec::test_frames`] gives it.
    pub fn test_frames_from(&self, data: &Dataset, first: usize) -> Result<Dataset> {
        self.build(data, Some(TEST_STREAM), first)
    }

    /// Examples of the dataset that each sequence takes: one image when images are moved,
    /// otherwise `length` frames.
    pub fn examples_per_sequence(&self) -> usize {
        match self.moving {
            Some(_) => 1,
            None => self.length,
        }
    }

    /// Most sequences of frames of `values_per_frame` that fit the frame limit.
    pub fn max_sequences(&self, values_per_frame: usize) -> usize {
        MAX_FRAME_VALUES / self.length.max(1).saturating_mul(values_per_frame).max(1)
    }

    /// Checks this section against a trained sequence model (e.g. one read from a file whose
    /// card carries the spec): its order, enough frames per sequence, and the frame size.
    pub fn check_model(&self, order: usize, layers: usize, n_inputs: usize) -> Result<()> {
        let bad = |m: String| Err(EngineError::Model(format!("model card: sequence: {m}")));
        if self.order != order {
            return bad(format!("order {} but the model's is {order}", self.order));
        }
        let needed = layers.saturating_mul(order).saturating_add(1);
        if self.length < needed || self.length > MAX_LENGTH {
            return bad(format!(
                "length {} is outside {needed}..={MAX_LENGTH}",
                self.length
            ));
        }
        if let Some(m) = &self.moving {
            let values = m.canvas.checked_mul(m.canvas);
            if m.canvas > crate::engine::data::moving::MAX_CANVAS || values != Some(n_inputs) {
                return bad(format!(
                    "a {0}x{0} canvas does not make the model's {n_inputs} inputs",
                    m.canvas
                ));
            }
        }
        Ok(())
    }

    fn build(&self, data: &Dataset, stream: Option<u64>, first: usize) -> Result<Dataset> {
        if self.length == 0 || self.length > MAX_LENGTH {
            return Err(EngineError::invalid(
                "sequence.length",
                format!("must be in 1..={MAX_LENGTH}"),
            ));
        }
        // Moving images are checked against the canvas where they are made.
        let (rows, cols) = self.frame_shape(data.image_rows, data.image_cols);
        let sequences = data.len() / self.examples_per_sequence();
        if sequences == 0 {
            return Err(EngineError::invalid(
                "sequence.length",
                format!(
                    "{} examples make no sequence of {} frames",
                    data.len(),
                    self.length
                ),
            ));
        }
        if sequences > self.max_sequences(rows.saturating_mul(cols)) {
            let values = sequences
                .saturating_mul(self.length)
                .saturating_mul(rows.saturating_mul(cols));
            return Err(EngineError::invalid(
                "train_examples",
                format!(
                    "{sequences} sequences of {} frames of {rows}x{cols} are {values} values, \
                     over the limit of {MAX_FRAME_VALUES}: use fewer examples",
                    self.length
                ),
            ));
        }
        match &self.moving {
            Some(m) => {
                let m = MovingImages {
                    seed: m.seed ^ stream.unwrap_or(0),
                    ..*m
                };
                m.sequences_from(data, self.length, first)
            }
            None => Ok(data.slice(0..sequences * self.length)),
        }
    }
}
