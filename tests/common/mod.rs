//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::PathBuf;

use dbn_serve::engine::data::{Dataset, MnistSplit};
use dbn_serve::engine::observer::Silent;
use dbn_serve::engine::rbm::{train_rbm, LayerRun, Rbm, RbmTrainConfig};
use dbn_serve::engine::EngineRng;
use ndarray::ArrayView2;

/// The committed real-MNIST subset: 2,000 training and 500 test images.
pub fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/mnist-subset")
}

pub fn fixture(split: MnistSplit) -> Dataset {
    Dataset::load_mnist(&fixture_dir(), split).expect("fixture loads")
}

/// An HTTP client for the tests. The crate's reqwest brings TLS without a crypto provider
/// (the server picks ring), so one is installed first.
pub fn http_client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}

/// Trains an RBM with nobody watching.
pub fn train_quietly(
    rbm: &mut Rbm,
    data: ArrayView2<f32>,
    config: &RbmTrainConfig,
    rng: &mut EngineRng,
) {
    let mut run = LayerRun {
        resume: None,
        done: &[],
        history: &[],
        fingerprint: 0,
        phase: dbn_serve::engine::observer::Phase::Pretrain,
        layer: 0,
        layers: 1,
        fraction: (0.0, 1.0),
        validation: None,
        observer: &mut Silent,
    };
    train_rbm(rbm, data, config, &mut run, rng).expect("training succeeds");
}

/// Checks an AIS estimate of ln Z against the exact value: within `tolerance`, and inside
/// the estimate's own ±3 s.e. range. `what` names the case in the failure message.
pub fn assert_ais_matches(
    est: &dbn_serve::engine::rbm::AisEstimate,
    exact: f64,
    tolerance: f64,
    what: &str,
) {
    assert!(
        (est.log_z - exact).abs() < tolerance,
        "{what}: AIS {} against exact {exact}",
        est.log_z
    );
    assert!(
        est.log_z_low <= exact && exact <= est.log_z_high,
        "{what}: exact {exact} outside [{}, {}]",
        est.log_z_low,
        est.log_z_high
    );
}

/// The fixture's IDX files as a dataset upload (`POST /v1/datasets`): the training split, and
/// the test split when `with_test`.
pub fn fixture_upload(with_test: bool) -> reqwest::multipart::Form {
    let part = |name: &str| {
        reqwest::multipart::Part::bytes(std::fs::read(fixture_dir().join(name)).unwrap())
    };
    let form = reqwest::multipart::Form::new()
        .part("train_images", part("train-images-idx3-ubyte.gz"))
        .part("train_labels", part("train-labels-idx1-ubyte.gz"));
    if with_test {
        form.part("test_images", part("t10k-images-idx3-ubyte.gz"))
            .part("test_labels", part("t10k-labels-idx1-ubyte.gz"))
    } else {
        form
    }
}
