//! Checkpoints of fine-tuning (format `dbn-serve.finetune-checkpoint`): the model as it
//! stands — for backpropagation the pretrained stack with the classifier in training, for
//! up-down the untied stack in training — with the momentum increments, the example order,
//! the metrics of every epoch so far and the generator's state.

use safetensors::SafeTensors;
use serde::{Deserialize, Serialize};

use super::Dbn;
use crate::engine::error::{EngineError, Result};
use crate::engine::finetune::{FinetuneState, MAX_FINETUNE_EPOCHS};
use crate::engine::observer::EpochMetrics;
use crate::engine::persist::{
    body_of, check_resume_point, metadata_of, push_dbn, read_dbn, read_dense, read_matrix,
    read_u32, DbnLayout, Tensors,
};
use crate::engine::EngineRng;

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
    /// Shape of up-down's persistent chains, when the checkpoint carries them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    chains: Option<[usize; 2]>,
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
            tensors.push_dense(&format!("state.inc.{i}"), inc);
        }
        tensors.push_u32("state.order", &self.state.order);
        if let Some(chains) = &self.state.chains {
            let shape = [chains.nrows(), chains.ncols()];
            tensors.push_f32("state.chains", &shape, chains.iter());
        }
        let meta = Meta {
            layout,
            next_epoch: self.state.next_epoch,
            examples: self.state.order.len(),
            increments: self.state.increments.len(),
            chains: self.state.chains.as_ref().map(|c| [c.nrows(), c.ncols()]),
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
        let expected = meta.layout.tensor_count()
            + 2 * meta.increments
            + 1
            + usize::from(meta.chains.is_some());
        if st.len() != expected {
            return Err(bad(format!("{} tensors, expected {expected}", st.len())));
        }
        check_resume_point(meta.next_epoch, MAX_FINETUNE_EPOCHS, &meta.rng).map_err(bad)?;
        let dbn = read_dbn(&st, &meta.layout, None)?;
        let layers = dbn.classifier().map_or(&[][..], |c| c.layers());
        let increments = (0..meta.increments)
            .map(|i| read_dense(&st, &format!("state.inc.{i}")))
            .collect::<Result<Vec<_>>>()?;
        // Backprop checkpoints carry one increment per classifier layer; up-down ones none.
        let shapes_match = (increments.is_empty() || increments.len() == layers.len())
            && increments
                .iter()
                .zip(layers)
                .all(|(inc, layer)| inc.weights.dim() == layer.weights.dim());
        if !shapes_match {
            return Err(bad("momentum increments for another network".into()));
        }
        let order = read_u32(&st, "state.order", meta.examples)?;
        let chains = match meta.chains {
            Some([rows, cols]) => Some(read_matrix(&st, "state.chains", rows, cols)?),
            None => None,
        };
        Ok(FinetuneCheckpoint {
            dbn,
            state: FinetuneState {
                next_epoch: meta.next_epoch,
                order,
                increments,
                chains,
            },
            history: meta.history,
            rng: meta.rng,
            fingerprint: meta.fingerprint,
        })
    }
}
