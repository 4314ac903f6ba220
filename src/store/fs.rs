//! The embedded model store: model files (safetensors) and training checkpoints under the data
//! directory, written atomically, with every model loaded once and kept in memory.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use super::aliases::{check_alias_name, AliasBook};
use super::{valid_id, Result, StoreError};
use crate::engine::dbn::Dbn;
use crate::engine::persist::{self, ModelCard};
use crate::engine::EngineError;

/// A stored model, loaded and ready to use.
#[derive(Debug)]
pub struct ModelEntry {
    pub id: String,
    pub card: ModelCard,
    pub dbn: Dbn,
    /// Size of the model file in bytes.
    pub bytes: u64,
}

/// An uploaded dataset's files: (file name, bytes).
pub type DatasetFiles = Vec<(String, Vec<u8>)>;

/// Keeps models and checkpoints. Methods block (file I/O); call them off the async threads
/// when they touch large files.
pub trait ModelStore: Send + Sync {
    /// All models, ordered by id.
    fn list(&self) -> Vec<Arc<ModelEntry>>;
    fn get(&self, id: &str) -> Result<Arc<ModelEntry>>;
    /// The model if it is loaded in memory already; never blocks (callable from async code).
    fn loaded(&self, id: &str) -> Option<Arc<ModelEntry>>;
    /// Stores the model file `bytes` as `id`. `dbn` and `card` are what the file holds: the
    /// caller has read them from `bytes` with `persist::from_bytes` (which checks shapes,
    /// format and version) or written `bytes` from them with `persist::to_bytes`.
    fn insert(&self, id: &str, bytes: &[u8], dbn: Dbn, card: ModelCard) -> Result<Arc<ModelEntry>>;
    /// The model's file as stored.
    fn read_file(&self, id: &str) -> Result<Vec<u8>>;
    fn delete(&self, id: &str) -> Result<()>;
    fn save_checkpoint(&self, job: &str, bytes: &[u8]) -> Result<()>;
    fn load_checkpoint(&self, job: &str) -> Result<Option<Vec<u8>>>;
    fn delete_checkpoint(&self, job: &str) -> Result<()>;
    /// Whether uploaded datasets are kept here for other replicas (the `*_dataset` methods
    /// below). The file store keeps none: datasets stay in the data directory.
    fn shares_datasets(&self) -> bool {
        false
    }
    /// Stores an uploaded dataset's files (name, bytes) for the other replicas; a reader
    /// never sees part of them.
    fn save_dataset(&self, _name: &str, _files: &[(&str, &[u8])]) -> Result<()> {
        Ok(())
    }
    /// An uploaded dataset's files, if it is stored here.
    fn fetch_dataset(&self, _name: &str) -> Result<Option<DatasetFiles>> {
        Ok(None)
    }
    /// Names of the datasets stored here.
    fn dataset_names(&self) -> Result<Vec<String>> {
        Ok(Vec::new())
    }
    /// Aliases (name → model id) as this process knows them; never blocks. A shared store
    /// learns of other replicas' changes at its refresh.
    fn aliases(&self) -> BTreeMap<String, String>;
    /// The model id the alias `name` points at, if it is one.
    fn alias(&self, name: &str) -> Option<String> {
        self.aliases().remove(name)
    }
    /// Points the alias `name` at the stored model `id`, creating or moving it in one write:
    /// a caller resolves the alias to the old model or the new, never to neither.
    fn set_alias(&self, name: &str, id: &str) -> Result<()>;
    /// Removes an alias; false if there was none.
    fn delete_alias(&self, name: &str) -> Result<bool>;
    /// Whether the bundled model `id` was installed here at some earlier start.
    fn bundled_installed(&self, id: &str) -> Result<bool>;
    /// Whether the store can take writes now, for readiness: a store on the local disk writes,
    /// syncs and removes a small probe file. Stores whose writes go elsewhere answer Ok.
    fn check_writable(&self) -> Result<()> {
        Ok(())
    }
    /// Records that the bundled model `id` has been installed (it is not installed again,
    /// even once deleted).
    fn record_bundled(&self, id: &str) -> Result<()>;
}

