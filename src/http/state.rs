//! The state every handler shares: a cheap `Clone` of handles whose owners are named below.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use super::error::ApiError;
use super::metrics::Metrics;
use crate::config::ServeConfig;
use crate::inference::Inference;
use crate::jobs::{JobError, Jobs};
use crate::store::{ModelEntry, ModelStore};

#[derive(Clone)]
pub struct AppState {
    pub config: Arc<ServeConfig>,
    /// The job queue (owns the job store and the workers).
    pub jobs: Jobs,
    /// The model store (owns the model files and the loaded models).
    pub models: Arc<dyn ModelStore>,
    /// The inference queue: computation slots, the bounded wait for them, and the merging of
    /// concurrent classification calls (owns the batching lanes).
    pub inference: Inference,
    pub metrics: Arc<Metrics>,
    /// Turns true when the server begins to shut down (ends event streams).
    pub shutdown: tokio::sync::watch::Receiver<bool>,
}

/// Raises its flag when dropped: a computation's cancel flag, raised when the call that
/// waits for it goes away.
struct RaiseOnDrop(Arc<AtomicBool>);

impl Drop for RaiseOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Resolves once the server begins to stop (never, if its sender is gone first).
async fn stopping(mut shutdown: tokio::sync::watch::Receiver<bool>) {
    loop {
        if *shutdown.borrow_and_update() {
            return;
        }
        if shutdown.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

impl AppState {
    /// Runs a call of the job queue on the blocking pool: its store may be a database across
    /// the network.
    pub async fn with_jobs<T, F>(&self, call: F) -> Result<T, ApiError>
    where
        T: Send + 'static,
        F: FnOnce(&Jobs) -> Result<T, JobError> + Send + 'static,
    {
        let jobs = self.jobs.clone();
        tokio::task::spawn_blocking(move || call(&jobs))
            .await
            .map_err(|e| ApiError::internal("job store call", e))?
            .map_err(ApiError::from)
    }

    /// The model id `id_or_alias` stands for: an alias's target, else itself.
    pub fn resolve(&self, id_or_alias: &str) -> String {
        self.models
            .alias(id_or_alias)
            .unwrap_or_else(|| id_or_alias.to_string())
    }

    /// A model by id or alias: from memory when loaded, else on the blocking pool (a shared
    /// model store fetches a model it has not loaded yet from the bucket).
    pub async fn model(&self, id_or_alias: &str) -> Result<Arc<ModelEntry>, ApiError> {
        let id = &self.resolve(id_or_alias);
        if let Some(model) = self.models.loaded(id) {
            return Ok(model);
        }
        let (models, id) = (self.models.clone(), id.to_string());
        tokio::task::spawn_blocking(move || models.get(&id))
            .await
            .map_err(|e| ApiError::internal("model lookup", e))?
            .map_err(ApiError::from)
    }

    /// Runs `work` on the blocking pool once an inference slot is free. The call is first
    /// admitted for `cost` multiply-adds (see [`crate::inference::cost`]): over the per-call
    /// budget it is refused with 422, over the budget of all calls with 429. Waiting calls are
    /// bounded by the inference queue; beyond it the call is refused with 429.
    pub async fn infer<T, F>(&self, what: &'static str, cost: u64, work: F) -> Result<T, ApiError>
    where
        T: Send + 'static,
        F: FnOnce() -> Result<T, ApiError> + Send + 'static,
    {
        let reservation = self.inference.reserve(cost)?;
        let slot = self.inference.slot().await?;
        let metrics = self.metrics.clone();
        let started = std::time::Instant::now();
        let result = self
            .cancellable(move || {
                let _held = (slot, reservation);
                work()
            })
            .await;
        metrics.observe_inference(what, started.elapsed().as_secs_f64());
        result
    }

    /// Runs `work` on the blocking pool under a cancel flag (see [`crate::engine::cancel`])
    /// that is raised when this call is dropped unfinished (its deadline passed or its client
    /// left) or when the server begins to stop: the engine's loops then end early.
    pub async fn cancellable<T, F>(&self, work: F) -> Result<T, ApiError>
    where
        T: Send + 'static,
        F: FnOnce() -> Result<T, ApiError> + Send + 'static,
    {
        let cancel = Arc::new(AtomicBool::new(false));
        let _on_drop = RaiseOnDrop(cancel.clone());
        let flag = cancel.clone();
        let mut task =
            tokio::task::spawn_blocking(move || crate::engine::cancel::scope(flag, work));
        let joined = tokio::select! {
            joined = &mut task => joined,
            () = stopping(self.shutdown.clone()) => {
                cancel.store(true, Ordering::Relaxed);
                task.await
            }
        };
        joined.map_err(|e| ApiError::internal("blocking task", e))?
    }

    /// p(label | x) for the rows of `x`, merged with concurrent calls of the same model and
    /// method into one engine batch.
    pub async fn classify(
        &self,
        model: Arc<ModelEntry>,
        how: crate::inference::Classifier,
        x: ndarray::Array2<f32>,
    ) -> Result<ndarray::Array2<f32>, ApiError> {
        let _reservation = self
            .inference
            .reserve(crate::inference::cost::passes(&model.dbn, x.nrows()))?;
        Ok(self.inference.classify(model, how, x).await?)
    }
}
