//! The shared services the scale-out tests run against: a PostgreSQL server
//! (`DBN_TEST_DATABASE_URL`, a role that may create databases) and an S3-compatible server
//! (`DBN_TEST_S3_ENDPOINT`, e.g. `moto_server`). `.ci/run` starts both. Without them the
//! tests say so and pass, unless `DBN_TEST_REQUIRE_SCALEOUT` is set (CI sets it), where a
//! missing service fails them.
#![allow(dead_code)]

use std::time::{SystemTime, UNIX_EPOCH};

/// Where the services are, or `None` (after saying why) when the test should be skipped.
pub fn services(test: &str) -> Option<(String, String)> {
    let db = std::env::var("DBN_TEST_DATABASE_URL").ok();
    let s3 = std::env::var("DBN_TEST_S3_ENDPOINT").ok();
    match (db, s3) {
        (Some(db), Some(s3)) => Some((db, s3)),
        _ => {
            assert!(
                std::env::var_os("DBN_TEST_REQUIRE_SCALEOUT").is_none(),
                "{test}: DBN_TEST_DATABASE_URL and DBN_TEST_S3_ENDPOINT must be set"
            );
            eprintln!(
                "{test}: skipped (set DBN_TEST_DATABASE_URL and DBN_TEST_S3_ENDPOINT to run it)"
            );
            None
        }
    }
}

/// A name no other test run uses.
pub fn unique(prefix: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!(
        "{prefix}{}x{}",
        std::process::id(),
        nanos % 1_000_000_000_000
    )
}

/// A database made for one test. Dropping the guard drops the database (closing any
/// connections left open), also when the test fails, so test runs do not fill the server.
pub struct TestDatabase {
    pub url: String,
    admin: String,
    name: String,
}

impl std::ops::Deref for TestDatabase {
    type Target = str;
    fn deref(&self) -> &str {
        &self.url
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let (admin, name) = (self.admin.clone(), self.name.clone());
        // The synchronous client runs a runtime of its own: keep it off async threads.
        let dropped = std::thread::spawn(move || {
            let mut client = postgres::Client::connect(&admin, postgres::NoTls)?;
            client.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        })
        .join();
        if let Ok(Err(e)) = dropped {
            eprintln!("could not drop test database {}: {e}", self.name);
        }
    }
}

/// Creates an empty database on the server of `admin_url`; the guard drops it again.
pub fn fresh_database(admin_url: &str) -> TestDatabase {
    let name = unique("dbn_test_");
    let admin = admin_url.to_string();
    let create = name.clone();
    // The synchronous client runs a runtime of its own: keep it off async threads.
    std::thread::spawn(move || {
        let mut client = postgres::Client::connect(&admin, postgres::NoTls).expect("connect");
        client
            .batch_execute(&format!("CREATE DATABASE {create}"))
            .expect("create database");
    })
    .join()
    .unwrap();
    let (base, _) = admin_url.rsplit_once('/').expect("a URL with a database");
    TestDatabase {
        url: format!("{base}/{name}"),
        admin: admin_url.to_string(),
        name,
    }
}

/// Creates an empty bucket on the S3-compatible server and returns its `s3://` URL.
pub async fn fresh_bucket(endpoint: &str) -> String {
    let name = unique("dbn-test-").replace('_', "-");
    let url = format!("s3://{name}/models-under-test");
    bucket(endpoint, &url, reqwest::Method::PUT).await;
    url
}

/// Creates (`PUT`) or deletes (`DELETE`) the bucket of an `s3://` URL on the server.
pub async fn bucket(endpoint: &str, store_url: &str, method: reqwest::Method) {
    let name = store_url
        .trim_start_matches("s3://")
        .split('/')
        .next()
        .unwrap();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let r = reqwest::Client::new()
        .request(method, format!("{}/{name}", endpoint.trim_end_matches('/')))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "bucket {name}: {}", r.status());
}

/// The environment that points a server at the services, with `extra` settings.
pub fn env(database: &str, bucket: &str, endpoint: &str) -> Vec<(String, String)> {
    [
        ("DBN_DATABASE_URL", database),
        ("DBN_MODEL_STORE", bucket),
        ("AWS_ENDPOINT", endpoint),
        ("AWS_ALLOW_HTTP", "true"),
        ("AWS_ACCESS_KEY_ID", "test"),
        ("AWS_SECRET_ACCESS_KEY", "test"),
        ("AWS_REGION", "us-east-1"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}
