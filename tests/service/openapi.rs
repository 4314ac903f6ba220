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
