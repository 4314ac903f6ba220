//! The shared model store: model files and checkpoints in S3-compatible object storage
//! (`s3://bucket/prefix`), read by every replica.
//!
//! Objects: `PREFIX/models/ID.safetensors` and `PREFIX/checkpoints/JOB.ckpt`. A model is
//! written once (an upload is refused if the id exists) and every object appears whole, so no
//! reader sees half a file. Each replica keeps the models it has loaded in memory. It notices
//! models added or deleted by other replicas when it lists the bucket again (every
//! `refresh` interval), and at once for a model asked for by id that it has not loaded yet.
//!
//! The bucket client is in `bucket`: called like the file store, from worker and blocking
//! threads (and, for a lookup of a model not yet loaded, from an async handler, which then
//! waits for one fetch).

mod bucket;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::{Duration, Instant};

use object_store::path::Path as ObjectPath;

use super::aliases::check_alias_name;
use super::fs::{DatasetFiles, ModelEntry, ModelStore};
use super::{valid_id, Result, StoreError};
use crate::engine::dbn::Dbn;
use crate::engine::persist::{self, ModelCard};
pub use bucket::parse_url;
use bucket::Bucket;

const MODEL_EXT: &str = ".safetensors";
/// How long a lookup of a missing model answers "not found" without asking the bucket again.
const ABSENT_FOR: Duration = Duration::from_secs(2);
/// Models and checkpoints in a bucket. Share it through `Arc<dyn ModelStore>`.
pub struct ObjectModelStore {
    bucket: Bucket,
    index: RwLock<BTreeMap<String, Arc<ModelEntry>>>,
    /// Ids recently found missing, and when.
    absent: Mutex<HashMap<String, Instant>>,
    /// When this replica last stored, loaded or deleted each model: a listing older than that
    /// says nothing about it.
    touched: Mutex<HashMap<String, Instant>>,
    /// Model files in the bucket that do not load, not fetched again.
    unloadable: Mutex<std::collections::HashSet<String>>,
    /// Whether models stay in memory once loaded or stored (not in a replica that only
    /// trains: it stores models but never serves them).
    keep_loaded: bool,
    /// Aliases (`aliases/NAME` objects holding a model id) as of the last listing or this
    /// replica's own change.
    aliases: RwLock<BTreeMap<String, String>>,
}

impl std::fmt::Debug for ObjectModelStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectModelStore")
            .field("url", &self.bucket.url())
            .finish_non_exhaustive()
    }
}

fn model_key(id: &str) -> ObjectPath {
    ObjectPath::from(format!("models/{id}{MODEL_EXT}"))
}

fn checkpoint_key(job: &str) -> Result<ObjectPath> {
    if !valid_id(job) {
        return Err(StoreError::NotFound(format!("job {job:?}")));
    }
    Ok(ObjectPath::from(format!("checkpoints/{job}.ckpt")))
}

fn entry(id: &str, bytes: &[u8]) -> Result<ModelEntry> {
    let (dbn, card) =
        persist::from_bytes(bytes).map_err(|e| StoreError::Corrupt(format!("model {id}: {e}")))?;
    Ok(ModelEntry {
        id: id.to_string(),
        card,
        dbn,
        bytes: bytes.len() as u64,
    })
}

impl ObjectModelStore {
    /// Opens the bucket of `url` (see [`Bucket::open`] for its settings). With
    /// `keep_loaded`, loads every model and starts the thread that lists the bucket again
    /// every `refresh`; without, only checks that the bucket answers, and keeps no model in
    /// memory.
    pub fn open(url: &str, refresh: Duration, keep_loaded: bool) -> Result<Arc<Self>> {
        let this = Arc::new(ObjectModelStore {
            bucket: Bucket::open(url)?,
            index: RwLock::new(BTreeMap::new()),
            absent: Mutex::new(HashMap::new()),
            touched: Mutex::new(HashMap::new()),
            unloadable: Mutex::new(Default::default()),
            keep_loaded,
            aliases: RwLock::new(BTreeMap::new()),
        });
        if !keep_loaded {
            let listed = this.dataset_names()?;
            tracing::info!("model store {url} answers ({} datasets)", listed.len());
            return Ok(this);
        }
        let loaded = this.refresh()?;
        tracing::info!("{loaded} models in {url}");
        let weak = Arc::downgrade(&this);
        std::thread::Builder::new()
            .name("model-refresh".into())
            .spawn(move || refresh_loop(weak, refresh))
            .map_err(|e| StoreError::Unavailable(format!("model refresh thread: {e}")))?;
        Ok(this)
    }

