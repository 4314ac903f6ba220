//! `spawn_app()`: a server on 127.0.0.1:0 over a temporary data directory, the fixture MNIST
//! subset as the `mnist` dataset, and an HTTP client.

use std::path::Path;
use std::time::{Duration, Instant};

use dbn_serve::config::ServeConfig;
use dbn_serve::startup::{start, RunningServer};
use futures_util::StreamExt;
use serde_json::{json, Value};
use tempfile::TempDir;

pub struct TestApp {
    pub base: String,
    pub client: reqwest::Client,
    pub server: Option<RunningServer>,
    pub dir: Option<TempDir>,
    pub config: ServeConfig,
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

pub async fn spawn_app_with(change: impl FnOnce(&mut ServeConfig)) -> TestApp {
    let dir = tempfile::tempdir().expect("temporary directory");
    let mut config = test_config(dir.path());
    change(&mut config);
    start_in(Some(dir), config).await
}

/// A server over a data directory that the caller keeps (and removes).
pub async fn spawn_app_in(data_dir: &Path) -> TestApp {
    start_in(None, test_config(data_dir)).await
}

fn test_config(data_dir: &Path) -> ServeConfig {
    let mut config = ServeConfig::with_data_dir(data_dir);
    config.addr = "127.0.0.1:0".parse().unwrap();
    config.shutdown_grace_secs = 10;
    // Tests start from an empty model store unless they test the bundled model.
    config.default_model = false;
    config
}

async fn start_in(dir: Option<TempDir>, config: ServeConfig) -> TestApp {
    let server = start(config.clone(), Some(super::common::fixture_dir()))
        .await
        .expect("server starts");
    TestApp {
        base: format!("http://{}", server.addr),
        client: crate::common::http_client(),
        server: Some(server),
        dir,
        config,
    }
}

/// A small digit model: 784-64-128 with labels on top, a few epochs on the fixture.
pub fn small_spec(epochs: usize) -> Value {
    json!({
        "name": "small",
        "architecture": {"hidden": [64, 128]},
        "pretrain": {"epochs": epochs},
        "seed": 7
    })
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(self.url(path))
            .send()
            .await
            .expect("request")
    }

    pub async fn get_json(&self, path: &str) -> (u16, Value) {
        let r = self.get(path).await;
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    pub async fn post_json(&self, path: &str, body: &Value) -> (u16, Value) {
        let r = self
            .client
            .post(self.url(path))
            .json(body)
            .send()
            .await
            .expect("request");
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    pub async fn submit(&self, spec: &Value) -> String {
        let (status, job) = self.post_json("/v1/jobs", spec).await;
        assert_eq!(status, 202, "{job}");
        job["id"].as_str().expect("job id").to_string()
    }

    /// Polls the job until `done` says so or a minute passes.
    pub async fn wait_job(&self, id: &str, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let (status, job) = self.get_json(&format!("/v1/jobs/{id}")).await;
            assert_eq!(status, 200, "{job}");
            if done(&job) {
                return job;
            }
            assert!(Instant::now() < deadline, "job never got there: {job}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn wait_status(&self, id: &str, status: &str) -> Value {
        self.wait_job(id, |j| j["status"] == status || is_terminal(j))
            .await
    }

    /// Trains `spec` to a model and returns the model id.
    pub async fn train(&self, spec: &Value) -> String {
        let id = self.submit(spec).await;
        let job = self.wait_status(&id, "succeeded").await;
        assert_eq!(job["status"], "succeeded", "{job}");
        job["model_id"].as_str().unwrap().to_string()
    }

    /// Stops the server gracefully and starts a new one on the same data directory.
    pub async fn restart(mut self) -> TestApp {
        if let Some(server) = self.server.take() {
            server.stop().await;
        }
        let mut config = self.config.clone();
        config.addr = "127.0.0.1:0".parse().unwrap();
        start_in(Some(self.dir.take().expect("data directory")), config).await
    }

    pub fn data_dir(&self) -> &Path {
        self.dir.as_ref().expect("data directory").path()
    }

    pub async fn assert_healthy(&self) {
        let (status, body) = self.get_json("/healthz").await;
        assert_eq!((status, &body["status"]), (200, &json!("ok")));
    }
}

pub fn is_terminal(job: &Value) -> bool {
    matches!(
        job["status"].as_str(),
        Some("succeeded" | "failed" | "cancelled")
    )
}

/// The error code of an error body.
pub fn code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or("<no error code>")
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(server) = &self.server {
            server.signal_stop();
        }
    }
}

/// The events of a job's stream until it ends, as (name, data).
pub async fn read_events(response: reqwest::Response) -> Vec<(String, Value)> {
    let mut body = String::new();
    let mut stream = response.bytes_stream();
    let read = tokio::time::timeout(Duration::from_secs(180), async {
        while let Some(chunk) = stream.next().await {
            body.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
        }
    })
    .await;
    assert!(read.is_ok(), "the stream did not end: {body}");
    body.split("\n\n")
        .filter_map(|block| {
            let name = block.lines().find_map(|l| l.strip_prefix("event: "))?;
            let data = block.lines().find_map(|l| l.strip_prefix("data: "))?;
            Some((name.to_string(), serde_json::from_str(data).unwrap()))
        })
        .collect()
}
