//! Every training spec in `examples/` reads as a spec, and each one for the MNIST digits passes
//! the checks a job would get, so a typo in a committed recipe fails here rather than hours
//! into a benchmark.

use dbn_serve::engine::spec::{DataShape, Limits, TrainingSpec};

#[test]
fn every_example_spec_reads_and_checks() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("json") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let spec: TrainingSpec =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        if spec.dataset == "mnist" && spec.sequence.is_none() {
            if let Err(e) = spec.check(DataShape::MNIST, &Limits::default()) {
                panic!("{}: {e}", path.display());
            }
            checked += 1;
        }
    }
    assert!(
        checked >= 20,
        "only {checked} MNIST specs found in {}",
        dir.display()
    );
}
