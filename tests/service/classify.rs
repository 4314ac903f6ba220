//! Classification of JSON pixels, PNG, JPEG and multipart bodies; samples; features; OIP v2.

use serde_json::{json, Value};

use dbn_serve::engine::data::MnistSplit;

use crate::app::{code, small_spec, spawn_app, TestApp};
use crate::common::fixture;

/// `{"pixels": [...]}` of the first `n` fixture test images.
pub fn test_pixels(n: usize) -> Value {
    let test = fixture(MnistSplit::Test);
    let rows: Vec<Vec<f32>> = test
        .images
        .outer_iter()
        .take(n)
        .map(|r| r.to_vec())
        .collect();
    json!({ "pixels": rows })
}

fn test_labels(n: usize) -> Vec<u64> {
    fixture(MnistSplit::Test)
        .labels
        .iter()
        .take(n)
        .map(|&l| l as u64)
        .collect()
}

fn labels_of(response: &Value) -> Vec<u64> {
    response["predictions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["label"].as_u64().unwrap())
        .collect()
}

fn accuracy(predicted: &[u64], truth: &[u64]) -> f64 {
    predicted.iter().zip(truth).filter(|(a, b)| a == b).count() as f64 / truth.len() as f64
}

/// Fixture test image `i` as a PNG: dark ink on white, scaled up `scale` times.
fn test_png(i: usize, scale: usize) -> Vec<u8> {
    let test = fixture(MnistSplit::Test);
    let img = test.images.row(i);
    let side = 28 * scale;
    let pixels: Vec<u8> = (0..side * side)
        .map(|k| {
            let (y, x) = (k / side / scale, k % side / scale);
            255 - (img[y * 28 + x] * 255.0).round() as u8
        })
        .collect();
    let mut out = Vec::new();
    let mut enc = png::Encoder::new(&mut out, side as u32, side as u32);
    enc.set_color(png::ColorType::Grayscale);
    enc.set_depth(png::BitDepth::Eight);
    let mut w = enc.write_header().unwrap();
    w.write_image_data(&pixels).unwrap();
    w.finish().unwrap();
    out
}

pub async fn classify_bytes(
    app: &TestApp,
    model: &str,
    bytes: Vec<u8>,
    ctype: &str,
) -> (u16, Value) {
    let r = app
        .client
        .post(app.url(&format!("/v1/models/{model}/classify")))
        .header("content-type", ctype)
        .body(bytes)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn images_in_every_form_are_classified_like_their_pixels() {
    let app = spawn_app().await;
    let model = app.train(&small_spec(5)).await;
    let n = 100;
    let truth = test_labels(n);

    let (status, by_pixels) = app
        .post_json(&format!("/v1/models/{model}/classify"), &test_pixels(n))
        .await;
    assert_eq!(status, 200, "{by_pixels}");
    assert_eq!(by_pixels["method"], "free_energy");
    let pixel_labels = labels_of(&by_pixels);
    // Chance is 10 %; a 784-64-128 DBN after 5 epochs on 2,000 images gets well over half.
    let pixel_accuracy = accuracy(&pixel_labels, &truth);
    assert!(pixel_accuracy > 0.6, "pixel accuracy {pixel_accuracy}");
    for p in by_pixels["predictions"].as_array().unwrap() {
        let sum: f64 = p["probabilities"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .sum();
        assert!((sum - 1.0).abs() < 1e-4);
    }

    // The same images as dark-on-light PNGs three times larger go through the MNIST
    // preprocessing and come out close to the originals: nearly the same accuracy.
    let mut png_labels = Vec::new();
    for i in 0..n {
        let (status, r) = classify_bytes(&app, &model, test_png(i, 3), "image/png").await;
        assert_eq!(status, 200, "{r}");
        png_labels.push(labels_of(&r)[0]);
    }
    let png_accuracy = accuracy(&png_labels, &truth);
    assert!(
        png_accuracy > pixel_accuracy - 0.1,
        "png {png_accuracy} vs pixels {pixel_accuracy}"
    );

    // At 28x28 a picture is taken as already normalised: only the polarity is undone, so
    // the labels are those of the pixels.
    for i in 0..20 {
        let (_, r) = classify_bytes(&app, &model, test_png(i, 1), "image/png").await;
        assert_eq!(labels_of(&r)[0], pixel_labels[i], "28x28 png {i}");
    }

    // Several images in one multipart body, answered in order.
    let mut form = reqwest::multipart::Form::new();
    for i in 0..3 {
        form = form.part(
            format!("image{i}"),
            reqwest::multipart::Part::bytes(test_png(i, 2)),
        );
    }
    let r = app
        .client
        .post(app.url(&format!("/v1/models/{model}/classify")))
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let multi: Value = r.json().await.unwrap();
    assert_eq!(multi["predictions"].as_array().unwrap().len(), 3);

    // JPEG fixtures: RGB, dark on light, 84x84 (see tests/fixtures/make_jpeg_fixtures.py).
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut jpeg_hits = 0;
    for (i, label) in [(0, 7), (1, 2), (2, 1)] {
        let bytes = std::fs::read(dir.join(format!("test-{i}-label-{label}.jpg"))).unwrap();
        let (status, r) = classify_bytes(&app, &model, bytes, "image/jpeg").await;
        assert_eq!(status, 200, "{r}");
        jpeg_hits += usize::from(labels_of(&r)[0] == label);
        // JPEG's loss aside, the answer is the same as for the pixels.
        assert_eq!(labels_of(&r)[0], pixel_labels[i], "jpeg {i}");
    }
    assert!(jpeg_hits >= 2);

    // Gibbs classification: seeded, so repeatable.
    let mut body = test_pixels(20);
    body["method"] = json!("gibbs");
    body["gibbs_steps"] = json!(50);
    let (status, g1) = app
        .post_json(&format!("/v1/models/{model}/classify"), &body)
        .await;
    assert_eq!((status, &g1["method"]), (200, &json!("gibbs")));
    let (_, g2) = app
        .post_json(&format!("/v1/models/{model}/classify"), &body)
        .await;
    assert_eq!(g1, g2);
    let agree = accuracy(&labels_of(&g1), &pixel_labels[..20]);
    assert!(agree >= 0.7, "gibbs agrees with free energy on {agree}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_inputs_get_their_documented_errors_and_the_server_stays_healthy() {
    let app = spawn_app().await;
    let model = app.train(&small_spec(1)).await;
    let path = format!("/v1/models/{model}/classify");

    let (status, body) = classify_bytes(&app, &model, b"not an image".to_vec(), "image/png").await;
    assert_eq!((status, code(&body)), (415, "unsupported_image"));
    let mut truncated = test_png(0, 1);
    truncated.truncate(60);
    let (status, body) = classify_bytes(&app, &model, truncated, "image/png").await;
    assert_eq!((status, code(&body)), (422, "invalid_image"));
    // A PNG header declaring 100,000 x 100,000 pixels: refused before decoding.
    let (status, body) = classify_bytes(&app, &model, bomb_png(), "image/png").await;
    assert_eq!((status, code(&body)), (413, "image_too_large"));
    let (status, body) = classify_bytes(&app, &model, b"x".to_vec(), "text/plain").await;
    assert_eq!((status, code(&body)), (415, "unsupported_media_type"));
    // curl's --data-binary labels a picture a form: taken by its first bytes, and only then.
    let form = "application/x-www-form-urlencoded";
    let (status, body) = classify_bytes(&app, &model, test_png(0, 1), form).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = classify_bytes(&app, &model, b"a=1".to_vec(), form).await;
    assert_eq!((status, code(&body)), (415, "unsupported_media_type"));
    let (status, body) = app.post_json(&path, &json!({"pixels": [[0.5, 0.5]]})).await;
    assert_eq!((status, code(&body)), (422, "invalid_request"));
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("pixels[0]"));
    let (status, body) = app
        .post_json(&path, &json!({"pixels": [vec![2.0; 784]]}))
        .await;
    assert_eq!((status, code(&body)), (422, "invalid_request"));
    let (status, _) = app.post_json(&path, &json!({"pixels": []})).await;
    assert_eq!(status, 422);
    let (status, body) = app
        .post_json(&path, &json!({"pixels": vec![vec![0.0; 784]; 10_001]}))
        .await;
    assert_eq!((status, code(&body)), (422, "invalid_request"));
    let (status, body) = app
        .post_json("/v1/models/model-nope/classify", &test_pixels(1))
        .await;
    assert_eq!((status, code(&body)), (404, "not_found"));
    let mut gibbs = test_pixels(1);
    gibbs["method"] = json!("gibbs");
    gibbs["gibbs_steps"] = json!(10_000_000);
    let (status, body) = app.post_json(&path, &gibbs).await;
    assert_eq!((status, code(&body)), (422, "invalid_request"));
    let (status, _) = app
        .post_json(&format!("{path}?method=telepathy"), &test_pixels(1))
        .await;
    assert_eq!(status, 422);
    app.assert_healthy().await;
}

/// A PNG whose header says 100,000 x 100,000 pixels, with no image data.
fn bomb_png() -> Vec<u8> {
    let mut png = test_png(0, 1);
    png[16..20].copy_from_slice(&100_000u32.to_be_bytes());
    png[20..24].copy_from_slice(&100_000u32.to_be_bytes());
    let mut c = 0xffff_ffffu32;
    for &b in &png[12..29] {
        c ^= b as u32;
        for _ in 0..8 {
            c = if c & 1 != 0 {
                0xedb8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
        }
    }
    png[29..33].copy_from_slice(&(!c).to_be_bytes());
    png
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn samples_come_as_json_or_png_features_as_png_and_oip_infer_classifies() {
    let app = spawn_app().await;
    let model = app.train(&small_spec(2)).await;

    let request = json!({"label": 3, "count": 4, "gibbs_steps": 20, "seed": 9});
    let (status, s1) = app
        .post_json(&format!("/v1/models/{model}/samples"), &request)
        .await;
    assert_eq!(status, 200, "{s1}");
    let images = s1["images"].as_array().unwrap();
    assert_eq!(images.len(), 4);
    assert!(images.iter().all(|im| im.as_array().unwrap().len() == 784
        && im
            .as_array()
            .unwrap()
            .iter()
            .all(|v| (0.0..=1.0).contains(&v.as_f64().unwrap()))));
    let (_, s2) = app
        .post_json(&format!("/v1/models/{model}/samples"), &request)
        .await;
    assert_eq!(s1, s2, "the same seed gives the same samples");

    let r = app
        .client
        .post(app.url(&format!("/v1/models/{model}/samples")))
        .header("accept", "image/png")
        .json(&request)
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["content-type"], "image/png");
    let (w, h) = png_size(&r.bytes().await.unwrap());
    // 4 tiles of 28x28 in one row with 1-pixel borders.
    assert_eq!((w, h), (4 * 29 + 1, 29 + 1));

    let r = app
        .get(&format!(
            "/v1/models/{model}/samples.png?label=1&count=20&steps=10&seed=1"
        ))
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        png_size(&r.bytes().await.unwrap()),
        (10 * 29 + 1, 2 * 29 + 1)
    );
    let r = app
        .get(&format!("/v1/models/{model}/features.png?count=16"))
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        png_size(&r.bytes().await.unwrap()),
        (4 * 29 + 1, 4 * 29 + 1)
    );
    // Without a count, a first layer of 64 units shows all 64 (the default is 100).
    let r = app.get(&format!("/v1/models/{model}/features.png")).await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        png_size(&r.bytes().await.unwrap()),
        (8 * 29 + 1, 8 * 29 + 1)
    );

    let (status, body) = app
        .post_json(
            &format!("/v1/models/{model}/samples"),
            &json!({"label": 10}),
        )
        .await;
    assert_eq!((status, code(&body)), (422, "invalid_request"));
    let (status, _) = app
        .post_json(
            &format!("/v1/models/{model}/samples"),
            &json!({"count": 100000}),
        )
        .await;
    assert_eq!(status, 422);

    // A chain's frames: evenly spaced steps ending at the last, and its last frame is the
    // sample the same request gives (same seed, same draws).
    let chain = json!({"label": 3, "count": 2, "gibbs_steps": 20, "frames": 5, "seed": 9});
    let (status, c) = app
        .post_json(&format!("/v1/models/{model}/chain"), &chain)
        .await;
    assert_eq!(status, 200, "{c}");
    let frames = c["frames"].as_array().unwrap();
    let steps: Vec<u64> = frames.iter().map(|f| f["step"].as_u64().unwrap()).collect();
    assert_eq!(steps, [4, 8, 12, 16, 20]);
    assert!(frames
        .iter()
        .all(|f| f["images"].as_array().unwrap().len() == 2));
    let (_, same) = app
        .post_json(
            &format!("/v1/models/{model}/samples"),
            &json!({"label": 3, "count": 2, "gibbs_steps": 20, "seed": 9}),
        )
        .await;
    assert_eq!(frames[4]["images"], same["images"]);
    for bad in [
        json!({"frames": 0}),
        json!({"frames": 201}),
        json!({"label": 10}),
    ] {
        let (status, body) = app
            .post_json(&format!("/v1/models/{model}/chain"), &bad)
            .await;
        assert_eq!((status, code(&body)), (422, "invalid_request"), "{bad}");
    }

    // OIP v2: metadata, readiness and infer agree with the native classify.
    let (status, meta) = app.get_json(&format!("/v2/models/{model}")).await;
    assert_eq!(
        (status, &meta["inputs"][0]["shape"]),
        (200, &json!([-1, 784]))
    );
    let (status, ready) = app.get_json(&format!("/v2/models/{model}/ready")).await;
    assert_eq!((status, &ready["ready"]), (200, &json!(true)));
    let pixels = test_pixels(3);
    let flat: Vec<f64> = pixels["pixels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| r.as_array().unwrap().iter().map(|v| v.as_f64().unwrap()))
        .collect();
    let infer = json!({"id": "r1", "inputs": [{"name": "input", "shape": [3, 784], "datatype": "FP32", "data": flat}]});
    let (status, out) = app
        .post_json(&format!("/v2/models/{model}/infer"), &infer)
        .await;
    assert_eq!(status, 200, "{out}");
    assert_eq!(out["id"], "r1");
    let (_, native) = app
        .post_json(&format!("/v1/models/{model}/classify"), &pixels)
        .await;
    let labels: Vec<u64> = out["outputs"][1]["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    assert_eq!(labels, labels_of(&native));
    let mut bad = infer.clone();
    bad["inputs"][0]["shape"] = json!([3, 100]);
    let (status, body) = app
        .post_json(&format!("/v2/models/{model}/infer"), &bad)
        .await;
    assert_eq!(status, 422);
    // Errors of the /v2 routes come in the protocol's own shape, whoever raised them.
    assert!(
        body["error"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    let r = app.get("/v2/models/no-such-model").await;
    assert_eq!(r.status(), 404);
    assert_eq!(r.headers()["x-error-code"], "not_found");
    let body: Value = r.json().await.unwrap();
    assert!(
        body["error"].as_str().unwrap().contains("no-such-model"),
        "{body}"
    );
    let r = app
        .client
        .post(app.url(&format!("/v2/models/{model}/infer")))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.unwrap();
    assert!(body["error"].is_string(), "{body}");
    // The /v1 routes keep the house shape.
    let (status, body) = app.get_json("/v1/models/no-such-model").await;
    assert_eq!((status, code(&body)), (404, "not_found"));
    let (status, live) = app.get_json("/v2/health/live").await;
    assert_eq!((status, &live["live"]), (200, &json!(true)));
}

fn png_size(bytes: &[u8]) -> (u32, u32) {
    let decoder = png::Decoder::new(std::io::Cursor::new(bytes));
    let reader = decoder.read_info().expect("a PNG");
    (reader.info().width, reader.info().height)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fine_tuned_model_classifies_discriminatively() {
    let app = spawn_app().await;
    let mut spec = small_spec(2);
    spec["finetune"] = json!({"method": "backprop", "epochs": 4, "top_only_epochs": 1});
    let tuned = app.train(&spec).await;
    let greedy = app.train(&small_spec(1)).await;

    let (_, model) = app.get_json(&format!("/v1/models/{tuned}")).await;
    assert_eq!(
        model["methods"],
        json!(["free_energy", "gibbs", "discriminative"])
    );
    let metrics = &model["metrics"];
    let tuned_error = metrics["test_error_discriminative"].as_f64().unwrap();
    assert!(
        tuned_error < metrics["test_error_free_energy"].as_f64().unwrap(),
        "{model}"
    );
    assert_eq!(metrics["test_error"].as_f64().unwrap(), tuned_error);
    // The server measured that error on the fixture's 500 test images: classifying them over
    // HTTP gives the same errors, one for one.
    let mut body = test_pixels(500);
    body["method"] = json!("discriminative");
    let (status, r) = app
        .post_json(&format!("/v1/models/{tuned}/classify"), &body)
        .await;
    assert_eq!((status, &r["method"]), (200, &json!("discriminative")));
    let acc = accuracy(&labels_of(&r), &test_labels(500));
    assert!(
        (acc - (1.0 - tuned_error)).abs() < 1e-9,
        "accuracy {acc}, test error {tuned_error}"
    );
    let (status, r) = app
        .post_json(&format!("/v1/models/{greedy}/classify"), &body)
        .await;
    assert_eq!((status, code(&r)), (422, "invalid_request"));
    // Without a method, each model answers with its best classifier.
    for (model, method) in [(&tuned, "discriminative"), (&greedy, "free_energy")] {
        let (status, r) = app
            .post_json(&format!("/v1/models/{model}/classify"), &test_pixels(2))
            .await;
        assert_eq!((status, &r["method"]), (200, &json!(method)), "{r}");
    }
}

/// The value of an unlabelled series (`name value`) in the metrics text.
fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("{name} in {text}"))
}

async fn metrics_text(app: &TestApp) -> String {
    app.get("/metrics").await.text().await.unwrap()
}

/// Holds the server's only inference slot with a long sampling call (seconds: 1,000 chains of
/// 10,000 steps; the server must allow 1,000 samples).
fn occupy_the_slot(app: &TestApp, model: &str) -> tokio::task::JoinHandle<u16> {
    let (client, url) = (
        app.client.clone(),
        app.url(&format!("/v1/models/{model}/samples")),
    );
    tokio::spawn(async move {
        let body = json!({"count": 1000, "gibbs_steps": 10000});
        client
            .post(url)
            .json(&body)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    })
}

/// Waits until a call computes (the long call has its slot).
async fn wait_for_a_computation(app: &TestApp) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while metric(&metrics_text(app).await, "dbn_inference_in_flight") < 1.0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the long call never started"
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}

async fn wait_for_queue_depth(app: &TestApp, depth: f64) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let seen = metric(&metrics_text(app).await, "dbn_inference_queue_depth");
        if seen >= depth {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "calls never queued: {seen}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_calls_wait_their_turn_are_merged_and_answered_as_if_alone() {
    // Arrange: one computation slot, the default queue (hundreds).
    let app = crate::app::spawn_app_with(|c| {
        c.inference_concurrency = 1;
        c.max_samples = 1000;
    })
    .await;
    let model = app.train(&small_spec(3)).await;
    let path = format!("/v1/models/{model}/classify");
    let rows = test_pixels(48)["pixels"].as_array().unwrap().clone();
    // The oracle: each image classified alone, before any concurrency (PNG calls are
    // checked against the same PNG alone: an 8-bit picture is not exactly its pixels).
    let is_png = |i: usize| i % 4 == 3;
    let mut alone = Vec::new();
    for (i, row) in rows.iter().enumerate() {
        let (status, body) = if is_png(i) {
            classify_bytes(&app, &model, test_png(i, 1), "image/png").await
        } else {
            app.post_json(&path, &json!({ "pixels": [row] })).await
        };
        assert_eq!(status, 200, "{body}");
        alone.push(body["predictions"][0]["probabilities"].clone());
    }
    let before = metric(&metrics_text(&app).await, "dbn_inference_batch_rows_count");

    // Act: 48 one-image calls (JSON and PNG) while a long call holds the slot.
    let long = occupy_the_slot(&app, &model);
    wait_for_a_computation(&app).await;
    let calls: Vec<_> = rows
        .iter()
        .enumerate()
        .map(|(i, row)| {
            let (client, url) = (app.client.clone(), app.url(&path));
            let row = row.clone();
            tokio::spawn(async move {
                let request = client.post(url);
                let request = if is_png(i) {
                    request
                        .header("content-type", "image/png")
                        .body(test_png(i, 1))
                } else {
                    request.json(&json!({ "pixels": [row] }))
                };
                let r = request.send().await.unwrap();
                (r.status().as_u16(), r.json::<Value>().await.unwrap())
            })
        })
        .collect();
    wait_for_queue_depth(&app, 48.0).await;
    assert_eq!(long.await.unwrap(), 200);

    // Assert: no call refused; each got the answer it got alone; the batches were few (PNG
    // calls decode one at a time under the slot, so they may join later batches).
    for (i, call) in calls.into_iter().enumerate() {
        let (status, body) = call.await.unwrap();
        assert_eq!(status, 200, "call {i}: {body}");
        let got = &body["predictions"][0]["probabilities"];
        let want = &alone[i];
        for (g, w) in got.as_array().unwrap().iter().zip(want.as_array().unwrap()) {
            let (g, w) = (g.as_f64().unwrap(), w.as_f64().unwrap());
            assert!((g - w).abs() < 1e-5, "call {i}: {g} vs {w}");
        }
    }
    let text = metrics_text(&app).await;
    let batches = metric(&text, "dbn_inference_batch_rows_count") - before;
    assert!(batches <= 16.0, "{batches} batches for 48 calls");
    assert_eq!(metric(&text, "dbn_inference_queue_depth"), 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_calls_beyond_the_inference_queue_are_refused() {
    let app = crate::app::spawn_app_with(|c| {
        c.inference_concurrency = 1;
        c.inference_queue = 2;
        c.max_samples = 1000;
    })
    .await;
    let model = app.train(&small_spec(1)).await;
    let path = format!("/v1/models/{model}/classify");
    let long = occupy_the_slot(&app, &model);
    wait_for_a_computation(&app).await;
    let waiting: Vec<_> = (0..2)
        .map(|_| {
            let (client, url) = (app.client.clone(), app.url(&path));
            tokio::spawn(async move {
                let r = client.post(url).json(&test_pixels(1)).send().await.unwrap();
                r.status().as_u16()
            })
        })
        .collect();
    wait_for_queue_depth(&app, 2.0).await;
    let r = app
        .client
        .post(app.url(&path))
        .json(&test_pixels(1))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    // The refusal says when to come back.
    let retry = r
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_string());
    let body: Value = r.json().await.unwrap();
    assert_eq!((status, code(&body)), (429, "overloaded"), "{body}");
    assert_eq!(retry.as_deref(), Some("1"));
    assert_eq!(long.await.unwrap(), 200);
    for call in waiting {
        assert_eq!(call.await.unwrap(), 200);
    }
    app.assert_healthy().await;
}

/// Sampling that would run for minutes: 10,000 chains of 100,000 Gibbs steps.
fn endless_samples(model: &str) -> String {
    format!("/v1/models/{model}/samples.png?count=10000&gibbs_steps=100000")
}

fn patient_config(c: &mut dbn_serve::config::ServeConfig) {
    c.inference_concurrency = 1;
    c.inference_queue = 4;
    c.request_timeout_secs = 2;
    c.max_samples = 10_000;
    c.max_gibbs_steps = 100_000;
    // Calls that would run for minutes are the point here: no work budget refuses them.
    c.max_call_work = 1e30;
    c.max_inflight_work = 1e30;
}

/// A call that holds the only inference slot: its computation must stop for this one to run
/// within its deadline.
async fn quick_sample(app: &TestApp, model: &str) -> u16 {
    app.get(&format!(
        "/v1/models/{model}/samples.png?count=1&gibbs_steps=1"
    ))
    .await
    .status()
    .as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn work_past_its_deadline_or_left_by_its_client_stops_and_frees_its_slot() {
    let app = crate::app::spawn_app_with(patient_config).await;
    let model = app.train(&small_spec(1)).await;
    // Past the deadline: 503 at 2 s, and the computation ends with it.
    let started = std::time::Instant::now();
    let r = app.get(&endless_samples(&model)).await;
    assert_eq!(r.status(), 503);
    let body: Value = r.json().await.unwrap();
    assert_eq!(code(&body), "timeout", "{body}");
    assert!(started.elapsed() < std::time::Duration::from_secs(4));
    assert_eq!(quick_sample(&app, &model).await, 200);
    // A client that gives up after half a second.
    let impatient = reqwest::Client::builder()
        .timeout(std::time::Duration::from_millis(500))
        .build()
        .unwrap();
    let gone = impatient
        .get(app.url(&endless_samples(&model)))
        .send()
        .await;
    assert!(gone.is_err());
    assert_eq!(quick_sample(&app, &model).await, 200);
    // Gibbs classification is stopped the same way.
    let mut body = test_pixels(500);
    body["method"] = json!("gibbs");
    body["gibbs_steps"] = json!(100_000);
    let (status, r) = app
        .post_json(&format!("/v1/models/{model}/classify"), &body)
        .await;
    assert_eq!((status, code(&r)), (503, "timeout"), "{r}");
    assert_eq!(quick_sample(&app, &model).await, 200);
    // Decoding too: 100 small PNGs of 4096 × 4096 pixels each (about a tenth of a second to
    // decode apiece) are abandoned at the deadline, between one image and the next.
    let mut form = reqwest::multipart::Form::new();
    let bomb = blank_png(4096, png::BitDepth::One);
    for i in 0..100 {
        form = form.part(
            format!("image{i}"),
            reqwest::multipart::Part::bytes(bomb.clone())
                .file_name("b.png")
                .mime_str("image/png")
                .unwrap(),
        );
    }
    let r = app
        .client
        .post(app.url(&format!("/v1/models/{model}/classify")))
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(quick_sample(&app, &model).await, 200);
    app.assert_healthy().await;
}

/// A white square PNG of `side` × `side` grey pixels of `depth`.
fn blank_png(side: u32, depth: png::BitDepth) -> Vec<u8> {
    let mut out = Vec::new();
    let mut enc = png::Encoder::new(&mut out, side, side);
    enc.set_color(png::ColorType::Grayscale);
    enc.set_depth(depth);
    let bits = match depth {
        png::BitDepth::One => 1,
        _ => 8,
    };
    let row = (side as usize * bits).div_ceil(8);
    let mut w = enc.write_header().unwrap();
    w.write_image_data(&vec![0xff; row * side as usize])
        .unwrap();
    w.finish().unwrap();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_the_server_stops_its_computations_within_the_grace_period() {
    let mut app = crate::app::spawn_app_with(|c| {
        patient_config(c);
        c.request_timeout_secs = 600;
    })
    .await;
    let model = app.train(&small_spec(1)).await;
    let (client, url) = (app.client.clone(), app.url(&endless_samples(&model)));
    let call = tokio::spawn(async move { client.get(url).send().await });
    wait_for_a_computation(&app).await;
    let started = std::time::Instant::now();
    app.server.take().unwrap().stop().await;
    // The grace is 10 s; a computation left running would hold the connection that long.
    let took = started.elapsed();
    assert!(
        took < std::time::Duration::from_secs(5),
        "stop took {took:?}"
    );
    let answer = call.await.unwrap().unwrap();
    assert_eq!(answer.status(), 503);
}

/// Calls merged into one batch fail one by one: a broken picture or a wrong pixel count among
/// concurrent calls gets its own 422, and every other call its own answer, the same as alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_image_among_merged_calls_fails_only_its_own_call() {
    let app = crate::app::spawn_app_with(|c| {
        c.inference_concurrency = 1;
        c.batch_max_wait_us = 200_000;
        c.max_samples = 1000;
    })
    .await;
    let model = app.train(&small_spec(2)).await;
    let path = format!("/v1/models/{model}/classify");
    let rows = test_pixels(8)["pixels"].as_array().unwrap().clone();
    let mut alone = Vec::new();
    for row in &rows {
        let (status, body) = app.post_json(&path, &json!({ "pixels": [row] })).await;
        assert_eq!(status, 200, "{body}");
        alone.push(body["predictions"][0]["probabilities"].clone());
    }
    // While a long call holds the only slot, good and bad calls queue up and merge.
    let long = occupy_the_slot(&app, &model);
    wait_for_a_computation(&app).await;
    let mut calls = Vec::new();
    for (i, row) in rows.iter().enumerate() {
        let (client, url) = (app.client.clone(), app.url(&path));
        let row = row.clone();
        calls.push(tokio::spawn(async move {
            let r = match i {
                // A PNG cut short, and a row of the wrong width.
                3 => client
                    .post(url)
                    .header("content-type", "image/png")
                    .body(test_png(3, 1)[..60].to_vec()),
                5 => client
                    .post(url)
                    .json(&json!({"pixels": [vec![0.5f32; 700]]})),
                _ => client.post(url).json(&json!({ "pixels": [row] })),
            };
            let r = r.send().await.unwrap();
            let status = r.status().as_u16();
            (status, r.json::<Value>().await.unwrap())
        }));
    }
    for (i, call) in calls.into_iter().enumerate() {
        let (status, body) = call.await.unwrap();
        match i {
            3 | 5 => assert_eq!(status, 422, "call {i}: {body}"),
            _ => {
                assert_eq!(status, 200, "call {i}: {body}");
                // The same answer as alone, up to summation order: a merged batch may take
                // another GEMM blocking than a batch of one (differences near 1e-6 seen).
                let merged = body["predictions"][0]["probabilities"].as_array().unwrap();
                let single = alone[i].as_array().unwrap();
                assert_eq!(merged.len(), single.len(), "call {i}");
                for (m, s) in merged.iter().zip(single) {
                    let (m, s) = (m.as_f64().unwrap(), s.as_f64().unwrap());
                    assert!(
                        (m - s).abs() < 1e-4,
                        "call {i}: {merged:?} against {single:?}"
                    );
                }
            }
        }
    }
    assert_eq!(long.await.unwrap(), 200);
    app.assert_healthy().await;
}
