//! Just enough of the W3C WebDriver protocol, over reqwest, to drive headless Chromium
//! through Debian's `chromedriver`: sessions, navigation, clicks, pointer actions, scripts
//! and screenshots. No browser is downloaded: the system's `chromium` is used, or the tests
//! that need it say they were skipped.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{json, Value};

/// The key WebDriver uses for element references.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// A chromedriver process and one browser session in it; both end on drop.
pub struct Browser {
    driver: Child,
    base: String,
    session: String,
    client: reqwest::Client,
    _profile: tempfile::TempDir,
}

/// The browser and driver binaries, when both are installed.
fn binaries() -> Option<(PathBuf, PathBuf)> {
    let find = |names: &[&str]| {
        names.iter().find_map(|name| {
            std::env::var_os("PATH").and_then(|paths| {
                std::env::split_paths(&paths)
                    .map(|dir| dir.join(name))
                    .find(|p| p.is_file())
            })
        })
    };
    let browser = std::env::var_os("DBN_CHROMIUM")
        .map(PathBuf::from)
        .or_else(|| find(&["chromium", "chromium-browser", "google-chrome"]))?;
    let driver = std::env::var_os("DBN_CHROMEDRIVER")
        .map(PathBuf::from)
        .or_else(|| find(&["chromedriver"]))?;
    Some((browser, driver))
}

/// Whether a browser that cannot run fails the test instead of skipping it (set in CI).
fn browser_required() -> bool {
    std::env::var_os("DBN_TEST_REQUIRE_BROWSER").is_some_and(|v| v != "0" && !v.is_empty())
}

