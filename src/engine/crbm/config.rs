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
        self.build(data, None)
    }

    /// The test frames, on paths of their own when the images are moved.
    pub fn test_frames(&self, data: &Dataset) -> Result<Dataset> {
        self.build(data, Some(TEST_STREAM))
    }

    fn build(&self, data: &Dataset, stream: Option<u64>) -> Result<Dataset> {
        let (rows, cols) = self.frame_shape(data.image_rows, data.image_cols);
        let sequences = match &self.moving {
            Some(_) => data.len(),
            None => data.len() / self.length,
        };
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
        let values = sequences
            .saturating_mul(self.length)
            .saturating_mul(rows * cols);
        if values > MAX_FRAME_VALUES {
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
                m.sequences(data, self.length)
            }
            None => Ok(data.slice(0..sequences * self.length)),
        }
    }
}
