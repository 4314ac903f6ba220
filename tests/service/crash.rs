//! The real binary killed with SIGKILL in the middle of training: the next start finds the
//! job, resumes it from its last checkpoint and finishes it.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// Starts `dbn-serve serve` on a free port and returns it with its base URL.
fn start(data_dir: &std::path::Path) -> (Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_dbn-serve"))
        .args(["serve", "--addr", "127.0.0.1:0", "--data-dir"])
        .arg(data_dir)
        .arg("--mnist-dir")
        .arg(crate::common::fixture_dir())
        .env("DBN_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .expect("the binary starts");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let base = line
        .trim()
        .strip_prefix("dbn-serve listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_string();
    (child, base)
}

async fn job(client: &reqwest::Client, base: &str, id: &str) -> Value {
    client
        .get(format!("{base}/v1/jobs/{id}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

async fn wait(
    client: &reqwest::Client,
    base: &str,
    id: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let j = job(client, base, id).await;
        if done(&j) {
            return j;
        }
        assert!(Instant::now() < deadline, "{j}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_survives_kill_9_of_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let client = reqwest::Client::new();
    let (mut server, base) = start(dir.path());
    let spec =
        json!({"architecture": {"hidden": [300, 300]}, "pretrain": {"epochs": 12}, "seed": 11});
    let r = client
        .post(format!("{base}/v1/jobs"))
        .json(&spec)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let id = r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    wait(&client, &base, &id, |j| {
        j["history"].as_array().is_some_and(|h| h.len() >= 3)
    })
    .await;

    server.kill().unwrap();
    server.wait().unwrap();
    let (mut server, base) = start(dir.path());

    let done = wait(&client, &base, &id, |j| {
        matches!(
            j["status"].as_str(),
            Some("succeeded" | "failed" | "cancelled")
        )
    })
    .await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["attempts"], 2);
    assert_eq!(done["history"].as_array().unwrap().len(), 24);
    // The container health check's command sees the server.
    let addr = base.trim_start_matches("http://");
    let check = Command::new(env!("CARGO_BIN_EXE_dbn-serve"))
        .args(["healthcheck", "--addr", addr])
        .output()
        .unwrap();
    assert!(check.status.success(), "{check:?}");
    let model = done["model_id"].as_str().unwrap();
    let r = client
        .get(format!("{base}/v1/models/{model}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    server.kill().unwrap();
    server.wait().unwrap();
}
