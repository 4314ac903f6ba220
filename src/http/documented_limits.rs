//! The ranges the server enforces, written into its OpenAPI document: the engine's fixed
//! bounds on training settings and this server's configured limits (layers, units, batch,
//! samples, Gibbs steps). Clients and schema-driven testers then see what will be accepted.

use serde_json::{json, Value};

use crate::config::ServeConfig;
use crate::engine::finetune::{MAX_FINETUNE_BATCH, MAX_FINETUNE_EPOCHS};
use crate::engine::rbm::{MAX_BATCH, MAX_CD_K, MAX_EPOCHS};

use super::routes::sequences::{self, MAX_CONTINUE_STEPS};
use super::routes::{generation::MAX_CHAIN_FRAMES, jobs::MAX_PAGE};
use crate::engine::crbm::{MAX_LENGTH, MAX_ORDER};
use crate::engine::data::moving::MAX_CANVAS;

/// Constraints for schema properties, by JSON pointer into the document.
fn property_limits(config: &ServeConfig) -> Vec<(String, Value)> {
    let positive = |max: usize| json!({"minimum": 1, "maximum": max});
    let step = |max: f64| json!({"exclusiveMinimum": 0, "maximum": max});
    let unit_open = json!({"minimum": 0, "exclusiveMaximum": 1});
    let keep = json!({"exclusiveMinimum": 0, "maximum": 1});
    let closed = |max: f64| json!({"minimum": 0, "maximum": max});
    let mut out = Vec::new();
    let mut add = |schema: &str, field: &str, c: Value| {
        out.push((
            format!("/components/schemas/{schema}/properties/{field}"),
            c,
        ));
    };
    for schema in ["RbmTrainConfig", "LayerOverride"] {
        add(schema, "epochs", positive(MAX_EPOCHS));
        add(schema, "batch_size", positive(MAX_BATCH));
        add(schema, "cd_k", positive(MAX_CD_K));
        add(schema, "learning_rate", step(100.0));
        add(schema, "bias_learning_rate", step(100.0));
        add(schema, "momentum_final", unit_open.clone());
        add(schema, "weight_decay", unit_open.clone());
    }
    add("RbmTrainConfig", "momentum_initial", unit_open.clone());
    add("RbmTrainConfig", "init_std", step(10.0));
    add("RbmTrainConfig", "cd_k_final", positive(MAX_CD_K));
    add("RbmTrainConfig", "learning_rate_decay", step(1.0));
    add(
        "LayerOverride",
        "layer",
        json!({"minimum": 0, "maximum": config.max_layers.saturating_sub(1)}),
    );
    add("BackpropConfig", "epochs", positive(MAX_FINETUNE_EPOCHS));
    add("BackpropConfig", "batch_size", positive(MAX_FINETUNE_BATCH));
    add("BackpropConfig", "learning_rate", closed(100.0));
    add("BackpropConfig", "learning_rate_decay", closed(1.0));
    add("BackpropConfig", "momentum_initial", closed(0.999));
    add("BackpropConfig", "momentum_final", closed(0.999));
    add("BackpropConfig", "weight_decay", closed(1.0));
    add("BackpropConfig", "init_std", closed(10.0));
    add("BackpropConfig", "input_keep", keep.clone());
    add("BackpropConfig", "hidden_keep", keep);
    add("UpDownConfig", "epochs", positive(MAX_FINETUNE_EPOCHS));
    add("UpDownConfig", "batch_size", positive(MAX_FINETUNE_BATCH));
    add("UpDownConfig", "learning_rate", step(10.0));
    add("UpDownConfig", "discriminative", closed(100.0));
    add(
        "UpDownConfig",
        "cd_k",
        json!({"minItems": 1, "items": {"minimum": 1, "maximum": 1000}}),
    );
    add(
        "Architecture",
        "hidden",
        json!({"minItems": 1, "maxItems": config.max_layers,
               "items": {"minimum": 1, "maximum": config.max_units}}),
    );
    add("TrainingSpec", "train_examples", json!({"minimum": 1}));
    add("AisSpec", "runs", positive(10_000));
    add(
        "AisSpec",
        "steps",
        json!({"minimum": 10, "maximum": 1_000_000}),
    );
    for schema in ["PixelsRequest", "CodesRequest"] {
        add(
            schema,
            "pixels",
            json!({"minItems": 1, "maxItems": config.max_batch,
                   "items": {"items": {"minimum": 0, "maximum": 1}}}),
        );
    }
    add("WakeSleepConfig", "epochs", positive(MAX_FINETUNE_EPOCHS));
    add(
        "WakeSleepConfig",
        "batch_size",
        positive(MAX_FINETUNE_BATCH),
    );
    add("WakeSleepConfig", "learning_rate", step(10.0));
    add("AutoencoderConfig", "epochs", positive(MAX_FINETUNE_EPOCHS));
    add(
        "AutoencoderConfig",
        "batch_size",
        positive(MAX_FINETUNE_BATCH),
    );
    add("AutoencoderConfig", "learning_rate", step(10.0));
    add("AutoencoderConfig", "momentum", unit_open.clone());
    add("AutoencoderConfig", "weight_decay", unit_open);
    for schema in ["SampleRequest", "ChainRequest"] {
        add(schema, "count", positive(config.max_samples));
        add(
            schema,
            "gibbs_steps",
            json!({"maximum": config.max_gibbs_steps}),
        );
    }
    add("ChainRequest", "frames", positive(MAX_CHAIN_FRAMES));
    // Read only by method `gibbs`, which refuses 0.
    add(
        "PixelsRequest",
        "gibbs_steps",
        positive(config.max_gibbs_steps),
    );
    add("ContinueRequest", "steps", positive(MAX_CONTINUE_STEPS));
    add(
        "ContinueRequest",
        "gibbs_steps",
        positive(sequences::max_gibbs_steps(config)),
    );
    // Empty with `example`; otherwise at least the model's order per layer.
    add(
        "ContinueRequest",
        "frames",
        json!({"maxItems": config.max_batch}),
    );
    add("SequenceSpec", "order", positive(MAX_ORDER));
    add(
        "SequenceSpec",
        "length",
        json!({"minimum": 2, "maximum": MAX_LENGTH}),
    );
    add(
        "MovingImages",
        "canvas",
        // Larger than the images: 29 for the 28 × 28 datasets this server takes.
        json!({"minimum": 29, "maximum": MAX_CANVAS}),
    );
    add("MovingImages", "max_speed", json!({"minimum": 1}));
    out
}