/// Models in `DIR/models/ID.safetensors`, checkpoints in `DIR/checkpoints/JOB.ckpt`. Owns the
/// in-memory index of loaded models; share it through `Arc<dyn ModelStore>`.
pub struct FsModelStore {
    models: PathBuf,
    checkpoints: PathBuf,
    index: RwLock<BTreeMap<String, Arc<ModelEntry>>>,
    /// `DIR/aliases.json` and its contents; writers hold the lock across the file's write.
    aliases_file: PathBuf,
    aliases: RwLock<AliasBook>,
}

const MODEL_EXT: &str = "safetensors";

fn io(path: &Path, source: std::io::Error) -> StoreError {
    StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn engine_io(e: EngineError) -> StoreError {
    match e {
        EngineError::Io { path, source } => StoreError::Io { path, source },
        other => StoreError::Corrupt(other.to_string()),
    }
}

impl FsModelStore {
    /// Opens the store under `dir`, loading every model file. Files that do not load (corrupt,
    /// foreign, of another version) are skipped with a warning and left untouched.
    pub fn open(dir: &Path) -> Result<Self> {
        let models = dir.join("models");
        let checkpoints = dir.join("checkpoints");
        for d in [&models, &checkpoints] {
            std::fs::create_dir_all(d).map_err(|e| io(d, e))?;
        }
        let mut index = BTreeMap::new();
        for entry in std::fs::read_dir(&models).map_err(|e| io(&models, e))? {
            let path = entry.map_err(|e| io(&models, e))?.path();
            let Some(id) = model_id_of(&path) else {
                continue;
            };
            match load_entry(&id, &path) {
                Ok(model) => {
                    index.insert(id, Arc::new(model));
                }
                Err(e) => tracing::warn!("skipping model file {}: {e}", path.display()),
            }
        }
        tracing::info!("{} models in {}", index.len(), models.display());
        let aliases_file = dir.join("aliases.json");
        let aliases = match std::fs::read(&aliases_file) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| StoreError::Corrupt(format!("{}: {e}", aliases_file.display())))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => AliasBook::default(),
            Err(e) => return Err(io(&aliases_file, e)),
        };
        Ok(FsModelStore {
            models,
            checkpoints,
            index: RwLock::new(index),
            aliases_file,
            aliases: RwLock::new(aliases),
        })
    }

    /// Changes the alias book with `change` and, when it changed, writes it atomically; the
    /// book in memory changes only once the file has.
    fn change_aliases(&self, change: impl FnOnce(&mut AliasBook) -> bool) -> Result<bool> {
        let mut book = self.aliases.write().unwrap_or_else(|p| p.into_inner());
        let mut next = book.clone();
        if !change(&mut next) {
            return Ok(false);
        }
        let bytes = serde_json::to_vec_pretty(&next)
            .map_err(|e| StoreError::Invalid(format!("aliases: {e}")))?;
        persist::write_atomic(&self.aliases_file, &bytes).map_err(engine_io)?;
        *book = next;
        Ok(true)
    }

    fn model_path(&self, id: &str) -> Result<PathBuf> {
        if !valid_id(id) {
            return Err(StoreError::NotFound(format!("model {id:?}")));
        }
        Ok(self.models.join(format!("{id}.{MODEL_EXT}")))
    }

    fn checkpoint_path(&self, job: &str) -> Result<PathBuf> {
        if !valid_id(job) {
            return Err(StoreError::NotFound(format!("job {job:?}")));
        }
        Ok(self.checkpoints.join(format!("{job}.ckpt")))
    }
}

/// The id a model file stands for: `ID.safetensors` with a valid id (temporary files start
/// with a dot and are never listed).
fn model_id_of(path: &Path) -> Option<String> {
    if path.extension()? != MODEL_EXT {
        return None;
    }
    let id = path.file_stem()?.to_str()?;
    valid_id(id).then(|| id.to_string())
}

fn load_entry(id: &str, path: &Path) -> Result<ModelEntry> {
    let bytes = std::fs::read(path).map_err(|e| io(path, e))?;
    let (dbn, card) = persist::from_bytes(&bytes).map_err(engine_io)?;
    Ok(ModelEntry {
        id: id.to_string(),
        card,
        dbn,
        bytes: bytes.len() as u64,
    })
}

