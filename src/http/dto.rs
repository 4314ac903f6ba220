//! The JSON bodies of the API and their conversion from stored records.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::error::ErrorDetail;
use super::schemas::{EpochMetricsSchema, JobProgressSchema, ProvenanceSchema, TrainingSpecSchema};
use crate::engine::observer::EpochMetrics;
use crate::engine::persist::Provenance;
use crate::engine::spec::TrainingSpec;
use crate::store::{JobProgress, JobRecord, ModelEntry};

/// A training job.
#[derive(Debug, Serialize, ToSchema)]
pub struct Job {
    pub id: String,
    /// `queued`, `running`, `succeeded`, `failed` or `cancelled`.
    #[schema(pattern = "^(queued|running|succeeded|failed|cancelled)$")]
    pub status: String,
    /// RFC 3339 times.
    pub created_at: String,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    #[schema(value_type = TrainingSpecSchema)]
    pub spec: TrainingSpec,
    #[schema(value_type = Option<JobProgressSchema>)]
    pub progress: Option<JobProgress>,
    /// The latest epoch's metrics.
    #[schema(value_type = Option<EpochMetricsSchema>)]
    pub metrics: Option<EpochMetrics>,
    /// Metrics of every finished epoch, in order.
    #[schema(value_type = Vec<EpochMetricsSchema>)]
    pub history: Vec<EpochMetrics>,
    /// Why the job failed.
    pub error: Option<ErrorDetail>,
    /// The model the job produced.
    pub model_id: Option<String>,
    /// Times a worker started the job (above 1 after a restart resumed it).
    pub attempts: u32,
    /// Cancelling was asked and the job has not stopped yet.
    pub cancel_requested: bool,
}

impl From<JobRecord> for Job {
    fn from(r: JobRecord) -> Self {
        Job {
            id: r.id,
            status: r.status.as_str().to_string(),
            created_at: rfc3339(r.created_at),
            started_at: r.started_at.map(rfc3339),
            finished_at: r.finished_at.map(rfc3339),
            spec: r.spec,
            progress: r.progress,
            metrics: r.history.last().cloned(),
            history: r.history,
            error: r.error.map(|e| ErrorDetail {
                code: e.code,
                message: e.message,
            }),
            model_id: r.model_id,
            attempts: r.attempts,
            cancel_requested: r.cancel_requested && !r.status.is_terminal(),
        }
    }
}

/// A page of jobs, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct JobList {
    pub jobs: Vec<Job>,
    /// Pass as `cursor` to get the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

/// Filters and paging of `GET /v1/jobs`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct JobListQuery {
    /// Only jobs in this status.
    pub status: Option<String>,
    /// Jobs per page, 1-100 (default 20).
    pub limit: Option<usize>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// A stored model.
#[derive(Debug, Serialize, ToSchema)]
pub struct Model {
    pub id: String,
    pub name: String,
    /// Layer sizes from the input up, e.g. `[784, 500, 500, 2000]`.
    pub sizes: Vec<usize>,
    /// Label units joined to the top RBM (0: the model cannot classify).
    pub label_classes: usize,
    /// [height, width] of input images.
    pub image_shape: Option<[usize; 2]>,
    #[schema(value_type = Option<TrainingSpecSchema>)]
    pub spec: Option<TrainingSpec>,
    #[schema(value_type = ProvenanceSchema)]
    pub provenance: Provenance,
    /// Named results, e.g. `test_error` (fraction of the test set misclassified).
    pub metrics: BTreeMap<String, f64>,
    /// Classification methods the model supports.
    pub methods: Vec<String>,
    /// Size of the model file in bytes.
    pub bytes: u64,
    pub created_at: String,
    /// The aliases that point at this model (e.g. `default`).
    pub aliases: Vec<String>,
}

impl Model {
    /// The model as listed, with the aliases among `aliases` (name → id) that point at it.
    pub fn with_aliases(m: &ModelEntry, aliases: &BTreeMap<String, String>) -> Self {
        let mut model = Model::from(m);
        model.aliases = aliases
            .iter()
            .filter(|(_, id)| **id == m.id)
            .map(|(name, _)| name.clone())
            .collect();
        model
    }
}

