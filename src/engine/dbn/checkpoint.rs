//! Checkpoints of greedy training, taken at epoch boundaries: everything needed to continue a
//! run bit for bit — the trained layers, the layer in training with its momentum increments,
//! fantasy particles and example order, the metrics so far, and the random generator's state.
//! Stored as safetensors (format `dbn-serve.checkpoint`), like models.
//!
//! A checkpoint does not hold the training spec: whoever keeps it keeps the spec beside it
//! and resumes with the same one. Resuming checks every shape against that spec.

use std::collections::HashMap;

use ndarray::{Array1, Array2};
use safetensors::tensor::{Dtype, TensorView};
use safetensors::SafeTensors;
use serde::{Deserialize, Serialize};

use crate::engine::error::{EngineError, Result};
use crate::engine::observer::EpochMetrics;
use crate::engine::persist::{le_bytes, read_f32};
use crate::engine::rbm::{LayerState, Rbm};
use crate::engine::EngineRng;

/// The `format` metadata value of checkpoint files.
pub const CHECKPOINT_FORMAT: &str = "dbn-serve.checkpoint";
const CHECKPOINT_VERSION: u32 = 1;

/// Greedy training stopped after an epoch.
#[derive(Debug, Clone, PartialEq)]
pub struct Checkpoint {
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
}

fn rbm_tensors(prefix: &str, rbm: &Rbm, out: &mut Vec<(String, Vec<usize>, Vec<u8>)>) {
    let (v, h) = rbm.weights.dim();
    out.push((
        format!("{prefix}.weight"),
        vec![v, h],
        le_bytes(&rbm.weights.iter().copied().collect::<Vec<_>>()),
    ));
    out.push((
        format!("{prefix}.visible_bias"),
        vec![v],
        le_bytes(&rbm.visible_bias.to_vec()),
    ));
    out.push((
        format!("{prefix}.hidden_bias"),
        vec![h],
        le_bytes(&rbm.hidden_bias.to_vec()),
    ));
}