/// Constraints for query parameters: (path, method, parameter, constraints on its schema).
fn parameter_limits(
    config: &ServeConfig,
) -> Vec<(&'static str, &'static str, &'static str, Value)> {
    vec![
        (
            "/v1/jobs",
            "get",
            "limit",
            json!({"minimum": 1, "maximum": MAX_PAGE}),
        ),
        (
            "/v1/models/{id}/samples.png",
            "get",
            "count",
            json!({"minimum": 1, "maximum": config.max_samples}),
        ),
        (
            "/v1/models/{id}/samples.png",
            "get",
            "gibbs_steps",
            json!({"maximum": config.max_gibbs_steps}),
        ),
        (
            "/v1/models/{id}/classify",
            "post",
            "gibbs_steps",
            // Read only by method `gibbs`, which refuses 0.
            json!({"minimum": 1, "maximum": config.max_gibbs_steps}),
        ),
    ]
}

fn merge(target: &mut Value, constraints: &Value) {
    if let (Value::Object(t), Value::Object(c)) = (target, constraints) {
        for (k, v) in c {
            match t.get_mut(k) {
                Some(existing) if v.is_object() => merge(existing, v),
                _ => {
                    t.insert(k.clone(), v.clone());
                }
            }
        }
    }
}

/// Writes the limits into `doc` (the document as JSON). Returns the places it did not find,
/// which a test keeps empty.
pub fn apply(doc: &mut Value, config: &ServeConfig) -> Vec<String> {
    let mut missing = Vec::new();
    for (pointer, c) in property_limits(config) {
        match doc.pointer_mut(&pointer) {
            Some(target) => merge(target, &c),
            None => missing.push(pointer),
        }
    }
    for (path, method, name, c) in parameter_limits(config) {
        let param = doc
            .pointer_mut(&format!("/paths/{}/{method}/parameters", escape(path)))
            .and_then(Value::as_array_mut)
            .and_then(|ps| ps.iter_mut().find(|p| p["name"] == name))
            .and_then(|p| p.get_mut("schema"));
        match param {
            Some(schema) => merge(schema, &c),
            None => missing.push(format!("{method} {path} ?{name}")),
        }
    }
    missing
}

