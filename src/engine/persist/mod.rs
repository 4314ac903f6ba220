//! Saving and loading whole models as safetensors: one f32 tensor per weight matrix and bias
//! vector, and a JSON model card (architecture, training spec, data provenance, metrics) in
//! the metadata, behind a format name and version. Loading checks everything it reads.

mod card;
mod tensors;

use std::io::Write;
use std::path::Path;

use ndarray::Array2;
use safetensors::SafeTensors;
use serde::{Deserialize, Serialize};

pub use card::{ModelCard, Provenance};
pub(crate) use tensors::{
    body_of, format_of, metadata_of, read_conditioning, read_dense, read_f32, read_matrix,
    read_rbm, read_u32, Tensors,
};

use crate::engine::crbm::Temporal;
use crate::engine::dbn::{Dbn, InputNorm};
use crate::engine::error::{EngineError, Result};
use crate::engine::finetune::{BeliefNet, Classifier, DeepAutoencoder};
use crate::engine::rbm::Units;

/// The `format` metadata value of our model files.
pub const FORMAT: &str = "dbn-serve.dbn";
/// Bumped whenever the layout of tensors or card changes incompatibly.
pub const FORMAT_VERSION: u32 = 1;

/// The metadata of a model file besides the format tag.
#[derive(Serialize, Deserialize)]
struct ModelMeta {
    #[serde(flatten)]
    layout: DbnLayout,
    card: ModelCard,
}

/// Which tensors hold a [`Dbn`]: label units of each RBM, the classifier's dense layers and
/// the untied generative weights. Kept in the metadata of model and checkpoint files.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct DbnLayout {
    pub label_units: Vec<usize>,
    /// Dense layers of the fine-tuned classifier (0: none; absent in files without one).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub classifier_layers: usize,
    /// Layers with untied generative weights (0: tied; absent in files without them).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub generative_layers: usize,
    /// (visible, hidden) unit kinds of each RBM (absent when every unit is binary).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub units: Vec<(Units, Units)>,
    /// Dense layers of the fine-tuned deep autoencoder (0: none; absent in files without).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub autoencoder_layers: usize,
    /// RBMs with lateral connections (0: none; absent in files without them).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub lateral_layers: usize,
    /// Layers of the wake-sleep belief net (0: none; absent in files without one).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub belief_layers: usize,
    /// Whether `input.mean` and `input.scale` hold the input standardisation.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub input_norm: bool,
    /// The order of a sequence model, whose layers are conditional RBMs with
    /// `layers.{i}.past_visible` and `layers.{i}.past_hidden` (0: none; absent otherwise).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub temporal_order: usize,
}

