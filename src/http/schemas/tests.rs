//! Each twin has exactly the fields its engine type serialises.

use std::collections::BTreeSet;

use utoipa::openapi::schema::Schema;
use utoipa::openapi::RefOr;
use utoipa::PartialSchema;

use super::*;
use crate::engine::finetune::{BackpropConfig, UpDownConfig};
use crate::engine::observer::{EpochMetrics, Phase, Progress};
use crate::engine::spec::{Finetune, LayerOverride, TrainingSpec};

fn schema_fields<T: PartialSchema>() -> BTreeSet<String> {
    match T::schema() {
        RefOr::T(Schema::Object(o)) => o.properties.keys().cloned().collect(),
        _ => panic!("not an object schema"),
    }
}

fn json_fields(v: serde_json::Value) -> BTreeSet<String> {
    v.as_object().unwrap().keys().cloned().collect()
}

#[test]
fn the_twins_have_the_fields_the_engine_serialises() {
    let mut spec = TrainingSpec::digit_model();
    spec.architecture.visible_units = crate::engine::rbm::Units::Gaussian;
    spec.architecture.top_units = crate::engine::rbm::Units::Gaussian;
    spec.architecture.lateral = true;
    spec.pretrain.method = crate::engine::rbm::LayerMethod::Autoencoder;
    spec.pretrain.cd_k_final = Some(25);
    spec.pretrain.learning_rate_decay = 0.98;
    spec.binarize = true;
    spec.layer_overrides.push(LayerOverride {
        layer: 0,
        epochs: Some(1),
        learning_rate: Some(0.1),
        bias_learning_rate: Some(0.1),
        weight_decay: Some(0.0),
        cd_k: Some(1),
        persistent: Some(false),
        batch_size: Some(10),
        momentum_final: Some(0.9),
        method: Some(crate::engine::rbm::LayerMethod::Cd),
    });
    spec.finetune = Some(Finetune::Backprop(BackpropConfig::default()));
    spec.classifier = Some(BackpropConfig::default());
    spec.alias = Some("default".into());
    spec.ais = Some(crate::engine::spec::AisSpec {
        runs: 10,
        steps: 100,
    });
    spec.sequence = Some(crate::engine::crbm::SequenceSpec {
        order: 2,
        length: 10,
        moving: Some(crate::engine::data::MovingImages {
            max_speed: Some(3),
            ..Default::default()
        }),
    });
    let json = serde_json::to_value(&spec).unwrap();
    assert_eq!(
        json_fields(json.clone()),
        schema_fields::<TrainingSpecSchema>()
    );
    assert_eq!(
        json_fields(json["sequence"].clone()),
        schema_fields::<SequenceSpecSchema>()
    );
    assert_eq!(
        json_fields(json["sequence"]["moving"].clone()),
        schema_fields::<MovingImagesSchema>()
    );
    let mut backprop = json_fields(json["finetune"].clone());
    backprop.remove("method");
    assert_eq!(backprop, schema_fields::<BackpropSchema>());
    let up_down = Finetune::UpDown(UpDownConfig {
        persistent: true,
        discriminative: 1.0,
        ..UpDownConfig::default()
    });
    let up_down = serde_json::to_value(up_down).unwrap();
    let mut up_down = json_fields(up_down);
    up_down.remove("method");
    assert_eq!(up_down, schema_fields::<UpDownSchema>());
    let auto = Finetune::Autoencoder(crate::engine::finetune::AutoencoderConfig::default());
    let mut auto = json_fields(serde_json::to_value(auto).unwrap());
    auto.remove("method");
    assert_eq!(auto, schema_fields::<AutoencoderSchema>());
    let ws = Finetune::WakeSleep(crate::engine::finetune::WakeSleepConfig::default());
    let mut ws = json_fields(serde_json::to_value(ws).unwrap());
    ws.remove("method");
    assert_eq!(ws, schema_fields::<WakeSleepSchema>());
    assert_eq!(
        json_fields(json["architecture"].clone()),
        schema_fields::<ArchitectureSchema>()
    );
    assert_eq!(
        json_fields(json["pretrain"].clone()),
        schema_fields::<RbmTrainConfigSchema>()
    );
    assert_eq!(
        json_fields(json["layer_overrides"][0].clone()),
        schema_fields::<LayerOverrideSchema>()
    );
    let progress = crate::store::JobProgress {
        progress: Progress {
            phase: Phase::Pretrain,
            layer: 0,
            layers: 1,
            epoch: 1,
            epochs: 1,
            batch: 0,
            batches: 1,
            fraction: 0.0,
            examples_per_sec: 0.0,
        },
        eta_seconds: None,
    };
    assert_eq!(
        json_fields(serde_json::to_value(&progress).unwrap()),
        schema_fields::<JobProgressSchema>()
    );
    let metrics = EpochMetrics {
        phase: Phase::Pretrain,
        layer: 0,
        epoch: 1,
        recon_error_train: None,
        recon_error_validation: None,
        free_energy_gap: None,
        validation_error: None,
        train_error: Some(0.1),
        cross_entropy: Some(0.3),
        validation_cross_entropy: Some(0.3),
        log_prob_bound: Some(-100.0),
        momentum: 0.5,
        seconds: 1.0,
        examples_per_sec: 1.0,
    };
    assert_eq!(
        json_fields(serde_json::to_value(&metrics).unwrap()),
        schema_fields::<EpochMetricsSchema>()
    );
    let prov = crate::engine::persist::Provenance::default();
    assert_eq!(
        json_fields(serde_json::to_value(&prov).unwrap()),
        schema_fields::<ProvenanceSchema>()
    );
}
