//! Multipart bodies through the whole server: a real `dbn-serve` on loopback (started once,
//! with a small digit model trained on the repository's MNIST subset) receives each input as
//! a `multipart/form-data` POST to image classification or dataset upload. Whatever the
//! bytes, the answer must be a complete HTTP response with a status below 500, and the server
//! must stay up.
//!
//! Input: one byte choosing the route, then the boundary up to the first `\n` (at most 70
//! bytes), then the body.
#![no_main]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::OnceLock;
use std::time::Duration;

use dbn_serve::config::ServeConfig;
use dbn_serve::engine::data::{Dataset, MnistSplit};
use dbn_serve::engine::dbn::train_model;
use dbn_serve::engine::observer::Silent;
use dbn_serve::engine::persist::{self, ModelCard};
use dbn_serve::engine::spec::{Limits, TrainingSpec};
use libfuzzer_sys::fuzz_target;

const MODEL: &str = "fuzz-digits";

static UPLOADS: AtomicU64 = AtomicU64::new(0);

fn repo() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Trains a 784-32 (+10 labels) model on 300 subset images and stores it as MODEL.
fn store_model(data_dir: &std::path::Path) {
    let fixture = repo().join("tests/fixtures/mnist-subset");
    let data = Dataset::load_mnist(&fixture, MnistSplit::Train).expect("fixture");
    let spec: TrainingSpec = serde_json::from_value(serde_json::json!({
        "architecture": {"hidden": [32]},
        "pretrain": {"epochs": 1},
        "train_examples": 300
    }))
    .unwrap();
    let mut rng = dbn_serve::engine::rng_from_seed(1);
    let outcome = train_model(&spec, &data, &Limits::default(), &mut Silent, &mut rng, None)
        .expect("trains");
    let card = ModelCard::for_training(&spec, &outcome, Some([28, 28]), 1);
    let path = data_dir.join("models").join(format!("{MODEL}.safetensors"));
    persist::save(&path, &outcome.dbn, &card).expect("saves");
}

/// The server's address, starting it on first use.
fn server() -> &'static str {
    static ADDR: OnceLock<String> = OnceLock::new();
    ADDR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("dbn-serve-fuzz-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        store_model(&dir);
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let mut config = ServeConfig::with_data_dir(&dir);
                config.addr = "127.0.0.1:0".parse().unwrap();
                config.max_body_bytes = 1 << 20;
                let fixture = repo().join("tests/fixtures/mnist-subset");
                let server = dbn_serve::http::start(config, Some(fixture)).await.unwrap();
                tx.send(server.addr.to_string()).unwrap();
                std::future::pending::<()>().await;
            });
        });
        rx.recv().expect("the server starts")
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&route, rest)) = data.split_first() else {
        return;
    };
    let cut = rest.iter().position(|&b| b == b'\n').unwrap_or(rest.len());
    let (boundary, body) = (&rest[..cut.min(70)], rest.get(cut + 1..).unwrap_or(&[]));
    // A boundary the header can carry (the body is sent as it is).
    if boundary.is_empty() || !boundary.iter().all(|b| b.is_ascii_graphic() && *b != b'"') {
        return;
    }
    let path = match route % 3 {
        0 => format!("/v1/models/{MODEL}/classify"),
        1 => format!("/v1/models/{MODEL}/classify?method=gibbs&gibbs_steps=5"),
        // A fresh name each time: an accepted upload does not turn the next into a 409.
        _ => format!("/v1/datasets?name=fuzzed-{}", UPLOADS.fetch_add(1, Relaxed)),
    };
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: fuzz\r\nContent-Type: multipart/form-data; boundary=\"{}\"\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        String::from_utf8_lossy(boundary),
        body.len()
    );
    let mut stream = TcpStream::connect(server()).expect("the server is up");
    stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    stream.set_nodelay(true).unwrap();
    let mut request = head.into_bytes();
    request.extend_from_slice(body);
    // The server may answer and close before reading everything (e.g. a 4xx on the headers).
    let _ = stream.write_all(&request);
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    let text = String::from_utf8_lossy(&response);
    let status: u16 = text
        .strip_prefix("HTTP/1.1 ")
        .and_then(|s| s.get(..3))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP response: {text:?}"));
    assert!(status < 500, "{status} for {path}: {text}");
});
