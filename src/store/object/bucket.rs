//! One S3-compatible bucket (under an optional key prefix), called like a file system from
//! blocking threads. The client is asynchronous (`object_store`); it runs on a small runtime
//! of its own and the calling thread waits for the answer, so it can be called from worker
//! and blocking threads and, waiting for one request, from an async handler.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::path::Path as ObjectPath;
use object_store::prefix::PrefixStore;
use object_store::{ClientConfigKey, ObjectStore, ObjectStoreExt, RetryConfig};

use crate::store::{Result, StoreError};

/// The longest wait for one request, retries included.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

pub(super) struct Bucket {
    store: Arc<dyn ObjectStore>,
    /// The runtime the client's futures run on; shut down in the background on drop (a
    /// runtime may not be dropped in place inside another).
    runtime: Option<tokio::runtime::Runtime>,
    url: String,
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

impl Bucket {
    /// The bucket of `url` with the usual AWS settings from the environment
    /// (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`, `AWS_ENDPOINT` for another
    /// S3-compatible server, `AWS_ALLOW_HTTP=true` for a plain-HTTP one, and the web-identity
    /// variables of Kubernetes service accounts). Nothing is asked of the server yet.
    pub fn open(url: &str) -> Result<Self> {
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
        Ok(Bucket {
            store,
            runtime: Some(runtime),
            url: url.to_string(),
        })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// Runs `fut` on the bucket's runtime and waits for it on this thread.
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
    pub fn fetch(&self, key: ObjectPath) -> Result<Option<Vec<u8>>> {
        let store = self.store.clone();
        self.run(async move {
            match store.get(&key).await {
                Ok(got) => Ok(Some(got.bytes().await.map_err(unavailable)?.to_vec())),
                Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(e) => Err(unavailable(e)),
            }
        })
    }

    pub fn exists(&self, key: ObjectPath) -> Result<bool> {
        let store = self.store.clone();
        self.run(async move {
            match store.head(&key).await {
                Ok(_) => Ok(true),
                Err(object_store::Error::NotFound { .. }) => Ok(false),
                Err(e) => Err(unavailable(e)),
            }
        })
    }

    /// Writes the object whole (readers see the old one or the new one, never a part).
    pub fn put(&self, key: ObjectPath, bytes: Vec<u8>) -> Result<()> {
        let store = self.store.clone();
        self.run(async move {
            store.put(&key, bytes.into()).await.map_err(unavailable)?;
            Ok(())
        })
    }

    /// Deletes the object; a missing one is not an error.
    pub fn remove(&self, key: ObjectPath) -> Result<()> {
        let store = self.store.clone();
        self.run(async move {
            match store.delete(&key).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                Err(e) => Err(unavailable(e)),
            }
        })
    }

    /// The keys of every object under `prefix`.
    pub fn list(&self, prefix: &str) -> Result<Vec<ObjectPath>> {
        let (store, prefix) = (self.store.clone(), ObjectPath::from(prefix));
        self.run(async move {
            let mut keys = Vec::new();
            let mut objects = store.list(Some(&prefix));
            while let Some(meta) = objects.next().await {
                keys.push(meta.map_err(unavailable)?.location);
            }
            Ok(keys)
        })
    }
}

impl Drop for Bucket {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}
