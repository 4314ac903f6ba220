//! Training jobs over HTTP: submit, progress by polling and by SSE, cancel, restart.

use serde_json::{json, Value};

use crate::app::{code, is_terminal, small_spec, spawn_app, spawn_app_with};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_runs_to_a_model_with_progress_and_history() {
    let app = spawn_app().await;

    let r = app
        .client
        .post(app.url("/v1/jobs"))
        .json(&small_spec(3))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let location = r.headers()["location"].to_str().unwrap().to_string();
    let job: Value = r.json().await.unwrap();
    assert_eq!(
        location,
        format!("/v1/jobs/{}", job["id"].as_str().unwrap())
    );
    assert_eq!(job["status"], "queued");

    let done = app.wait_job(job["id"].as_str().unwrap(), is_terminal).await;

    assert_eq!(done["status"], "succeeded", "{done}");
    // 2 layers x 3 epochs, each with a reconstruction error.
    let history = done["history"].as_array().unwrap();
    assert_eq!(history.len(), 6);
    assert!(history
        .iter()
        .all(|m| m["recon_error_train"].as_f64().unwrap() > 0.0));
    assert_eq!(done["progress"]["fraction"], 1.0);
    assert!(done["started_at"].is_string() && done["finished_at"].is_string());
    let model_id = done["model_id"].as_str().unwrap();
    let (status, model) = app.get_json(&format!("/v1/models/{model_id}")).await;
    assert_eq!(status, 200);
    assert_eq!(model["sizes"], json!([784, 64, 128]));
    // The fixture's 500 test images were classified after training.
    let test_error = model["metrics"]["test_error"].as_f64().unwrap();
    assert!(test_error < 0.6, "test error {test_error}");

    let (_, list) = app.get_json("/v1/jobs?status=succeeded").await;
    assert_eq!(list["jobs"][0]["id"], done["id"]);
    let (_, none) = app.get_json("/v1/jobs?status=failed").await;
    assert_eq!(none["jobs"], json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_event_stream_reports_progress_epochs_and_the_end() {
    // The job waits behind another, so the stream is open before it starts.
    let app = spawn_app().await;
    let blocker = app.submit(&long_spec()).await;
    app.wait_status(&blocker, "running").await;
    let id = app.submit(&small_spec(4)).await;

    let r = app.get(&format!("/v1/jobs/{id}/events")).await;
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    app.post_json(&format!("/v1/jobs/{blocker}/cancel"), &json!({}))
        .await;
    // The stream ends by itself after the job ends.
    let events = crate::app::read_events(r).await;
    assert_eq!(
        (events[0].0.as_str(), &events[0].1["status"]),
        ("status", &json!("queued"))
    );
    assert!(events
        .iter()
        .any(|e| e.0 == "status" && e.1["status"] == "running"));
    assert_eq!(
        events.iter().filter(|e| e.0 == "epoch").count(),
        8,
        "{events:?}"
    );
    assert!(events.iter().any(|e| e.0 == "progress"));
    let last = events.last().unwrap();
    assert_eq!(
        (last.0.as_str(), &last.1["status"]),
        ("status", &json!("succeeded"))
    );
}

/// Long enough to cancel while it runs: 784-500 for 500 epochs on 2,000 images.
fn long_spec() -> Value {
    json!({"architecture": {"hidden": [500], "labels_in_top": false}, "pretrain": {"epochs": 500}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_and_running_jobs_can_be_cancelled_and_the_queue_has_a_bound() {
    let app = spawn_app_with(|c| c.queue_capacity = 1).await;
    let running = app.submit(&long_spec()).await;
    app.wait_status(&running, "running").await;
    let queued = app.submit(&small_spec(1)).await;
    // One job queued fills the queue.
    let (status, body) = app.post_json("/v1/jobs", &small_spec(1)).await;
    assert_eq!((status, code(&body)), (429, "queue_full"));

    let (status, job) = app
        .post_json(&format!("/v1/jobs/{queued}/cancel"), &json!({}))
        .await;
    assert_eq!((status, &job["status"]), (200, &json!("cancelled")));
    let (status, job) = app
        .post_json(&format!("/v1/jobs/{running}/cancel"), &json!({}))
        .await;
    assert_eq!(status, 200);
    assert!(
        job["status"] == "cancelled" || job["cancel_requested"] == true,
        "{job}"
    );
    let job = app.wait_job(&running, is_terminal).await;
    assert_eq!(job["status"], "cancelled");
    assert!(job["model_id"].is_null());

    // Idempotent; a succeeded job cannot be cancelled; unknown jobs are 404.
    let (status, _) = app
        .post_json(&format!("/v1/jobs/{running}/cancel"), &json!({}))
        .await;
    assert_eq!(status, 200);
    let done = app.submit(&small_spec(1)).await;
    app.wait_job(&done, is_terminal).await;
    let (status, body) = app
        .post_json(&format!("/v1/jobs/{done}/cancel"), &json!({}))
        .await;
    assert_eq!((status, code(&body)), (409, "conflict"));
    let (status, _) = app.post_json("/v1/jobs/job-nope/cancel", &json!({})).await;
    assert_eq!(status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_interrupted_by_a_restart_resumes_and_matches_an_uninterrupted_run() {
    // 784-300-300 for 20 epochs per layer: long enough to stop in the middle.
    let spec =
        json!({"architecture": {"hidden": [300, 300]}, "pretrain": {"epochs": 20}, "seed": 5});
    let app = spawn_app().await;
    let id = app.submit(&spec).await;
    app.wait_job(&id, |j| {
        j["history"].as_array().is_some_and(|h| h.len() >= 3) || is_terminal(j)
    })
    .await;

    let app = app.restart().await;

    let job = app.wait_job(&id, is_terminal).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    assert_eq!(
        job["attempts"], 2,
        "the job should have been resumed: {job}"
    );
    assert_eq!(job["history"].as_array().unwrap().len(), 40);
    // The same spec run without interruption gives the same model, bit for bit: compare
    // the probabilities both give to 50 test images.
    let reference = app.train(&spec).await;
    let resumed = job["model_id"].as_str().unwrap();
    let pixels = crate::classify::test_pixels(50);
    let (_, a) = app
        .post_json(&format!("/v1/models/{resumed}/classify"), &pixels)
        .await;
    let (_, b) = app
        .post_json(&format!("/v1/models/{reference}/classify"), &pixels)
        .await;
    assert_eq!(a["predictions"], b["predictions"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_interrupted_in_finetuning_resumes_from_its_finetuning_checkpoint() {
    let spec = json!({
        "architecture": {"hidden": [200, 200]},
        "pretrain": {"epochs": 1},
        "seed": 6,
        "finetune": {"method": "backprop", "epochs": 150, "top_only_epochs": 1}
    });
    let finetuning = |j: &Value| -> Vec<Value> {
        j["history"]
            .as_array()
            .map(|h| {
                h.iter()
                    .filter(|m| m["phase"] == "finetune")
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    };
    let app = spawn_app().await;
    let id = app.submit(&spec).await;
    let before = app
        .wait_job(&id, |j| finetuning(j).len() >= 3 || is_terminal(j))
        .await;
    assert_eq!(before["status"], "running", "{before}");
    let app = app.restart().await;

    let job = app.wait_job(&id, is_terminal).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    assert_eq!(job["attempts"], 2, "{job}");
    let after = finetuning(&job);
    assert_eq!(after.len(), 150);
    // The epochs before the restart were not run again: their metrics, timings included,
    // came back from the checkpoint.
    let kept = finetuning(&before);
    assert_eq!(after[..kept.len()], kept[..]);
    // And the model is the uninterrupted run's, bit for bit.
    let reference = app.train(&spec).await;
    let mut pixels = crate::classify::test_pixels(50);
    pixels["method"] = json!("discriminative");
    let model = job["model_id"].as_str().unwrap();
    let (_, a) = app
        .post_json(&format!("/v1/models/{model}/classify"), &pixels)
        .await;
    let (_, b) = app
        .post_json(&format!("/v1/models/{reference}/classify"), &pixels)
        .await;
    assert!(a["predictions"].is_array(), "{a}");
    assert_eq!(a["predictions"], b["predictions"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_specs_are_refused_with_the_field_named() {
    let app = spawn_app_with(|c| {
        c.max_parameters = 1_000_000;
        // 2,000 fixture images x 5,000 units x 4 bytes is 40 MB.
        c.max_train_memory_mb = 30;
    })
    .await;
    let cases = [
        (
            json!({"architecture": {"hidden": [1_000_000_000]}}),
            "architecture.hidden",
        ),
        (
            json!({"architecture": {"hidden": [2000, 2000]}}),
            "weights exceed",
        ),
        (json!({"architecture": {"hidden": [100, 5000]}}), "memory"),
        (
            json!({"architecture": {"hidden": [10]}, "pretrain": {"epochs": 1_000_000}}),
            "epochs",
        ),
        (
            json!({"architecture": {"hidden": [10]}, "dataset": "nope"}),
            "dataset",
        ),
        (
            json!({"architecture": {"hidden": [10]}, "surprise": 1}),
            "surprise",
        ),
        (
            json!({"architecture": {"hidden": []}}),
            "architecture.hidden",
        ),
    ];
    for (spec, field) in cases {
        let (status, body) = app.post_json("/v1/jobs", &spec).await;
        assert_eq!(status, 422, "{spec}: {body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains(field), "{spec}: {message}");
    }
    let r = app
        .client
        .post(app.url("/v1/jobs"))
        .body("{\"architecture\":")
        .header("content-type", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.unwrap();
    assert_eq!(code(&body), "malformed_json");
    let (_, list) = app.get_json("/v1/jobs").await;
    assert_eq!(list["jobs"], json!([]));
    app.assert_healthy().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_lists_are_paged_newest_first() {
    let app = spawn_app_with(|c| c.workers = 1).await;
    let ids: Vec<String> = {
        let mut ids = Vec::new();
        for _ in 0..5 {
            ids.push(app.submit(&small_spec(1)).await);
        }
        ids
    };
    let (_, page1) = app.get_json("/v1/jobs?limit=2").await;
    let cursor = page1["next_cursor"].as_str().unwrap().to_string();
    let (_, page2) = app
        .get_json(&format!("/v1/jobs?limit=2&cursor={cursor}"))
        .await;
    let (_, page3) = app
        .get_json(&format!(
            "/v1/jobs?limit=2&cursor={}",
            page2["next_cursor"].as_str().unwrap()
        ))
        .await;
    let seen: Vec<&str> = [&page1, &page2, &page3]
        .iter()
        .flat_map(|p| {
            p["jobs"]
                .as_array()
                .unwrap()
                .iter()
                .map(|j| j["id"].as_str().unwrap())
        })
        .collect();
    let newest_first: Vec<&str> = ids.iter().rev().map(String::as_str).collect();
    assert_eq!(seen, newest_first);
    assert!(page3["next_cursor"].is_null());
    let (status, body) = app.get_json("/v1/jobs?status=sleeping").await;
    assert_eq!((status, code(&body)), (422, "invalid_request"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_during_finetuning_stops_at_once_and_stores_nothing() {
    let spec = json!({
        "architecture": {"hidden": [200, 200]},
        "pretrain": {"epochs": 1},
        "seed": 8,
        "finetune": {"method": "up_down", "epochs": 200}
    });
    let app = spawn_app().await;
    let id = app.submit(&spec).await;
    app.wait_job(&id, |j| {
        j["progress"]["phase"] == "finetune" || is_terminal(j)
    })
    .await;
    let asked = std::time::Instant::now();
    let (status, _) = app
        .post_json(&format!("/v1/jobs/{id}/cancel"), &json!({}))
        .await;
    assert!(status == 200 || status == 202, "{status}");
    let job = app.wait_job(&id, is_terminal).await;
    assert_eq!(job["status"], "cancelled", "{job}");
    assert!(asked.elapsed() < std::time::Duration::from_secs(5));
    assert!(job["model_id"].is_null(), "{job}");
    let (_, models) = app.get_json("/v1/models").await;
    assert_eq!(models["models"].as_array().unwrap().len(), 0, "{models}");
    let checkpoints = std::fs::read_dir(app.data_dir().join("checkpoints"))
        .unwrap()
        .count();
    assert_eq!(checkpoints, 0, "a cancelled job's checkpoint was kept");
}

/// Cancels at moments spread over a job's whole life (queued, training, evaluating, writing,
/// done): whatever the moment, the job ends cancelled with nothing stored, or succeeded with
/// its model stored and usable; never failed, never left running.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_at_any_moment_leaves_job_and_model_in_agreement() {
    let app = spawn_app().await;
    let spec = json!({"architecture": {"hidden": [64]}, "pretrain": {"epochs": 2}, "seed": 2});
    let started = std::time::Instant::now();
    app.train(&spec).await;
    let life = started.elapsed();
    let mut outcomes = std::collections::BTreeMap::new();
    // Twelve moments over the measured life; on a machine loaded by other tests a job can
    // outlive that measure, so the moments go on growing until one cancel comes too late.
    for k in 0..40u32 {
        if k >= 12 && outcomes.contains_key("succeeded") {
            break;
        }
        let id = app.submit(&spec).await;
        tokio::time::sleep(life * k / 10).await;
        let (status, body) = app
            .post_json(&format!("/v1/jobs/{id}/cancel"), &json!({}))
            .await;
        assert!(status == 200 || status == 409, "{status} {body}");
        let job = app.wait_job(&id, is_terminal).await;
        let model = id.replacen("job-", "model-", 1);
        let (model_status, _) = app.get_json(&format!("/v1/models/{model}")).await;
        match job["status"].as_str().unwrap() {
            "cancelled" => {
                assert!(job["model_id"].is_null(), "{job}");
                assert_eq!(
                    model_status, 404,
                    "a cancelled job's model is stored: {job}"
                );
            }
            "succeeded" => {
                assert_eq!(job["model_id"], json!(model), "{job}");
                assert_eq!(model_status, 200, "{job}");
                let (s, _) = app
                    .post_json(
                        &format!("/v1/models/{model}/classify"),
                        &json!({"pixels": [vec![0.0; 784]]}),
                    )
                    .await;
                assert_eq!(s, 200);
            }
            other => panic!("job ended {other}: {job}"),
        }
        // The worker removes the checkpoint right after recording the end.
        let checkpoint = app.data_dir().join(format!("checkpoints/{id}.ckpt"));
        let waited = std::time::Instant::now();
        while checkpoint.exists() && waited.elapsed() < std::time::Duration::from_secs(5) {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        assert!(!checkpoint.exists(), "checkpoint kept for {job}");
        *outcomes
            .entry(job["status"].as_str().unwrap().to_string())
            .or_insert(0) += 1;
    }
    // The spread reaches both ends of the job's life.
    assert!(
        outcomes.contains_key("cancelled") && outcomes.contains_key("succeeded"),
        "{outcomes:?}"
    );
}

/// A job that asks for the log-probability measurement records it in the model card.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_can_measure_the_log_probability_of_its_data() {
    let app = spawn_app().await;
    // A first RBM with labels cannot be measured: refused up front, naming the field.
    let (status, body) = app
        .post_json(
            "/v1/jobs",
            &json!({"architecture": {"hidden": [32]}, "ais": {"runs": 10}}),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    assert!(
        body["error"]["message"].as_str().unwrap().contains("ais"),
        "{body}"
    );

    let spec = json!({
        "architecture": {"hidden": [32], "labels_in_top": false},
        "pretrain": {"epochs": 3},
        "ais": {"runs": 20, "steps": 300},
        "seed": 4
    });
    let model = app.train(&spec).await;
    let (_, card) = app.get_json(&format!("/v1/models/{model}")).await;
    let m = &card["metrics"];
    let get = |k: &str| m[k].as_f64().unwrap_or_else(|| panic!("{k} missing: {m}"));
    let (test, low, high) = (
        get("test_log_prob"),
        get("test_log_prob_low"),
        get("test_log_prob_high"),
    );
    // 784 binary pixels: below 0 nats, above the uniform distribution's −784 ln 2.
    let uniform = -784.0 * std::f64::consts::LN_2;
    assert!(uniform < test && test < 0.0, "{m}");
    assert!(low <= test && test <= high, "{m}");
    assert!(get("ais_log_z_low") <= get("ais_log_z") && get("ais_log_z") <= get("ais_log_z_high"));
    // Training images are likelier than test images, but not by much after 3 epochs.
    assert!((get("train_log_prob") - test).abs() < 20.0, "{m}");
    // The same spec gives the same measurement.
    let again = app.train(&spec).await;
    let (_, card2) = app.get_json(&format!("/v1/models/{again}")).await;
    assert_eq!(card2["metrics"]["test_log_prob"], m["test_log_prob"]);

    // Two layers without labels on top: the whole DBN's variational bound too.
    let deep = json!({
        "architecture": {"hidden": [32, 16], "labels_in_top": false},
        "pretrain": {"epochs": 2},
        "ais": {"runs": 20, "steps": 300},
        "seed": 4
    });
    let model = app.train(&deep).await;
    let (_, card) = app.get_json(&format!("/v1/models/{model}")).await;
    let bound = card["metrics"]["test_log_prob_dbn_bound"]
        .as_f64()
        .unwrap_or_else(|| panic!("{card}"));
    assert!(uniform < bound && bound < 0.0, "{card}");
    assert!(
        card["metrics"]["dbn_top_log_z"].as_f64().is_some(),
        "{card}"
    );
    // A one-layer net has none.
    assert!(m.get("test_log_prob_dbn_bound").is_none(), "{m}");
}
