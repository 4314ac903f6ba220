//! The README's tour, run as written: every fenced block marked `sh runnable`, in order, in one
//! shell, against a fresh server with the bundled model (the README's `localhost:8080` becomes
//! the test server's address), from a directory holding the files the commands name.

use std::path::Path;
use std::process::Command;

use crate::app::spawn_app_with;

/// The bodies of the README's blocks marked `sh runnable`, in order.
fn runnable_blocks(readme: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in readme.lines() {
        match current.as_mut() {
            None if line.trim() == "```sh runnable" => current = Some(String::new()),
            None => {}
            Some(_) if line.trim() == "```" => blocks.extend(current.take()),
            Some(block) => {
                block.push_str(line);
                block.push('\n');
            }
        }
    }
    assert!(current.is_none(), "an unclosed runnable block");
    blocks
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_tour_runs_against_a_fresh_server() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    assert!(
        readme.lines().count() <= 160,
        "the README should fit on a few screens: {} lines",
        readme.lines().count()
    );
    let blocks = runnable_blocks(&readme);
    assert!(blocks.len() >= 4, "{} runnable blocks", blocks.len());

    let app = spawn_app_with(|c| c.default_model = true).await;
    let work = tempfile::tempdir().unwrap();
    for file in [
        "tests/fixtures/test-0-label-7.jpg",
        "tests/fixtures/test-1-label-2.jpg",
        "examples/quick.json",
    ] {
        let to = work.path().join(file);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(root.join(file), &to).unwrap();
    }
    let addr = app.base.trim_start_matches("http://").to_string();
    let script = blocks.join("\n").replace("localhost:8080", &addr);
    let dir = work.path().to_path_buf();
    let out = tokio::task::spawn_blocking(move || {
        Command::new("bash")
            .args(["-euo", "pipefail", "-c", &script])
            .current_dir(&dir)
            .output()
            .expect("bash runs")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the tour failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains(r#"{"name":"default","model_id":"mnist-dbn-default"}"#),
        "{stdout}"
    );
    assert!(stdout.contains(r#""label":7"#), "{stdout}");
    assert!(stdout.contains("event: status"), "{stdout}");
    for png in ["threes.png", "features.png"] {
        let bytes = std::fs::read(work.path().join(png)).unwrap();
        assert!(bytes.starts_with(b"\x89PNG"), "{png}");
    }
    // The tour leaves "default" where it found it.
    let (_, alias) = app.get_json("/v1/aliases/default").await;
    assert_eq!(alias["model_id"], "mnist-dbn-default");
}
