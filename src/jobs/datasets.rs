//! Training data by name: `mnist` is the configured MNIST directory; other names are
//! datasets uploaded into `DATA_DIR/datasets/NAME/`, stored under MNIST's file names so that
//! one loader reads both. With a model store shared by several replicas, uploads are also
//! kept there, and a replica that lacks one fetches it into its data directory when asked.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Serialize;

use crate::engine::data::scan::check_pair;
use crate::engine::data::{Dataset, MnistSplit};
use crate::engine::persist::write_atomic;
use crate::engine::{DataError, EngineError};
use crate::store::{valid_id, ModelStore, StoreError};

/// The built-in dataset's name.
pub const MNIST: &str = "mnist";
const TRAIN_IMAGES: &str = "train-images-idx3-ubyte";
const TRAIN_LABELS: &str = "train-labels-idx1-ubyte";
const TEST_IMAGES: &str = "t10k-images-idx3-ubyte";
const TEST_LABELS: &str = "t10k-labels-idx1-ubyte";
const SPLIT_FILES: [&str; 4] = [TRAIN_IMAGES, TRAIN_LABELS, TEST_IMAGES, TEST_LABELS];

/// What a dataset offers to training.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DatasetInfo {
    pub name: String,
    /// `builtin` (the MNIST directory) or `uploaded`.
    pub source: &'static str,
    pub train_examples: usize,
    /// Test examples (0 when the dataset has no test split).
    pub test_examples: usize,
    /// Values per example (28 × 28 images).
    pub n_inputs: usize,
    pub classes: usize,
}

/// Finds and stores datasets. Cheap to clone.
#[derive(Clone)]
pub struct Datasets {
    mnist_dir: Option<PathBuf>,
    uploads: PathBuf,
    /// The store that shares uploads between replicas, if any.
    shared: Option<Arc<dyn ModelStore>>,
    /// Held while an upload is checked and stored.
    ingesting: Arc<std::sync::Mutex<()>>,
}

impl std::fmt::Debug for Datasets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Datasets")
            .field("mnist_dir", &self.mnist_dir)
            .field("uploads", &self.uploads)
            .field("shared", &self.shared.is_some())
            .finish()
    }
}

/// The split files of one upload: IDX bytes, raw or gzipped.
#[derive(Debug, Default)]
pub struct Upload {
    pub train_images: Vec<u8>,
    pub train_labels: Vec<u8>,
    pub test_images: Option<Vec<u8>>,
    pub test_labels: Option<Vec<u8>>,
}

impl Datasets {
    /// Datasets of this data directory; uploads are shared through `models` when that store
    /// shares datasets between replicas.
    pub fn new(mnist_dir: Option<PathBuf>, data_dir: &Path, models: Arc<dyn ModelStore>) -> Self {
        Datasets {
            mnist_dir,
            uploads: data_dir.join("datasets"),
            shared: models.shares_datasets().then_some(models),
            ingesting: Arc::default(),
        }
    }

    /// The dataset's directory; an upload that only the shared store holds is fetched first.
    /// A shared store out of reach is an error, not an absent dataset.
    fn dir(&self, name: &str) -> Result<Option<PathBuf>, StoreError> {
        if name == MNIST {
            return Ok(self.mnist_dir.clone());
        }
        if !valid_id(name) {
            return Ok(None);
        }
        let dir = self.uploads.join(name);
        if !dir.exists() {
            self.fetch_shared(name, &dir)?;
        }
        Ok(Some(dir))
    }

    /// Copies an upload that another replica stored into `dir`, if the shared store has it.
    fn fetch_shared(&self, name: &str, dir: &Path) -> Result<(), StoreError> {
        let Some(shared) = &self.shared else {
            return Ok(());
        };
        let files = match shared.fetch_dataset(name)? {
            Some(files) => files,
            None => return Ok(()),
        };
        let files: Vec<(&str, &[u8])> = files
            .iter()
            .filter(|(f, _)| SPLIT_FILES.contains(&f.as_str()))
            .map(|(f, b)| (f.as_str(), b.as_slice()))
            .collect();
        if let Err(e) = self.write_dir(name, dir, &files, true) {
            tracing::warn!("writing dataset {name} fetched from the shared store: {e}");
        }
        Ok(())
    }

    /// Writes `files` into a hidden directory, then renames it to `dir`: never half a dataset.
    fn write_dir(
        &self,
        name: &str,
        dir: &Path,
        files: &[(&str, &[u8])],
        fetched: bool,
    ) -> Result<(), EngineError> {
        // One directory per call: two threads fetching the same dataset never mix files.
        static CALLS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let call = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tmp = self
            .uploads
            .join(format!(".{name}.tmp-{}-{call}", std::process::id()));
        let write = || -> Result<(), EngineError> {
            for (file, bytes) in files {
                write_atomic(&tmp.join(file), bytes)?;
            }
            std::fs::rename(&tmp, dir).map_err(|e| EngineError::io(dir, e))
        };
        let written = write();
        if written.is_err() {
            let _ = std::fs::remove_dir_all(&tmp);
            // Fetching, another thread put the same dataset in place first: that one is whole.
            if fetched && dir.is_dir() && files.iter().all(|(f, _)| dir.join(f).is_file()) {
                return Ok(());
            }
        }
        written
    }

