//! `mnist fetch` against mirrors on a local port serving the committed fixture files: a clean
//! fetch, a corrupted mirror, a download cut off half-way and resumed, and no mirror at all.
//! No test touches the internet.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::{Path as UrlPath, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use dbn_serve::fetch::{fetch, FetchError, FetchPlan, Fetched};
use sha2::{Digest, Sha256};

/// How the mirror misbehaves.
#[derive(Clone, Copy, PartialEq)]
enum Fault {
    None,
    /// Every file's bytes are changed (a valid gzip of other contents).
    Corrupt,
    /// The mirror's first answer stops after half its bytes.
    CutOnce,
}

#[derive(Clone)]
struct Mirror {
    dir: PathBuf,
    fault: Fault,
    served: Arc<AtomicUsize>,
    /// The Range headers received.
    ranges: Arc<Mutex<Vec<String>>>,
}

async fn serve_file(
    State(m): State<Mirror>,
    UrlPath(name): UrlPath<String>,
    headers: HeaderMap,
) -> Response {
    let Ok(mut bytes) = std::fs::read(m.dir.join(&name)) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    if m.fault == Fault::Corrupt {
        // Other contents, packed again: only the unpacked digest can tell.
        let mut raw = Vec::new();
        flate2::read::GzDecoder::new(&bytes[..])
            .read_to_end(&mut raw)
            .unwrap();
        let last = raw.len() - 1;
        raw[last] ^= 0xff;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        std::io::Write::write_all(&mut gz, &raw).unwrap();
        bytes = gz.finish().unwrap();
    }
    let first = m.served.fetch_add(1, Ordering::SeqCst) == 0;
    let start = match headers.get(header::RANGE).and_then(|v| v.to_str().ok()) {
        Some(range) => {
            m.ranges.lock().unwrap().push(range.to_string());
            range
                .strip_prefix("bytes=")
                .and_then(|r| r.strip_suffix('-'))
                .and_then(|n| n.parse::<usize>().ok())
                .unwrap_or(0)
        }
        None => 0,
    };
    if start >= bytes.len() {
        return StatusCode::RANGE_NOT_SATISFIABLE.into_response();
    }
    let total = bytes.len();
    let status = if start > 0 {
        StatusCode::PARTIAL_CONTENT
    } else {
        StatusCode::OK
    };
    let rest = bytes[start..].to_vec();
    if m.fault == Fault::CutOnce && first {
        // Promise the whole file, send half, then fail the body: the client sees a
        // connection cut mid-file.
        use futures_util::StreamExt;
        let half = rest[..rest.len() / 2].to_vec();
        // The half is sent (with the head) before the cut comes.
        let cut = futures_util::stream::once(async {
            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
            Err::<Vec<u8>, _>(std::io::Error::other("cut"))
        });
        let body = Body::from_stream(futures_util::stream::iter([Ok(half)]).chain(cut));
        return (
            status,
            [(header::CONTENT_LENGTH, rest.len().to_string())],
            body,
        )
            .into_response();
    }
    let mut response = (status, rest).into_response();
    if start > 0 {
        response.headers_mut().insert(
            header::CONTENT_RANGE,
            format!("bytes {start}-{}/{total}", total - 1)
                .parse()
                .unwrap(),
        );
    }
    response
}

/// A mirror of the fixture files on a random local port; returns its base URL.
async fn start_mirror(fault: Fault) -> (String, Mirror) {
    let mirror = Mirror {
        dir: crate::common::fixture_dir(),
        fault,
        served: Arc::new(AtomicUsize::new(0)),
        ranges: Arc::new(Mutex::new(Vec::new())),
    };
    let app = Router::new()
        .route("/mnist/{name}", get(serve_file))
        .with_state(mirror.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}/mnist/"), mirror)
}

/// SHA-256 of a gzipped file's contents, computed here rather than by the code under test.
fn unpacked_sha(path: &Path) -> String {
    let mut raw = Vec::new();
    flate2::read::GzDecoder::new(std::fs::File::open(path).unwrap())
        .read_to_end(&mut raw)
        .unwrap();
    Sha256::digest(&raw)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The fixture's four files with their digests, fetched into `dir` from `mirrors`.
fn plan(dir: &Path, mirrors: Vec<String>) -> FetchPlan {
    let files = std::fs::read_dir(crate::common::fixture_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "gz"))
        .map(|p| {
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                unpacked_sha(&p),
            )
        })
        .collect::<Vec<_>>();
    assert_eq!(files.len(), 4);
    FetchPlan {
        dir: dir.to_path_buf(),
        mirrors,
        files,
        progress: false,
        timeout: std::time::Duration::from_secs(5),
    }
}

