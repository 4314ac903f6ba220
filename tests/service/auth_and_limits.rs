//! The API key, CORS, body limits and the inference limit.

use serde_json::json;

use crate::app::{code, small_spec, spawn_app, spawn_app_with};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_key_mutations_and_model_runs_need_it_and_reads_stay_open() {
    let app = spawn_app_with(|c| c.api_key = Some("s3cret".into())).await;
    let post = |key: Option<&str>| {
        let mut r = app.client.post(app.url("/v1/jobs")).json(&small_spec(1));
        if let Some(k) = key {
            r = r.bearer_auth(k);
        }
        r.send()
    };
    let r = post(None).await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.headers()["www-authenticate"], "Bearer");
    assert_eq!(code(&r.json().await.unwrap()), "unauthorized");
    assert_eq!(post(Some("wrong")).await.unwrap().status(), 401);
    assert_eq!(post(Some("s3cret")).await.unwrap().status(), 202);
    assert_eq!(app.get("/v1/jobs").await.status(), 200);
    assert_eq!(app.get("/v1/models").await.status(), 200);
    // Sampling by GET runs the same chains as POST samples: it needs the key too.
    let r = app
        .get("/v1/models/default/samples.png?count=1&steps=1")
        .await;
    assert_eq!(r.status(), 401);
    let r = app
        .client
        .get(app.url("/v1/models/default/samples.png?count=1&steps=1"))
        .bearer_auth("s3cret")
        .send()
        .await
        .unwrap();
    assert_ne!(r.status(), 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_refusal_is_in_the_house_shape_and_overload_says_when_to_retry() {
    let app = spawn_app().await;
    // A method the route does not have: the router's own 405.
    let r = app
        .client
        .patch(app.url("/v1/models"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
    assert!(r.headers().contains_key("allow"), "{:?}", r.headers());
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(code(&body), "method_not_allowed", "{body}");
    // An id that is not UTF-8 after percent-decoding: the path extractor's plain text.
    let r = app.get("/v1/models/%FF%FE").await;
    assert_eq!(r.status(), 400);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(code(&body), "bad_request", "{body}");
    assert!(!body["error"]["message"].as_str().unwrap().is_empty());
    // The OIP routes keep their own shape on the same refusals.
    let r = app
        .client
        .patch(app.url("/v2/health/live"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
    let body: serde_json::Value = r.json().await.unwrap();
    assert!(body["error"].is_string(), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_docs_are_served_under_a_content_security_policy() {
    let app = spawn_app().await;
    let r = app.get("/docs/").await;
    assert_eq!(r.status(), 200);
    let csp = r.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(csp.contains("default-src 'self'"), "{csp}");
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    // Swagger UI loads its scripts from its own files, which the policy allows.
    let page = r.text().await.unwrap();
    assert!(page.contains("swagger-ui-bundle.js"), "{page}");
    assert!(
        !page.contains("<script>"),
        "an inline script would be blocked: {page}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_can_be_closed_too_but_health_stays_open() {
    let app = spawn_app_with(|c| {
        c.api_key = Some("k".into());
        c.api_key_for_reads = true;
    })
    .await;
    assert_eq!(app.get("/v1/models").await.status(), 401);
    let r = app
        .client
        .get(app.url("/v1/models"))
        .bearer_auth("k")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(app.get("/healthz").await.status(), 200);
    assert_eq!(app.get("/readyz").await.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_preflight_allows_configured_origins_only() {
    let app = spawn_app_with(|c| c.cors_origins = vec!["http://app.example".into()]).await;
    let preflight = |origin: &'static str| {
        app.client
            .request(reqwest::Method::OPTIONS, app.url("/v1/jobs"))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "content-type,authorization",
            )
            .send()
    };
    let r = preflight("http://app.example").await.unwrap();
    assert_eq!(
        r.headers()["access-control-allow-origin"],
        "http://app.example"
    );
    let r = preflight("http://evil.example").await.unwrap();
    assert!(r.headers().get("access-control-allow-origin").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_pages_on_other_origins_cannot_change_or_compute_anything() {
    let app = spawn_app_with(|c| c.cors_origins = vec!["http://app.example".into()]).await;
    let host = app.base.trim_start_matches("http://").to_string();
    let model = dbn_serve::bundled::model_bytes().to_vec();
    // Refused calls get a small body: the server answers before reading a large one.
    let import = |headers: Vec<(&'static str, String)>, kind: &'static str, whole: bool| {
        let body = if whole {
            model.clone()
        } else {
            b"not a model".to_vec()
        };
        let mut r = app
            .client
            .post(app.url("/v1/models"))
            .header("content-type", kind)
            .body(body);
        for (k, v) in headers {
            r = r.header(k, v);
        }
        r.send()
    };
    let status = |r: reqwest::Response| r.status().as_u16();
    let octet = "application/octet-stream";
    // What a page elsewhere sends: a "simple" request that needs no preflight.
    for headers in [
        vec![("origin", "http://evil.example".to_string())],
        vec![
            ("origin", "http://evil.example".to_string()),
            ("sec-fetch-site", "cross-site".to_string()),
        ],
        vec![("sec-fetch-site", "same-site".to_string())],
        vec![("origin", "null".to_string())],
    ] {
        let r = import(headers.clone(), octet, false).await.unwrap();
        assert_eq!(r.status(), 403, "{headers:?}");
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(code(&body), "cross_site_request");
        let r = app
            .client
            .post(app.url("/v1/models/anything/classify"))
            .header("content-type", "text/plain")
            .header(headers[0].0, headers[0].1.clone())
            .body("x")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403, "classify {headers:?}");
    }
    // Nothing was stored.
    let (_, list) = app.get_json("/v1/models").await;
    assert_eq!(list["models"].as_array().unwrap().len(), 0, "{list}");
    // A text body is not a model file, whoever sends it.
    assert_eq!(
        status(import(vec![], "text/plain", false).await.unwrap()),
        415
    );
    // The server's own page, an allowed origin, and tools without a browser may call.
    let own = vec![
        ("origin", format!("http://{host}")),
        ("sec-fetch-site", "same-origin".to_string()),
    ];
    assert_eq!(status(import(own, octet, true).await.unwrap()), 201);
    let allowed = vec![
        ("origin", "http://app.example".to_string()),
        ("sec-fetch-site", "cross-site".to_string()),
    ];
    assert_eq!(status(import(allowed, octet, true).await.unwrap()), 201);
    assert_eq!(status(import(vec![], octet, true).await.unwrap()), 201);
    // Reads stay open to everyone.
    let r = app
        .client
        .get(app.url("/v1/models"))
        .header("origin", "http://evil.example")
        .header("sec-fetch-site", "cross-site")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_bodies_get_413_and_every_response_carries_a_request_id() {
    let app = spawn_app_with(|c| c.max_body_bytes = 10_000).await;
    let big = json!({"architecture": {"hidden": [10]}, "name": "x".repeat(20_000)});
    let r = app
        .client
        .post(app.url("/v1/jobs"))
        .json(&big)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    assert_eq!(code(&r.json().await.unwrap()), "body_too_large");
    // Deeply nested JSON within the size limit is refused without harm: serde_json stops at
    // 128 levels and axum reports that as a body that does not fit the schema.
    let nested = format!("{}{}", "[".repeat(4_000), "]".repeat(4_000));
    let r = app
        .client
        .post(app.url("/v1/jobs"))
        .header("content-type", "application/json")
        .body(nested)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);

    let r = app
        .client
        .get(app.url("/healthz"))
        .header("x-request-id", "abc-123")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-request-id"], "abc-123");
    let r = app.get("/healthz").await;
    assert!(r.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .starts_with("req-"));

    let metrics = app.get("/metrics").await.text().await.unwrap();
    assert!(
        metrics.contains(
            "dbn_http_requests_total{route=\"/v1/jobs\",method=\"POST\",status=\"413\"} 1"
        ),
        "{metrics}"
    );
    assert!(metrics.contains("dbn_queue_depth 0"));
}

/// Reads from `stream` until the server closes it (or 20 s pass); returns what arrived and
/// how long the server took to close.
async fn until_closed(stream: &mut tokio::net::TcpStream) -> (String, std::time::Duration) {
    use tokio::io::AsyncReadExt;
    let started = std::time::Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let read = tokio::time::timeout(std::time::Duration::from_secs(20), stream.read(&mut buf));
        match read.await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Err(_) => panic!("the server kept the connection open for 20 s"),
        }
    }
    (
        String::from_utf8_lossy(&got).into_owned(),
        started.elapsed(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_are_cut_off_and_open_connections_are_capped() {
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpStream;
    let app = spawn_app_with(|c| {
        c.header_read_timeout_secs = 1;
        c.body_idle_timeout_secs = 1;
        c.max_connections = 4;
    })
    .await;
    let addr = app.base.trim_start_matches("http://").to_string();

    // A head trickled a byte at a time is dropped after the 1-second header deadline.
    let mut slow = TcpStream::connect(&addr).await.unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let trickle = async {
        for b in b"X-Slow: 1234567890" {
            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
            if slow.write_all(&[*b]).await.is_err() {
                break;
            }
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(10), trickle)
        .await
        .ok();
    let (_, waited) = until_closed(&mut slow).await;
    assert!(waited < std::time::Duration::from_secs(5), "{waited:?}");

    // A body that stops arriving: the call ends instead of waiting for the rest.
    let mut stalled = TcpStream::connect(&addr).await.unwrap();
    stalled
        .write_all(
            b"POST /v1/models HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n0123456789",
        )
        .await
        .unwrap();
    let (answer, waited) = until_closed(&mut stalled).await;
    assert!(waited < std::time::Duration::from_secs(10), "{waited:?}");
    assert!(!answer.starts_with("HTTP/1.1 2"), "{answer}");

    // Four idle connections fill the cap; a fifth is closed at once without an answer.
    let mut idle = Vec::new();
    for _ in 0..4 {
        let mut s = TcpStream::connect(&addr).await.unwrap();
        // A complete request keeps the connection open (keep-alive) after its answer.
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        idle.push(s);
    }
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let mut fifth = TcpStream::connect(&addr).await.unwrap();
    let _ = fifth
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await;
    let (answer, _) = until_closed(&mut fifth).await;
    assert!(answer.is_empty(), "{answer}");
    // Once they go, the server answers again.
    drop(idle);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let ok = crate::common::http_client()
            .get(app.url("/healthz"))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200);
        if ok {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no answer after the idle clients left"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn path_traversal_through_ids_and_dataset_names_goes_nowhere() {
    let app = spawn_app().await;
    // A file outside the data directory's models/ that a traversal would reach.
    let outside = app.data_dir().join("secret.safetensors");
    std::fs::write(&outside, b"not for download").unwrap();
    for path in [
        "/v1/models/..%2Fsecret",
        "/v1/models/..%2F..%2F..%2Fetc%2Fpasswd/weights",
        "/v1/models/%2E%2E/weights",
        "/v1/jobs/..%2Fjobs.sqlite3",
        "/v1/models/..%5Csecret/weights",
    ] {
        let r = app.get(path).await;
        let status = r.status().as_u16();
        let body = r.text().await.unwrap();
        assert!(status == 404 || status == 422, "{path}: {status} {body}");
        assert!(!body.contains("not for download"), "{path}");
    }
    let r = app
        .client
        .delete(app.url("/v1/models/..%2Fsecret"))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_client_error());
    assert!(outside.exists(), "a traversal deleted a file");
    // Dataset names become directories: anything but [A-Za-z0-9_-] is refused.
    for name in ["..", "../../tmp/x", "a/b", "%2E%2E"] {
        let r = app
            .client
            .post(app.url(&format!("/v1/datasets?name={name}")))
            .multipart(reqwest::multipart::Form::new().text("train_images", "x"))
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        assert_eq!(status, 422, "dataset name {name}: {status}");
    }
    // And jobs cannot name such a dataset either.
    let (status, body) = app
        .post_json(
            "/v1/jobs",
            &json!({"dataset": "../mnist", "architecture": {"hidden": [10]}}),
        )
        .await;
    assert_eq!((status, code(&body)), (422, "invalid_request"), "{body}");
}

/// Every operation of the OpenAPI document, with placeholders for path parameters.
fn operations() -> Vec<(reqwest::Method, String)> {
    let doc: serde_json::Value =
        serde_json::from_str(&dbn_serve::http::openapi::document()).unwrap();
    let mut ops = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        let concrete = path.replace("{id}", "nope").replace("{name}", "nope");
        for method in item.as_object().unwrap().keys() {
            ops.push((method.to_uppercase().parse().unwrap(), concrete.clone()));
        }
    }
    ops
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_key_guards_every_operation_as_configured() {
    let ops = operations();
    assert!(ops.len() >= 20, "{} operations", ops.len());
    let open = ["/healthz", "/readyz", "/v2/health/live", "/v2/health/ready"];
    for reads_too in [false, true] {
        let app = spawn_app_with(|c| {
            c.api_key = Some("matrix-key".into());
            c.api_key_for_reads = reads_too;
        })
        .await;
        for (method, path) in &ops {
            let send = |key: Option<&str>| {
                let mut r = app.client.request(method.clone(), app.url(path));
                if let Some(k) = key {
                    r = r.bearer_auth(k);
                }
                r.header("content-type", "application/json")
                    .body("{}")
                    .send()
            };
            let without = send(None).await.unwrap().status().as_u16();
            let wrong = send(Some("matrix-kex")).await.unwrap().status().as_u16();
            let with = send(Some("matrix-key")).await.unwrap().status().as_u16();
            // The GETs that run a model are guarded like the POSTs.
            let computes = path.ends_with("/samples.png") || path.ends_with("/features.png");
            let guarded = !open.contains(&path.as_str())
                && (reads_too || *method != reqwest::Method::GET || computes);
            if guarded {
                assert_eq!(
                    (without, wrong),
                    (401, 401),
                    "{method} {path} (reads guarded: {reads_too})"
                );
            } else {
                assert_ne!(without, 401, "{method} {path} (reads guarded: {reads_too})");
            }
            assert_ne!(with, 401, "{method} {path} with the key");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_key_never_reaches_the_logs() {
    let dir = tempfile::tempdir().unwrap();
    let log_path = dir.path().join("server.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let key = "key-7f3a9c-never-logged";
    let wrong = "wrong-5d1e88-never-logged";
    let data = dir.path().join("data");
    let (mut server, base) = crate::crash::start_with(
        &data,
        &[
            ("DBN_LOG", "trace"),
            ("DBN_API_KEY", key),
            ("DBN_API_KEY_FOR_READS", "true"),
        ],
        log.into(),
    );
    let client = crate::common::http_client();
    let spec = crate::app::small_spec(1);
    // The right key, a wrong one, a key in the query string and in a header of its own: none
    // of them may be written out, at the most verbose level.
    let calls = [
        (format!("Bearer {key}"), format!("{base}/v1/jobs")),
        (format!("Bearer {wrong}"), format!("{base}/v1/jobs")),
        (
            format!("Bearer {wrong}"),
            format!("{base}/v1/jobs?api_key={key}"),
        ),
        (key.to_string(), format!("{base}/v1/jobs?token={wrong}")),
    ];
    let mut statuses = Vec::new();
    for (auth, url) in &calls {
        let r = client
            .post(url)
            .header("authorization", auth)
            .header("x-api-key", key)
            .json(&spec)
            .send()
            .await
            .unwrap();
        statuses.push(r.status().as_u16());
        let r = client
            .get(format!("{base}/v1/models"))
            .header("authorization", auth)
            .send()
            .await
            .unwrap();
        statuses.push(r.status().as_u16());
    }
    assert_eq!(statuses, [202, 200, 401, 401, 401, 401, 401, 401]);
    crate::crash::kill(&mut server);
    let logs = std::fs::read_to_string(&log_path).unwrap();
    assert!(
        logs.contains("status=401"),
        "the requests were not logged:\n{logs}"
    );
    for secret in [key, wrong] {
        assert!(!logs.contains(secret), "{secret} is in the logs:\n{logs}");
    }
}
