//! The committed OpenAPI document is the one the code generates, and the server serves it.

#[test]
fn the_committed_openapi_document_is_up_to_date() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("openapi/openapi.json");
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    let generated = dbn_serve::http::openapi::document();
    assert!(
        committed == generated,
        "openapi/openapi.json is stale: run `cargo run -- openapi --out openapi/openapi.json`"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_serves_its_document_and_the_docs_page() {
    let app = crate::app::spawn_app().await;
    let (status, doc) = app.get_json("/openapi.json").await;
    assert_eq!(status, 200);
    for path in [
        "/v1/jobs",
        "/v1/jobs/{id}/events",
        "/v1/models/{id}/classify",
        "/v2/models/{name}/infer",
        "/metrics",
    ] {
        assert!(doc["paths"][path].is_object(), "{path} missing");
    }
    // With the limits this server enforces written in.
    let hidden = &doc["components"]["schemas"]["Architecture"]["properties"]["hidden"];
    assert_eq!(hidden["items"]["maximum"], app.config.max_units, "{hidden}");
    assert_eq!(hidden["maxItems"], app.config.max_layers, "{hidden}");
    let docs = app.get("/docs/").await;
    assert_eq!(docs.status(), 200);
    assert!(docs.text().await.unwrap().contains("swagger"));
}

/// The bounds the served document gives the inference calls' numbers are the server's: each
/// documented minimum and maximum is accepted, and the values just past them are refused with
/// 422 naming the field. (Other fields stay at cheap values, so every call is quick.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_documented_inference_bound_is_the_enforced_one() {
    use serde_json::{json, Value};
    let app = crate::app::spawn_app().await;
    let model = app.train(&crate::app::small_spec(1)).await;
    let (_, doc) = app.get_json("/openapi.json").await;
    let bounds = |schema: &Value, what: &str| -> (u64, u64) {
        let min = schema["minimum"].as_u64().unwrap_or(0);
        let max = schema["maximum"]
            .as_u64()
            .unwrap_or_else(|| panic!("{what} has no documented maximum: {schema}"));
        (min, max)
    };
    let property = |name: &str, field: &str| {
        let schema = &doc["components"]["schemas"][name]["properties"][field];
        bounds(schema, &format!("{name}.{field}"))
    };
    let parameter = |path: &str, method: &str, field: &str| {
        let params = doc["paths"][path][method]["parameters"].as_array().unwrap();
        let p = params.iter().find(|p| p["name"] == field).unwrap();
        bounds(&p["schema"], &format!("{method} {path} ?{field}"))
    };
    // (what, documented bounds, a call with the field at a value → status and body)
    let samples = format!("/v1/models/{model}/samples");
    let chain = format!("/v1/models/{model}/chain");
    let classify = format!("/v1/models/{model}/classify");
    let cheap_sample = json!({"count": 1, "gibbs_steps": 1});
    let cheap_chain = json!({"count": 1, "gibbs_steps": 1, "frames": 1});
    let one_image = json!({"pixels": [vec![0.0f32; 784]], "method": "gibbs", "gibbs_steps": 1});
    let mut checked = 0;
    for (schema, field, url, base) in [
        ("SampleRequest", "count", &samples, &cheap_sample),
        ("SampleRequest", "gibbs_steps", &samples, &cheap_sample),
        ("ChainRequest", "count", &chain, &cheap_chain),
        ("ChainRequest", "gibbs_steps", &chain, &cheap_chain),
        ("ChainRequest", "frames", &chain, &cheap_chain),
        ("PixelsRequest", "gibbs_steps", &classify, &one_image),
    ] {
        let (min, max) = property(schema, field);
        let call = |v: u64| {
            let mut body = base.clone();
            body[field] = json!(v);
            let (app, url) = (&app, url.clone());
            async move { app.post_json(&url, &body).await }
        };
        for v in [min, max] {
            let (status, body) = call(v).await;
            assert_eq!(status, 200, "{schema}.{field} = {v} is documented: {body}");
        }
        let past = [min.checked_sub(1), max.checked_add(1)];
        for v in past.into_iter().flatten() {
            let (status, body) = call(v).await;
            assert_eq!(status, 422, "{schema}.{field} = {v}: {body}");
            assert!(
                body["error"]["message"].as_str().unwrap().contains(field),
                "{body}"
            );
        }
        checked += 1;
    }
    let png = "/v1/models/{id}/samples.png";
    for (path, method, field, query) in [
        (png, "get", "count", "gibbs_steps=1&count="),
        (png, "get", "gibbs_steps", "count=1&gibbs_steps="),
        (
            "/v1/models/{id}/classify",
            "post",
            "gibbs_steps",
            "method=gibbs&gibbs_steps=",
        ),
    ] {
        let (min, max) = parameter(path, method, field);
        let url = |v: u64| format!("{}?{query}{v}", path.replace("{id}", &model));
        let status = |v: u64| {
            let url = app.url(&url(v));
            let request = if method == "get" {
                app.client.get(url)
            } else {
                app.client
                    .post(url)
                    .json(&json!({"pixels": [vec![0.0f32; 784]]}))
            };
            async move { request.send().await.unwrap().status().as_u16() }
        };
        assert_eq!(status(min).await, 200, "{path} ?{field}={min}");
        assert_eq!(status(max).await, 200, "{path} ?{field}={max}");
        if let Some(below) = min.checked_sub(1) {
            assert_eq!(status(below).await, 422, "{path} ?{field}={below}");
        }
        assert_eq!(status(max + 1).await, 422, "{path} ?{field}={}", max + 1);
        checked += 1;
    }
    assert_eq!(checked, 9);
}
