//! The real binary killed with SIGKILL in the middle of training: the next start finds the
//! job, resumes it from its last checkpoint and finishes it.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// Starts `dbn-serve serve` on a free port and returns it with its base URL.
fn start(data_dir: &std::path::Path) -> (Child, String) {
    start_with(data_dir, &[("DBN_LOG", "warn")], Stdio::inherit())
}

/// Starts `dbn-serve serve` with more environment and its logs (stderr) sent to `logs`.
pub fn start_with(
    data_dir: &std::path::Path,
    env: &[(&str, &str)],
    logs: Stdio,
) -> (Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_dbn-serve"))
        .args(["serve", "--addr", "127.0.0.1:0", "--data-dir"])
        .arg(data_dir)
        .arg("--mnist-dir")
        .arg(crate::common::fixture_dir())
        // An empty model store unless a test asks for the bundled model.
        .env("DBN_DEFAULT_MODEL", "false")
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(logs)
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

/// Submits a job and returns its id.
pub async fn submit(client: &reqwest::Client, base: &str, spec: &Value) -> String {
    let r = client
        .post(format!("{base}/v1/jobs"))
        .json(spec)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string()
}

/// SIGKILL, and reap the process.
pub fn kill(server: &mut Child) {
    server.kill().unwrap();
    server.wait().unwrap();
}

pub async fn job(client: &reqwest::Client, base: &str, id: &str) -> Value {
    client
        .get(format!("{base}/v1/jobs/{id}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

pub async fn wait(
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
    let client = crate::common::http_client();
    let (mut server, base) = start(dir.path());
    let spec =
        json!({"architecture": {"hidden": [300, 300]}, "pretrain": {"epochs": 12}, "seed": 11});
    let id = submit(&client, &base, &spec).await;
    wait(&client, &base, &id, |j| {
        j["history"].as_array().is_some_and(|h| h.len() >= 3)
    })
    .await;

    kill(&mut server);
    let (mut server, base) = start(dir.path());

    let done = wait(&client, &base, &id, crate::app::is_terminal).await;
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
    kill(&mut server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sequence_job_resumes_from_its_checkpoint_after_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let client = crate::common::http_client();
    let (mut server, base) = start(dir.path());
    let spec = json!({
        "architecture": {"hidden": [200, 32], "labels_in_top": false, "visible_units": "gaussian"},
        "pretrain": {"epochs": 8, "learning_rate": 0.001, "bias_learning_rate": 0.001},
        "train_examples": 600,
        "sequence": {"order": 2, "length": 10, "moving": {"canvas": 32, "max_speed": 2}},
        "seed": 3
    });
    let id = submit(&client, &base, &spec).await;
    let before = wait(&client, &base, &id, |j| {
        j["history"].as_array().is_some_and(|h| h.len() >= 3)
    })
    .await;
    kill(&mut server);
    let (mut server, base) = start(dir.path());
    let done = wait(&client, &base, &id, crate::app::is_terminal).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["attempts"], 2);
    assert_eq!(done["history"].as_array().unwrap().len(), 16);
    // The epochs before the kill come from the checkpoint, not from training them again:
    // their measured durations are the ones the first attempt recorded.
    assert_eq!(done["history"][0], before["history"][0], "{done}");
    kill(&mut server);
}

/// The first temporary file (an interrupted `write_atomic`) in `dir`, if any.
fn temporary_in(dir: &std::path::Path) -> Option<std::path::PathBuf> {
    std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.to_string_lossy().contains(".tmp-"))
}

/// Models the server lists, each checked to be whole: its weights export and it classifies.
async fn listed_models_are_whole(client: &reqwest::Client, base: &str) -> Vec<String> {
    let list: Value = client
        .get(format!("{base}/v1/models"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut ids = Vec::new();
    for m in list["models"].as_array().unwrap() {
        let id = m["id"].as_str().unwrap().to_string();
        let r = client
            .post(format!("{base}/v1/models/{id}/classify"))
            .json(&json!({"pixels": [vec![0.5; 784]]}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{id}: {}", r.text().await.unwrap());
        ids.push(id);
    }
    ids
}

/// Runs the server until a temporary file appears under `sub`, then kills it with SIGKILL at
/// once. Returns whether the file was still there after the kill (the write was cut short),
/// or None if the job ended first.
async fn kill_during_a_write(dir: &std::path::Path, sub: &str, job_id: &str) -> Option<bool> {
    let client = crate::common::http_client();
    let (mut server, base) = start(dir);
    let watched = dir.join(sub);
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut polls = 0u64;
    loop {
        if let Some(tmp) = temporary_in(&watched) {
            kill(&mut server);
            break Some(tmp.exists());
        }
        polls += 1;
        if polls.is_multiple_of(2000) {
            let j = job(&client, &base, job_id).await;
            if crate::app::is_terminal(&j) {
                kill(&mut server);
                break None;
            }
        }
        assert!(Instant::now() < deadline, "no write under {sub} seen");
        std::thread::yield_now();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_checkpoint_and_model_writes_never_lists_a_half_model() {
    let dir = tempfile::tempdir().unwrap();
    let client = crate::common::http_client();
    // Big enough that a write (about 22 MB with its fsync) is seen in progress.
    let spec =
        json!({"architecture": {"hidden": [2000, 2000]}, "pretrain": {"epochs": 2}, "seed": 5});
    let (mut server, base) = start(dir.path());
    let id = submit(&client, &base, &spec).await;
    kill(&mut server);

    // Killed while writing checkpoints, then while writing the model: after each kill the
    // next start lists only whole models and no temporary file is left.
    let mut cut = [0usize; 2];
    for (k, sub) in ["checkpoints", "checkpoints", "models", "models"]
        .iter()
        .enumerate()
    {
        let Some(in_progress) = kill_during_a_write(dir.path(), sub, &id).await else {
            break;
        };
        cut[k / 2] += in_progress as usize;
        let (mut server, base) = start(dir.path());
        for d in ["checkpoints", "models"] {
            assert_eq!(temporary_in(&dir.path().join(d)), None, "{d} not swept");
        }
        listed_models_are_whole(&client, &base).await;
        kill(&mut server);
    }
    assert!(cut[0] > 0, "no checkpoint write was cut short");
    assert!(cut[1] > 0, "no model write was cut short");

    // The job still finishes, with one whole model under its id.
    let (mut server, base) = start(dir.path());
    let done = wait(&client, &base, &id, crate::app::is_terminal).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    let ids = listed_models_are_whole(&client, &base).await;
    assert_eq!(ids, [done["model_id"].as_str().unwrap()]);
    kill(&mut server);
}
