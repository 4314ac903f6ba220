//! The safetensors plumbing that model files and checkpoints share: one JSON metadata key
//! behind a format name and version, tensors on their way in, and checked readers of f32/u32
//! tensors, RBMs and dense layers.

use std::collections::HashMap;

use ndarray::{Array1, Array2};
use safetensors::tensor::{Dtype, TensorView};
use safetensors::SafeTensors;
use serde::{Deserialize, Serialize};

use crate::engine::crbm::Conditioning;
use crate::engine::error::{EngineError, Result};
use crate::engine::finetune::Dense;
use crate::engine::rbm::Rbm;

/// The one metadata key of our files. safetensors keeps metadata in a `HashMap`, whose order
/// differs from instance to instance, so several keys would make two saves of the same model
/// differ byte for byte; one key holding one JSON object keeps files reproducible.
const META_KEY: &str = "dbn_serve";

#[derive(Serialize, Deserialize)]
struct Envelope<B> {
    format: String,
    format_version: u32,
    body: B,
}

/// safetensors metadata holding `body` under [`META_KEY`], tagged with a format and version.
pub(crate) fn metadata_of<B: Serialize>(
    format: &str,
    version: u32,
    body: &B,
) -> Result<HashMap<String, String>> {
    let envelope = Envelope {
        format: format.to_string(),
        format_version: version,
        body,
    };
    let json = serde_json::to_string(&envelope).map_err(|e| EngineError::Model(e.to_string()))?;
    Ok(HashMap::from([(META_KEY.to_string(), json)]))
}

/// The body of safetensors bytes written with [`metadata_of`], after checking format and
/// version.
pub(crate) fn body_of<B: serde::de::DeserializeOwned>(
    bytes: &[u8],
    format: &str,
    version: u32,
) -> Result<B> {
    let bad = |m: String| EngineError::Model(m);
    let (_, header) = SafeTensors::read_metadata(bytes)
        .map_err(|e| bad(format!("not a safetensors file: {e}")))?;
    let raw = header
        .metadata()
        .as_ref()
        .and_then(|m| m.get(META_KEY))
        .ok_or_else(|| bad(format!("not a {format} file (no {META_KEY} metadata)")))?;
    let envelope: Envelope<serde_json::Value> =
        serde_json::from_str(raw).map_err(|e| bad(format!("{META_KEY} metadata: {e}")))?;
    if envelope.format != format {
        return Err(bad(format!(
            "not a {format} file (format: {})",
            envelope.format
        )));
    }
    if envelope.format_version != version {
        return Err(bad(format!(
            "{format} version {} is not supported (this build reads {version})",
            envelope.format_version
        )));
    }
    serde_json::from_value(envelope.body).map_err(|e| bad(format!("{format} metadata: {e}")))
}

/// The format name our metadata gives `bytes` (e.g. [`super::FORMAT`]), if it has one.
pub(crate) fn format_of(bytes: &[u8]) -> Option<String> {
    let (_, header) = SafeTensors::read_metadata(bytes).ok()?;
    let raw = header.metadata().as_ref()?.get(META_KEY)?;
    let envelope: Envelope<serde_json::Value> = serde_json::from_str(raw).ok()?;
    Some(envelope.format)
}

/// Tensors on their way into a safetensors file: name, type, shape, little-endian bytes.
/// With `bf16`, real values are stored as bfloat16 (half the bytes; readers widen them back).
#[derive(Default)]
pub(crate) struct Tensors {
    tensors: Vec<(String, Dtype, Vec<usize>, Vec<u8>)>,
    pub(crate) bf16: bool,
}

/// `v` rounded to the nearest bfloat16 (ties to even), as its 16 bits.
pub(crate) fn to_bf16(v: f32) -> u16 {
    let bits = v.to_bits();
    let rounding = 0x7fff + ((bits >> 16) & 1);
    (bits.wrapping_add(rounding) >> 16) as u16
}

