//! Checkpoints, taken at epoch boundaries: everything needed to continue a run bit for bit.
//! A greedy checkpoint holds the trained layers, the layer in training with its momentum
//! increments, fantasy particles and example order, the metrics so far, and the random
//! generator's state; a fine-tuning checkpoint (see `finetune_checkpoint.rs`) the model in
//! fine-tuning and its learning state. Both are safetensors files, like models, told apart by
//! their format name.
//!
//! A checkpoint does not hold the training spec: whoever keeps it keeps the spec beside it
//! and resumes with the same one. Resuming checks every shape against that spec.

use ndarray::{Array1, Array2};
use safetensors::SafeTensors;
use serde::{Deserialize, Serialize};

use super::finetune_checkpoint::{FinetuneCheckpoint, FINETUNE_CHECKPOINT_FORMAT};
use crate::engine::crbm::{TemporalCheckpoint, TEMPORAL_CHECKPOINT_FORMAT};
use crate::engine::error::{EngineError, Result};
use crate::engine::observer::EpochMetrics;
use crate::engine::persist::{
    body_of, check_resume_point, format_of, metadata_of, read_f32, read_rbm, read_u32, Tensors,
};
use crate::engine::rbm::{LayerState, Rbm};
use crate::engine::EngineRng;

/// The `format` metadata value of checkpoint files.
pub const CHECKPOINT_FORMAT: &str = "dbn-serve.checkpoint";
const CHECKPOINT_VERSION: u32 = 1;

/// A run stopped after an epoch, in pretraining or in fine-tuning.
// One is built per epoch and its arrays live on the heap: the variants' inline sizes do not
// matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Checkpoint {
    Greedy(GreedyCheckpoint),
    Finetune(FinetuneCheckpoint),
    /// Greedy training of a sequence model's conditional layers.
    Temporal(TemporalCheckpoint),
}

impl Checkpoint {
    /// Serialises the checkpoint to safetensors bytes.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        match self {
            Checkpoint::Greedy(cp) => cp.to_bytes(),
            Checkpoint::Finetune(cp) => cp.to_bytes(),
            Checkpoint::Temporal(cp) => cp.to_bytes(),
        }
    }

    /// Parses bytes written by [`Checkpoint::to_bytes`], rejecting anything else.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        match format_of(bytes).as_deref() {
            Some(FINETUNE_CHECKPOINT_FORMAT) => {
                FinetuneCheckpoint::from_bytes(bytes).map(Checkpoint::Finetune)
            }
            Some(TEMPORAL_CHECKPOINT_FORMAT) => {
                TemporalCheckpoint::from_bytes(bytes).map(Checkpoint::Temporal)
            }
            _ => GreedyCheckpoint::from_bytes(bytes).map(Checkpoint::Greedy),
        }
    }

    /// Metrics of every epoch before the checkpoint.
    pub fn history(&self) -> &[EpochMetrics] {
        match self {
            Checkpoint::Greedy(cp) => &cp.history,
            Checkpoint::Finetune(cp) => &cp.history,
            Checkpoint::Temporal(cp) => &cp.history,
        }
    }

    /// Where the run continues, for logs: e.g. "layer 2, epoch 5" or "fine-tuning epoch 7".
    pub fn position(&self) -> String {
        match self {
            Checkpoint::Greedy(cp) => {
                format!("layer {}, epoch {}", cp.layer + 1, cp.state.next_epoch + 1)
            }
            Checkpoint::Finetune(cp) => format!("fine-tuning epoch {}", cp.state.next_epoch + 1),
            Checkpoint::Temporal(cp) => {
                format!("layer {}, epoch {}", cp.layer + 1, cp.state.next_epoch + 1)
            }
        }
    }
}

/// Greedy training stopped after an epoch.
#[derive(Debug, Clone, PartialEq)]
pub struct GreedyCheckpoint {
    /// Layers finished before the one in training.
    pub done: Vec<Rbm>,
    /// Index of the layer in training (= `done.len()`).
    pub layer: usize,
    /// The layer in training and its learning state.
    pub rbm: Rbm,
    pub state: LayerState,
    /// Metrics of every epoch so far.
    pub history: Vec<EpochMetrics>,
    /// The generator, positioned after the last draw of the epoch.
    pub rng: EngineRng,
    /// Identifies the run's spec and data (see [`run_fingerprint`]); resuming refuses another.
    pub fingerprint: u64,
}

/// A stable 64-bit fingerprint (FNV-1a over 32-bit words) of a spec's JSON, the sizes of the
/// training and held-out sets, and every training pixel and label: what a checkpoint must be
/// resumed with to reproduce its run.
pub fn run_fingerprint(
    spec_json: &str,
    train: &crate::engine::data::Dataset,
    held_out: usize,
) -> u64 {
    const PRIME: u64 = 0x0000_0100_0000_01B3;
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut mix = |word: u32| {
        h ^= word as u64;
        h = h.wrapping_mul(PRIME);
    };
    spec_json.bytes().for_each(|b| mix(b as u32));
    mix(train.len() as u32);
    mix(held_out as u32);
    train.images.iter().for_each(|p| mix(p.to_bits()));
    train.labels.iter().for_each(|&l| mix(l as u32));
    h
}