    /// Lists the models in the bucket, loads those not in memory and forgets those no longer
    /// there. Returns how many models the index holds.
    pub fn refresh(&self) -> Result<usize> {
        let started = Instant::now();
        let listed: Vec<String> = self
            .bucket
            .list("models")?
            .iter()
            .filter_map(|key| {
                let id = key.filename()?.strip_suffix(MODEL_EXT)?;
                valid_id(id).then(|| id.to_string())
            })
            .collect();
        let known: Vec<String> = self.read_index().keys().cloned().collect();
        for id in &listed {
            let skip = known.contains(id)
                || self.touched_since(id, started)
                || self.lock(&self.unloadable).contains(id);
            if skip {
                continue;
            }
            match self.load(id) {
                Ok(_) => {}
                // Deleted since the listing.
                Err(StoreError::NotFound(_)) => {}
                Err(StoreError::Corrupt(m)) => {
                    tracing::warn!("skipping {m}");
                    self.lock(&self.unloadable).insert(id.clone());
                }
                Err(e) => return Err(e),
            }
        }
        let gone: Vec<String> = known
            .into_iter()
            .filter(|id| !listed.contains(id) && !self.touched_since(id, started))
            .collect();
        let mut index = self.write_index();
        for id in gone {
            index.remove(&id);
        }
        let loaded = index.len();
        drop(index);
        self.refresh_aliases()?;
        Ok(loaded)
    }

    /// Reads every alias object of the bucket.
    fn refresh_aliases(&self) -> Result<()> {
        let mut aliases = BTreeMap::new();
        for key in self.bucket.list("aliases")? {
            let Some(name) = key.filename().filter(|n| valid_id(n)) else {
                continue;
            };
            let name = name.to_string();
            if let Some(bytes) = self.bucket.fetch(key)? {
                let id = String::from_utf8_lossy(&bytes).trim().to_string();
                if valid_id(&id) {
                    aliases.insert(name, id);
                }
            }
        }
        *self.aliases.write().unwrap_or_else(|p| p.into_inner()) = aliases;
        Ok(())
    }