fn leftovers(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|d| {
            d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with('.'))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetching_from_a_mirror_gives_the_files_and_a_second_fetch_downloads_nothing() {
    let (url, mirror) = start_mirror(Fault::None).await;
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("mnist");
    let plan = plan(&target, vec![url]);
    let done = fetch(&plan).await.expect("fetch");
    assert_eq!(done.len(), 4);
    assert!(done.iter().all(|d| matches!(d, Fetched::Downloaded { .. })));
    for (name, _) in &plan.files {
        assert_eq!(
            std::fs::read(target.join(name)).unwrap(),
            std::fs::read(crate::common::fixture_dir().join(name)).unwrap(),
            "{name}"
        );
    }
    assert!(leftovers(&target).is_empty(), "{:?}", leftovers(&target));
    // The files load as a dataset.
    let data = dbn_serve::engine::data::Dataset::load_mnist(
        &target,
        dbn_serve::engine::data::MnistSplit::Train,
    )
    .unwrap();
    assert!(!data.is_empty());
    let before = mirror.served.load(Ordering::SeqCst);
    let again = fetch(&plan).await.unwrap();
    assert!(again.iter().all(|d| matches!(d, Fetched::Present(_))));
    assert_eq!(mirror.served.load(Ordering::SeqCst), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupted_mirror_fails_with_a_checksum_mismatch_and_leaves_nothing_behind() {
    let (url, _) = start_mirror(Fault::Corrupt).await;
    let dir = tempfile::tempdir().unwrap();
    let e = fetch(&plan(dir.path(), vec![url])).await.unwrap_err();
    let text = e.to_string();
    assert!(matches!(e, FetchError::Unavailable { .. }), "{text}");
    assert!(text.contains("checksum mismatch"), "{text}");
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.is_empty(), "left behind: {names:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_mirror_is_passed_over_for_the_next() {
    let (bad, _) = start_mirror(Fault::Corrupt).await;
    let (good, _) = start_mirror(Fault::None).await;
    let dir = tempfile::tempdir().unwrap();
    let done = fetch(&plan(dir.path(), vec![bad, good.clone()]))
        .await
        .expect("the second mirror serves");
    assert!(done
        .iter()
        .all(|d| matches!(d, Fetched::Downloaded { url, .. } if url.starts_with(&good))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_download_resumes_where_it_stopped() {
    let (url, mirror) = start_mirror(Fault::CutOnce).await;
    let dir = tempfile::tempdir().unwrap();
    let plan = plan(dir.path(), vec![url]);
    let e = fetch(&plan).await.unwrap_err();
    assert!(matches!(e, FetchError::Unavailable { .. }), "{e}");
    // The cut file's first half is kept to resume, and no file is in place half-written.
    let parts = leftovers(dir.path());
    assert_eq!(parts.len(), 1, "{parts:?} after {e}");
    let first = &plan.files[0].0;
    assert!(!dir.path().join(first).exists());
    // The second run asks for the rest only, and every file ends whole.
    fetch(&plan).await.expect("the second run completes");
    let ranges = mirror.ranges.lock().unwrap().clone();
    assert!(
        ranges.iter().any(|r| r != "bytes=0-"),
        "no resumed request: {ranges:?}"
    );
    for (name, sha) in &plan.files {
        assert_eq!(&unpacked_sha(&dir.path().join(name)), sha);
    }
    assert!(leftovers(dir.path()).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_reachable_mirror_the_error_says_what_to_do() {
    // A port that was just free: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    let e = fetch(&plan(dir.path(), vec![format!("http://127.0.0.1:{port}/")]))
        .await
        .unwrap_err();
    let text = e.to_string();
    assert!(text.contains("Offline?"), "{text}");
    assert!(text.contains(&format!("127.0.0.1:{port}")), "{text}");
}