impl Browser {
    /// Starts chromedriver and a headless session, or returns None (after saying so on
    /// stderr) when Chromium or chromedriver is not installed.
    pub async fn start(test: &str) -> Option<Browser> {
        let Some((browser, driver)) = binaries() else {
            assert!(
                !browser_required(),
                "{test}: DBN_TEST_REQUIRE_BROWSER is set but chromium or chromedriver is not installed"
            );
            eprintln!(
                "SKIPPED {test}: chromium and chromedriver are not installed \
                 (apt-get install chromium chromium-driver)"
            );
            return None;
        };
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let child = Command::new(&driver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let client = crate::common::http_client();
        let base = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let ready = client.get(format!("{base}/status")).send().await;
            if let Ok(r) = ready {
                let body: Value = r.json().await.unwrap_or_default();
                if body["value"]["ready"] == true {
                    break;
                }
            }
            assert!(Instant::now() < deadline, "chromedriver never became ready");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let profile = tempfile::tempdir().expect("profile directory");
        let args = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--window-size=1200,1000",
            &format!("--user-data-dir={}", profile.path().display()),
        ];
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": browser, "args": args}
        }}});
        let mut b = Browser {
            driver: child,
            base,
            session: String::new(),
            client,
            _profile: profile,
        };
        // A browser that is installed but cannot start here (no sandbox support, no shared
        // memory) is reported and skipped, unless DBN_TEST_REQUIRE_BROWSER=1 makes it a failure.
        let created = b
            .client
            .post(format!("{}/session", b.base))
            .json(&caps)
            .send()
            .await
            .expect("chromedriver answers");
        let ok = created.status().is_success();
        let created: Value = created.json().await.unwrap_or_default();
        match created["value"]["sessionId"].as_str() {
            Some(id) if ok => b.session = id.to_string(),
            _ => {
                let why = created["value"]["message"].as_str().unwrap_or("no session");
                assert!(!browser_required(), "{test}: Chromium did not start: {why}");
                eprintln!("SKIPPED {test}: Chromium is installed but did not start: {why}");
                return None;
            }
        }
        Some(b)
    }

    /// One WebDriver command; panics with the driver's message on an error.
    async fn call(&self, method: &str, path: &str, body: Value) -> Value {
        let url = format!("{}{path}", self.base);
        let request = match method {
            "GET" => self.client.get(url),
            "DELETE" => self.client.delete(url),
            _ => self.client.post(url).json(&body),
        };
        let response = request.send().await.expect("chromedriver answers");
        let status = response.status();
        let value: Value = response.json().await.expect("a JSON answer");
        assert!(status.is_success(), "WebDriver {method} {path}: {value}");
        value["value"].clone()
    }

    async fn session_call(&self, method: &str, path: &str, body: Value) -> Value {
        let path = format!("/session/{}{path}", self.session);
        self.call(method, &path, body).await
    }

    pub async fn goto(&self, url: &str) {
        self.session_call("POST", "/url", json!({ "url": url }))
            .await;
    }

    /// The reference of the element `css` selects.
    pub async fn find(&self, css: &str) -> String {
        let found = self
            .session_call(
                "POST",
                "/element",
                json!({"using": "css selector", "value": css}),
            )
            .await;
        found[ELEMENT].as_str().expect("an element").to_string()
    }

    pub async fn click(&self, css: &str) {
        let id = self.find(css).await;
        self.session_call("POST", &format!("/element/{id}/click"), json!({}))
            .await;
    }

    /// Runs `script` (a function body; `arguments` holds `args`) and returns its result.
    pub async fn eval(&self, script: &str, args: Value) -> Value {
        self.session_call(
            "POST",
            "/execute/sync",
            json!({"script": script, "args": args}),
        )
        .await
    }

    /// Waits up to `secs` seconds for `script` to return something truthy, and returns it.
    pub async fn wait_for(&self, what: &str, script: &str, secs: u64) -> Value {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let v = self.eval(script, json!([])).await;
            let truthy = !(v.is_null() || v == false || v == "" || v == 0);
            if truthy {
                return v;
            }
            assert!(Instant::now() < deadline, "waited {secs} s for {what}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Drags the mouse through `points`, offsets in CSS pixels from the centre of `css`.
    pub async fn draw(&self, css: &str, points: &[(i64, i64)]) {
        let id = self.find(css).await;
        let origin = json!({ ELEMENT: id });
        let mut actions = Vec::new();
        for (i, &(x, y)) in points.iter().enumerate() {
            actions.push(
                json!({"type": "pointerMove", "duration": if i == 0 { 0 } else { 40 },
                                "origin": origin, "x": x, "y": y}),
            );
            if i == 0 {
                actions.push(json!({"type": "pointerDown", "button": 0}));
            }
        }
        actions.push(json!({"type": "pointerUp", "button": 0}));
        let body = json!({"actions": [{"type": "pointer", "id": "mouse",
            "parameters": {"pointerType": "mouse"}, "actions": actions}]});
        self.session_call("POST", "/actions", body).await;
    }

    /// Resizes the browser window (CSS pixels).
    pub async fn resize(&self, width: u32, height: u32) {
        self.session_call(
            "POST",
            "/window/rect",
            json!({"width": width, "height": height}),
        )
        .await;
    }

    /// Saves a screenshot of the window as `dir/name.png`.
    pub async fn screenshot(&self, dir: &Path, name: &str) {
        let data = self.session_call("GET", "/screenshot", Value::Null).await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(data.as_str().expect("base64"))
            .expect("a PNG");
        std::fs::create_dir_all(dir).expect("screenshot directory");
        std::fs::write(dir.join(format!("{name}.png")), png).expect("screenshot written");
    }
}

impl Drop for Browser {
    /// Ends the session (so chromedriver closes Chromium), then the driver. Blocking and
    /// best-effort, so that a failing test leaves no browser behind either.
    fn drop(&mut self) {
        use std::io::{Read, Write};
        let host = self.base.trim_start_matches("http://");
        if let Ok(mut s) = std::net::TcpStream::connect(host) {
            let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
            let request = format!(
                "DELETE /session/{} HTTP/1.1\r\nHost: {host}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                self.session
            );
            if s.write_all(request.as_bytes()).is_ok() {
                let _ = s.read_to_end(&mut Vec::new());
            }
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
