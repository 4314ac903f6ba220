//! The page at `/` in a real browser (headless Chromium over WebDriver) against the real
//! server: draw a digit and get a prediction, train a model and watch it, dream. Screenshots
//! of each view go to `target/browser-screenshots/` (or `$DBN_SCREENSHOT_DIR`). Without
//! Chromium and chromedriver installed, each test prints that it was skipped.

use std::path::PathBuf;

use serde_json::json;

use crate::app::{small_spec, spawn_app, spawn_app_with, TestApp};
use crate::webdriver::Browser;

fn screenshots() -> PathBuf {
    std::env::var_os("DBN_SCREENSHOT_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/browser-screenshots")
        })
}

/// Draws a "7" on the pad: a bar along the top, then down to the lower left.
async fn draw_seven(browser: &Browser) {
    browser
        .draw(
            "#pad",
            &[
                (-70, -90),
                (-20, -92),
                (30, -92),
                (70, -90),
                (40, -20),
                (10, 40),
                (-10, 100),
            ],
        )
        .await;
}

/// The page with a model in the server, the model selected.
async fn open_page(app: &TestApp, browser: &Browser) -> String {
    open_page_with(app, browser, &small_spec(3)).await
}

/// The page with a model trained from `spec` in the server, the model selected.
async fn open_page_with(app: &TestApp, browser: &Browser, spec: &serde_json::Value) -> String {
    let model = app.train(spec).await;
    browser.goto(&app.url("/")).await;
    browser
        .wait_for(
            "the model list",
            &format!("return document.getElementById('model').value === '{model}';"),
            20,
        )
        .await;
    model
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drawing_a_digit_shows_a_prediction_and_ten_probabilities() {
    let Some(browser) = Browser::start("browser: classify").await else {
        return;
    };
    let app = spawn_app().await;
    open_page(&app, &browser).await;
    draw_seven(&browser).await;
    let shown = browser
        .wait_for(
            "a prediction",
            "const p = document.getElementById('predicted').textContent;
             return /^[0-9]$/.test(p) ? p : null;",
            20,
        )
        .await;
    let bars = browser
        .eval(
            "return [...document.querySelectorAll('#bars li .value')]
                 .map(e => parseFloat(e.textContent));",
            json!([]),
        )
        .await;
    let values: Vec<f64> = bars
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    assert_eq!(values.len(), 10, "{bars}");
    let total: f64 = values.iter().sum();
    assert!(
        (total - 100.0).abs() < 1.0,
        "probabilities sum to {total} %"
    );
    // The label shown is the one with the largest bar.
    let best = values
        .iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map(|(d, _)| d.to_string())
        .unwrap();
    assert_eq!(shown, best);
    browser.screenshot(&screenshots(), "classify").await;

    // On a phone-sized window nothing sticks out sideways and the pad still fits.
    browser.resize(390, 844).await;
    let fits = browser
        .wait_for(
            "the narrow layout",
            "const d = document.documentElement;
             const pad = document.getElementById('pad').getBoundingClientRect();
             return d.scrollWidth <= window.innerWidth && pad.right <= window.innerWidth
                 ? [d.scrollWidth, window.innerWidth] : null;",
            3,
        )
        .await;
    eprintln!("phone layout: scroll width {fits}");
    browser.screenshot(&screenshots(), "classify-phone").await;
    browser.resize(1200, 1000).await;

    // Clearing empties the prediction.
    browser.click("#clear").await;
    let cleared = browser
        .eval(
            "return document.getElementById('predicted').textContent;",
            json!([]),
        )
        .await;
    assert_eq!(cleared, "–");
}

/// A fresh data directory: the page selects the bundled model by itself, reads a drawn 7 and
/// shows generated digits, without any training.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_server_classifies_a_drawing_and_dreams_in_the_first_minute() {
    let Some(browser) = Browser::start("browser: first minute").await else {
        return;
    };
    let app = spawn_app_with(|c| c.default_model = true).await;
    browser.goto(&app.url("/")).await;
    browser
        .wait_for(
            "the default model selected",
            "return document.getElementById('model').value === 'mnist-dbn-default';",
            20,
        )
        .await;
    draw_seven(&browser).await;
    let shown = browser
        .wait_for(
            "a prediction",
            "const p = document.getElementById('predicted').textContent;
             return /^[0-9]$/.test(p) ? p : null;",
            20,
        )
        .await;
    assert_eq!(shown, "7", "the drawn 7 was read as {shown}");
    browser
        .screenshot(&screenshots(), "first-minute-classify")
        .await;
    browser.click("#tab-dream").await;
    browser
        .wait_for(
            "the samples image",
            "const i = document.getElementById('samples');
             return i.complete && i.naturalWidth > 0 ? i.naturalWidth : null;",
            30,
        )
        .await;
    browser
        .screenshot(&screenshots(), "first-minute-dream")
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_started_from_the_page_shows_progress_until_it_ends() {
    let Some(browser) = Browser::start("browser: train").await else {
        return;
    };
    let app = spawn_app().await;
    open_page(&app, &browser).await;
    browser.click("#tab-train").await;
    browser.click("#preset-quick").await;
    // Long enough to be seen moving: 3 epochs per layer and 20 of fine-tuning on 1,500 images.
    browser
        .eval(
            "const f = document.getElementById('train-form').elements;
             f.name.value = 'from-the-page'; f.epochs.value = 3; f.finetune_epochs.value = 20;
             f.train_examples.value = 2000; f.validation_examples.value = 500;",
            json!([]),
        )
        .await;
    browser.click("#train-form button[type=submit]").await;
    // The bar moves: a value strictly between 0 and 1 is seen while the job runs.
    let midway = browser
        .wait_for(
            "the progress bar to move",
            "const v = document.getElementById('job-progress').value;
             const s = document.getElementById('job-status').textContent;
             return (v > 0 && v < 1) || s === 'succeeded' ? [v, s] : null;",
            60,
        )
        .await;
    browser.screenshot(&screenshots(), "train").await;
    browser
        .wait_for(
            "the job to succeed",
            "return document.getElementById('job-status').textContent === 'succeeded';",
            120,
        )
        .await;
    assert!(midway[0].as_f64().unwrap() > 0.0, "progress seen: {midway}");
    // The chart got points, the job is listed, and its model is now selectable.
    let listed = browser
        .wait_for(
            "the job list",
            "const rows = [...document.querySelectorAll('#jobs tbody tr')].map(r => r.textContent);
             return rows.find(t => t.includes('from-the-page') && t.includes('succeeded')) || null;",
            20,
        )
        .await;
    assert!(listed.as_str().unwrap().contains("model-"), "{listed}");
    let options = browser
        .eval(
            "return [...document.getElementById('model').options].map(o => o.textContent).join('|');",
            json!([]),
        )
        .await;
    assert!(
        options.as_str().unwrap().contains("from-the-page"),
        "{options}"
    );
    let phase = browser
        .eval(
            "return document.getElementById('job-phase').textContent;",
            json!([]),
        )
        .await;
    assert!(phase.as_str().unwrap().starts_with("Done"), "{phase}");
    browser.screenshot(&screenshots(), "train-done").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dream_view_shows_samples_and_a_settling_chain() {
    let Some(browser) = Browser::start("browser: dream").await else {
        return;
    };
    let app = spawn_app().await;
    open_page(&app, &browser).await;
    browser.click("#tab-dream").await;
    browser
        .wait_for(
            "the samples image",
            "const i = document.getElementById('samples');
             return i.complete && i.naturalWidth > 0 ? i.naturalWidth : null;",
            30,
        )
        .await;
    // 20 samples, 10 per row: 10 tiles of 28 px with 1-px borders.
    let width = browser
        .eval(
            "return document.getElementById('samples').naturalWidth;",
            json!([]),
        )
        .await;
    assert_eq!(width, 10 * 29 + 1);
    browser.click("#label-buttons button:nth-child(9)").await;
    browser
        .wait_for(
            "samples of an 8",
            "return document.getElementById('dream-status').textContent.startsWith('Twenty 8s');",
            30,
        )
        .await;
    browser.click("#animate").await;
    let frames = browser
        .wait_for(
            "several frames of the chain",
            "const n = Number(document.getElementById('chain').dataset.frames || 0);
             return n >= 5 ? n : null;",
            30,
        )
        .await;
    assert!(frames.as_u64().unwrap() >= 5);
    browser.screenshot(&screenshots(), "dream").await;
    browser.click("#tab-inside").await;
    browser
        .wait_for(
            "the features image",
            "const i = document.getElementById('features');
             return i.complete && i.naturalWidth > 0;",
            30,
        )
        .await;
    browser.screenshot(&screenshots(), "inside").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sequence_model_dreams_the_rest_of_a_video() {
    let Some(browser) = Browser::start("browser: sequence").await else {
        return;
    };
    let app = spawn_app().await;
    let spec = json!({
        "name": "moving",
        "architecture": {"hidden": [32, 16], "labels_in_top": false, "visible_units": "gaussian"},
        "pretrain": {"epochs": 2, "learning_rate": 0.001, "bias_learning_rate": 0.001},
        "train_examples": 100,
        "sequence": {"order": 2, "length": 8, "moving": {"canvas": 32, "max_speed": 2}}
    });
    open_page_with(&app, &browser, &spec).await;
    browser.click("#tab-dream").await;
    browser
        .wait_for(
            "a continued video",
            "return document.getElementById('dream-status').textContent.startsWith('Held-out video');",
            30,
        )
        .await;
    // The animated PNG of 32 × 32 frames drawn four times larger.
    let width = browser
        .wait_for(
            "the animation",
            "const i = document.getElementById('samples');
             return i.complete && i.naturalWidth > 0 ? i.naturalWidth : null;",
            30,
        )
        .await;
    assert_eq!(width, json!(128));
    browser.screenshot(&screenshots(), "sequence").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_an_api_key_the_page_asks_for_it_and_then_works() {
    let Some(browser) = Browser::start("browser: api key").await else {
        return;
    };
    let app = spawn_app_with(|c| {
        c.api_key = Some("page-secret".into());
        c.api_key_for_reads = true;
    })
    .await;
    // Train through the API with the key, then open the page without it.
    let id = {
        let r = app
            .client
            .post(app.url("/v1/jobs"))
            .bearer_auth("page-secret")
            .json(&small_spec(2))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202);
        r.json::<serde_json::Value>().await.unwrap()["id"]
            .as_str()
            .unwrap()
            .to_string()
    };
    browser.goto(&app.url("/")).await;
    browser
        .wait_for(
            "the key form",
            "return !document.getElementById('key-form').hidden;",
            20,
        )
        .await;
    browser
        .eval(
            "document.getElementById('api-key').value = 'page-secret';",
            json!([]),
        )
        .await;
    browser.click("#key-form button[type=submit]").await;
    // The job's events stream through fetch with the key, so the page sees it end.
    browser.click("#tab-train").await;
    browser
        .wait_for(
            "the job in the list",
            &format!(
                "return [...document.querySelectorAll('#jobs tbody button')]
                    .some(b => b.title.includes('{id}'));"
            ),
            30,
        )
        .await;
    browser
        .eval(
            &format!(
                "[...document.querySelectorAll('#jobs tbody button')]
                    .find(b => b.title.includes('{id}')).click();"
            ),
            json!([]),
        )
        .await;
    browser
        .wait_for(
            "the job to succeed",
            "return document.getElementById('job-status').textContent === 'succeeded';",
            60,
        )
        .await;
    browser
        .wait_for(
            "a model listed with the key",
            "return document.getElementById('model').options.length > 0;",
            20,
        )
        .await;
}

/// Serves a blank HTML page on a port of its own, for as long as the test runs; returns its URL.
async fn serve_blank_page() -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut request = [0u8; 4096];
                let _ = socket.read(&mut request).await;
                let page = "<!doctype html><title>elsewhere</title><p>another site</p>";
                let answer = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: text/html\r\ncontent-length: {}\r\n\
                     connection: close\r\n\r\n{page}",
                    page.len()
                );
                let _ = socket.write_all(answer.as_bytes()).await;
            });
        }
    });
    format!("http://{addr}/")
}