impl Checkpoint {
    /// Serialises the checkpoint to safetensors bytes.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let mut owned: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
        for (i, rbm) in self.done.iter().enumerate() {
            rbm_tensors(&format!("done.{i}"), rbm, &mut owned);
        }
        rbm_tensors("current", &self.rbm, &mut owned);
        let s = &self.state;
        owned.push((
            "state.w_inc".into(),
            s.w_inc.shape().to_vec(),
            le_bytes(&s.w_inc.iter().copied().collect::<Vec<_>>()),
        ));
        owned.push((
            "state.vb_inc".into(),
            vec![s.vb_inc.len()],
            le_bytes(&s.vb_inc.to_vec()),
        ));
        owned.push((
            "state.hb_inc".into(),
            vec![s.hb_inc.len()],
            le_bytes(&s.hb_inc.to_vec()),
        ));
        if let Some(c) = &s.chains {
            owned.push((
                "state.chains".into(),
                c.shape().to_vec(),
                le_bytes(&c.iter().copied().collect::<Vec<_>>()),
            ));
        }
        let order: Vec<u8> = s.order.iter().flat_map(|i| i.to_le_bytes()).collect();
        let mut views = Vec::with_capacity(owned.len() + 1);
        for (name, shape, bytes) in &owned {
            views.push((
                name.clone(),
                TensorView::new(Dtype::F32, shape.clone(), bytes)
                    .map_err(|e| EngineError::Model(e.to_string()))?,
            ));
        }
        views.push((
            "state.order".into(),
            TensorView::new(Dtype::U32, vec![s.order.len()], &order)
                .map_err(|e| EngineError::Model(e.to_string()))?,
        ));
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
        };
        let metadata = HashMap::from([
            ("format".to_string(), CHECKPOINT_FORMAT.to_string()),
            ("format_version".to_string(), CHECKPOINT_VERSION.to_string()),
            (
                "checkpoint".to_string(),
                serde_json::to_string(&meta).map_err(|e| EngineError::Model(e.to_string()))?,
            ),
        ]);
        safetensors::serialize(views, Some(metadata)).map_err(|e| EngineError::Model(e.to_string()))
    }

    /// Parses bytes written by [`Checkpoint::to_bytes`], rejecting anything else.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let bad = |m: String| EngineError::Model(format!("checkpoint: {m}"));
        let st = SafeTensors::deserialize(bytes)
            .map_err(|e| bad(format!("not a safetensors file: {e}")))?;
        let (_, header) = SafeTensors::read_metadata(bytes).map_err(|e| bad(e.to_string()))?;
        let meta_map = header.metadata().clone().unwrap_or_default();
        if meta_map.get("format").map(String::as_str) != Some(CHECKPOINT_FORMAT)
            || meta_map.get("format_version").map(String::as_str) != Some("1")
        {
            return Err(bad(format!(
                "not a {CHECKPOINT_FORMAT} version {CHECKPOINT_VERSION} file"
            )));
        }
        let meta: Meta = serde_json::from_str(
            meta_map
                .get("checkpoint")
                .ok_or_else(|| bad("no metadata".into()))?,
        )
        .map_err(|e| bad(e.to_string()))?;
        if meta.label_units.len() != meta.layer + 1 {
            return Err(bad("layer count and label units disagree".into()));
        }
        let read_rbm = |prefix: &str, labels: usize| -> Result<Rbm> {
            let w = st
                .tensor(&format!("{prefix}.weight"))
                .map_err(|e| bad(format!("{prefix}: {e}")))?;
            let (v, h) = match w.shape() {
                [v, h] => (*v, *h),
                other => return Err(bad(format!("{prefix}.weight has shape {other:?}"))),
            };
            let weights = read_f32(&st, &format!("{prefix}.weight"), &[v, h])?;
            let rbm = Rbm {
                weights: Array2::from_shape_vec((v, h), weights).map_err(|e| bad(e.to_string()))?,
                visible_bias: Array1::from_vec(read_f32(
                    &st,
                    &format!("{prefix}.visible_bias"),
                    &[v],
                )?),
                hidden_bias: Array1::from_vec(read_f32(
                    &st,
                    &format!("{prefix}.hidden_bias"),
                    &[h],
                )?),
                label_units: labels,
            };
            if labels > v || !rbm.is_finite() {
                return Err(bad(format!("{prefix} is inconsistent or not finite")));
            }
            Ok(rbm)
        };
        let done = (0..meta.layer)
            .map(|i| read_rbm(&format!("done.{i}"), meta.label_units[i]))
            .collect::<Result<Vec<_>>>()?;
        let rbm = read_rbm("current", meta.label_units[meta.layer])?;
        let (v, h) = rbm.weights.dim();
        let order_view = st.tensor("state.order").map_err(|e| bad(e.to_string()))?;
        if order_view.dtype() != Dtype::U32 || order_view.shape() != [meta.examples] {
            return Err(bad("state.order has the wrong type or length".into()));
        }
        let order = order_view
            .data()
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        let chains = if meta.persistent {
            let view = st.tensor("state.chains").map_err(|e| bad(e.to_string()))?;
            let rows = view.shape().first().copied().unwrap_or(0);
            let data = read_f32(&st, "state.chains", &[rows, v])?;
            Some(Array2::from_shape_vec((rows, v), data).map_err(|e| bad(e.to_string()))?)
        } else {
            None
        };
        let state = LayerState {
            next_epoch: meta.next_epoch,
            w_inc: Array2::from_shape_vec((v, h), read_f32(&st, "state.w_inc", &[v, h])?)
                .map_err(|e| bad(e.to_string()))?,
            vb_inc: Array1::from_vec(read_f32(&st, "state.vb_inc", &[v])?),
            hb_inc: Array1::from_vec(read_f32(&st, "state.hb_inc", &[h])?),
            chains,
            order,
        };
        Ok(Checkpoint {
            done,
            layer: meta.layer,
            rbm,
            state,
            history: meta.history,
            rng: meta.rng,
        })
    }
}
