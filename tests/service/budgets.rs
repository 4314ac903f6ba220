//! Work budgets: every inference call is priced before any work (Gibbs steps × chains × the
//! top RBM, decoded pixels from the images' headers), a call over the per-call budget gets
//! 422 `over_budget` naming the setting, and the work of all admitted calls is bounded (429
//! beyond it, the work returned when a call ends or is abandoned).

use std::time::{Duration, Instant};

use serde_json::json;

use crate::app::{code, small_spec, spawn_app_with, TestApp};
use crate::classify::classify_bytes;

/// A PNG that is only a signature and a header declaring `side` × `side` pixels: priced by its
/// header, it would fail as corrupt if anyone tried to decode it.
fn declared_png(side: u32) -> Vec<u8> {
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    out.extend_from_slice(&13u32.to_be_bytes());
    out.extend_from_slice(b"IHDR");
    out.extend_from_slice(&side.to_be_bytes());
    out.extend_from_slice(&side.to_be_bytes());
    out.extend_from_slice(&[1, 0, 0, 0, 0]);
    out.extend_from_slice(&[0, 0, 0, 0]);
    out
}

async fn admitted_work(app: &TestApp) -> u64 {
    let text = app.get("/metrics").await.text().await.unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("dbn_inference_admitted_work "))
        .expect("the admitted-work gauge")
        .trim()
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_over_the_per_call_budget_are_refused_before_any_work() {
    let app = spawn_app_with(|c| c.max_call_work = 1e8).await;
    let model = app.train(&small_spec(1)).await;
    // The small model's top RBM is (64 + 10) × 128: 18,944 multiply-adds per chain and step.
    let (status, body) = app
        .post_json(
            &format!("/v1/models/{model}/samples"),
            &json!({"count": 10, "gibbs_steps": 1000}),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(code(&body), "over_budget", "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("DBN_MAX_CALL_WORK"), "{message}");
    assert!(message.contains("1.9e8"), "the call's own price: {message}");
    let (status, body) = app
        .post_json(
            &format!("/v1/models/{model}/samples"),
            &json!({"count": 10, "gibbs_steps": 100}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    // The PNG route is priced the same way.
    let r = app
        .get(&format!(
            "/v1/models/{model}/samples.png?count=10&gibbs_steps=1000"
        ))
        .await;
    assert_eq!(r.status(), 422);
    // Gibbs classification: images × steps.
    let pixels = vec![vec![0.0f32; 784]; 10];
    let (status, body) = app
        .post_json(
            &format!("/v1/models/{model}/classify"),
            &json!({"pixels": pixels, "method": "gibbs", "gibbs_steps": 1000}),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(code(&body), "over_budget", "{body}");

    // Images are priced by the pixels their headers declare, summed over a multipart body:
    // one 2048 × 2048 picture is 8.4e8 multiply-adds of decoding, over this budget, and it is
    // refused as over budget, not as the corrupt file it is.
    let (status, body) = classify_bytes(&app, &model, declared_png(2048), "image/png").await;
    assert_eq!(status, 422);
    assert_eq!(code(&body), "over_budget", "{body}");
    let mut form = reqwest::multipart::Form::new();
    for i in 0..8 {
        // 8 × 400 × 400 pixels: each alone is within the budget, together they are not.
        form = form.part(
            format!("image{i}"),
            reqwest::multipart::Part::bytes(declared_png(400))
                .file_name("d.png")
                .mime_str("image/png")
                .unwrap(),
        );
    }
    let r = app
        .client
        .post(app.url(&format!("/v1/models/{model}/encode")))
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(code(&body), "over_budget", "{body}");
    // One such picture alone is decoded, and found corrupt.
    let (status, body) = classify_bytes(&app, &model, declared_png(400), "image/png").await;
    assert_eq!(status, 422);
    assert_eq!(code(&body), "invalid_image", "{body}");
    assert_eq!(admitted_work(&app).await, 0);
    app.assert_healthy().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_work_of_all_calls_in_flight_is_bounded_and_returned_when_a_call_is_abandoned() {
    let app = spawn_app_with(|c| {
        c.max_call_work = 3e11;
        c.max_inflight_work = 3e11;
        c.max_samples = 1000;
    })
    .await;
    let model = app.train(&small_spec(1)).await;
    // Seconds of sampling (1.9e11 multiply-adds), abandoned by its client below.
    let long = {
        let (client, url) = (
            app.client.clone(),
            app.url(&format!("/v1/models/{model}/samples")),
        );
        tokio::spawn(async move {
            client
                .post(url)
                .json(&json!({"count": 1000, "gibbs_steps": 10000}))
                .send()
                .await
        })
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while admitted_work(&app).await == 0 {
        assert!(
            Instant::now() < deadline,
            "the long call was never admitted"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A second call that fits the per-call budget but not beside the first: 429, with when
    // to retry.
    let r = app
        .client
        .post(app.url(&format!("/v1/models/{model}/samples")))
        .json(&json!({"count": 1000, "gibbs_steps": 6000}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    assert!(r.headers().contains_key("retry-after"));
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(code(&body), "overloaded", "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("DBN_MAX_INFLIGHT_WORK"),
        "{body}"
    );
    // The client leaves: its work is returned and the next call is admitted.
    long.abort();
    let deadline = Instant::now() + Duration::from_secs(10);
    while admitted_work(&app).await != 0 {
        assert!(
            Instant::now() < deadline,
            "the abandoned call's work was never returned"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (status, body) = app
        .post_json(
            &format!("/v1/models/{model}/samples"),
            &json!({"count": 4, "gibbs_steps": 10}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
}