    /// The dataset's description, if it exists.
    pub fn info(&self, name: &str) -> Result<Option<DatasetInfo>, StoreError> {
        let Some(dir) = self.dir(name)? else {
            return Ok(None);
        };
        let Some(train_examples) = count(&dir, TRAIN_LABELS) else {
            return Ok(None);
        };
        Ok(Some(DatasetInfo {
            name: name.to_string(),
            source: if name == MNIST { "builtin" } else { "uploaded" },
            train_examples,
            test_examples: count(&dir, TEST_LABELS).unwrap_or(0),
            n_inputs: 28 * 28,
            classes: 10,
        }))
    }

    /// Names of the datasets that exist.
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(&self.uploads)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().to_str().map(str::to_string))
            .filter(|n| valid_id(n) && n != MNIST)
            .collect();
        if let Some(shared) = &self.shared {
            match shared.dataset_names() {
                Ok(more) => names.extend(more),
                Err(e) => tracing::warn!("listing the shared store's datasets: {e}"),
            }
        }
        names.sort();
        names.dedup();
        if self
            .mnist_dir
            .as_ref()
            .is_some_and(|d| count(d, TRAIN_LABELS).is_some())
        {
            names.insert(0, MNIST.to_string());
        }
        names
    }

    pub fn list(&self) -> Vec<DatasetInfo> {
        self.names()
            .iter()
            .filter_map(|n| self.info(n).ok().flatten())
            .collect()
    }

    /// Loads one split, or its first `limit` examples; the test split of a dataset without
    /// one is `Ok(None)`.
    pub fn load(
        &self,
        name: &str,
        split: MnistSplit,
        limit: Option<usize>,
    ) -> Result<Option<Dataset>, DatasetError> {
        let dir = self.dir(name)?.ok_or_else(|| {
            EngineError::from(DataError::Io {
                path: name.to_string(),
                message: "no such dataset".into(),
            })
        })?;
        if split == MnistSplit::Test && count(&dir, TEST_LABELS).is_none() {
            return Ok(None);
        }
        Ok(Dataset::load_mnist_first(&dir, split, limit)
            .map(Some)
            .map_err(EngineError::from)?)
    }

    /// Checks an upload (IDX headers, 28×28 images, counts, labels 0–9) and stores it as
    /// `name`, which must be new.
    pub fn store(&self, name: &str, upload: &Upload) -> Result<DatasetInfo, DatasetError> {
        if name == MNIST || !valid_id(name) {
            return Err(EngineError::invalid(
                "name",
                "must be 1-64 characters of [A-Za-z0-9_-] and not \"mnist\"",
            )
            .into());
        }
        // One upload is checked and stored at a time: gunzipping is a core's work for seconds,
        // and two uploads of one name cannot both pass the check below.
        let _one_at_a_time = self
            .ingesting
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let dir = self.uploads.join(name);
        if dir.exists() || self.names().iter().any(|n| n == name) {
            return Err(EngineError::invalid("name", format!("{name:?} exists")).into());
        }
        // Checked as they unpack, piece by piece: the unpacked set is never in memory.
        let check = |images: &[u8], labels: &[u8], what: &str| -> Result<usize, EngineError> {
            let names = (&*format!("{what}_images"), &*format!("{what}_labels"));
            let limit = crate::engine::data::idx::DEFAULT_MAX_BYTES;
            Ok(check_pair(images, labels, names, (28, 28), 10, limit)?.examples)
        };
        check(&upload.train_images, &upload.train_labels, "train")?;
        let test = match (&upload.test_images, &upload.test_labels) {
            (Some(i), Some(l)) => Some((i, l)),
            (None, None) => None,
            _ => {
                return Err(EngineError::invalid(
                    "test_labels",
                    "test images and test labels come together",
                )
                .into())
            }
        };
        if let Some((i, l)) = test {
            check(i, l, "test")?;
        }
        let mut files: Vec<(&str, &[u8])> = vec![
            (TRAIN_IMAGES, &upload.train_images),
            (TRAIN_LABELS, &upload.train_labels),
        ];
        if let Some((i, l)) = test {
            files.extend([(TEST_IMAGES, i.as_slice()), (TEST_LABELS, l.as_slice())]);
        }
        self.write_dir(name, &dir, &files, false)?;
        if let Some(shared) = &self.shared {
            if let Err(e) = shared.save_dataset(name, &files) {
                // Not stored for the other replicas: not stored at all.
                let _ = std::fs::remove_dir_all(&dir);
                return Err(DatasetError::Store(e));
            }
        }
        self.info(name)?.ok_or_else(|| {
            EngineError::Model(format!("dataset {name} vanished after writing")).into()
        })
    }
}

/// Why an upload was not stored: the data (an engine error), or the shared store.
#[derive(Debug, thiserror::Error)]
pub enum DatasetError {
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

/// The number of items an IDX file declares (its first dimension), reading only its header.
fn count(dir: &Path, base: &str) -> Option<usize> {
    let path = [dir.join(format!("{base}.gz")), dir.join(base)]
        .into_iter()
        .find(|p| p.is_file())?;
    let mut file = std::fs::File::open(path).ok()?;
    let mut head = [0u8; 8];
    let mut magic = [0u8; 2];
    file.read_exact(&mut magic).ok()?;
    let rest = std::io::Read::chain(&magic[..], file);
    if magic == [0x1f, 0x8b] {
        flate2::read::MultiGzDecoder::new(rest)
            .read_exact(&mut head)
            .ok()?;
    } else {
        let mut rest = rest;
        rest.read_exact(&mut head).ok()?;
    }
    Some(u32::from_be_bytes([head[4], head[5], head[6], head[7]]) as usize)
}
