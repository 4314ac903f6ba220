//! Saving and loading whole models as safetensors: one f32 tensor per weight matrix and bias
//! vector, and a JSON model card (architecture, training spec, data provenance, metrics) in
//! the metadata, behind a format name and version. Loading checks everything it reads.

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;

use ndarray::{Array1, Array2};
use safetensors::tensor::{Dtype, TensorView};
use safetensors::SafeTensors;
use serde::{Deserialize, Serialize};

use crate::engine::dbn::Dbn;
use crate::engine::error::{EngineError, Result};
use crate::engine::finetune::{Classifier, Dense};
use crate::engine::rbm::Rbm;
use crate::engine::spec::TrainingSpec;

/// The `format` metadata value of our model files.
pub const FORMAT: &str = "dbn-serve.dbn";
/// Bumped whenever the layout of tensors or card changes incompatibly.
pub const FORMAT_VERSION: u32 = 1;

/// Everything about a model except its numbers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelCard {
    pub name: String,
    /// Layer sizes from the input up, e.g. [784, 500, 500, 2000].
    pub sizes: Vec<usize>,
    /// Label units on the top RBM.
    pub label_classes: usize,
    /// Height and width of input images, when the inputs are images.
    pub image_shape: Option<[usize; 2]>,
    /// The spec it was trained from, if any.
    pub spec: Option<TrainingSpec>,
    pub provenance: Provenance,
    /// Named results, e.g. `test_error`.
    #[serde(default)]
    pub metrics: std::collections::BTreeMap<String, f64>,
}

impl ModelCard {
    /// The card of a model that greedy training just produced from `spec`.
    pub fn for_training(
        spec: &TrainingSpec,
        outcome: &crate::engine::dbn::TrainOutcome,
        image_shape: Option<[usize; 2]>,
        threads: usize,
    ) -> Self {
        let mut metrics = std::collections::BTreeMap::new();
        if let Some(v) = outcome.validation_error {
            metrics.insert("validation_error".to_string(), v);
        }
        // The fine-tuning epoch with the lowest held-out error (the first of equals): the
        // epoch count to retrain with on all the data, as the papers chose theirs.
        let best = outcome
            .history
            .iter()
            .filter(|m| m.phase == crate::engine::observer::Phase::Finetune)
            .filter_map(|m| m.validation_error.map(|e| (m.epoch, e)))
            .fold(None, |best: Option<(usize, f64)>, (epoch, e)| match best {
                Some((_, b)) if b <= e => best,
                _ => Some((epoch, e)),
            });
        if let Some((epoch, e)) = best {
            metrics.insert("finetune_best_epoch".to_string(), epoch as f64);
            metrics.insert("finetune_best_validation_error".to_string(), e);
        }
        ModelCard {
            name: spec.name.clone().unwrap_or_else(|| "model".into()),
            sizes: outcome.dbn.sizes(),
            label_classes: outcome.dbn.label_classes(),
            image_shape,
            spec: Some(spec.clone()),
            provenance: Provenance {
                dataset: spec.dataset.clone(),
                train_examples: outcome.train_examples,
                validation_examples: outcome.validation_examples,
                seed: spec.seed,
                threads,
                kernels: crate::engine::math::kernel_set().into(),
                engine_version: env!("CARGO_PKG_VERSION").into(),
                created_unix: std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs()),
                train_seconds: outcome.seconds,
            },
            metrics,
        }
    }
}

/// Where a model came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Provenance {
    pub dataset: String,
    pub train_examples: usize,
    pub validation_examples: usize,
    pub seed: u64,
    /// Worker threads used (results are reproducible for a given seed, thread count and
    /// kernel set).
    pub threads: usize,
    /// The vector instruction set the kernels ran with: `avx512`, `avx2` or `portable`.
    #[serde(default)]
    pub kernels: String,
    pub engine_version: String,
    /// Seconds since the Unix epoch when training finished.
    pub created_unix: u64,
    pub train_seconds: f64,
}

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
}

impl DbnLayout {
    /// How many tensors [`push_dbn`] writes for this layout.
    pub fn tensor_count(&self) -> usize {
        3 * self.label_units.len() + 2 * self.classifier_layers + self.generative_layers
    }
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

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

/// The format name our metadata gives `bytes` (e.g. [`FORMAT`]), if it has one.
pub(crate) fn format_of(bytes: &[u8]) -> Option<String> {
    let (_, header) = SafeTensors::read_metadata(bytes).ok()?;
    let raw = header.metadata().as_ref()?.get(META_KEY)?;
    let envelope: Envelope<serde_json::Value> = serde_json::from_str(raw).ok()?;
    Some(envelope.format)
}

/// Tensors on their way into a safetensors file: name, type, shape, little-endian bytes.
#[derive(Default)]
pub(crate) struct Tensors(Vec<(String, Dtype, Vec<usize>, Vec<u8>)>);

impl Tensors {
    pub(crate) fn push_f32<'a>(
        &mut self,
        name: &str,
        shape: &[usize],
        values: impl IntoIterator<Item = &'a f32>,
    ) {
        let bytes = values.into_iter().flat_map(|v| v.to_le_bytes()).collect();
        self.0
            .push((name.to_string(), Dtype::F32, shape.to_vec(), bytes));
    }

    pub(crate) fn push_u32(&mut self, name: &str, values: &[u32]) {
        let bytes = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.0
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
    }

    /// `PREFIX.weight` [in, out], `PREFIX.bias` [out].
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
            .0
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

/// Reads the `layers` dense layers of a fine-tuned classifier, checking that they chain.
fn read_classifier(st: &SafeTensors, layers: usize) -> Result<Classifier> {
    let dense = (0..layers)
        .map(|i| read_dense(st, &format!("classifier.{i}")))
        .collect::<Result<Vec<_>>>()?;
    Classifier::new(dense).map_err(|e| EngineError::Model(format!("classifier: {e}")))
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
    };
    if labels > v || !rbm.is_finite() {
        return Err(EngineError::Model(format!(
            "{prefix} has more labels than units or non-finite values"
        )));
    }
    Ok(rbm)
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
    DbnLayout {
        label_units: dbn.layers().iter().map(|r| r.label_units).collect(),
        classifier_layers,
        generative_layers,
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
        layers.push(read_rbm(st, &format!("layers.{i}"), shape, labels)?);
    }
    let mut dbn = Dbn::new(layers)?;
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
    let mut tensors = Tensors::default();
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
    Ok((dbn, card))
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

pub(crate) fn read_f32(st: &SafeTensors, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
    let t = st
        .tensor(name)
        .map_err(|e| EngineError::Model(format!("{name}: {e}")))?;
    if t.dtype() != Dtype::F32 || t.shape() != shape {
        return Err(EngineError::Model(format!(
            "{name}: expected f32 {shape:?}, found {:?} {:?}",
            t.dtype(),
            t.shape()
        )));
    }
    Ok(t.data()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect())
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
