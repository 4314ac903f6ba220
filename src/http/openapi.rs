//! The OpenAPI document, generated from the handlers and types. `dbn-serve openapi` prints
//! it; the committed copy is `openapi/openapi.json`, and a test fails when it is stale.

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::routes::{
    aliases, classify, codes, datasets, generation, jobs, models, oip, ops, sequences,
};
use crate::config::ServeConfig;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "dbn-serve",
        description = "Deep belief nets (Hinton 2007) learned by contrastive divergence and served: \
                       training jobs, models, classification, generation. Errors are \
                       `{\"error\": {\"code\", \"message\"}}`. With an API key configured, \
                       every call that changes state or runs a model needs \
                       `Authorization: Bearer <key>`: every POST, PUT and DELETE, and the \
                       GETs `samples.png` and `features.png`; with `DBN_API_KEY_FOR_READS`, \
                       the plain reads need it too. The health probes and the page stay open."
    ),
    paths(
        jobs::submit, jobs::list, jobs::show, jobs::cancel, jobs::events,
        models::list, models::show, models::remove, models::weights, models::import,
        aliases::list, aliases::show, aliases::set, aliases::remove,
        classify::classify, codes::encode, codes::reconstruct, generation::samples, generation::samples_png, generation::chain, generation::features_png,
        sequences::continue_sequence,
        datasets::list, datasets::upload,
        oip::live, oip::ready, oip::metadata, oip::model_ready, oip::infer,
        ops::healthz, ops::readyz, ops::metrics,
    ),
    modifiers(&BearerAuth),
    tags(
        (name = "jobs", description = "Training jobs: the long-running-operation pattern"),
        (name = "models", description = "Stored models"),
        (name = "inference", description = "Classification, generation, features"),
        (name = "datasets", description = "Training data"),
        (name = "oip-v2", description = "KServe Open Inference Protocol v2"),
        (name = "operations", description = "Health and metrics"),
    )
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The document a server with `config` serves: the generated one with the enforced ranges
/// written in (see `documented_limits`).
pub fn for_config(config: &ServeConfig) -> utoipa::openapi::OpenApi {
    let mut doc = serde_json::to_value(ApiDoc::openapi()).expect("the document serialises");
    let missing = super::documented_limits::apply(&mut doc, config);
    debug_assert!(missing.is_empty(), "limits without a place: {missing:?}");
    serde_json::from_value(doc).expect("the document reads back")
}

/// The document of a server with the default settings, as pretty JSON with a trailing
/// newline (the committed form).
pub fn document() -> String {
    let mut text = for_config(&ServeConfig::with_data_dir("data"))
        .to_pretty_json()
        .expect("the OpenAPI document serialises");
    text.push('\n');
    text
}