/// The small part of a checkpoint, kept as JSON in the metadata.
#[derive(Serialize, Deserialize)]
struct Meta {
    layer: usize,
    next_epoch: usize,
    /// label_units of each done layer, then of the layer in training.
    label_units: Vec<usize>,
    persistent: bool,
    examples: usize,
    history: Vec<EpochMetrics>,
    rng: EngineRng,
    fingerprint: u64,
}

impl GreedyCheckpoint {
    /// Serialises the checkpoint to safetensors bytes.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let mut tensors = Tensors::default();
        for (i, rbm) in self.done.iter().enumerate() {
            tensors.push_rbm(&format!("done.{i}"), rbm);
        }
        tensors.push_rbm("current", &self.rbm);
        let s = &self.state;
        tensors.push_f32("state.w_inc", s.w_inc.shape(), s.w_inc.iter());
        tensors.push_f32("state.vb_inc", &[s.vb_inc.len()], s.vb_inc.iter());
        tensors.push_f32("state.hb_inc", &[s.hb_inc.len()], s.hb_inc.iter());
        if let Some(c) = &s.chains {
            tensors.push_f32("state.chains", c.shape(), c.iter());
        }
        tensors.push_u32("state.order", &s.order);
        if let Some(l) = &s.l_inc {
            tensors.push_f32("state.l_inc", l.shape(), l.iter());
        }
        let meta = Meta {
            layer: self.layer,
            next_epoch: s.next_epoch,
            label_units: self
                .done
                .iter()
                .chain([&self.rbm])
                .map(|r| r.label_units)
                .collect(),
            persistent: s.chains.is_some(),
            examples: s.order.len(),
            history: self.history.clone(),
            rng: self.rng.clone(),
            fingerprint: self.fingerprint,
        };
        tensors.serialize(metadata_of(CHECKPOINT_FORMAT, CHECKPOINT_VERSION, &meta)?)
    }

    /// Parses bytes written by [`GreedyCheckpoint::to_bytes`], rejecting anything else.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let bad = |m: String| EngineError::Model(format!("checkpoint: {m}"));
        let st = SafeTensors::deserialize(bytes)
            .map_err(|e| bad(format!("not a safetensors file: {e}")))?;
        let meta: Meta = body_of(bytes, CHECKPOINT_FORMAT, CHECKPOINT_VERSION)?;
        if meta.label_units.len().checked_sub(1) != Some(meta.layer) {
            return Err(bad("layer count and label units disagree".into()));
        }
        check_resume_point(meta.next_epoch, crate::engine::rbm::MAX_EPOCHS, &meta.rng)
            .map_err(bad)?;
        let done = (0..meta.layer)
            .map(|i| read_rbm(&st, &format!("done.{i}"), None, meta.label_units[i]))
            .collect::<Result<Vec<_>>>()?;
        let rbm = read_rbm(&st, "current", None, meta.label_units[meta.layer])?;
        let (v, h) = rbm.weights.dim();
        let order = read_u32(&st, "state.order", meta.examples)?;
        let chains = if meta.persistent {
            let view = st.tensor("state.chains").map_err(|e| bad(e.to_string()))?;
            let rows = view.shape().first().copied().unwrap_or(0);
            let data = read_f32(&st, "state.chains", &[rows, v])?;
            Some(Array2::from_shape_vec((rows, v), data).map_err(|e| bad(e.to_string()))?)
        } else {
            None
        };
        let finite = |a: &[f32]| a.iter().all(|x| x.is_finite());
        let state = LayerState {
            next_epoch: meta.next_epoch,
            w_inc: Array2::from_shape_vec((v, h), read_f32(&st, "state.w_inc", &[v, h])?)
                .map_err(|e| bad(e.to_string()))?,
            vb_inc: Array1::from_vec(read_f32(&st, "state.vb_inc", &[v])?),
            hb_inc: Array1::from_vec(read_f32(&st, "state.hb_inc", &[h])?),
            chains,
            order,
            l_inc: match &rbm.lateral {
                Some(l) => {
                    let dim = l.dim();
                    let values = read_f32(&st, "state.l_inc", &[dim.0, dim.1])?;
                    if !finite(&values) {
                        return Err(bad("the learning state holds non-finite values".into()));
                    }
                    Some(Array2::from_shape_vec(dim, values).map_err(|e| bad(e.to_string()))?)
                }
                None => None,
            },
        };
        let increments_finite = state
            .w_inc
            .iter()
            .chain(&state.vb_inc)
            .chain(&state.hb_inc)
            .all(|x| x.is_finite());
        if !increments_finite
            || !state
                .chains
                .as_ref()
                .is_none_or(|c| finite(c.as_slice().unwrap_or(&[])))
        {
            return Err(bad("the learning state holds non-finite values".into()));
        }
        Ok(GreedyCheckpoint {
            done,
            layer: meta.layer,
            rbm,
            state,
            history: meta.history,
            rng: meta.rng,
            fingerprint: meta.fingerprint,
        })
    }
}
