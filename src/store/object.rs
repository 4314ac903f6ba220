//! The shared model store: model files and checkpoints in S3-compatible object storage
//! (`s3://bucket/prefix`), read by every replica.
//!
//! Objects: `PREFIX/models/ID.safetensors` and `PREFIX/checkpoints/JOB.ckpt`. A model is
//! written once (an upload is refused if the id exists) and every object appears whole, so no
//! reader sees half a file. Each replica keeps the models it has loaded in memory. It notices
//! models added or deleted by other replicas when it lists the bucket again (every
//! `refresh` interval), and at once for a model asked for by id that it has not loaded yet.
//!
//! The client is asynchronous (`object_store`); this store runs it on a small runtime of its
//! own and waits for the answers on the calling thread, so it is called like the file store,
//! from worker and blocking threads (and, for a lookup of a model not yet loaded, from an
//! async handler, which then waits for one fetch).

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::aws::AmazonS3ConfigKey;
use object_store::path::Path as ObjectPath;
use object_store::prefix::PrefixStore;
use object_store::{ClientConfigKey, ObjectStore, ObjectStoreExt, RetryConfig};

use super::fs::{DatasetFiles, ModelEntry, ModelStore};
use super::{valid_id, Result, StoreError};
use crate::engine::dbn::Dbn;
use crate::engine::persist::{self, ModelCard};

const MODEL_EXT: &str = ".safetensors";
/// How long a lookup of a missing model answers "not found" without asking the bucket again.
const ABSENT_FOR: Duration = Duration::from_secs(2);
/// The longest wait for one request, retries included.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// Models and checkpoints in a bucket. Share it through `Arc<dyn ModelStore>`.
pub struct ObjectModelStore {
    store: Arc<dyn ObjectStore>,
    /// The runtime the client's futures run on; shut down in the background on drop (a
    /// runtime may not be dropped in place inside another).
    runtime: Option<tokio::runtime::Runtime>,
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
    url: String,
}

impl std::fmt::Debug for ObjectModelStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectModelStore")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

/// The bucket and the key prefix of `s3://bucket/prefix` (the prefix may be empty).
pub fn parse_url(url: &str) -> Result<(String, String)> {
    let invalid = |why: &str| StoreError::Invalid(format!("model store {url:?}: {why}"));
    let rest = url
        .strip_prefix("s3://")
        .ok_or_else(|| invalid("must start with s3://"))?;
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    if bucket.is_empty() {
        return Err(invalid("names no bucket"));
    }
    Ok((bucket.to_string(), prefix.trim_matches('/').to_string()))
}

/// The error with its causes: the client's own message often leaves the cause out.
fn unavailable(e: object_store::Error) -> StoreError {
    let mut message = e.to_string();
    let mut cause = std::error::Error::source(&e);
    while let Some(c) = cause {
        let text = c.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        cause = c.source();
    }
    StoreError::Unavailable(message)
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
        persist::from_bytes(bytes).map_err(|e| StoreError::Invalid(format!("model {id}: {e}")))?;
    Ok(ModelEntry {
        id: id.to_string(),
        card,
        dbn,
        bytes: bytes.len() as u64,
    })
}

