//! Faults in the data directory and hostile bodies: a clear error at start-up or a 4xx, never
//! a panic, and the server stays healthy.

use dbn_serve::config::ServeConfig;
use dbn_serve::startup::start;

use crate::app::{code, is_terminal, small_spec, spawn_app, spawn_app_in};

/// Starts a server over `dir` and returns its start-up error, if it fails.
async fn start_error(dir: &std::path::Path) -> Option<String> {
    let mut config = ServeConfig::with_data_dir(dir);
    config.addr = "127.0.0.1:0".parse().unwrap();
    config.default_model = false;
    match start(config, Some(crate::common::fixture_dir())).await {
        Ok(server) => {
            server.stop().await;
            None
        }
        Err(e) => Some(e.to_string()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_or_newer_job_database_stops_start_up_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("jobs.sqlite3");
    std::fs::write(&db, vec![0x5a; 64 * 1024]).unwrap();
    let e = start_error(dir.path())
        .await
        .expect("a garbage database is refused");
    assert!(
        e.contains("not a database") || e.contains("database"),
        "{e}"
    );

    // A database from a newer server: refused, and left as it was.
    std::fs::remove_file(&db).unwrap();
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.pragma_update(None, "user_version", 99).unwrap();
    drop(conn);
    let before = std::fs::read(&db).unwrap();
    let e = start_error(dir.path())
        .await
        .expect("a newer schema is refused");
    assert!(e.contains("newer"), "{e}");
    assert!(
        std::fs::read(&db).unwrap() == before,
        "the refused database was changed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_server_on_the_same_data_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let first = spawn_app_in(dir.path()).await;
    let e = start_error(dir.path())
        .await
        .expect("a second server on a taken data directory is refused");
    assert!(e.contains("in use by another dbn-serve"), "{e}");
    first.assert_healthy().await;
    drop(first);
    // Released when the first server goes away.
    let mut released = None;
    for _ in 0..100 {
        released = start_error(dir.path()).await;
        if released.is_none() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(released, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_locked_job_database_is_a_clear_error_at_start_up_and_a_503_while_serving() {
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(start_error(dir.path()).await, None);
    let db = dir.path().join("jobs.sqlite3");

    // Another process holds the write lock: start-up fails after the busy timeout, saying so.
    let locker = rusqlite::Connection::open(&db).unwrap();
    locker.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let e = start_error(dir.path())
        .await
        .expect("a locked database is refused");
    assert!(e.contains("locked") || e.contains("busy"), "{e}");
    locker.execute_batch("COMMIT").unwrap();

    // Locked while serving: reads go on (WAL), a submission gets 503 store_busy, and once the
    // lock is gone the same submission is accepted.
    let app = spawn_app_in(dir.path()).await;
    locker.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let (status, body) = app.get_json("/v1/jobs").await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = app.post_json("/v1/jobs", &small_spec(1)).await;
    assert_eq!((status, code(&body)), (503, "store_busy"), "{body}");
    locker.execute_batch("COMMIT").unwrap();
    let id = app.submit(&small_spec(1)).await;
    let job = app.wait_job(&id, is_terminal).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    app.assert_healthy().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_json_gets_a_4xx_and_the_server_stays_healthy() {
    let app = spawn_app().await;
    // 100,000 nested arrays: beyond the parser's depth limit, refused without recursion.
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    for path in ["/v1/jobs", "/v1/models/none/samples"] {
        let r = app
            .client
            .post(app.url(path))
            .header("content-type", "application/json")
            .body(deep.clone())
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        assert!((400..500).contains(&status), "{path}: {status}");
        let body: serde_json::Value = r.json().await.unwrap();
        assert!(!code(&body).is_empty(), "{body}");
    }
    // Specs asking for 10⁹ hidden units or 10⁶ epochs: 422 naming the field.
    for (spec, field) in [
        (
            serde_json::json!({"architecture": {"hidden": [1_000_000_000]}}),
            "architecture.hidden",
        ),
        (
            serde_json::json!({"architecture": {"hidden": [10]}, "pretrain": {"epochs": 1_000_000}}),
            "epochs",
        ),
        (
            serde_json::json!({"architecture": {"hidden": [10]}, "finetune": {"method": "backprop", "epochs": 1_000_000}}),
            "epochs",
        ),
    ] {
        let (status, body) = app.post_json("/v1/jobs", &spec).await;
        assert_eq!(status, 422, "{body}");
        assert!(
            body["error"]["message"].as_str().unwrap().contains(field),
            "{body}"
        );
    }
    app.assert_healthy().await;
}

/// A small tmpfs mounted over a temporary directory, unmounted on drop; None (after saying
/// so) where mounting is not allowed.
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(size: &str) -> Option<SmallDisk> {
        let dir = tempfile::tempdir().unwrap();
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            eprintln!("SKIPPED full-disk test: cannot mount a tmpfs here (needs root)");
            return None;
        }
        Some(SmallDisk { dir })
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_fails_the_job_clearly_and_harms_nothing_stored() {
    let Some(disk) = SmallDisk::mount("3m") else {
        return;
    };
    let app = spawn_app_in(disk.dir.path()).await;
    let model_file = |id: &str| disk.dir.path().join(format!("models/{id}.safetensors"));
    // A small model fits (about 0.3 MB).
    let model = app.train(&crate::app::small_spec(1)).await;
    let stored = std::fs::read(model_file(&model)).unwrap();
    // 784-600-600 is about 3.3 MB of weights: neither its checkpoints nor the model fit.
    let big = serde_json::json!({"name": "big", "architecture": {"hidden": [600, 600]},
                                 "pretrain": {"epochs": 1}, "seed": 2});
    let id = app.submit(&big).await;
    let job = app.wait_job(&id, is_terminal).await;
    assert_eq!(job["status"], "failed", "{job}");
    assert_eq!(job["error"]["code"], "model_write_failed", "{job}");
    let message = job["error"]["message"].as_str().unwrap();
    assert!(message.to_lowercase().contains("space"), "{message}");
    // It says what happened without naming the server's files.
    let dir = disk.dir.path().to_string_lossy().into_owned();
    assert!(!message.contains(&dir), "{message}");
    assert!(!message.contains("models/"), "{message}");
    // The server still serves, lists only whole models, and the stored one is intact.
    app.assert_healthy().await;
    let (_, models) = app.get_json("/v1/models").await;
    let ids: Vec<&str> = models["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [model.as_str()]);
    let again = std::fs::read(model_file(&model)).unwrap();
    assert!(again == stored, "the stored model changed");
    let (status, _) = app
        .post_json(
            &format!("/v1/models/{model}/classify"),
            &crate::classify::test_pixels(3),
        )
        .await;
    assert_eq!(status, 200);
    // No temporary file is left behind in the models directory.
    let leftovers: Vec<_> = std::fs::read_dir(disk.dir.path().join("models"))
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".tmp-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

/// Runs `mount` with `args`, failing the test if it fails.
fn mount(args: &[&str], dir: &std::path::Path) {
    let ok = std::process::Command::new("mount")
        .args(args)
        .arg(dir)
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "mount {args:?} {}", dir.display());
}

/// Imports the bundled model under a new id: a write of 8 MB to the models directory.
async fn import(app: &crate::app::TestApp) -> (u16, serde_json::Value) {
    let r = app
        .client
        .post(app.url("/v1/models"))
        .header("content-type", "application/octet-stream")
        .body(dbn_serve::bundled::model_bytes().to_vec())
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_or_read_only_data_directory_is_not_ready_and_says_so() {
    let Some(disk) = SmallDisk::mount("40m") else {
        return;
    };
    let app = spawn_app_in(disk.dir.path()).await;
    assert_eq!(app.get("/readyz").await.status(), 200);
    let dir = disk.dir.path().to_string_lossy().into_owned();
    let no_path = |body: &serde_json::Value| {
        let message = body["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        assert!(!message.is_empty() && !message.contains(&dir), "{body}");
    };

    // The models directory made read-only (a bind mount over itself).
    let models = disk.dir.path().join("models");
    mount(&["--bind", &models.to_string_lossy()], &models);
    mount(&["-o", "remount,bind,ro"], &models);
    assert_eq!(app.get("/readyz").await.status(), 503);
    let (status, body) = import(&app).await;
    assert_eq!((status, code(&body)), (503, "storage_unwritable"), "{body}");
    no_path(&body);
    // Reads still work, and the operator's fix needs no restart.
    assert_eq!(app.get("/v1/models").await.status(), 200);
    let _ = std::process::Command::new("umount").arg(&models).status();
    assert_eq!(app.get("/readyz").await.status(), 200);

    // The disk full: a file takes every free block.
    let filler = disk.dir.path().join("filler");
    let _ = std::process::Command::new("dd")
        .args(["if=/dev/zero", "bs=1M", "count=64"])
        .arg(format!("of={}", filler.display()))
        .stderr(std::process::Stdio::null())
        .status();
    assert_eq!(app.get("/readyz").await.status(), 503);
    let (status, body) = import(&app).await;
    assert_eq!((status, code(&body)), (507, "storage_full"), "{body}");
    no_path(&body);
    let (status, body) = app.post_json("/v1/jobs", &small_spec(1)).await;
    assert_eq!((status, code(&body)), (507, "storage_full"), "{body}");
    std::fs::remove_file(&filler).unwrap();
    assert_eq!(app.get("/readyz").await.status(), 200);
    let model = app.train(&small_spec(1)).await;
    assert!(model.starts_with("model-"), "{model}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_job_fails_cleanly_and_the_worker_goes_on() {
    let app = spawn_app().await;
    let mut spec = small_spec(3);
    spec["name"] = dbn_serve::jobs::INJECT_PANIC.into();
    let id = app.submit(&spec).await;
    let job = app.wait_job(&id, is_terminal).await;
    assert_eq!(job["status"], "failed", "{job}");
    assert_eq!(code(&job), "internal", "{job}");
    let message = job["error"]["message"].as_str().unwrap();
    for leak in ["panic", ".rs", "/", "injected"] {
        assert!(
            !message.contains(leak),
            "the message leaks {leak:?}: {message}"
        );
    }
    // The checkpoint of the epoch before the panic is kept.
    assert!(app
        .data_dir()
        .join("checkpoints")
        .join(format!("{id}.ckpt"))
        .is_file());
    // Counted, still ready, and the worker takes the next job.
    let metrics = app.get("/metrics").await.text().await.unwrap();
    assert!(
        metrics.lines().any(|l| l == "dbn_job_panics_total 1"),
        "{metrics}"
    );
    let (status, _) = app.get_json("/readyz").await;
    assert_eq!(status, 200);
    app.train(&small_spec(1)).await;
}