impl Tensors {
    pub(crate) fn push_f32<'a>(
        &mut self,
        name: &str,
        shape: &[usize],
        values: impl IntoIterator<Item = &'a f32>,
    ) {
        let (dtype, bytes) = if self.bf16 {
            let bytes = values
                .into_iter()
                .flat_map(|v| to_bf16(*v).to_le_bytes())
                .collect();
            (Dtype::BF16, bytes)
        } else {
            let bytes = values.into_iter().flat_map(|v| v.to_le_bytes()).collect();
            (Dtype::F32, bytes)
        };
        self.tensors
            .push((name.to_string(), dtype, shape.to_vec(), bytes));
    }

    pub(crate) fn push_u32(&mut self, name: &str, values: &[u32]) {
        let bytes = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.tensors
            .push((name.to_string(), Dtype::U32, vec![values.len()], bytes));
    }

    /// `PREFIX.weight` [V, H], `PREFIX.visible_bias` [V], `PREFIX.hidden_bias` [H].
    pub(crate) fn push_rbm(&mut self, prefix: &str, rbm: &Rbm) {
        let (v, h) = rbm.weights.dim();
        self.push_f32(&format!("{prefix}.weight"), &[v, h], rbm.weights.iter());
        self.push_f32(
            &format!("{prefix}.visible_bias"),
            &[v],
            rbm.visible_bias.iter(),
        );
        self.push_f32(
            &format!("{prefix}.hidden_bias"),
            &[h],
            rbm.hidden_bias.iter(),
        );
        if let Some(l) = &rbm.lateral {
            self.push_f32(&format!("{prefix}.lateral"), l.shape(), l.iter());
        }
    }

    /// `PREFIX.weight` [in, out], `PREFIX.bias` [out].
    /// A conditional layer's weights from the past, as `{prefix}.past_visible` and
    /// `{prefix}.past_hidden`.
    pub(crate) fn push_conditioning(&mut self, prefix: &str, cond: &Conditioning) {
        for (name, w) in [
            ("past_visible", &cond.past_visible),
            ("past_hidden", &cond.past_hidden),
        ] {
            self.push_f32(&format!("{prefix}.{name}"), w.shape(), w.iter());
        }
    }

    pub(crate) fn push_dense(&mut self, prefix: &str, layer: &Dense) {
        let (n_in, n_out) = layer.weights.dim();
        self.push_f32(
            &format!("{prefix}.weight"),
            &[n_in, n_out],
            layer.weights.iter(),
        );
        self.push_f32(&format!("{prefix}.bias"), &[n_out], layer.bias.iter());
    }

    pub(crate) fn serialize(&self, metadata: HashMap<String, String>) -> Result<Vec<u8>> {
        let views = self
            .tensors
            .iter()
            .map(|(name, dtype, shape, bytes)| {
                TensorView::new(*dtype, shape.clone(), bytes)
                    .map(|v| (name.clone(), v))
                    .map_err(|e| EngineError::Model(e.to_string()))
            })
            .collect::<Result<Vec<_>>>()?;
        safetensors::serialize(views, Some(metadata)).map_err(|e| EngineError::Model(e.to_string()))
    }
}

/// Reads the layer written by [`Tensors::push_dense`] under `prefix`, of whatever shape its
/// weights have, checking that the bias matches and every value is finite.
pub(crate) fn read_dense(st: &SafeTensors, prefix: &str) -> Result<Dense> {
    let name = format!("{prefix}.weight");
    let (n_in, n_out) = match st
        .tensor(&name)
        .map_err(|e| EngineError::Model(format!("{name}: {e}")))?
        .shape()
    {
        [a, b] => (*a, *b),
        other => return Err(EngineError::Model(format!("{name} has shape {other:?}"))),
    };
    let weights = Array2::from_shape_vec((n_in, n_out), read_f32(st, &name, &[n_in, n_out])?)
        .map_err(|e| EngineError::Model(e.to_string()))?;
    let bias = Array1::from_vec(read_f32(st, &format!("{prefix}.bias"), &[n_out])?);
    if !weights.iter().chain(bias.iter()).all(|v| v.is_finite()) {
        return Err(EngineError::Model(format!(
            "{prefix} has non-finite values"
        )));
    }
    Ok(Dense { weights, bias })
}