impl ObjectModelStore {
    /// Opens the bucket of `url` with the usual AWS settings from the environment
    /// (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`, `AWS_ENDPOINT` for another
    /// S3-compatible server, `AWS_ALLOW_HTTP=true` for a plain-HTTP one, and the web-identity
    /// variables of Kubernetes service accounts). With `keep_loaded`, loads every model and
    /// starts the thread that lists the bucket again every `refresh`; without, only checks
    /// that the bucket answers, and keeps no model in memory.
    pub fn open(url: &str, refresh: Duration, keep_loaded: bool) -> Result<Arc<Self>> {
        let (bucket, prefix) = parse_url(url)?;
        // TLS for https endpoints: rustls with ring, once per process.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let s3 = AmazonS3Builder::from_env()
            .with_bucket_name(bucket)
            .with_retry(RetryConfig {
                max_retries: 4,
                retry_timeout: Duration::from_secs(30),
                ..RetryConfig::default()
            })
            // Set as keys, so the client settings read from the environment stay.
            .with_config(
                AmazonS3ConfigKey::Client(ClientConfigKey::Timeout),
                format!("{}s", REQUEST_TIMEOUT.as_secs()),
            )
            .with_config(
                AmazonS3ConfigKey::Client(ClientConfigKey::ConnectTimeout),
                "5s",
            )
            .build()
            .map_err(|e| StoreError::Invalid(format!("model store {url:?}: {e}")))?;
        let store: Arc<dyn ObjectStore> = if prefix.is_empty() {
            Arc::new(s3)
        } else {
            Arc::new(PrefixStore::new(s3, prefix.as_str()))
        };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("object-store")
            .enable_all()
            .build()
            .map_err(|e| StoreError::Unavailable(format!("object store runtime: {e}")))?;
        let this = Arc::new(ObjectModelStore {
            store,
            runtime: Some(runtime),
            index: RwLock::new(BTreeMap::new()),
            absent: Mutex::new(HashMap::new()),
            touched: Mutex::new(HashMap::new()),
            unloadable: Mutex::new(Default::default()),
            keep_loaded,
            url: url.to_string(),
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

    /// Runs `fut` on the store's runtime and waits for it on this thread.
    fn run<T, F>(&self, fut: F) -> Result<T>
    where
        T: Send + 'static,
        F: Future<Output = Result<T>> + Send + 'static,
    {
        let runtime = self.runtime.as_ref().expect("present until drop");
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        runtime.spawn(async move {
            let _ = tx.send(fut.await);
        });
        rx.recv_timeout(REQUEST_TIMEOUT + Duration::from_secs(5))
            .map_err(|_| StoreError::Unavailable(format!("{}: no answer in time", self.url)))?
    }

    /// The object's bytes, or `None` if it does not exist.
    fn fetch(&self, key: ObjectPath) -> Result<Option<Vec<u8>>> {
        let store = self.store.clone();
        self.run(async move {
            match store.get(&key).await {
                Ok(got) => Ok(Some(got.bytes().await.map_err(unavailable)?.to_vec())),
                Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(e) => Err(unavailable(e)),
            }
        })
    }

    fn put(&self, key: ObjectPath, bytes: Vec<u8>) -> Result<()> {
        let store = self.store.clone();
        self.run(async move {
            store.put(&key, bytes.into()).await.map_err(unavailable)?;
            Ok(())
        })
    }

    /// Deletes the object; a missing one is not an error.
    fn remove(&self, key: ObjectPath) -> Result<()> {
        let store = self.store.clone();
        self.run(async move {
            match store.delete(&key).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                Err(e) => Err(unavailable(e)),
            }
        })
    }

    /// Lists the models in the bucket, loads those not in memory and forgets those no longer
    /// there. Returns how many models the index holds.
    pub fn refresh(&self) -> Result<usize> {
        let started = Instant::now();
        let store = self.store.clone();
        let listed: Vec<String> = self.run(async move {
            let mut ids = Vec::new();
            let mut objects = store.list(Some(&ObjectPath::from("models")));
            while let Some(meta) = objects.next().await {
                let meta = meta.map_err(unavailable)?;
                let name = meta.location.filename().unwrap_or_default();
                if let Some(id) = name.strip_suffix(MODEL_EXT).filter(|id| valid_id(id)) {
                    ids.push(id.to_string());
                }
            }
            Ok(ids)
        })?;
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
                Err(StoreError::Invalid(m)) => {
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
        Ok(index.len())
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

impl Drop for ObjectModelStore {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
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
        match self.get(id) {
            Ok(_) => return Err(StoreError::Conflict(format!("model {id:?} exists"))),
            Err(StoreError::NotFound(_)) => {}
            Err(e) => return Err(e),
        }
        self.put(model_key(id), bytes.to_vec())?;
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
        self.fetch(model_key(id))?
            .ok_or_else(|| StoreError::NotFound(format!("model {id:?}")))
    }

    fn delete(&self, id: &str) -> Result<()> {
        self.get(id)?;
        self.remove(model_key(id))?;
        self.touch(id);
        self.write_index().remove(id);
        Ok(())
    }

    fn save_checkpoint(&self, job: &str, bytes: &[u8]) -> Result<()> {
        self.put(checkpoint_key(job)?, bytes.to_vec())
    }

    fn load_checkpoint(&self, job: &str) -> Result<Option<Vec<u8>>> {
        self.fetch(checkpoint_key(job)?)
    }

    fn delete_checkpoint(&self, job: &str) -> Result<()> {
        self.remove(checkpoint_key(job)?)
    }

    fn shares_datasets(&self) -> bool {
        true
    }

    /// The files go first, then the marker that makes the dataset exist.
    fn save_dataset(&self, name: &str, files: &[(&str, &[u8])]) -> Result<()> {
        let prefix = dataset_prefix(name)?;
        let mut names = Vec::with_capacity(files.len());
        for (file, bytes) in files {
            self.put(prefix.clone().join(*file), bytes.to_vec())?;
            names.push(file.to_string());
        }
        let manifest =
            serde_json::to_vec(&names).map_err(|e| StoreError::Invalid(e.to_string()))?;
        self.put(prefix.clone().join(DATASET_MANIFEST), manifest)
    }

    fn fetch_dataset(&self, name: &str) -> Result<Option<DatasetFiles>> {
        let prefix = dataset_prefix(name)?;
        let Some(manifest) = self.fetch(prefix.clone().join(DATASET_MANIFEST))? else {
            return Ok(None);
        };
        let names: Vec<String> = serde_json::from_slice(&manifest)
            .map_err(|e| StoreError::Invalid(format!("dataset {name}: manifest: {e}")))?;
        let mut files = Vec::with_capacity(names.len());
        for file in names {
            let bytes = self
                .fetch(prefix.clone().join(file.as_str()))?
                .ok_or_else(|| StoreError::Invalid(format!("dataset {name}: {file} is missing")))?;
            files.push((file, bytes));
        }
        Ok(Some(files))
    }

    fn dataset_names(&self) -> Result<Vec<String>> {
        let store = self.store.clone();
        self.run(async move {
            let mut names = Vec::new();
            let mut objects = store.list(Some(&ObjectPath::from("datasets")));
            while let Some(meta) = objects.next().await {
                let meta = meta.map_err(unavailable)?;
                let parts: Vec<_> = meta.location.parts().collect();
                if let [_, name, file] = parts.as_slice() {
                    if file.as_ref() == DATASET_MANIFEST && valid_id(name.as_ref()) {
                        names.push(name.as_ref().to_string());
                    }
                }
            }
            names.sort();
            Ok(names)
        })
    }
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
