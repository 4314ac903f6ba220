//! Checkpoints of sequence models, taken at epoch boundaries: the finished conditional
//! layers, the layer in training with its increments and window order, the metrics so far and
//! the generator, so that a run resumes bit for bit. Like the other checkpoints it is a
//! safetensors file with its own format name, and it does not hold the spec.

use ndarray::{Array1, Array2};
use safetensors::SafeTensors;
use serde::{Deserialize, Serialize};

use super::model::Conditioning;
use crate::engine::error::{EngineError, Result};
use crate::engine::observer::EpochMetrics;
use crate::engine::persist::check_resume_point;
use crate::engine::persist::{
    body_of, metadata_of, read_conditioning, read_f32, read_matrix, read_rbm, read_u32, Tensors,
};
use crate::engine::rbm::{Rbm, MAX_EPOCHS};
use crate::engine::EngineRng;

/// The `format` metadata value of sequence-model checkpoints.
pub const TEMPORAL_CHECKPOINT_FORMAT: &str = "dbn-serve.temporal-checkpoint";
const VERSION: u32 = 1;

/// What one conditional layer's learning carries from epoch to epoch.
#[derive(Debug, Clone, PartialEq)]
pub struct CrbmState {
    /// The next epoch to run (0-based).
    pub next_epoch: usize,
    pub w_inc: Array2<f32>,
    pub a_inc: Array2<f32>,
    pub b_inc: Array2<f32>,
    pub vb_inc: Array1<f32>,
    pub hb_inc: Array1<f32>,
    /// The order of the training windows after the last shuffle.
    pub order: Vec<u32>,
}

/// Training of a sequence model stopped after an epoch.
#[derive(Debug, Clone, PartialEq)]
pub struct TemporalCheckpoint {
    /// Layers finished before the one in training, with their conditioning weights.
    pub done: Vec<(Rbm, Conditioning)>,
    /// The layer in training (= `done.len()`), its parameters and learning state.
    pub layer: usize,
    pub rbm: Rbm,
    pub cond: Conditioning,
    pub state: CrbmState,
    pub history: Vec<EpochMetrics>,
    /// The generator, positioned after the last draw of the epoch.
    pub rng: EngineRng,
    /// Identifies the run's spec and data; resuming refuses another.
    pub fingerprint: u64,
}

#[derive(Serialize, Deserialize)]
struct Meta {
    layer: usize,
    order: usize,
    next_epoch: usize,
    windows: usize,
    history: Vec<EpochMetrics>,
    rng: EngineRng,
    fingerprint: u64,
}

fn push_layer(tensors: &mut Tensors, name: &str, rbm: &Rbm, cond: &Conditioning) {
    tensors.push_rbm(name, rbm);
    tensors.push_conditioning(name, cond);
}

fn read_layer(st: &SafeTensors, name: &str, order: usize) -> Result<(Rbm, Conditioning)> {
    let rbm = read_rbm(st, name, None, 0)?;
    let cond = read_conditioning(st, name, order, &rbm)?;
    Ok((rbm, cond))
}

impl TemporalCheckpoint {
    /// The order of the model (past frames per layer).
    pub fn order(&self) -> usize {
        self.cond.past_visible.nrows() / self.rbm.n_visible().max(1)
    }

    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let mut tensors = Tensors::default();
        for (i, (rbm, cond)) in self.done.iter().enumerate() {
            push_layer(&mut tensors, &format!("done.{i}"), rbm, cond);
        }
        push_layer(&mut tensors, "current", &self.rbm, &self.cond);
        let s = &self.state;
        tensors.push_f32("state.w_inc", s.w_inc.shape(), s.w_inc.iter());
        tensors.push_f32("state.a_inc", s.a_inc.shape(), s.a_inc.iter());
        tensors.push_f32("state.b_inc", s.b_inc.shape(), s.b_inc.iter());
        tensors.push_f32("state.vb_inc", &[s.vb_inc.len()], s.vb_inc.iter());
        tensors.push_f32("state.hb_inc", &[s.hb_inc.len()], s.hb_inc.iter());
        tensors.push_u32("state.order", &s.order);
        let meta = Meta {
            layer: self.layer,
            order: self.order(),
            next_epoch: s.next_epoch,
            windows: s.order.len(),
            history: self.history.clone(),
            rng: self.rng.clone(),
            fingerprint: self.fingerprint,
        };
        tensors.serialize(metadata_of(TEMPORAL_CHECKPOINT_FORMAT, VERSION, &meta)?)
    }

    /// Parses bytes written by [`TemporalCheckpoint::to_bytes`], checking every shape.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let bad = |m: String| EngineError::Model(format!("checkpoint: {m}"));
        let st = SafeTensors::deserialize(bytes)
            .map_err(|e| bad(format!("not a safetensors file: {e}")))?;
        let meta: Meta = body_of(bytes, TEMPORAL_CHECKPOINT_FORMAT, VERSION)?;
        if !(1..=super::MAX_ORDER).contains(&meta.order) {
            return Err(bad(format!("order {} is out of range", meta.order)));
        }
        check_resume_point(meta.next_epoch, MAX_EPOCHS, &meta.rng).map_err(bad)?;
        let done = (0..meta.layer)
            .map(|i| read_layer(&st, &format!("done.{i}"), meta.order))
            .collect::<Result<Vec<_>>>()?;
        let (rbm, cond) = read_layer(&st, "current", meta.order)?;
        let (v, h) = rbm.weights.dim();
        let past = meta.order * v;
        let vector = |name: &str, n: usize| -> Result<Array1<f32>> {
            let values = read_f32(&st, name, &[n])?;
            if !values.iter().all(|x| x.is_finite()) {
                return Err(bad(format!("{name} holds non-finite values")));
            }
            Ok(Array1::from_vec(values))
        };
        let state = CrbmState {
            next_epoch: meta.next_epoch,
            w_inc: read_matrix(&st, "state.w_inc", v, h)?,
            a_inc: read_matrix(&st, "state.a_inc", past, v)?,
            b_inc: read_matrix(&st, "state.b_inc", past, h)?,
            vb_inc: vector("state.vb_inc", v)?,
            hb_inc: vector("state.hb_inc", h)?,
            order: read_u32(&st, "state.order", meta.windows)?,
        };
        Ok(TemporalCheckpoint {
            done,
            layer: meta.layer,
            rbm,
            cond,
            state,
            history: meta.history,
            rng: meta.rng,
            fingerprint: meta.fingerprint,
        })
    }
}
