//! The model that ships inside the binary: the digit model trained by this project
//! (`examples/mnist-dbn-default-hybrid10-dropout.json`, command in `bench/default-model.sh`),
//! its weights stored as bfloat16. On a first start with no models the server installs it and
//! points the alias `default` at it, so classification and generation work from the first
//! minute.

use crate::engine::persist;
use crate::store::{ModelStore, StoreError};

/// The id the bundled model is stored under.
pub const MODEL_ID: &str = "mnist-dbn-default";
/// The alias pointed at it on installation.
pub const ALIAS: &str = "default";

/// The model file (safetensors, bf16 weights, its card in the metadata).
pub fn model_bytes() -> &'static [u8] {
    include_bytes!("mnist-dbn-default.safetensors")
}

/// What a start did about the bundled model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Install {
    /// Stored, with the alias pointed at it.
    Installed,
    /// Decided at an earlier start (installed then, and perhaps deleted since).
    DecidedBefore,
    /// The store held models of its own at its first start: left as it was.
    StoreInUse,
}

/// Installs the bundled model in a store that has never decided about it: only when the
/// store holds no model, so a deployment with models of its own is left alone. The decision
/// is recorded in the store, so a deleted default model stays deleted across restarts.
pub fn install(models: &dyn ModelStore) -> Result<Install, StoreError> {
    if models.bundled_installed(MODEL_ID)? {
        return Ok(Install::DecidedBefore);
    }
    if !models.list().is_empty() {
        models.record_bundled(MODEL_ID)?;
        return Ok(Install::StoreInUse);
    }
    let bytes = model_bytes();
    let (dbn, card) = persist::from_bytes(bytes)
        .map_err(|e| StoreError::Corrupt(format!("the bundled model: {e}")))?;
    match models.insert(MODEL_ID, bytes, dbn, card) {
        // Another replica of a shared store installed it first.
        Ok(_) | Err(StoreError::Conflict(_)) => {}
        Err(e) => return Err(e),
    }
    if models.alias(ALIAS).is_none() {
        models.set_alias(ALIAS, MODEL_ID)?;
    }
    models.record_bundled(MODEL_ID)?;
    Ok(Install::Installed)
}
