//! Sequence models over HTTP: a two-layer conditional RBM of moving digits trained as a job,
//! continued from a held-out example and from given frames, as JSON and as an animated PNG.

use serde_json::{json, Value};

use crate::app::{code, small_spec, spawn_app};

fn frames(v: &Value) -> Vec<Vec<f64>> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|f| {
            f.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap())
                .collect()
        })
        .collect()
}

fn squared(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| (x - y).powi(2)).sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sequence_job_learns_moving_digits_and_continues_them() {
    let app = spawn_app().await;
    let spec = json!({
        "name": "moving",
        "architecture": {"hidden": [64, 32], "labels_in_top": false, "visible_units": "gaussian"},
        "pretrain": {"epochs": 3, "learning_rate": 0.001, "bias_learning_rate": 0.001, "batch_size": 50},
        "train_examples": 300,
        "sequence": {"order": 2, "length": 10, "moving": {"canvas": 32, "max_speed": 2}},
        "seed": 4
    });
    let model = app.train(&spec).await;
    let (status, card) = app.get_json(&format!("/v1/models/{model}")).await;
    assert_eq!(status, 200, "{card}");
    assert_eq!(card["image_shape"], json!([32, 32]), "{card}");
    let metrics = &card["metrics"];
    let (predicted, copied) = (
        metrics["test_prediction_error"].as_f64().unwrap(),
        metrics["test_prediction_error_copy_last"].as_f64().unwrap(),
    );
    assert!(predicted < copied, "{metrics}");

    // From a held-out example: four frames given (two layers of order two), the truth back.
    let url = format!("/v1/models/{model}/continue");
    let (status, r) = app
        .post_json(&url, &json!({"example": 3, "steps": 4, "mean_field": true}))
        .await;
    assert_eq!(status, 200, "{r}");
    assert_eq!(
        (r["given"].as_u64(), r["shape"].clone()),
        (Some(4), json!([32, 32]))
    );
    let (generated, truth) = (frames(&r["frames"]), frames(&r["truth"]));
    assert_eq!((generated.len(), truth.len()), (4, 4));
    // Example 3 is test sequence 3 as the model's card makes it: its start is that
    // sequence's first frames.
    let start = frames(&r["start"]);
    assert_eq!(start.len(), 4);
    let seq: dbn_serve::engine::crbm::SequenceSpec =
        serde_json::from_value(spec["sequence"].clone()).unwrap();
    let test = crate::common::fixture(dbn_serve::engine::data::MnistSplit::Test);
    let expected = seq.test_frames(&test.slice(0..5)).unwrap();
    for (t, frame) in start.iter().enumerate() {
        let row = expected.images.row(3 * 10 + t);
        assert!(
            frame
                .iter()
                .zip(row.iter())
                .all(|(a, &b)| (a - b as f64).abs() < 1e-6),
            "frame {t} of example 3 is not test sequence 3's"
        );
    }
    assert!(generated.iter().all(|f| f.len() == 1024));
    assert!(generated
        .iter()
        .flatten()
        .all(|&x| (0.0..=1.0).contains(&x)));
    // The next frame is nearer the truth than a blank canvas is.
    let blank = vec![0.0; 1024];
    assert!(squared(&generated[0], &truth[0]) < squared(&blank, &truth[0]));

    // From given frames (any four in [0, 1]; here the generated ones): seeded samples.
    let given = generated.clone();
    let (status, a) = app
        .post_json(&url, &json!({"frames": given, "steps": 3, "seed": 9}))
        .await;
    assert_eq!(status, 200, "{a}");
    assert_eq!(frames(&a["frames"]).len(), 3);
    assert!(a.get("truth").is_none());
    let (_, b) = app
        .post_json(&url, &json!({"frames": given, "steps": 3, "seed": 9}))
        .await;
    assert_eq!(a["frames"], b["frames"], "the seed decides the samples");

    // The animated preview: an APNG of the given and generated frames.
    let png = app
        .client
        .post(app.url(&url))
        .header("accept", "image/png")
        .json(&json!({"example": 0, "steps": 6}))
        .send()
        .await
        .unwrap();
    assert_eq!(png.status(), 200);
    assert_eq!(png.headers()["content-type"], "image/png");
    let bytes = png.bytes().await.unwrap();
    let reader = png::Decoder::new(std::io::Cursor::new(bytes.to_vec()))
        .read_info()
        .unwrap();
    let control = reader.info().animation_control.unwrap();
    assert_eq!(control.num_frames, 4 + 6);
    assert_eq!(reader.info().width, 32 * 4);

    // Bad requests get clear errors.
    for (body, field) in [
        (json!({"frames": vec![blank.clone(); 3]}), "frames"),
        (json!({"frames": vec![vec![0.5; 10]; 4]}), "frames[0]"),
        (json!({"frames": vec![vec![2.0; 1024]; 4]}), "frames[0]"),
        (
            json!({"example": 1, "frames": vec![blank.clone(); 4]}),
            "example",
        ),
        (json!({"example": 100_000}), "example"),
        (json!({"example": u64::MAX}), "example"),
        (json!({"example": 0, "gibbs_steps": 1_001}), "gibbs_steps"),
        (json!({"example": 0, "steps": 0}), "steps"),
        (json!({"example": 0, "gibbs_steps": 0}), "gibbs_steps"),
    ] {
        let (status, r) = app.post_json(&url, &body).await;
        assert_eq!((status, code(&r)), (422, "invalid_request"), "{body}: {r}");
        let message = r["error"]["message"].as_str().unwrap();
        assert!(message.starts_with(field), "{field}: {message}");
    }
    // Uses that would ignore the past are refused.
    let (status, r) = app
        .post_json(&format!("/v1/models/{model}/samples"), &json!({"count": 2}))
        .await;
    assert_eq!((status, code(&r)), (422, "invalid_request"), "{r}");

    // A still-image model cannot continue anything; a bad sequence spec is refused at submit.
    let still = app.train(&small_spec(1)).await;
    let (status, r) = app
        .post_json(
            &format!("/v1/models/{still}/continue"),
            &json!({"frames": vec![vec![0.0; 784]; 4]}),
        )
        .await;
    assert_eq!((status, code(&r)), (422, "invalid_request"), "{r}");
    let mut bad = spec.clone();
    bad["architecture"]["labels_in_top"] = json!(true);
    let (status, r) = app.post_json("/v1/jobs", &bad).await;
    assert_eq!(status, 422, "{r}");
    // Frames that would not fit in memory are refused at submission, not at run time.
    let mut huge = spec.clone();
    huge["train_examples"] = json!(2000);
    huge["sequence"] = json!({"order": 2, "length": 100, "moving": {"canvas": 60}});
    let (status, r) = app.post_json("/v1/jobs", &huge).await;
    assert_eq!(status, 422, "{r}");
    assert!(
        r["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("train_examples"),
        "{r}"
    );
    app.assert_healthy().await;
}