impl DbnLayout {
    /// How many tensors [`push_dbn`] writes for this layout.
    pub fn tensor_count(&self) -> usize {
        3 * self.label_units.len()
            + 2 * self.classifier_layers
            + self.generative_layers
            + 2 * self.input_norm as usize
            + 2 * self.autoencoder_layers
            + self.lateral_layers
            + (4 * self.belief_layers + 1) * (self.belief_layers > 0) as usize
            + 2 * self.label_units.len() * (self.temporal_order > 0) as usize
    }
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// Reads the `layers` dense layers of a fine-tuned classifier, checking that they chain.
fn read_classifier(st: &SafeTensors, layers: usize) -> Result<Classifier> {
    let dense = (0..layers)
        .map(|i| read_dense(st, &format!("classifier.{i}")))
        .collect::<Result<Vec<_>>>()?;
    Classifier::new(dense).map_err(|e| EngineError::Model(format!("classifier: {e}")))
}

/// Adds the tensors of `dbn` (RBMs as `layers.{i}.*`, `generative.{l}.weight`,
/// `classifier.{i}.*`) and returns their layout.
pub(crate) fn push_dbn(tensors: &mut Tensors, dbn: &Dbn) -> DbnLayout {
    for (i, rbm) in dbn.layers().iter().enumerate() {
        tensors.push_rbm(&format!("layers.{i}"), rbm);
    }
    let generative_layers = if dbn.is_untied() {
        dbn.layers().len() - 1
    } else {
        0
    };
    for l in 0..generative_layers {
        let g = dbn.generative(l);
        tensors.push_f32(
            &format!("generative.{l}.weight"),
            &[g.nrows(), g.ncols()],
            g.iter(),
        );
    }
    let classifier_layers = dbn.classifier().map_or(0, |c| c.layers().len());
    for (i, layer) in dbn.classifier().iter().flat_map(|c| c.layers()).enumerate() {
        tensors.push_dense(&format!("classifier.{i}"), layer);
    }
    let autoencoder_layers = dbn.autoencoder().map_or(0, |a| a.layers().len());
    for (i, layer) in dbn
        .autoencoder()
        .iter()
        .flat_map(|a| a.layers())
        .enumerate()
    {
        tensors.push_dense(&format!("autoencoder.{i}"), layer);
    }
    let belief_layers = dbn.belief_net().map_or(0, |b| b.recognition.len());
    if let Some(net) = dbn.belief_net() {
        for (l, (r, g)) in net.recognition.iter().zip(&net.generative).enumerate() {
            tensors.push_dense(&format!("wake_sleep.recognition.{l}"), r);
            tensors.push_dense(&format!("wake_sleep.generative.{l}"), g);
        }
        let top = &net.top_bias;
        tensors.push_f32("wake_sleep.top_bias", &[top.len()], top.iter());
    }
    if let Some(norm) = dbn.input_norm() {
        let n = norm.mean.len();
        tensors.push_f32("input.mean", &[n], norm.mean.iter());
        tensors.push_f32("input.scale", &[n], norm.scale.iter());
    }
    if let Some(temporal) = dbn.temporal() {
        for (i, cond) in temporal.layers.iter().enumerate() {
            tensors.push_conditioning(&format!("layers.{i}"), cond);
        }
    }
    let units: Vec<(Units, Units)> = dbn
        .layers()
        .iter()
        .map(|r| (r.visible_units, r.hidden_units))
        .collect();
    let all_binary = units.iter().all(|(v, h)| v.is_binary() && h.is_binary());
    DbnLayout {
        label_units: dbn.layers().iter().map(|r| r.label_units).collect(),
        classifier_layers,
        generative_layers,
        units: if all_binary { Vec::new() } else { units },
        autoencoder_layers,
        belief_layers,
        lateral_layers: dbn.layers().iter().filter(|r| r.lateral.is_some()).count(),
        input_norm: dbn.input_norm().is_some(),
        temporal_order: dbn.temporal().map_or(0, |t| t.order),
    }
}

/// Reads the model [`push_dbn`] wrote with `layout`, checking every shape (against `sizes`,
/// the layer sizes from the input up, when given) and that every value is finite.
pub(crate) fn read_dbn(
    st: &SafeTensors,
    layout: &DbnLayout,
    sizes: Option<&[usize]>,
) -> Result<Dbn> {
    let bad = |m: String| EngineError::Model(m);
    let label_units = &layout.label_units;
    if label_units.is_empty() || sizes.is_some_and(|s| s.len() != label_units.len() + 1) {
        return Err(bad("label_units and sizes disagree".into()));
    }
    let mut layers = Vec::with_capacity(label_units.len());
    for (i, &labels) in label_units.iter().enumerate() {
        let shape = match sizes {
            Some(sizes) => {
                let visible = sizes[i]
                    .checked_add(labels)
                    .ok_or_else(|| bad(format!("layer {i}: sizes overflow")))?;
                Some((visible, sizes[i + 1]))
            }
            None => None,
        };
        let rbm = read_rbm(st, &format!("layers.{i}"), shape, labels)?;
        let rbm = match layout.units.get(i) {
            Some(&(v, h)) => rbm.with_units(v, h)?,
            None => rbm,
        };
        // Lateral weights were checked before the unit kinds were known: check again.
        rbm.check_lateral()?;
        layers.push(rbm);
    }
    if !layout.units.is_empty() && layout.units.len() != layers.len() {
        return Err(bad("unit kinds and layers disagree".into()));
    }
    let mut dbn = Dbn::new(layers)?;
    if layout.input_norm {
        let n = dbn.n_inputs();
        let norm = InputNorm {
            mean: read_f32(st, "input.mean", &[n])?.into(),
            scale: read_f32(st, "input.scale", &[n])?.into(),
        };
        dbn = dbn.with_input_norm(norm)?;
    }
    if layout.temporal_order > 0 {
        let order = layout.temporal_order;
        if order > crate::engine::crbm::MAX_ORDER {
            return Err(bad(format!("temporal order {order} is too large")));
        }
        let conds = dbn
            .layers()
            .iter()
            .enumerate()
            .map(|(i, rbm)| read_conditioning(st, &format!("layers.{i}"), order, rbm))
            .collect::<Result<Vec<_>>>()?;
        dbn = dbn.with_temporal(Temporal {
            order,
            layers: conds,
        })?;
    }
    if layout.belief_layers > 0 {
        let read = |kind: &str| {
            (0..layout.belief_layers)
                .map(|l| read_dense(st, &format!("wake_sleep.{kind}.{l}")))
                .collect::<Result<Vec<_>>>()
        };
        let top = dbn.top().n_hidden();
        let net = BeliefNet::new(
            read("recognition")?,
            read("generative")?,
            read_f32(st, "wake_sleep.top_bias", &[top])?.into(),
        )?;
        dbn = dbn.with_belief_net(net)?;
    }
    if layout.autoencoder_layers > 0 {
        let dense = (0..layout.autoencoder_layers)
            .map(|i| read_dense(st, &format!("autoencoder.{i}")))
            .collect::<Result<Vec<_>>>()?;
        let net = DeepAutoencoder::new(&dbn, dense)
            .map_err(|e| EngineError::Model(format!("autoencoder: {e}")))?;
        dbn = dbn.with_autoencoder(net)?;
    }
    if layout.classifier_layers > 0 {
        dbn = dbn.with_classifier(read_classifier(st, layout.classifier_layers)?)?;
    }
    let generative_layers = layout.generative_layers;
    if generative_layers > 0 {
        if generative_layers + 1 != dbn.layers().len() {
            return Err(bad(
                "generative weights for the wrong number of layers".into()
            ));
        }
        let mut weights = Vec::with_capacity(generative_layers);
        for (l, rbm) in dbn.layers()[..generative_layers].iter().enumerate() {
            let dim = rbm.weights.dim();
            let values = read_f32(st, &format!("generative.{l}.weight"), &[dim.0, dim.1])?;
            if !values.iter().all(|v| v.is_finite()) {
                return Err(bad(format!("generative.{l}.weight has non-finite values")));
            }
            weights.push(Array2::from_shape_vec(dim, values).map_err(|e| bad(e.to_string()))?);
        }
        dbn = dbn.with_generative(weights)?;
    }
    Ok(dbn)
}

/// Serialises a model to safetensors bytes.
pub fn to_bytes(dbn: &Dbn, card: &ModelCard) -> Result<Vec<u8>> {
    write_bytes(dbn, card, false)
}

/// As [`to_bytes`] with every real value stored as bfloat16 (round to nearest even): half the
/// bytes, for a model shipped with the binary. Reading widens the values back to f32, so the
/// model loaded is the f32 model rounded to 8 bits of mantissa.
pub fn to_bytes_bf16(dbn: &Dbn, card: &ModelCard) -> Result<Vec<u8>> {
    write_bytes(dbn, card, true)
}

fn write_bytes(dbn: &Dbn, card: &ModelCard, bf16: bool) -> Result<Vec<u8>> {
    let mut tensors = Tensors::default();
    tensors.bf16 = bf16;
    let layout = push_dbn(&mut tensors, dbn);
    let body = ModelMeta {
        layout,
        card: card.clone(),
    };
    tensors.serialize(metadata_of(FORMAT, FORMAT_VERSION, &body)?)
}

/// Parses safetensors bytes written by [`to_bytes`], rejecting foreign, corrupt, newer or
/// inconsistent files.
pub fn from_bytes(bytes: &[u8]) -> Result<(Dbn, ModelCard)> {
    let bad = |m: String| EngineError::Model(m);
    let st =
        SafeTensors::deserialize(bytes).map_err(|e| bad(format!("not a safetensors file: {e}")))?;
    let ModelMeta { layout, card } = body_of(bytes, FORMAT, FORMAT_VERSION)?;
    let expected = layout.tensor_count();
    if st.len() != expected {
        return Err(bad(format!("{} tensors, expected {expected}", st.len())));
    }
    let dbn = read_dbn(&st, &layout, Some(&card.sizes))?;
    if let Some([h, w]) = card.image_shape {
        if h.checked_mul(w) != Some(dbn.n_inputs()) {
            return Err(bad(format!(
                "image shape {h}x{w} does not match {} inputs",
                dbn.n_inputs()
            )));
        }
    }
    if dbn.label_classes() != card.label_classes {
        return Err(bad("label_classes disagrees with the tensors".into()));
    }
    // A sequence model's card says how its test sequences are made: it must fit the tensors.
    if let (Some(t), Some(seq)) = (
        dbn.temporal(),
        card.spec.as_ref().and_then(|s| s.sequence.as_ref()),
    ) {
        seq.check_model(t.order, dbn.layers().len(), dbn.n_inputs())?;
    }
    Ok((dbn, card))
}

/// Writes `bytes` to `path` atomically: a temporary file in the same directory, flushed to
/// disk, then renamed over the target, so a reader sees the old file or the new, never half.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| EngineError::io(dir, e))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    // Unique per process and call, so concurrent writers of one path never share a file.
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = dir.join(format!(".{name}.tmp-{}-{n}", std::process::id()));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    result.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        EngineError::io(path, e)
    })
}

/// Saves a model to `path` atomically.
pub fn save(path: &Path, dbn: &Dbn, card: &ModelCard) -> Result<()> {
    write_atomic(path, &to_bytes(dbn, card)?)
}

/// Loads a model from `path`.
pub fn load(path: &Path) -> Result<(Dbn, ModelCard)> {
    let bytes = std::fs::read(path).map_err(|e| EngineError::io(path, e))?;
    from_bytes(&bytes)
}

/// Checks the resume point every checkpoint records: the next epoch lies in 1..=`max_epochs`
/// and the generator is not the all-zero state (which never advances). The message is for the
/// caller to prefix with its kind of checkpoint.
pub(crate) fn check_resume_point(
    next_epoch: usize,
    max_epochs: usize,
    rng: &crate::engine::EngineRng,
) -> std::result::Result<(), String> {
    if next_epoch == 0 || next_epoch > max_epochs {
        return Err(format!("next epoch {next_epoch} is out of range"));
    }
    if *rng == <crate::engine::EngineRng as rand::SeedableRng>::from_seed([0; 32]) {
        return Err("the generator state is all zeros".into());
    }
    Ok(())
}
