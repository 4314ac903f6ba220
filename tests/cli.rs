//! The command line end to end on the committed MNIST subset: train, eval, sample.

mod common;

use std::process::Command;

fn dbn_serve() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_dbn-serve"));
    cmd.env("DBN_MNIST_DIR", common::fixture_dir())
        .env("DBN_LOG", "warn");
    cmd
}

#[test]
fn train_eval_and_sample_work_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("spec.json");
    std::fs::write(
        &spec,
        r#"{"name": "cli", "architecture": {"hidden": [100, 200]}, "pretrain": {"epochs": 2}, "train_examples": 1000, "seed": 4}"#,
    )
    .unwrap();
    let model = dir.path().join("cli.safetensors");

    let out = dbn_serve()
        .args(["train", "--spec"])
        .arg(&spec)
        .arg("--out")
        .arg(&model)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "train failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(model.is_file());

    let out = dbn_serve()
        .args(["eval", "--json", "--model"])
        .arg(&model)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "eval failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["images"], 500);
    let confusion = report["confusion"].as_array().unwrap();
    assert_eq!(confusion.len(), 10);
    let total: u64 = confusion
        .iter()
        .flat_map(|r| r.as_array().unwrap())
        .map(|c| c.as_u64().unwrap())
        .sum();
    assert_eq!(
        total, 500,
        "every test image lands in the confusion matrix once"
    );
    // Accuracy is the job of tests/training.rs; here the report must agree with itself.
    let errors = report["errors"].as_u64().unwrap();
    assert!((report["error_rate"].as_f64().unwrap() - errors as f64 / 500.0).abs() < 1e-12);

    let png = dir.path().join("grid.png");
    let out = dbn_serve()
        .args([
            "sample", "--label", "3", "--count", "4", "--steps", "20", "--model",
        ])
        .arg(&model)
        .arg("--out")
        .arg(&png)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "sample failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let reader = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&png).unwrap()))
        .read_info()
        .unwrap();
    assert_eq!(
        (reader.info().width, reader.info().height),
        (4 * 29 + 1, 29 + 1)
    );
}

#[test]
fn a_run_resumed_from_its_checkpoint_saves_the_same_model() {
    // Train with checkpoints, then resume from the run's last checkpoint (end of the top
    // layer's last epoch): the model saved by the resumed run equals the first run's.
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("spec.json");
    std::fs::write(
        &spec,
        r#"{"architecture": {"hidden": [30, 40]}, "pretrain": {"epochs": 2}, "train_examples": 300, "seed": 8}"#,
    )
    .unwrap();
    let (first, second) = (
        dir.path().join("first.safetensors"),
        dir.path().join("second.safetensors"),
    );
    let checkpoint = dir.path().join("run.ckpt");
    let out = dbn_serve()
        .args(["train", "--no-test", "--spec"])
        .arg(&spec)
        .arg("--out")
        .arg(&first)
        .arg("--checkpoint")
        .arg(&checkpoint)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let saved = dbn_serve_checkpoint(&checkpoint);
    assert_eq!(
        (saved.layer, saved.state.next_epoch),
        (1, 2),
        "the last checkpoint is the end of the run"
    );
    let out = dbn_serve()
        .env("DBN_LOG", "info")
        .args(["train", "--no-test", "--resume", "--spec"])
        .arg(&spec)
        .arg("--out")
        .arg(&second)
        .arg("--checkpoint")
        .arg(&checkpoint)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("resuming at layer 2"));
    let (a, _) = dbn_serve::engine::persist::load(&first).unwrap();
    let (b, _) = dbn_serve::engine::persist::load(&second).unwrap();
    assert_eq!(a, b);
}

fn dbn_serve_checkpoint(path: &std::path::Path) -> dbn_serve::engine::dbn::Checkpoint {
    dbn_serve::engine::dbn::Checkpoint::from_bytes(&std::fs::read(path).unwrap()).unwrap()
}

#[test]
fn bad_specs_and_missing_files_fail_with_a_message() {
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("spec.json");
    std::fs::write(&spec, r#"{"architecture": {"hidden": [0]}}"#).unwrap();
    let out = dbn_serve()
        .args(["train", "--spec"])
        .arg(&spec)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("architecture.hidden[0]"));

    let out = dbn_serve()
        .args(["eval", "--model", "/nonexistent/model.safetensors"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/model.safetensors"));
}