/// A page on another origin (a blank page served on another port) sends the "simple"
/// requests a hostile page can send without a
/// preflight: a model import as text, a dataset upload as a form, a classification as a
/// form. None of them takes effect; the same calls from the page's own origin still work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_on_another_origin_can_neither_import_nor_upload_nor_classify() {
    let Some(browser) = Browser::start("browser: cross-site requests").await else {
        return;
    };
    let app = spawn_app().await;
    let model = app.train(&small_spec(1)).await;
    // A page that is not the server's: served on another port, so another origin.
    let elsewhere = serve_blank_page().await;
    browser.goto(&elsewhere).await;
    let send = r#"
        const [api, model] = arguments;
        const form = () => { const f = new FormData(); f.append('f', new Blob(['x'])); return f; };
        const calls = [
            fetch(api + '/v1/models', {method: 'POST', mode: 'no-cors',
                headers: {'content-type': 'text/plain'}, body: 'not a model'}),
            fetch(api + '/v1/datasets', {method: 'POST', mode: 'no-cors', body: form()}),
            fetch(api + '/v1/models/' + model + '/classify', {method: 'POST', mode: 'no-cors',
                body: form()}),
        ];
        window.crossSite = 'pending';
        Promise.allSettled(calls).then((r) => {
            window.crossSite = 'sent';
            window.crossSiteResults = JSON.stringify(r.map(x => x.status + ' ' + (x.reason || '')));
        });
        return true;
    "#;
    browser
        .eval(send, serde_json::json!([app.base, model]))
        .await;
    browser
        .wait_for("the calls", "return window.crossSite === 'sent';", 20)
        .await;
    let results = browser
        .eval("return window.crossSiteResults;", serde_json::json!([]))
        .await;
    let (_, models) = app.get_json("/v1/models").await;
    assert_eq!(
        models["models"].as_array().unwrap().len(),
        1,
        "{models} {results}"
    );
    let (_, datasets) = app.get_json("/v1/datasets").await;
    let names: Vec<&str> = datasets["datasets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["name"].as_str().unwrap())
        .collect();
    assert!(!names.iter().any(|n| *n != "mnist"), "{datasets}");
    // They reached the server and were refused there, not stopped by the browser.
    let metrics = app.get("/metrics").await.text().await.unwrap();
    for route in [
        "/v1/models".to_string(),
        "/v1/datasets".to_string(),
        "/v1/models/{id}/classify".to_string(),
    ] {
        let series = format!(
            "dbn_http_requests_total{{route=\"{route}\",method=\"POST\",status=\"403\"}} 1"
        );
        assert!(
            metrics.contains(&series),
            "{series} ({results}) in\n{metrics}"
        );
    }
    // The same page from the server's own origin classifies as before.
    browser.goto(&app.url("/")).await;
    let same = browser
        .eval(
            r#"
            const [model] = arguments;
            window.own = null;
            fetch('/v1/models/' + model + '/classify', {method: 'POST',
                headers: {'content-type': 'application/json'},
                body: JSON.stringify({pixels: [new Array(784).fill(0)]})})
              .then(r => { window.own = r.status; });
            return true;
            "#,
            serde_json::json!([model]),
        )
        .await;
    assert_eq!(same, true);
    let status = browser
        .wait_for("the page's own call", "return window.own;", 20)
        .await;
    assert_eq!(status, 200);
}