impl From<&ModelEntry> for Model {
    fn from(m: &ModelEntry) -> Self {
        let mut methods: Vec<String> = if m.card.label_classes > 0 {
            vec!["free_energy".into(), "gibbs".into()]
        } else {
            Vec::new()
        };
        if m.dbn.classifier().is_some() {
            methods.push("discriminative".into());
        }
        Model {
            id: m.id.clone(),
            name: m.card.name.clone(),
            sizes: m.card.sizes.clone(),
            label_classes: m.card.label_classes,
            image_shape: m.card.image_shape,
            spec: m.card.spec.clone(),
            provenance: m.card.provenance.clone(),
            metrics: m.card.metrics.clone(),
            methods,
            bytes: m.bytes,
            created_at: rfc3339(m.card.provenance.created_unix.saturating_mul(1000)),
            aliases: Vec::new(),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ModelList {
    pub models: Vec<Model>,
}

/// How to classify.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    /// Exact free energy of the top RBM for each label (deterministic).
    #[default]
    FreeEnergy,
    /// Alternating Gibbs sampling in the top two layers, counting how often each label is on.
    Gibbs,
    /// The feed-forward network made by discriminative fine-tuning (backpropagation).
    Discriminative,
}

impl Method {
    /// What a call that names no method gets: the discriminative net of a model fine-tuned
    /// by backpropagation (its best classifier, and the one its card's `test_error` reports),
    /// otherwise the free energy.
    pub fn default_for(model: &crate::store::ModelEntry) -> Method {
        if model.dbn.classifier().is_some() {
            Method::Discriminative
        } else {
            Method::FreeEnergy
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Method::FreeEnergy => "free_energy",
            Method::Gibbs => "gibbs",
            Method::Discriminative => "discriminative",
        }
    }
}

/// Options of a classification, in the query string (and, for JSON bodies, in the body).
#[derive(Debug, Default, Clone, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ClassifyQuery {
    /// `free_energy`, `gibbs`, or `discriminative` for models fine-tuned by backpropagation
    /// (their default; `free_energy` is the others').
    pub method: Option<Method>,
    /// Gibbs steps (method `gibbs`; default 200).
    pub gibbs_steps: Option<usize>,
    /// Seed of the Gibbs chains (default 0).
    pub seed: Option<u64>,
}

/// Images as pixel intensities.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PixelsRequest {
    /// One row of the model's input size (784 for 28×28) per image, values in [0, 1], ink
    /// light on dark as in MNIST.
    pub pixels: Vec<Vec<f32>>,
    pub method: Option<Method>,
    pub gibbs_steps: Option<usize>,
    pub seed: Option<u64>,
}

/// One image's classification.
#[derive(Debug, Serialize, ToSchema)]
pub struct Prediction {
    pub label: usize,
    /// p(label | image) for every label.
    pub probabilities: Vec<f32>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ClassifyResponse {
    pub model: String,
    pub method: Method,
    /// One per image, in the order given.
    pub predictions: Vec<Prediction>,
}

/// What to generate.
#[derive(Debug, Deserialize, ToSchema, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct SampleRequest {
    /// Label to clamp (none: labels are sampled too).
    pub label: Option<usize>,
    /// Images to generate (default 16).
    pub count: Option<usize>,
    /// Gibbs steps in the top RBM before the down-pass (default 1000).
    #[serde(alias = "steps")]
    pub gibbs_steps: Option<usize>,
    /// Seed (default 0): the same seed gives the same images.
    pub seed: Option<u64>,
    /// Grid width of the PNG (default: up to 10 per row).
    pub columns: Option<usize>,
}

/// One chain (or a few) settling, seen every few Gibbs steps.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChainRequest {
    /// Label to clamp (none: labels are sampled too).
    pub label: Option<usize>,
    /// Chains to run side by side (default 1).
    pub count: Option<usize>,
    /// Gibbs steps in all (default 200).
    #[serde(alias = "steps")]
    pub gibbs_steps: Option<usize>,
    /// Frames to return, evenly spaced over the steps (default 25, at most 200).
    pub frames: Option<usize>,
    /// Seed (default 0).
    pub seed: Option<u64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ChainResponse {
    pub model: String,
    pub label: Option<usize>,
    pub seed: u64,
    /// [height, width] of each image.
    pub shape: [usize; 2],
    /// The chains' images after each frame's number of steps, in order.
    pub frames: Vec<ChainFrame>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ChainFrame {
    /// Gibbs steps taken so far.
    pub step: usize,
    /// Pixel probabilities, one row per chain.
    pub images: Vec<Vec<f32>>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SampleResponse {
    pub model: String,
    pub label: Option<usize>,
    pub gibbs_steps: usize,
    pub seed: u64,
    /// [height, width] of each image.
    pub shape: [usize; 2],
    /// Pixel probabilities, one row per image.
    pub images: Vec<Vec<f32>>,
}

/// Liveness and readiness.
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// `ok` or `unavailable`.
    pub status: String,
    pub models: usize,
    pub workers_alive: bool,
}

/// Milliseconds since the Unix epoch as RFC 3339 UTC, e.g. `2026-11-26T21:03:04.123Z`.
pub fn rfc3339(ms: u64) -> String {
    let secs = ms / 1000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        ms % 1000
    )
}

#[cfg(test)]
mod tests {
    use super::rfc3339;

    #[test]
    fn rfc3339_matches_known_instants() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        // 2000-02-29 (a leap day of a century leap year) 12:34:56.789 UTC = 951827696789 ms.
        assert_eq!(rfc3339(951_827_696_789), "2000-02-29T12:34:56.789Z");
        // 2026-11-26 00:00:00 UTC = 1795651200 s.
        assert_eq!(rfc3339(1_795_651_200_000), "2026-11-26T00:00:00.000Z");
    }
}