impl ModelStore for FsModelStore {
    fn check_writable(&self) -> Result<()> {
        use std::io::Write;
        let probe = self
            .models
            .join(format!(".probe.tmp-{}", std::process::id()));
        let written = std::fs::File::create(&probe)
            .and_then(|mut f| f.write_all(b"probe").and_then(|()| f.sync_all()));
        let removed = std::fs::remove_file(&probe);
        written.and(removed).map_err(|e| io(&probe, e))
    }

    fn list(&self) -> Vec<Arc<ModelEntry>> {
        let index = self.index.read().unwrap_or_else(|p| p.into_inner());
        index.values().cloned().collect()
    }

    fn get(&self, id: &str) -> Result<Arc<ModelEntry>> {
        let index = self.index.read().unwrap_or_else(|p| p.into_inner());
        index
            .get(id)
            .cloned()
            .ok_or_else(|| StoreError::NotFound(format!("model {id:?}")))
    }

    fn loaded(&self, id: &str) -> Option<Arc<ModelEntry>> {
        self.get(id).ok()
    }

    fn insert(&self, id: &str, bytes: &[u8], dbn: Dbn, card: ModelCard) -> Result<Arc<ModelEntry>> {
        let path = self.model_path(id)?;
        let entry = Arc::new(ModelEntry {
            id: id.to_string(),
            card,
            dbn,
            bytes: bytes.len() as u64,
        });
        let mut index = self.index.write().unwrap_or_else(|p| p.into_inner());
        if index.contains_key(id) {
            return Err(StoreError::Conflict(format!("model {id:?} exists")));
        }
        persist::write_atomic(&path, bytes).map_err(engine_io)?;
        index.insert(id.to_string(), entry.clone());
        Ok(entry)
    }

    fn read_file(&self, id: &str) -> Result<Vec<u8>> {
        self.get(id)?;
        let path = self.model_path(id)?;
        std::fs::read(&path).map_err(|e| io(&path, e))
    }

    fn delete(&self, id: &str) -> Result<()> {
        let path = self.model_path(id)?;
        let mut index = self.index.write().unwrap_or_else(|p| p.into_inner());
        if !index.contains_key(id) {
            return Err(StoreError::NotFound(format!("model {id:?}")));
        }
        // Aliases of the model go first: a crash in between leaves the model unaliased,
        // never an alias naming a missing model.
        self.change_aliases(|book| book.forget_model(id))?;
        std::fs::remove_file(&path).map_err(|e| io(&path, e))?;
        index.remove(id);
        Ok(())
    }

    fn aliases(&self) -> BTreeMap<String, String> {
        let book = self.aliases.read().unwrap_or_else(|p| p.into_inner());
        book.aliases.clone()
    }

    /// On every model lookup: one entry read under the lock, no copy of the book.
    fn alias(&self, name: &str) -> Option<String> {
        let book = self.aliases.read().unwrap_or_else(|p| p.into_inner());
        book.aliases.get(name).cloned()
    }

    fn set_alias(&self, name: &str, id: &str) -> Result<()> {
        check_alias_name(name)?;
        // Holding the index keeps the model from being deleted until the alias is written.
        let index = self.index.read().unwrap_or_else(|p| p.into_inner());
        if !index.contains_key(id) {
            return Err(StoreError::NotFound(format!("model {id:?}")));
        }
        self.change_aliases(|book| book.set(name, id))?;
        Ok(())
    }

    fn delete_alias(&self, name: &str) -> Result<bool> {
        self.change_aliases(|book| book.aliases.remove(name).is_some())
    }

    fn bundled_installed(&self, id: &str) -> Result<bool> {
        let book = self.aliases.read().unwrap_or_else(|p| p.into_inner());
        Ok(book.installed.contains(id))
    }

    fn record_bundled(&self, id: &str) -> Result<()> {
        self.change_aliases(|book| book.installed.insert(id.to_string()))?;
        Ok(())
    }

    fn save_checkpoint(&self, job: &str, bytes: &[u8]) -> Result<()> {
        persist::write_atomic(&self.checkpoint_path(job)?, bytes).map_err(engine_io)
    }

    fn load_checkpoint(&self, job: &str) -> Result<Option<Vec<u8>>> {
        let path = self.checkpoint_path(job)?;
        match std::fs::read(&path) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io(&path, e)),
        }
    }

    fn delete_checkpoint(&self, job: &str) -> Result<()> {
        let path = self.checkpoint_path(job)?;
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io(&path, e)),
            _ => Ok(()),
        }
    }
}
