//! Aliases and the bundled default model: a fresh server serves `default` at once, a deleted
//! default stays deleted, aliases resolve wherever a model id does and move atomically, and a
//! job can move one when it succeeds.

use serde_json::{json, Value};

use crate::app::{code, small_spec, spawn_app, spawn_app_with};
use crate::classify::test_pixels;
use crate::common::fixture;
use dbn_serve::engine::data::MnistSplit;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_server_classifies_and_dreams_with_the_default_model_at_once() {
    let app = spawn_app_with(|c| c.default_model = true).await;
    let (status, list) = app.get_json("/v1/models").await;
    assert_eq!(status, 200);
    let models = list["models"].as_array().unwrap();
    assert_eq!(models.len(), 1, "{list}");
    assert_eq!(models[0]["id"], dbn_serve::bundled::MODEL_ID);
    assert_eq!(models[0]["aliases"], json!(["default"]));
    // Its card names the spec it was trained from and its bf16 storage.
    assert_eq!(models[0]["provenance"]["storage"], "bf16", "{}", models[0]);
    assert!(
        models[0]["spec"]["classifier"].is_object(),
        "{}",
        models[0]["spec"]
    );

    // The fixture's first 50 test digits, by the discriminative classifier and by free
    // energy: at most a few wrong (the model's full test error is about 1 %).
    let n = 50;
    let labels = fixture(MnistSplit::Test).labels[..n].to_vec();
    for method in ["discriminative", "free_energy"] {
        let (status, body) = app
            .post_json(
                &format!("/v1/models/default/classify?method={method}"),
                &test_pixels(n),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["model"], dbn_serve::bundled::MODEL_ID);
        let wrong = body["predictions"]
            .as_array()
            .unwrap()
            .iter()
            .zip(&labels)
            .filter(|(p, &l)| p["label"].as_u64() != Some(l as u64))
            .count();
        assert!(wrong <= 3, "{method}: {wrong} of {n} wrong");
    }
    // A JPEG body, as `curl --data-binary @digit.jpg` sends it; the same 7 saved in CMYK and
    // YCCK reads the same.
    for name in [
        "test-0-label-7.jpg",
        "test-0-label-7-cmyk.jpg",
        "test-0-label-7-ycck.jpg",
    ] {
        let jpeg = std::fs::read(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/fixtures")
                .join(name),
        )
        .unwrap();
        let r = app
            .client
            .post(app.url("/v1/models/default/classify"))
            .header("content-type", "image/jpeg")
            .body(jpeg)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["predictions"][0]["label"], 7, "{name}: {body}");
    }
    // And it dreams.
    let r = app
        .get("/v1/models/default/samples.png?label=3&count=4&gibbs_steps=200")
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "image/png");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_default_model_stays_deleted_across_restarts_and_the_setting_turns_it_off() {
    let app = spawn_app_with(|c| c.default_model = true).await;
    let r = app
        .client
        .delete(app.url("/v1/models/default"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let (status, body) = app.get_json("/v1/aliases/default").await;
    assert_eq!((status, code(&body)), (404, "not_found"), "{body}");
    let app = app.restart().await;
    let (_, list) = app.get_json("/v1/models").await;
    assert_eq!(list["models"], json!([]), "{list}");

    let off = spawn_app().await;
    let (_, list) = off.get_json("/v1/models").await;
    assert_eq!(list["models"], json!([]), "{list}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aliases_resolve_like_ids_move_atomically_and_survive_a_restart() {
    let app = spawn_app().await;
    let first = app.train(&small_spec(1)).await;
    let mut second_spec = small_spec(1);
    second_spec["seed"] = json!(8);
    let second = app.train(&second_spec).await;
    let put = |name: &str, id: &str| {
        app.client
            .put(app.url(&format!("/v1/aliases/{name}")))
            .json(&json!({ "model_id": id }))
            .send()
    };
    let r = put("prod", &first).await.unwrap();
    assert_eq!(r.status(), 200);
    // The alias answers as the model does, in the model's own name.
    let pixels = test_pixels(10);
    let (_, by_id) = app
        .post_json(&format!("/v1/models/{first}/classify"), &pixels)
        .await;
    let (_, by_alias) = app.post_json("/v1/models/prod/classify", &pixels).await;
    assert_eq!(by_id, by_alias);
    let (_, shown) = app.get_json("/v1/models/prod").await;
    assert_eq!(
        (&shown["id"], &shown["aliases"]),
        (&json!(first), &json!(["prod"]))
    );

    // Readers during a run of moves always find one of the two models.
    let moves = async {
        for i in 0..20 {
            let target = if i % 2 == 0 { &second } else { &first };
            assert_eq!(put("prod", target).await.unwrap().status(), 200);
        }
    };
    let reads = async {
        for _ in 0..60 {
            let (status, body) = app.get_json("/v1/models/prod").await;
            assert_eq!(status, 200, "{body}");
            let id = body["id"].as_str().unwrap();
            assert!(id == first || id == second, "{id}");
        }
    };
    tokio::join!(moves, reads);
    let (_, alias) = app.get_json("/v1/aliases/prod").await;
    assert_eq!(alias, json!({"name": "prod", "model_id": first}));

    // Refused: a name that is a model's id, an unknown model, a bad name.
    let r = put(&second, &first).await.unwrap();
    assert_eq!(r.status(), 409);
    let r = put("other", "model-none").await.unwrap();
    assert_eq!(r.status(), 404);
    let r = put("bad%20name", &first).await.unwrap();
    assert_eq!(r.status(), 422);
    let body: Value = r.json().await.unwrap();
    assert_eq!(code(&body), "invalid_request", "{body}");

    let app = app.restart().await;
    let (_, alias) = app.get_json("/v1/aliases/prod").await;
    assert_eq!(alias["model_id"], json!(first));
    // Deleting the alias leaves the model.
    let r = app
        .client
        .delete(app.url("/v1/aliases/prod"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let (status, _) = app.get_json("/v1/aliases/prod").await;
    assert_eq!(status, 404);
    let (status, _) = app.get_json(&format!("/v1/models/{first}")).await;
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_that_asks_for_an_alias_moves_it_when_it_succeeds() {
    let app = spawn_app().await;
    let mut spec = small_spec(1);
    spec["alias"] = json!("latest");
    let model = app.train(&spec).await;
    let (status, alias) = app.get_json("/v1/aliases/latest").await;
    assert_eq!(status, 200);
    assert_eq!(alias["model_id"], json!(model));
    let mut bad = small_spec(1);
    bad["alias"] = json!("no/slashes");
    let (status, body) = app.post_json("/v1/jobs", &bad).await;
    assert_eq!(status, 422, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("alias"));
}
