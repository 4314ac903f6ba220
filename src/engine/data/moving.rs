//! Sequences made from still images: each image moves across a larger blank canvas at a
//! constant velocity, bouncing off the edges (videos of moving MNIST digits). Generation is
//! deterministic: sequence `s` depends only on image `s` and the seed.

use ndarray::Array2;
use rand::RngExt;
use serde::{Deserialize, Serialize};

use super::Dataset;
use crate::engine::error::{EngineError, Result};

/// How still images become sequences.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MovingImages {
    /// Side of the square canvas in pixels (default 36); larger than the images.
    pub canvas: usize,
    /// Largest speed along each axis, in pixels per frame (default 3, or less when the canvas
    /// leaves the images less room than that).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_speed: Option<usize>,
    /// Seed of the start positions and velocities (default 0), separate from the training
    /// seed so that every model of the same data sees the same videos.
    pub seed: u64,
}

impl Default for MovingImages {
    fn default() -> Self {
        MovingImages {
            canvas: 36,
            max_speed: None,
            seed: 0,
        }
    }
}

/// The largest canvas side accepted.
pub const MAX_CANVAS: usize = 128;

/// The largest speed when the spec names none (as far as the canvas leaves room).
pub const DEFAULT_MAX_SPEED: usize = 3;

impl MovingImages {
    /// Checks the settings for images of `rows` × `cols`; errors name the field under `prefix`.
    pub fn validate(&self, rows: usize, cols: usize, prefix: &str) -> Result<()> {
        if self.canvas <= rows.max(cols) || self.canvas > MAX_CANVAS {
            return Err(EngineError::invalid(
                format!("{prefix}.canvas"),
                format!(
                    "must be larger than the {rows}x{cols} images and at most {MAX_CANVAS}, got {}",
                    self.canvas
                ),
            ));
        }
        let room = self.canvas - rows.max(cols);
        let speed = self.speed(rows, cols);
        if speed == 0 || speed > room {
            return Err(EngineError::invalid(
                format!("{prefix}.max_speed"),
                format!("must be in 1..={room} (the room the images have to move), got {speed}"),
            ));
        }
        Ok(())
    }

    /// The largest speed for images of `rows` × `cols`: the spec's, or the default as far as
    /// the canvas leaves room.
    pub fn speed(&self, rows: usize, cols: usize) -> usize {
        let room = self.canvas.saturating_sub(rows.max(cols));
        self.max_speed.unwrap_or(DEFAULT_MAX_SPEED.min(room))
    }

    /// One sequence of `length` frames per image of `images`, frames as consecutive rows
    /// (sequence s holds rows s·length .. (s+1)·length) labelled with their image's class.
    pub fn sequences(&self, images: &Dataset, length: usize) -> Result<Dataset> {
        self.sequences_from(images, length, 0)
    }

    /// As [`MovingImages::sequences`] for images that start at number `first` of a larger
    /// set: image s moves along the path of sequence `first + s`.
    pub fn sequences_from(&self, images: &Dataset, length: usize, first: usize) -> Result<Dataset> {
        let (rows, cols) = (images.image_rows, images.image_cols);
        self.validate(rows, cols, "sequence.moving")?;
        let side = self.canvas;
        let frames = images.len() * length;
        let mut out = Array2::<f32>::zeros((frames, side * side));
        let mut labels = Vec::with_capacity(frames);
        for (s, image) in images.images.rows().into_iter().enumerate() {
            let mut path = self.path(first.wrapping_add(s), rows, cols);
            for t in 0..length {
                let (y, x) = path.position();
                let mut frame = out.row_mut(s * length + t);
                for r in 0..rows {
                    for c in 0..cols {
                        frame[(y + r) * side + x + c] = image[r * cols + c];
                    }
                }
                labels.push(images.labels[s]);
                path.advance();
            }
        }
        Ok(Dataset {
            images: out,
            labels,
            image_rows: side,
            image_cols: side,
            classes: images.classes,
        })
    }

    /// The start and velocity of sequence `s`, drawn from its own generator.
    fn path(&self, s: usize, rows: usize, cols: usize) -> Path {
        let mixed = self.seed ^ (s as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        let mut rng = crate::engine::rng_from_seed(mixed);
        let limit = [self.canvas - rows, self.canvas - cols];
        let speed = self.speed(rows, cols) as i64;
        let mut velocity = [0i64; 2];
        // Never still: at least one axis moves.
        while velocity == [0, 0] {
            velocity = [
                rng.random_range(-speed..=speed),
                rng.random_range(-speed..=speed),
            ];
        }
        Path {
            at: [
                rng.random_range(0..=limit[0] as i64),
                rng.random_range(0..=limit[1] as i64),
            ],
            velocity,
            limit: [limit[0] as i64, limit[1] as i64],
        }
    }
}

/// The top-left corner of a moving image, reflected at the canvas edges.
struct Path {
    at: [i64; 2],
    velocity: [i64; 2],
    limit: [i64; 2],
}

impl Path {
    fn position(&self) -> (usize, usize) {
        (self.at[0] as usize, self.at[1] as usize)
    }

    fn advance(&mut self) {
        for axis in 0..2 {
            let mut p = self.at[axis] + self.velocity[axis];
            let limit = self.limit[axis];
            if p < 0 {
                p = -p;
                self.velocity[axis] = -self.velocity[axis];
            } else if p > limit {
                p = 2 * limit - p;
                self.velocity[axis] = -self.velocity[axis];
            }
            self.at[axis] = p.clamp(0, limit);
        }
    }
}