/// Without a browser: the page and its files are served from the binary, with a content
/// security policy, and stay reachable when every call needs the key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_and_its_files_are_served_without_the_key() {
    let app = spawn_app_with(|c| {
        c.api_key = Some("k".into());
        c.api_key_for_reads = true;
    })
    .await;
    for (path, kind, needle) in [
        ("/", "text/html", "id=\"pad\""),
        ("/ui/app.js", "text/javascript", "function watchJob"),
        ("/ui/app.css", "text/css", "#pad"),
    ] {
        let r = app.get(path).await;
        assert_eq!(r.status(), 200, "{path}");
        let headers = r.headers().clone();
        assert!(headers["content-type"].to_str().unwrap().starts_with(kind));
        let csp = headers["content-security-policy"].to_str().unwrap();
        assert!(csp.contains("script-src 'self'"), "{csp}");
        assert!(r.text().await.unwrap().contains(needle), "{path}");
    }
    // The API itself still wants the key.
    assert_eq!(app.get("/v1/models").await.status(), 401);
}

/// The screenshots in the README, taken from a running server with real models:
/// `DBN_PAGE_URL=http://127.0.0.1:8095 DBN_PAGE_MODEL=… DBN_PAGE_DREAM_MODEL=…
/// DBN_SCREENSHOT_DIR=docs cargo test --test service page_screenshots -- --ignored`.
/// The train view shows the newest job in the server's list.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a running server with trained models (see the doc comment)"]
async fn page_screenshots_for_the_docs() {
    let var = |name: &str| std::env::var(name).unwrap_or_else(|_| panic!("set {name}"));
    let (url, model, dream_model) = (
        var("DBN_PAGE_URL"),
        var("DBN_PAGE_MODEL"),
        var("DBN_PAGE_DREAM_MODEL"),
    );
    let Some(browser) = Browser::start("page screenshots").await else {
        return;
    };
    let select = |id: &str| {
        format!(
            "const s = document.getElementById('model');
             if (![...s.options].some(o => o.value === '{id}')) return false;
             s.value = '{id}'; s.dispatchEvent(new Event('change')); return true;"
        )
    };
    browser.goto(&format!("{url}/")).await;
    browser.wait_for("the model", &select(&model), 20).await;
    browser
        .draw(
            "#pad",
            &[
                (-60, -90),
                (-20, -92),
                (30, -92),
                (65, -88),
                (40, -20),
                (15, 40),
                (0, 100),
            ],
        )
        .await;
    browser
        .wait_for(
            "a prediction",
            "return /^[0-9]$/.test(document.getElementById('predicted').textContent);",
            20,
        )
        .await;
    browser.screenshot(&screenshots(), "page-classify").await;

    browser.click("#tab-train").await;
    browser
        .wait_for(
            "a job to watch",
            "const b = document.querySelector('#jobs tbody button'); if (b) b.click(); return !!b;",
            20,
        )
        .await;
    tokio::time::sleep(std::time::Duration::from_secs(8)).await;
    browser
        .eval(
            "document.getElementById('job').scrollIntoView();",
            json!([]),
        )
        .await;
    browser.screenshot(&screenshots(), "page-train").await;

    browser.eval("window.scrollTo(0, 0);", json!([])).await;
    browser
        .wait_for("the model", &select(&dream_model), 20)
        .await;
    browser.click("#tab-dream").await;
    browser.click("#label-buttons button:nth-child(4)").await;
    browser
        .wait_for(
            "samples of a 3",
            "return document.getElementById('dream-status').textContent.startsWith('Twenty 3s');",
            60,
        )
        .await;
    browser.click("#animate").await;
    browser
        .wait_for(
            "the chain's last frame",
            "return document.getElementById('chain-step').textContent.endsWith(' 500 steps');",
            60,
        )
        .await;
    browser.screenshot(&screenshots(), "page-dream").await;
}