    fn lock<'a, T>(&self, m: &'a Mutex<T>) -> std::sync::MutexGuard<'a, T> {
        m.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn touch(&self, id: &str) {
        self.lock(&self.touched)
            .insert(id.to_string(), Instant::now());
    }

    fn touched_since(&self, id: &str, since: Instant) -> bool {
        self.lock(&self.touched)
            .get(id)
            .is_some_and(|&at| at >= since)
    }

    /// Fetches one model into the index (`NotFound` if the bucket has none by that id).
    fn load(&self, id: &str) -> Result<Arc<ModelEntry>> {
        let bytes = self
            .bucket
            .fetch(model_key(id))?
            .ok_or_else(|| StoreError::NotFound(format!("model {id:?}")))?;
        let loaded = Arc::new(entry(id, &bytes)?);
        self.touch(id);
        if !self.keep_loaded {
            return Ok(loaded);
        }
        let mut index = self.write_index();
        Ok(index.entry(id.to_string()).or_insert(loaded).clone())
    }

    fn read_index(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, Arc<ModelEntry>>> {
        self.index.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write_index(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<String, Arc<ModelEntry>>> {
        self.index.write().unwrap_or_else(|p| p.into_inner())
    }

    fn recently_absent(&self, id: &str) -> bool {
        let mut absent = self.absent.lock().unwrap_or_else(|p| p.into_inner());
        absent.retain(|_, at| at.elapsed() < ABSENT_FOR);
        absent.contains_key(id)
    }

    fn mark_absent(&self, id: &str) {
        let mut absent = self.absent.lock().unwrap_or_else(|p| p.into_inner());
        // Bounded: a flood of distinct missing ids cannot grow it without end.
        if absent.len() < 10_000 {
            absent.insert(id.to_string(), Instant::now());
        }
    }
}

fn refresh_loop(store: Weak<ObjectModelStore>, every: Duration) {
    loop {
        std::thread::sleep(every.max(Duration::from_millis(100)));
        let Some(store) = store.upgrade() else { return };
        if let Err(e) = store.refresh() {
            tracing::warn!("listing the model store: {e}");
        }
    }
}

impl ModelStore for ObjectModelStore {
    fn list(&self) -> Vec<Arc<ModelEntry>> {
        self.read_index().values().cloned().collect()
    }

    fn get(&self, id: &str) -> Result<Arc<ModelEntry>> {
        if let Some(found) = self.read_index().get(id) {
            return Ok(found.clone());
        }
        if !valid_id(id) || self.recently_absent(id) {
            return Err(StoreError::NotFound(format!("model {id:?}")));
        }
        // Perhaps another replica stored it since the last listing.
        match self.load(id) {
            Err(StoreError::NotFound(m)) => {
                self.mark_absent(id);
                Err(StoreError::NotFound(m))
            }
            other => other,
        }
    }

    fn loaded(&self, id: &str) -> Option<Arc<ModelEntry>> {
        self.read_index().get(id).cloned()
    }

    fn insert(&self, id: &str, bytes: &[u8], dbn: Dbn, card: ModelCard) -> Result<Arc<ModelEntry>> {
        if !valid_id(id) {
            return Err(StoreError::NotFound(format!("model {id:?}")));
        }
        // Asked of the bucket without fetching the model that may be there.
        if self.loaded(id).is_some() || self.bucket.exists(model_key(id))? {
            return Err(StoreError::Conflict(format!("model {id:?} exists")));
        }
        self.bucket.put(model_key(id), bytes.to_vec())?;
        self.touch(id);
        self.lock(&self.absent).remove(id);
        let entry = Arc::new(ModelEntry {
            id: id.to_string(),
            card,
            dbn,
            bytes: bytes.len() as u64,
        });
        if self.keep_loaded {
            self.write_index().insert(id.to_string(), entry.clone());
        }
        Ok(entry)
    }

    fn read_file(&self, id: &str) -> Result<Vec<u8>> {
        self.get(id)?;
        self.bucket
            .fetch(model_key(id))?
            .ok_or_else(|| StoreError::NotFound(format!("model {id:?}")))
    }

    fn delete(&self, id: &str) -> Result<()> {
        self.get(id)?;
        // Aliases of the model go first, so none is left naming a missing model.
        let naming: Vec<String> = self
            .aliases()
            .into_iter()
            .filter_map(|(name, target)| (target == id).then_some(name))
            .collect();
        for name in naming {
            self.delete_alias(&name)?;
        }
        self.bucket.remove(model_key(id))?;
        self.touch(id);
        self.write_index().remove(id);
        Ok(())
    }

    fn save_checkpoint(&self, job: &str, bytes: &[u8]) -> Result<()> {
        self.bucket.put(checkpoint_key(job)?, bytes.to_vec())
    }

    fn load_checkpoint(&self, job: &str) -> Result<Option<Vec<u8>>> {
        self.bucket.fetch(checkpoint_key(job)?)
    }

    fn delete_checkpoint(&self, job: &str) -> Result<()> {
        self.bucket.remove(checkpoint_key(job)?)
    }

    fn shares_datasets(&self) -> bool {
        true
    }

    fn aliases(&self) -> BTreeMap<String, String> {
        self.aliases
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// On every model lookup: one entry read under the lock, no copy of the map.
    fn alias(&self, name: &str) -> Option<String> {
        self.aliases
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .cloned()
    }

    /// One object per alias: moving it is one PUT, which readers see whole.
    fn set_alias(&self, name: &str, id: &str) -> Result<()> {
        check_alias_name(name)?;
        self.get(id)?;
        self.bucket.put(alias_key(name), id.as_bytes().to_vec())?;
        self.aliases
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name.to_string(), id.to_string());
        Ok(())
    }

    fn delete_alias(&self, name: &str) -> Result<bool> {
        if !valid_id(name) {
            return Ok(false);
        }
        let known = self.aliases().contains_key(name) || self.bucket.exists(alias_key(name))?;
        if known {
            self.bucket.remove(alias_key(name))?;
        }
        self.aliases
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(name);
        Ok(known)
    }

    fn bundled_installed(&self, id: &str) -> Result<bool> {
        self.bucket.exists(installed_key(id)?)
    }

    fn record_bundled(&self, id: &str) -> Result<()> {
        self.bucket.put(installed_key(id)?, Vec::new())
    }

    /// The files go first, then the marker that makes the dataset exist.
    fn save_dataset(&self, name: &str, files: &[(&str, &[u8])]) -> Result<()> {
        let prefix = dataset_prefix(name)?;
        let mut names = Vec::with_capacity(files.len());
        for (file, bytes) in files {
            self.bucket
                .put(prefix.clone().join(*file), bytes.to_vec())?;
            names.push(file.to_string());
        }
        let manifest =
            serde_json::to_vec(&names).map_err(|e| StoreError::Invalid(e.to_string()))?;
        self.bucket
            .put(prefix.clone().join(DATASET_MANIFEST), manifest)
    }

    fn fetch_dataset(&self, name: &str) -> Result<Option<DatasetFiles>> {
        let prefix = dataset_prefix(name)?;
        let Some(manifest) = self.bucket.fetch(prefix.clone().join(DATASET_MANIFEST))? else {
            return Ok(None);
        };
        let names: Vec<String> = serde_json::from_slice(&manifest)
            .map_err(|e| StoreError::Corrupt(format!("dataset {name}: manifest: {e}")))?;
        let mut files = Vec::with_capacity(names.len());
        for file in names {
            let bytes = self
                .bucket
                .fetch(prefix.clone().join(file.as_str()))?
                .ok_or_else(|| StoreError::Corrupt(format!("dataset {name}: {file} is missing")))?;
            files.push((file, bytes));
        }
        Ok(Some(files))
    }

    fn dataset_names(&self) -> Result<Vec<String>> {
        let mut names: Vec<String> = self
            .bucket
            .list("datasets")?
            .iter()
            .filter_map(|key| match key.parts().collect::<Vec<_>>().as_slice() {
                [_, name, file] if file.as_ref() == DATASET_MANIFEST && valid_id(name.as_ref()) => {
                    Some(name.as_ref().to_string())
                }
                _ => None,
            })
            .collect();
        names.sort();
        Ok(names)
    }
}

fn alias_key(name: &str) -> ObjectPath {
    ObjectPath::from(format!("aliases/{name}"))
}

fn installed_key(id: &str) -> Result<ObjectPath> {
    if !valid_id(id) {
        return Err(StoreError::NotFound(format!("model {id:?}")));
    }
    Ok(ObjectPath::from(format!("installed/{id}")))
}

/// The object listing a dataset's files, written last.
const DATASET_MANIFEST: &str = "files.json";

fn dataset_prefix(name: &str) -> Result<ObjectPath> {
    if !valid_id(name) {
        return Err(StoreError::NotFound(format!("dataset {name:?}")));
    }
    Ok(ObjectPath::from(format!("datasets/{name}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_urls_name_a_bucket_and_an_optional_prefix() {
        assert_eq!(
            parse_url("s3://models").unwrap(),
            ("models".into(), String::new())
        );
        assert_eq!(
            parse_url("s3://b/team/dbn/").unwrap(),
            ("b".into(), "team/dbn".into())
        );
        for bad in ["models", "s3://", "s3:///x", "gs://b/p"] {
            assert!(
                matches!(parse_url(bad), Err(StoreError::Invalid(_))),
                "{bad}"
            );
        }
    }
}