/// Reads the RBM written by [`Tensors::push_rbm`] under `prefix`, of the given [V, H] shape
/// (or whatever the weights say), checking shapes, the label group and finiteness.
pub(crate) fn read_rbm(
    st: &SafeTensors,
    prefix: &str,
    shape: Option<(usize, usize)>,
    labels: usize,
) -> Result<Rbm> {
    let weight = format!("{prefix}.weight");
    let (v, h) = match shape {
        Some(shape) => shape,
        None => match st
            .tensor(&weight)
            .map_err(|e| EngineError::Model(format!("{weight}: {e}")))?
            .shape()
        {
            [v, h] => (*v, *h),
            other => return Err(EngineError::Model(format!("{weight} has shape {other:?}"))),
        },
    };
    let weights = read_f32(st, &weight, &[v, h])?;
    let rbm = Rbm {
        weights: Array2::from_shape_vec((v, h), weights)
            .map_err(|e| EngineError::Model(e.to_string()))?,
        visible_bias: Array1::from_vec(read_f32(st, &format!("{prefix}.visible_bias"), &[v])?),
        hidden_bias: Array1::from_vec(read_f32(st, &format!("{prefix}.hidden_bias"), &[h])?),
        label_units: labels,
        visible_units: Default::default(),
        hidden_units: Default::default(),
        lateral: None,
    };
    let mut rbm = rbm;
    let lateral = format!("{prefix}.lateral");
    if st.tensor(&lateral).is_ok() {
        let f = v
            .checked_sub(labels)
            .ok_or_else(|| EngineError::Model(format!("{prefix} has more labels than units")))?;
        rbm.lateral = Some(
            Array2::from_shape_vec((f, f), read_f32(st, &lateral, &[f, f])?)
                .map_err(|e| EngineError::Model(e.to_string()))?,
        );
        rbm.check_lateral()?;
    }
    if labels > v || !rbm.is_finite() {
        return Err(EngineError::Model(format!(
            "{prefix} has more labels than units or non-finite values"
        )));
    }
    Ok(rbm)
}

/// The u32 vector `name` of length `len`.
pub(crate) fn read_u32(st: &SafeTensors, name: &str, len: usize) -> Result<Vec<u32>> {
    let t = st
        .tensor(name)
        .map_err(|e| EngineError::Model(format!("{name}: {e}")))?;
    if t.dtype() != Dtype::U32 || t.shape() != [len] {
        return Err(EngineError::Model(format!(
            "{name}: expected u32 [{len}], found {:?} {:?}",
            t.dtype(),
            t.shape()
        )));
    }
    Ok(t.data()
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect())
}

/// The weights [`Tensors::push_conditioning`] wrote for `rbm`'s layer at `order`, checked for
/// shape and finite values.
pub(crate) fn read_conditioning(
    st: &SafeTensors,
    prefix: &str,
    order: usize,
    rbm: &Rbm,
) -> Result<Conditioning> {
    let (v, h) = (rbm.n_visible(), rbm.n_hidden());
    let past = order
        .checked_mul(v)
        .ok_or_else(|| EngineError::Model(format!("{prefix}: order {order} is too large")))?;
    Ok(Conditioning {
        past_visible: read_matrix(st, &format!("{prefix}.past_visible"), past, v)?,
        past_hidden: read_matrix(st, &format!("{prefix}.past_hidden"), past, h)?,
    })
}

/// A [rows, cols] f32 tensor as a matrix, refused when it holds a non-finite value.
pub(crate) fn read_matrix(
    st: &SafeTensors,
    name: &str,
    rows: usize,
    cols: usize,
) -> Result<ndarray::Array2<f32>> {
    let values = read_f32(st, name, &[rows, cols])?;
    if !values.iter().all(|x| x.is_finite()) {
        return Err(EngineError::Model(format!(
            "{name} holds non-finite values"
        )));
    }
    ndarray::Array2::from_shape_vec((rows, cols), values)
        .map_err(|e| EngineError::Model(e.to_string()))
}

pub(crate) fn read_f32(st: &SafeTensors, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
    let t = st
        .tensor(name)
        .map_err(|e| EngineError::Model(format!("{name}: {e}")))?;
    match t.dtype() {
        Dtype::F32 if t.shape() == shape => Ok(t
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect()),
        // bfloat16 is the upper half of an f32.
        Dtype::BF16 if t.shape() == shape => Ok(t
            .data()
            .chunks_exact(2)
            .map(|c| f32::from_bits((u16::from_le_bytes([c[0], c[1]]) as u32) << 16))
            .collect()),
        _ => Err(EngineError::Model(format!(
            "{name}: expected f32 or bf16 {shape:?}, found {:?} {:?}",
            t.dtype(),
            t.shape()
        ))),
    }
}
