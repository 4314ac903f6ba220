//! Encoding and reconstruction over HTTP: a deep autoencoder trained as a job, its codes and
//! reconstructions as JSON and PNG, and the same calls on a labelled DBN.

use serde_json::{json, Value};

use crate::app::{code, small_spec, spawn_app};
use crate::classify::test_pixels;

fn sum_of_squares(pixels: &Value) -> Vec<f64> {
    pixels["pixels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| {
            row.as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap().powi(2))
                .sum()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deep_autoencoder_job_encodes_and_reconstructs_digits() {
    let app = spawn_app().await;
    let spec = json!({
        "name": "deep-ae",
        "architecture": {"hidden": [64, 16], "labels_in_top": false, "top_units": "gaussian"},
        "pretrain": {"epochs": 4},
        "layer_overrides": [{"layer": 1, "learning_rate": 0.001, "bias_learning_rate": 0.001}],
        "finetune": {"method": "autoencoder", "epochs": 4},
        "seed": 3
    });
    let model = app.train(&spec).await;
    let (status, card) = app.get_json(&format!("/v1/models/{model}")).await;
    assert_eq!(status, 200, "{card}");
    let card_error = card["metrics"]["test_reconstruction_error"]
        .as_f64()
        .unwrap_or_else(|| panic!("no test_reconstruction_error in {card}"));

    let pixels = test_pixels(8);
    let (status, codes) = app
        .post_json(&format!("/v1/models/{model}/encode"), &pixels)
        .await;
    assert_eq!(status, 200, "{codes}");
    assert_eq!(codes["code_size"], 16);
    let codes = codes["codes"].as_array().unwrap();
    assert_eq!(codes.len(), 8);
    assert!(codes.iter().all(|c| c.as_array().unwrap().len() == 16));

    let (status, recon) = app
        .post_json(&format!("/v1/models/{model}/reconstruct"), &pixels)
        .await;
    assert_eq!(status, 200, "{recon}");
    assert_eq!(recon["shape"], json!([28, 28]));
    let errors: Vec<f64> = recon["squared_errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_f64().unwrap())
        .collect();
    let blank = sum_of_squares(&pixels);
    // Every reconstruction is nearer its digit than a blank image is, and the mean is of
    // the order the job measured on the whole test set.
    for (e, b) in errors.iter().zip(&blank) {
        assert!(e < b, "reconstruction error {e} ≥ blank image's {b}");
    }
    let mean = errors.iter().sum::<f64>() / errors.len() as f64;
    assert!(mean < 3.0 * card_error, "mean {mean}, card {card_error}");

    let png = app
        .client
        .post(app.url(&format!("/v1/models/{model}/reconstruct")))
        .header("accept", "image/png")
        .json(&pixels)
        .send()
        .await
        .unwrap();
    assert_eq!(png.status(), 200);
    assert_eq!(png.headers()["content-type"], "image/png");
    let bytes = png.bytes().await.unwrap();
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");

    // Bad bodies get their documented errors.
    let (status, body) = app
        .post_json(
            &format!("/v1/models/{model}/encode"),
            &json!({"pixels": [[0.5, 0.5]]}),
        )
        .await;
    assert_eq!((status, code(&body)), (422, "invalid_request"), "{body}");
    let (status, body) = app
        .post_json(
            &format!("/v1/models/{model}/reconstruct"),
            &json!({"pixels": [], "method": "gibbs"}),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("method"),
        "{body}"
    );
    let r = app
        .client
        .post(app.url(&format!("/v1/models/{model}/encode")))
        .header("content-type", "text/plain")
        .body("hello")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 415);
    // A model of this kind cannot classify, and says so.
    let (status, body) = app
        .post_json(&format!("/v1/models/{model}/classify"), &pixels)
        .await;
    assert_eq!(status, 422, "{body}");
    app.assert_healthy().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_labelled_dbn_encodes_to_the_features_of_its_associative_memory() {
    let app = spawn_app().await;
    let model = app.train(&small_spec(2)).await;
    let pixels = test_pixels(3);
    let (status, codes) = app
        .post_json(&format!("/v1/models/{model}/encode"), &pixels)
        .await;
    assert_eq!(status, 200, "{codes}");
    assert_eq!(codes["code_size"], 64);
    let (status, recon) = app
        .post_json(&format!("/v1/models/{model}/reconstruct"), &pixels)
        .await;
    assert_eq!(status, 200, "{recon}");
    assert_eq!(recon["reconstructions"][0].as_array().unwrap().len(), 784);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gaussian_semi_restricted_and_wake_sleep_models_train_as_jobs_and_serve() {
    let app = spawn_app().await;
    let pixels = test_pixels(4);
    // Gaussian visible units with labels on top: classifies raw pixels.
    let gaussian = app
        .train(&json!({
            "architecture": {"hidden": [64, 64], "visible_units": "gaussian"},
            "pretrain": {"epochs": 3},
            "layer_overrides": [{"layer": 0, "learning_rate": 0.005, "bias_learning_rate": 0.005}],
            "seed": 1
        }))
        .await;
    let (status, r) = app
        .post_json(&format!("/v1/models/{gaussian}/classify"), &pixels)
        .await;
    assert_eq!(status, 200, "{r}");
    assert_eq!(r["predictions"].as_array().unwrap().len(), 4);
    // A semi-restricted first layer: samples come back as pixels.
    let semi = app
        .train(&json!({
            "architecture": {"hidden": [32, 32], "lateral": true},
            "pretrain": {"epochs": 2},
            "seed": 2
        }))
        .await;
    let (status, r) = app
        .post_json(
            &format!("/v1/models/{semi}/samples"),
            &json!({"label": 1, "count": 2, "gibbs_steps": 5}),
        )
        .await;
    assert_eq!(status, 200, "{r}");
    // Wake-sleep from random weights: no pretraining, a bound in the card, free samples.
    let ws = app
        .train(&json!({
            "architecture": {"hidden": [32, 16], "labels_in_top": false},
            "finetune": {"method": "wake_sleep", "epochs": 2, "init": "random"},
            "seed": 3
        }))
        .await;
    let (_, card) = app.get_json(&format!("/v1/models/{ws}")).await;
    let bound = card["metrics"]["test_log_prob_bound"].as_f64().unwrap();
    assert!(bound < 0.0 && bound > -800.0, "bound {bound}");
    let (status, r) = app
        .post_json(&format!("/v1/models/{ws}/samples"), &json!({"count": 3}))
        .await;
    assert_eq!(status, 200, "{r}");
    assert_eq!(r["images"].as_array().unwrap().len(), 3);
    // Asking a label of a model without labels, or a bad combination, is a clear 422.
    let (status, body) = app
        .post_json(
            &format!("/v1/models/{ws}/samples"),
            &json!({"label": 2, "count": 3}),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    let (status, body) = app
        .post_json(
            "/v1/jobs",
            &json!({"architecture": {"hidden": [32], "lateral": true, "labels_in_top": false},
                    "pretrain": {"persistent": true}}),
        )
        .await;
    assert_eq!((status, code(&body)), (422, "invalid_request"), "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("lateral"),
        "{body}"
    );
}
