//! MNIST on demand: the four files downloaded from public mirrors, each checked against the
//! SHA-256 of its unpacked contents (committed below; mirrors gzip the same bytes
//! differently, so the packed files' digests differ between them), written atomically, and
//! resumed after an interruption from the same mirror.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::{Digest, Sha256};

/// Mirrors tried in turn (each is a base URL the file names are appended to).
pub const MIRRORS: &[&str] = &[
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
];

/// The four files and the SHA-256 of each one's unpacked (IDX) contents.
pub const MNIST_FILES: [(&str, &str); 4] = [
    (
        "train-images-idx3-ubyte.gz",
        "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    ),
    (
        "train-labels-idx1-ubyte.gz",
        "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    ),
    (
        "t10k-images-idx3-ubyte.gz",
        "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    ),
    (
        "t10k-labels-idx1-ubyte.gz",
        "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
    ),
];

/// The largest file accepted, packed or unpacked (MNIST's largest unpacks to 47 MB).
const MAX_BYTES: u64 = 256 << 20;

/// What to fetch, from where, into which directory.
#[derive(Debug, Clone)]
pub struct FetchPlan {
    pub dir: PathBuf,
    /// Base URLs, tried in turn for each file.
    pub mirrors: Vec<String>,
    /// (file name, SHA-256 of the unpacked contents as lowercase hex).
    pub files: Vec<(String, String)>,
    /// Draw a progress line on standard error.
    pub progress: bool,
    /// Longest wait for a mirror to connect or send more bytes.
    pub timeout: Duration,
}

impl FetchPlan {
    /// MNIST from the public mirrors into `dir`.
    pub fn mnist(dir: &Path) -> Self {
        FetchPlan {
            dir: dir.to_path_buf(),
            mirrors: MIRRORS.iter().map(|m| m.to_string()).collect(),
            files: MNIST_FILES
                .iter()
                .map(|(n, h)| (n.to_string(), h.to_string()))
                .collect(),
            progress: false,
            timeout: Duration::from_secs(30),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// Every mirror failed for a file; each failure is listed.
    #[error(
        "could not fetch {file}: {}. Offline? Copy the four MNIST files into {} by hand, or \
         name a reachable copy with --mirror",
        .failures.join("; "),
        .dir.display()
    )]
    Unavailable {
        file: String,
        dir: PathBuf,
        failures: Vec<String>,
    },
    #[error("{}: {source}", .path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("no mirror to fetch from")]
    NoMirror,
}

/// What happened to one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fetched {
    /// It was there already, with the right contents.
    Present(String),
    /// Downloaded from this URL.
    Downloaded { file: String, url: String },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> FetchError + '_ {
    move |source| FetchError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Whether every file of `plan` is in its directory with the right contents.
pub fn is_complete(plan: &FetchPlan) -> bool {
    plan.files
        .iter()
        .all(|(name, sha)| unpacked_digest(&plan.dir.join(name)).is_ok_and(|d| d == *sha))
}

/// Fetches every file of `plan` that is missing or wrong.
pub async fn fetch(plan: &FetchPlan) -> Result<Vec<Fetched>, FetchError> {
    if plan.mirrors.is_empty() {
        return Err(FetchError::NoMirror);
    }
    std::fs::create_dir_all(&plan.dir).map_err(io(&plan.dir))?;
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::builder()
        .connect_timeout(plan.timeout)
        .read_timeout(plan.timeout)
        .build()
        .map_err(|e| FetchError::Unavailable {
            file: "MNIST".into(),
            dir: plan.dir.clone(),
            failures: vec![format!("HTTP client: {e}")],
        })?;
    let mut done = Vec::new();
    for (name, sha) in &plan.files {
        let target = plan.dir.join(name);
        if unpacked_digest(&target).is_ok_and(|d| d == *sha) {
            done.push(Fetched::Present(name.clone()));
            continue;
        }
        let mut failures = Vec::new();
        let mut fetched = None;
        for mirror in &plan.mirrors {
            let url = format!("{}/{name}", mirror.trim_end_matches('/'));
            match fetch_one(&client, plan, &url, name, sha).await {
                Ok(()) => {
                    fetched = Some(url);
                    break;
                }
                Err(e) => {
                    tracing::warn!("{url}: {e}");
                    failures.push(format!("{url}: {e}"));
                }
            }
        }
        match fetched {
            Some(url) => done.push(Fetched::Downloaded {
                file: name.clone(),
                url,
            }),
            None => {
                return Err(FetchError::Unavailable {
                    file: name.clone(),
                    dir: plan.dir.clone(),
                    failures,
                })
            }
        }
    }
    Ok(done)
}

/// The partial download of `name` from `url`: one per mirror, since mirrors' bytes differ.
fn part_path(dir: &Path, name: &str, url: &str) -> PathBuf {
    let tag = Sha256::digest(url.as_bytes());
    dir.join(format!(
        ".{name}.{:02x}{:02x}{:02x}{:02x}.part",
        tag[0], tag[1], tag[2], tag[3]
    ))
}

/// Downloads one file from one URL into its partial file (resuming it when the mirror
/// allows), checks it, and renames it into place. A file whose contents are wrong is removed;
/// a download cut short is kept to resume.
async fn fetch_one(
    client: &reqwest::Client,
    plan: &FetchPlan,
    url: &str,
    name: &str,
    sha: &str,
) -> Result<(), String> {
    let part = part_path(&plan.dir, name, url);
    let have = std::fs::metadata(&part).map_or(0, |m| m.len());
    let mut request = client.get(url);
    if have > 0 {
        request = request.header(reqwest::header::RANGE, format!("bytes={have}-"));
    }
    let mut response = request.send().await.map_err(|e| e.to_string())?;
    let status = response.status();
    let mut file = match status.as_u16() {
        206 => std::fs::OpenOptions::new().append(true).open(&part),
        200 => std::fs::File::create(&part),
        // The partial file is complete already: check it below.
        416 if have > 0 => std::fs::OpenOptions::new().append(true).open(&part),
        _ => return Err(format!("HTTP {status}")),
    }
    .map_err(|e| format!("{}: {e}", part.display()))?;
    let mut written = if status.as_u16() == 200 { 0 } else { have };
    let total = response.content_length().map(|n| n + written);
    if total.is_some_and(|t| t > MAX_BYTES) {
        return Err(format!(
            "{} bytes is too large for an MNIST file",
            total.unwrap_or(0)
        ));
    }
    if status.as_u16() != 416 {
        while let Some(chunk) = response.chunk().await.map_err(|e| e.to_string())? {
            written += chunk.len() as u64;
            if written > MAX_BYTES {
                let _ = std::fs::remove_file(&part);
                return Err("more bytes than any MNIST file has".into());
            }
            file.write_all(&chunk)
                .map_err(|e| format!("{}: {e}", part.display()))?;
            if plan.progress {
                draw_progress(name, written, total);
            }
        }
        if plan.progress {
            eprintln!();
        }
    }
    file.sync_all()
        .map_err(|e| format!("{}: {e}", part.display()))?;
    drop(file);
    match unpacked_digest(&part) {
        Ok(d) if d == sha => {}
        Ok(d) => {
            let _ = std::fs::remove_file(&part);
            return Err(format!(
                "checksum mismatch (unpacked SHA-256 {d}, expected {sha}); the download was removed"
            ));
        }
        Err(e) => {
            let _ = std::fs::remove_file(&part);
            return Err(format!("not a gzip file ({e}); the download was removed"));
        }
    }
    let target = plan.dir.join(name);
    std::fs::rename(&part, &target).map_err(|e| format!("{}: {e}", target.display()))?;
    if let Ok(d) = std::fs::File::open(&plan.dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

fn draw_progress(name: &str, written: u64, total: Option<u64>) {
    let mb = written as f64 / 1e6;
    match total {
        Some(t) if t > 0 => {
            let share = written as f64 / t as f64;
            let bar = (share * 30.0) as usize;
            eprint!(
                "\r{name} [{}{}] {:5.1}% {mb:.1} MB",
                "#".repeat(bar.min(30)),
                " ".repeat(30 - bar.min(30)),
                share * 100.0
            );
        }
        _ => eprint!("\r{name} {mb:.1} MB"),
    }
    let _ = std::io::stderr().flush();
}

/// SHA-256 (lowercase hex) of the gunzipped contents of `path`, reading at most `MAX_BYTES`.
pub fn unpacked_digest(path: &Path) -> std::io::Result<String> {
    let file = std::fs::File::open(path)?;
    let mut gz = flate2::read::GzDecoder::new(file).take(MAX_BYTES);
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = gz.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_committed_digests_are_those_of_the_unpacked_files() {
        // The real files, where this machine has them (the shared data directory).
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data/mnist");
        if !dir.join(MNIST_FILES[0].0).exists() {
            eprintln!("SKIPPED: no MNIST at {}", dir.display());
            return;
        }
        assert!(is_complete(&FetchPlan::mnist(&dir)));
    }
}
