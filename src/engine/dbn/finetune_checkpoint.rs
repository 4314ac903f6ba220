//! Checkpoints of fine-tuning (format `dbn-serve.finetune-checkpoint`): the model as it
//! stands — for backpropagation the pretrained stack with the classifier in training, for
//! up-down the untied stack in training — with the momentum increments, the example order,
//! the metrics of every epoch so far and the generator's state.

use ndarray::{Array1, Array2};
use safetensors::SafeTensors;
use serde::{Deserialize, Serialize};

use super::Dbn;
use crate::engine::error::{EngineError, Result};
use crate::engine::finetune::{Dense, FinetuneState, MAX_FINETUNE_EPOCHS};
use crate::engine::observer::EpochMetrics;
use crate::engine::persist::{
    body_of, metadata_of, push_dbn, read_dbn, read_f32, read_u32, DbnLayout, Tensors,
};
use crate::engine::EngineRng;
use rand::SeedableRng;

/// The `format` metadata value of fine-tuning checkpoint files.
pub const FINETUNE_CHECKPOINT_FORMAT: &str = "dbn-serve.finetune-checkpoint";
const VERSION: u32 = 1;

/// Fine-tuning stopped after an epoch.
#[derive(Debug, Clone, PartialEq)]
pub struct FinetuneCheckpoint {
    /// The model after `state.next_epoch` epochs of fine-tuning.
    pub dbn: Dbn,
    pub state: FinetuneState,
    /// Metrics of every epoch so far, pretraining's included.
    pub history: Vec<EpochMetrics>,
    /// The generator, positioned after the last draw of the epoch.
    pub rng: EngineRng,
    /// Identifies the spec (fine-tuning settings included) and data; resuming refuses another.
    pub fingerprint: u64,
}

#[derive(Serialize, Deserialize)]
struct Meta {
    #[serde(flatten)]
    layout: DbnLayout,
    next_epoch: usize,
    examples: usize,
    increments: usize,
    history: Vec<EpochMetrics>,
    rng: EngineRng,
    fingerprint: u64,
}

impl FinetuneCheckpoint {
    /// Serialises the checkpoint to safetensors bytes.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let mut tensors = Tensors::default();
        let layout = push_dbn(&mut tensors, &self.dbn);
        for (i, inc) in self.state.increments.iter().enumerate() {
            let (n_in, n_out) = inc.weights.dim();
            tensors.push_f32(
                &format!("state.inc.{i}.weight"),
                &[n_in, n_out],
                inc.weights.iter(),
            );
            tensors.push_f32(&format!("state.inc.{i}.bias"), &[n_out], inc.bias.iter());
        }
        tensors.push_u32("state.order", &self.state.order);
        let meta = Meta {
            layout,
            next_epoch: self.state.next_epoch,
            examples: self.state.order.len(),
            increments: self.state.increments.len(),
            history: self.history.clone(),
            rng: self.rng.clone(),
            fingerprint: self.fingerprint,
        };
        tensors.serialize(metadata_of(FINETUNE_CHECKPOINT_FORMAT, VERSION, &meta)?)
    }

    /// Parses bytes written by [`FinetuneCheckpoint::to_bytes`], rejecting anything else.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let bad = |m: String| EngineError::Model(format!("fine-tuning checkpoint: {m}"));
        let st = SafeTensors::deserialize(bytes)
            .map_err(|e| bad(format!("not a safetensors file: {e}")))?;
        let meta: Meta = body_of(bytes, FINETUNE_CHECKPOINT_FORMAT, VERSION)?;
        let expected = meta.layout.tensor_count() + 2 * meta.increments + 1;
        if st.len() != expected {
            return Err(bad(format!("{} tensors, expected {expected}", st.len())));
        }
        if meta.next_epoch == 0 || meta.next_epoch > MAX_FINETUNE_EPOCHS {
            return Err(bad(format!(
                "next epoch {} is out of range",
                meta.next_epoch
            )));
        }
        if meta.rng == EngineRng::from_seed([0; 32]) {
            return Err(bad("the generator state is all zeros".into()));
        }
        let dbn = read_dbn(&st, &meta.layout, None)?;
        let layers = dbn.classifier().map_or(&[][..], |c| c.layers());
        if meta.increments != 0 && meta.increments != layers.len() {
            return Err(bad("momentum increments for another network".into()));
        }
        let mut increments = Vec::with_capacity(meta.increments);
        for (i, layer) in layers.iter().enumerate().take(meta.increments) {
            let (n_in, n_out) = layer.weights.dim();
            let w = read_f32(&st, &format!("state.inc.{i}.weight"), &[n_in, n_out])?;
            let b = read_f32(&st, &format!("state.inc.{i}.bias"), &[n_out])?;
            if !w.iter().chain(&b).all(|v| v.is_finite()) {
                return Err(bad(format!("increment {i} holds non-finite values")));
            }
            increments.push(Dense {
                weights: Array2::from_shape_vec((n_in, n_out), w)
                    .map_err(|e| bad(e.to_string()))?,
                bias: Array1::from_vec(b),
            });
        }
        let order = read_u32(&st, "state.order", meta.examples)?;
        Ok(FinetuneCheckpoint {
            dbn,
            state: FinetuneState {
                next_epoch: meta.next_epoch,
                order,
                increments,
            },
            history: meta.history,
            rng: meta.rng,
            fingerprint: meta.fingerprint,
        })
    }
}