/// A path as one JSON pointer segment.
fn escape(path: &str) -> String {
    path.replace('~', "~0").replace('/', "~1")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn document(config: &ServeConfig) -> (Value, Vec<String>) {
        use utoipa::OpenApi;
        let mut doc = serde_json::to_value(super::super::openapi::ApiDoc::openapi()).unwrap();
        let missing = apply(&mut doc, config);
        (doc, missing)
    }

    #[test]
    fn every_limit_finds_its_place_and_follows_the_configuration() {
        let mut config = ServeConfig::with_data_dir("d");
        config.max_units = 777;
        config.max_batch = 33;
        let (doc, missing) = document(&config);
        assert!(missing.is_empty(), "not in the document: {missing:?}");
        let hidden = &doc["components"]["schemas"]["Architecture"]["properties"]["hidden"];
        assert_eq!(hidden["items"]["maximum"], 777);
        assert_eq!(hidden["maxItems"], config.max_layers);
        let pixels = &doc["components"]["schemas"]["PixelsRequest"]["properties"]["pixels"];
        assert_eq!(pixels["maxItems"], 33);
        assert_eq!(pixels["items"]["items"]["maximum"], 1);
        // The existing type information is kept.
        assert!(pixels["items"]["items"]["type"].is_string(), "{pixels}");
        let epochs = &doc["components"]["schemas"]["RbmTrainConfig"]["properties"]["epochs"];
        assert_eq!(epochs["maximum"], MAX_EPOCHS);
    }

    /// The documented bounds agree with the engine's checks: the values at each bound are
    /// accepted and the values just past them refused.
    #[test]
    fn the_documented_training_bounds_are_the_enforced_ones() {
        use crate::engine::spec::{Limits, TrainingSpec};
        let config = ServeConfig::with_data_dir("d");
        let (doc, _) = document(&config);
        let props = |schema: &str| doc["components"]["schemas"][schema]["properties"].clone();
        let limits = Limits::default();
        let check = |field: &str, value: Value| {
            let mut spec = serde_json::to_value(TrainingSpec::digit_model()).unwrap();
            spec["pretrain"][field] = value;
            let spec: TrainingSpec = serde_json::from_value(spec).unwrap();
            spec.check(crate::engine::spec::DataShape::MNIST, &limits)
                .is_ok()
        };
        let rbm = props("RbmTrainConfig");
        for field in ["epochs", "batch_size", "cd_k", "cd_k_final"] {
            let max = rbm[field]["maximum"].as_u64().unwrap();
            assert!(check(field, json!(max)), "{field} = {max}");
            assert!(!check(field, json!(max + 1)), "{field} = {max} + 1");
            assert!(!check(field, json!(0)), "{field} = 0");
        }
        for field in [
            "learning_rate",
            "bias_learning_rate",
            "init_std",
            "learning_rate_decay",
        ] {
            let max = rbm[field]["maximum"].as_f64().unwrap();
            assert!(check(field, json!(max)), "{field} = {max}");
            assert!(!check(field, json!(max * 1.01)), "{field} past {max}");
            assert!(!check(field, json!(0.0)), "{field} = 0");
        }
        for field in ["momentum_initial", "momentum_final", "weight_decay"] {
            assert_eq!(rbm[field]["exclusiveMaximum"], 1, "{field}");
            assert!(
                check(field, json!(0.0)) && check(field, json!(0.99)),
                "{field}"
            );
            assert!(!check(field, json!(1.0)), "{field} = 1");
        }
    }
}
