//! Models: download, import, delete, and survival across restarts and corrupt files.

use serde_json::Value;

use crate::app::{code, small_spec, spawn_app};
use crate::classify::test_pixels;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn models_download_import_delete_and_survive_a_restart() {
    let app = spawn_app().await;
    let model = app.train(&small_spec(1)).await;
    let pixels = test_pixels(20);
    let (_, original) = app
        .post_json(&format!("/v1/models/{model}/classify"), &pixels)
        .await;

    let r = app.get(&format!("/v1/models/{model}/weights")).await;
    assert_eq!(r.status(), 200);
    let file = r.bytes().await.unwrap().to_vec();
    let r = app
        .client
        .post(app.url("/v1/models"))
        .header("content-type", "application/octet-stream")
        .body(file.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let imported: Value = r.json().await.unwrap();
    let copy = imported["id"].as_str().unwrap().to_string();
    assert_ne!(copy, model);
    let (_, again) = app
        .post_json(&format!("/v1/models/{copy}/classify"), &pixels)
        .await;
    assert_eq!(
        again["predictions"], original["predictions"],
        "bit-identical after the round trip"
    );

    // Corrupt uploads are refused and nothing is stored.
    let mut corrupt = file.clone();
    corrupt.truncate(file.len() / 2);
    for bad in [b"garbage".to_vec(), corrupt] {
        let r = app
            .client
            .post(app.url("/v1/models"))
            .header("content-type", "application/octet-stream")
            .body(bad)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 422);
    }
    let (_, list) = app.get_json("/v1/models").await;
    assert_eq!(list["models"].as_array().unwrap().len(), 2);

    // A foreign file dropped into the models directory is skipped at start-up.
    std::fs::write(
        app.data_dir().join("models/intruder.safetensors"),
        b"not a model",
    )
    .unwrap();
    let app = app.restart().await;
    let (_, list) = app.get_json("/v1/models").await;
    let ids: Vec<&str> = list["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 2, "{ids:?}");
    let (_, after) = app
        .post_json(&format!("/v1/models/{model}/classify"), &pixels)
        .await;
    assert_eq!(after["predictions"], original["predictions"]);

    let r = app
        .client
        .delete(app.url(&format!("/v1/models/{copy}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let (status, body) = app.get_json(&format!("/v1/models/{copy}")).await;
    assert_eq!((status, code(&body)), (404, "not_found"));
    let r = app
        .client
        .delete(app.url(&format!("/v1/models/{copy}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    // Ids that could leave the directory are never found.
    let (status, _) = app.get_json("/v1/models/..%2F..%2Fetc%2Fpasswd").await;
    assert_eq!(status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploaded_datasets_can_be_trained_on() {
    let app = spawn_app().await;
    let dir = crate::common::fixture_dir();
    let part = |name: &str| reqwest::multipart::Part::bytes(std::fs::read(dir.join(name)).unwrap());
    let form = reqwest::multipart::Form::new()
        .part("train_images", part("train-images-idx3-ubyte.gz"))
        .part("train_labels", part("train-labels-idx1-ubyte.gz"));
    let r = app
        .client
        .post(app.url("/v1/datasets?name=digits"))
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let info: Value = r.json().await.unwrap();
    assert_eq!(info["train_examples"], 2000);

    // Images and labels that disagree in count are refused.
    let form = reqwest::multipart::Form::new()
        .part("train_images", part("train-images-idx3-ubyte.gz"))
        .part("train_labels", part("t10k-labels-idx1-ubyte.gz"));
    let r = app
        .client
        .post(app.url("/v1/datasets?name=broken"))
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);

    let (_, list) = app.get_json("/v1/datasets").await;
    let names: Vec<&str> = list["datasets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["mnist", "digits"]);
    let mut spec = small_spec(1);
    spec["dataset"] = "digits".into();
    let model = app.train(&spec).await;
    let (_, m) = app.get_json(&format!("/v1/models/{model}")).await;
    assert_eq!(m["provenance"]["dataset"], "digits");
    // No test split was uploaded, so no test error.
    assert!(m["metrics"]["test_error"].is_null());
}
