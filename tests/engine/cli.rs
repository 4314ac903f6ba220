//! The command line end to end on the committed MNIST subset: train, eval, sample.

use crate::common;

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
    // Accuracy is the job of tests/engine/training.rs; here the report must agree with itself.
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

    // AIS reports the estimate and the spread of its runs' own estimates around it.
    let out = dbn_serve()
        .args(["ais", "--json", "--runs", "20", "--steps", "300", "--model"])
        .arg(&model)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ais failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ais: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let f = |k: &str| ais[k].as_f64().unwrap_or_else(|| panic!("{k} in {ais}"));
    assert!(f("run_log_z_min") <= f("run_log_z_median"), "{ais}");
    assert!(f("run_log_z_median") <= f("run_log_z_max"), "{ais}");
    // The estimate, the log of the mean weight, lies between the smallest and largest run's.
    assert!(
        f("log_z") >= f("run_log_z_min") && f("log_z") <= f("run_log_z_max"),
        "{ais}"
    );
    assert!(f("run_log_z_std") >= 0.0);
    let effective = f("effective_runs");
    assert!((1.0..=20.0 + 1e-9).contains(&effective), "{ais}");
}

#[test]
fn a_run_stopped_mid_layer_and_resumed_saves_the_uninterrupted_model() {
    // One run straight through; another stopped after 3 epochs (inside layer 1, which has 2
    // of its own after layer 0's 2) and resumed from its checkpoint. Same model file.
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("spec.json");
    std::fs::write(
        &spec,
        r#"{"architecture": {"hidden": [30, 40]}, "pretrain": {"epochs": 2}, "train_examples": 300, "seed": 8}"#,
    )
    .unwrap();
    let path = |name: &str| dir.path().join(name);
    let train = |extra: &[&str], out: &str| {
        let mut cmd = dbn_serve();
        cmd.env("DBN_LOG", "info")
            .args(["train", "--no-test", "--spec"])
            .arg(&spec);
        cmd.arg("--out").arg(path(out)).args(extra);
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let ckpt = path("run.ckpt");
    let ckpt = ckpt.to_str().unwrap();
    train(&[], "straight.safetensors");
    train(
        &["--checkpoint", ckpt, "--stop-after-epochs", "3"],
        "never.safetensors",
    );
    assert!(
        !path("never.safetensors").exists(),
        "a stopped run saves no model"
    );
    let saved =
        dbn_serve::engine::dbn::Checkpoint::from_bytes(&std::fs::read(ckpt).unwrap()).unwrap();
    let dbn_serve::engine::dbn::Checkpoint::Greedy(saved) = saved else {
        panic!("a fine-tuning checkpoint from a run without fine-tuning")
    };
    assert_eq!((saved.layer, saved.state.next_epoch), (1, 1));
    let log = train(&["--checkpoint", ckpt, "--resume"], "resumed.safetensors");
    assert!(log.contains("resuming at layer 2, epoch 2"), "{log}");
    let (a, _) = dbn_serve::engine::persist::load(&path("straight.safetensors")).unwrap();
    let (b, _) = dbn_serve::engine::persist::load(&path("resumed.safetensors")).unwrap();
    assert_eq!(a, b);
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

#[test]
fn finetune_applies_a_spec_to_a_model_pretrained_as_it_says() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, json: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, json).unwrap();
        path
    };
    let pretrain = r#""architecture": {"hidden": [100, 200]}, "pretrain": {"epochs": 2}, "train_examples": 1000, "seed": 4"#;
    let greedy_spec = write("greedy.json", &format!("{{\"name\": \"g\", {pretrain}}}"));
    let tuned_spec = write(
        "tuned.json",
        &format!(
            r#"{{"name": "t", {pretrain}, "finetune": {{"method": "backprop", "epochs": 3, "top_only_epochs": 1}}}}"#
        ),
    );
    let other_spec = write(
        "other.json",
        r#"{"architecture": {"hidden": [100, 200]}, "pretrain": {"epochs": 3}, "seed": 4, "finetune": {"method": "backprop"}}"#,
    );
    let greedy = dir.path().join("g.safetensors");
    let tuned = dir.path().join("t.safetensors");
    let run = |args: &[&std::ffi::OsStr]| dbn_serve().args(args).output().unwrap();
    let out = run(&[
        "train".as_ref(),
        "--spec".as_ref(),
        greedy_spec.as_os_str(),
        "--out".as_ref(),
        greedy.as_os_str(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let out = run(&[
        "finetune".as_ref(),
        "--model".as_ref(),
        greedy.as_os_str(),
        "--spec".as_ref(),
        tuned_spec.as_os_str(),
        "--out".as_ref(),
        tuned.as_os_str(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = run(&[
        "eval".as_ref(),
        "--json".as_ref(),
        "--method".as_ref(),
        "discriminative".as_ref(),
        "--model".as_ref(),
        tuned.as_os_str(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["images"], 500);

    // A spec whose pretraining differs from the model's is refused.
    let out = run(&[
        "finetune".as_ref(),
        "--model".as_ref(),
        greedy.as_os_str(),
        "--spec".as_ref(),
        other_spec.as_os_str(),
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not pretrained"));

    // A fine-tuned model gets only a classifier stage, and only after the same fine-tuning.
    let out = run(&[
        "finetune".as_ref(),
        "--model".as_ref(),
        tuned.as_os_str(),
        "--spec".as_ref(),
        tuned_spec.as_os_str(),
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no classifier stage"));
    let retuned_spec = write(
        "retuned.json",
        &format!(
            r#"{{"name": "t", {pretrain}, "finetune": {{"method": "backprop", "epochs": 4, "top_only_epochs": 1}}}}"#
        ),
    );
    let out = run(&[
        "finetune".as_ref(),
        "--model".as_ref(),
        tuned.as_os_str(),
        "--spec".as_ref(),
        retuned_spec.as_os_str(),
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("fine-tuned otherwise"));
}
