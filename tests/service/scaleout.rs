//! Several replicas of the real binary over one PostgreSQL job database and one S3 bucket
//! (see `tests/common/scaleout.rs` for the services): an API replica and a worker replica
//! split the work, events and cancels cross between them, and a replica killed mid-job has
//! its job finished by another from the checkpoint in the bucket.

#[path = "../common/scaleout.rs"]
mod services;

use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::crash::{kill, start_with, submit, wait as wait_job};

/// The environment of replicas sharing a fresh database and a fresh bucket; the database
/// goes when this does.
struct Shared {
    env: Vec<(String, String)>,
    _database: services::TestDatabase,
}

impl std::ops::Deref for Shared {
    type Target = [(String, String)];
    fn deref(&self) -> &Self::Target {
        &self.env
    }
}

async fn shared_stores(admin: &str, endpoint: &str) -> Shared {
    let database = services::fresh_database(admin);
    Shared {
        env: services::env(&database, &services::fresh_bucket(endpoint).await, endpoint),
        _database: database,
    }
}

/// A replica's process and its local data directory: dropping it stops the process (if a
/// test has not already) and removes the directory, also when the test fails.
struct Replica {
    child: Child,
    _dir: tempfile::TempDir,
}

impl std::ops::Deref for Replica {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.child
    }
}

impl std::ops::DerefMut for Replica {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.child
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts a replica with the shared stores, a fresh local data directory and `extra` settings.
fn replica(shared: &[(String, String)], extra: &[(&str, &str)]) -> (Replica, String) {
    let dir = tempfile::tempdir().unwrap();
    let mut env: Vec<(&str, &str)> = shared
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    env.push(("DBN_LOG", "warn"));
    env.extend_from_slice(extra);
    let (child, base) = start_with(dir.path(), &env, Stdio::inherit());
    (Replica { child, _dir: dir }, base)
}

async fn get(client: &reqwest::Client, url: String) -> Value {
    let r = client.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 200, "{url}");
    r.json().await.unwrap()
}

/// The job ended once: succeeded on its `attempts`-th claim with all of its `epochs` recorded
/// once, and exactly one model in the store.
async fn assert_ran_once(
    client: &reqwest::Client,
    base: &str,
    id: &str,
    attempts: u64,
    epochs: usize,
) {
    let done = wait_job(client, base, id, crate::app::is_terminal).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["attempts"], attempts, "{done}");
    assert_eq!(done["history"].as_array().unwrap().len(), epochs, "{done}");
    let listed = get(client, format!("{base}/v1/models")).await;
    assert_eq!(listed["models"].as_array().unwrap().len(), 1, "{listed}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_replica_and_a_worker_replica_share_jobs_events_and_models() {
    let Some((admin, endpoint)) = services::services("api_and_worker_replicas") else {
        return;
    };
    let shared = shared_stores(&admin, &endpoint).await;
    let client = crate::common::http_client();
    // The API replica installs the bundled model into the bucket, aliased `default`.
    let (mut api, api_base) = replica(
        &shared,
        &[("DBN_ROLE", "api"), ("DBN_DEFAULT_MODEL", "true")],
    );
    // The API replica trains nothing: a job waits in the queue until a worker comes.
    let blocker = submit(
        &client,
        &api_base,
        &json!({"architecture": {"hidden": [500], "labels_in_top": false},
                "pretrain": {"epochs": 500}}),
    )
    .await;
    // A dataset uploaded through the API replica is what the worker replica trains on.
    let form = crate::common::fixture_upload(true);
    let r = client
        .post(format!("{api_base}/v1/datasets?name=digits"))
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    let mut spec = crate::app::small_spec(3);
    spec["dataset"] = "digits".into();
    let id = submit(&client, &api_base, &spec).await;
    let events = client
        .get(format!("{api_base}/v1/jobs/{id}/events"))
        .send()
        .await
        .unwrap();
    assert_eq!(events.status(), 200);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let queued = get(&client, format!("{api_base}/v1/jobs/{blocker}")).await;
    assert_eq!(queued["status"], "queued", "{queued}");

    let (mut worker, worker_base) = replica(&shared, &[("DBN_ROLE", "worker")]);
    // The worker serves its probes and metrics, not the API.
    let ready = client
        .get(format!("{worker_base}/readyz"))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
    let refused = client
        .get(format!("{worker_base}/v1/jobs"))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 404);
    // Cancelled through the API replica while the worker replica runs it.
    wait_job(&client, &api_base, &blocker, |j| j["status"] == "running").await;
    let r = client
        .post(format!("{api_base}/v1/jobs/{blocker}/cancel"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let cancelled = wait_job(&client, &api_base, &blocker, crate::app::is_terminal).await;
    assert_eq!(cancelled["status"], "cancelled", "{cancelled}");

    // The API replica's stream saw the worker's events: start, epochs, progress, end.
    let events = crate::app::read_events(events).await;
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        (names[0], &events[0].1["status"]),
        ("status", &json!("queued"))
    );
    assert!(events
        .iter()
        .any(|(n, e)| n == "status" && e["status"] == "running"));
    assert_eq!(
        names.iter().filter(|n| **n == "epoch").count(),
        6,
        "{names:?}"
    );
    assert!(names.contains(&"progress"));
    let (last, end) = events.last().unwrap();
    assert_eq!(
        (last.as_str(), &end["status"]),
        ("status", &json!("succeeded"))
    );

    // The model the worker stored in the bucket classifies through the API replica.
    let model = end["model_id"].as_str().unwrap();
    let pixels = vec![vec![0.5f32; 784]; 4];
    let r = client
        .post(format!("{api_base}/v1/models/{model}/classify"))
        .json(&json!({ "pixels": pixels }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let answer: Value = r.json().await.unwrap();
    assert_eq!(answer["predictions"].as_array().unwrap().len(), 4);
    let card = get(&client, format!("{api_base}/v1/models/{model}")).await;
    assert_eq!(card["provenance"]["dataset"], "digits");
    assert!(card["metrics"]["test_error"].as_f64().is_some(), "{card}");
    // Aliases live in the bucket: `default` names the bundled model, and moving it is seen.
    let alias = get(&client, format!("{api_base}/v1/aliases/default")).await;
    assert_eq!(alias["model_id"], "mnist-dbn-default", "{alias}");
    let r = client
        .put(format!("{api_base}/v1/aliases/default"))
        .json(&json!({ "model_id": model }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let shown = get(&client, format!("{api_base}/v1/models/default")).await;
    assert_eq!(shown["id"], json!(model));
    kill(&mut worker);
    kill(&mut api);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_killed_mid_job_has_its_job_finished_by_another() {
    let Some((admin, endpoint)) = services::services("replica_killed_mid_job") else {
        return;
    };
    let shared = shared_stores(&admin, &endpoint).await;
    let client = crate::common::http_client();
    let lease = [("DBN_LEASE_SECS", "2")];
    let (mut first, first_base) = replica(&shared, &lease);
    let spec =
        json!({"architecture": {"hidden": [300, 300]}, "pretrain": {"epochs": 10}, "seed": 11});
    let id = submit(&client, &first_base, &spec).await;
    let before = wait_job(&client, &first_base, &id, |j| {
        j["history"].as_array().is_some_and(|h| h.len() >= 3)
    })
    .await;
    let (mut second, second_base) = replica(&shared, &lease);
    kill(&mut first);

    // The second replica takes the job over when the lease lapses and resumes it from the
    // checkpoint in the bucket: the epochs before the kill are the first attempt's.
    let done = wait_job(&client, &second_base, &id, crate::app::is_terminal).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["attempts"], 2, "{done}");
    assert_eq!(done["history"].as_array().unwrap().len(), 20);
    assert_eq!(done["history"][0], before["history"][0], "{done}");
    let model = done["model_id"].as_str().unwrap();
    let listed = get(&client, format!("{second_base}/v1/models")).await;
    let ids: Vec<&str> = listed["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [model]);

    // A replica started now finds the model in the bucket; a delete on one is seen by the other.
    let (mut third, third_base) = replica(&shared, &[("DBN_MODEL_REFRESH_SECS", "1")]);
    get(&client, format!("{third_base}/v1/models/{model}")).await;
    let r = client
        .delete(format!("{second_base}/v1/models/{model}"))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = client
            .get(format!("{third_base}/v1/models/{model}"))
            .send()
            .await
            .unwrap();
        if r.status() == 404 {
            break;
        }
        assert!(Instant::now() < deadline, "the delete was never noticed");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    kill(&mut third);
    kill(&mut second);
}

/// Sends a signal to a child process (`kill -STOP`, `kill -CONT`).
fn signal(child: &Child, sig: &str) {
    let status = std::process::Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_frozen_past_its_lease_gives_the_job_up_when_it_wakes() {
    let Some((admin, endpoint)) = services::services("replica_frozen_past_its_lease") else {
        return;
    };
    let shared = shared_stores(&admin, &endpoint).await;
    let client = crate::common::http_client();
    let lease = [("DBN_LEASE_SECS", "2")];
    let (mut frozen, frozen_base) = replica(&shared, &lease);
    let spec =
        json!({"architecture": {"hidden": [300, 300]}, "pretrain": {"epochs": 12}, "seed": 5});
    let id = submit(&client, &frozen_base, &spec).await;
    wait_job(&client, &frozen_base, &id, |j| {
        j["history"].as_array().is_some_and(|h| h.len() >= 2)
    })
    .await;
    // Frozen mid-job (as a paused VM or a stalled node would be), its lease lapses and the
    // other replica takes the job over.
    signal(&frozen, "-STOP");
    let (mut other, other_base) = replica(&shared, &lease);
    let taken = wait_job(&client, &other_base, &id, |j| j["attempts"] == 2).await;
    assert_eq!(taken["status"], "running", "{taken}");
    // Woken, the first replica stops its run and records nothing: the job ends once, on the
    // other replica, with every epoch and one model.
    signal(&frozen, "-CONT");
    assert_ran_once(&client, &other_base, &id, 2, 24).await;
    // The woken replica is healthy and ready for more work.
    let ready = client
        .get(format!("{frozen_base}/readyz"))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
    kill(&mut frozen);
    kill(&mut other);
}

#[test]
fn a_role_without_a_shared_job_database_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    for role in ["api", "worker"] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_dbn-serve"))
            .args([
                "serve",
                "--addr",
                "127.0.0.1:0",
                "--role",
                role,
                "--data-dir",
            ])
            .arg(dir.path())
            .env_remove("DBN_DATABASE_URL")
            .output()
            .unwrap();
        assert!(!out.status.success(), "{role}: {out:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("DBN_DATABASE_URL"), "{role}: {err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_the_model_store_is_gone_uploads_get_503_and_jobs_wait_for_it() {
    let Some((admin, endpoint)) = services::services("model_store_gone") else {
        return;
    };
    let shared = shared_stores(&admin, &endpoint).await;
    let store_url = shared
        .iter()
        .find(|(k, _)| k == "DBN_MODEL_STORE")
        .unwrap()
        .1
        .clone();
    let client = crate::common::http_client();
    let (mut server, base) = replica(&shared, &[]);
    services::bucket(&endpoint, &store_url, reqwest::Method::DELETE).await;

    let form = crate::common::fixture_upload(false);
    let r = client
        .post(format!("{base}/v1/datasets?name=digits"))
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "store_unavailable", "{body}");

    // A job trains, cannot store its model, and goes back to the queue rather than failing;
    // once the store is back it succeeds.
    let id = submit(&client, &base, &crate::app::small_spec(1)).await;
    let retried = wait_job(&client, &base, &id, |j| j["attempts"].as_u64() >= Some(2)).await;
    assert!(!crate::app::is_terminal(&retried), "{retried}");
    services::bucket(&endpoint, &store_url, reqwest::Method::PUT).await;
    let done = wait_job(&client, &base, &id, crate::app::is_terminal).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    let model = done["model_id"].as_str().unwrap();
    get(&client, format!("{base}/v1/models/{model}")).await;
    kill(&mut server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_model_object_answers_its_own_server_error_not_a_client_error() {
    let Some((admin, endpoint)) = services::services("damaged_model_object") else {
        return;
    };
    let shared = shared_stores(&admin, &endpoint).await;
    let store_url = &shared
        .iter()
        .find(|(k, _)| k == "DBN_MODEL_STORE")
        .unwrap()
        .1;
    let client = crate::common::http_client();
    let (mut server, base) = replica(&shared, &[]);
    // Something else wrote a truncated file where a model object belongs.
    let key = store_url.trim_start_matches("s3://");
    let object = format!(
        "{}/{key}/models/model-damaged01.safetensors",
        endpoint.trim_end_matches('/')
    );
    let put = reqwest::Client::new()
        .put(&object)
        .body(b"\x10\x00\x00\x00\x00\x00\x00\x00{\"a\":".to_vec())
        .send()
        .await
        .unwrap();
    assert!(put.status().is_success(), "{}", put.status());

    let r = client
        .get(format!("{base}/v1/models/model-damaged01"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 500);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "store_corrupt", "{body}");
    assert!(!body.to_string().contains("models-under-test"), "{body}");
    // The rest of the store still serves.
    get(&client, format!("{base}/v1/models")).await;
    kill(&mut server);
}

/// Two workers in one replica, and a heartbeat outage longer than the lease (the lease lapsed
/// in SQL): the replica's idle worker claims the job again, and the first run, fenced by its
/// claim number, stops without recording anything. The job ends once, with every epoch and
/// one model.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_worker_of_the_same_replica_takes_a_lapsed_job_and_the_first_run_is_fenced() {
    let Some((admin, endpoint)) = services::services("own_lapsed_job_service") else {
        return;
    };
    let shared = shared_stores(&admin, &endpoint).await;
    let client = crate::common::http_client();
    // A long lease: only the lapse below, not the heartbeat, hands the job over.
    let (mut server, base) = replica(&shared, &[("DBN_WORKERS", "2"), ("DBN_LEASE_SECS", "60")]);
    // Long enough (about 10 s here) for the takeover below to happen mid-run.
    let spec =
        json!({"architecture": {"hidden": [300, 300]}, "pretrain": {"epochs": 60}, "seed": 5});
    let id = submit(&client, &base, &spec).await;
    wait_job(&client, &base, &id, |j| {
        j["history"].as_array().is_some_and(|h| h.len() >= 2)
    })
    .await;
    let url = shared._database.url.clone();
    // The running job renews its lease with every progress write, so the outage is
    // simulated by lapsing the lease again and again until the replica's idle worker (which
    // looks every half second) claims the job.
    let claimed = tokio::task::spawn_blocking(move || {
        let mut db = postgres::Client::connect(&url, postgres::NoTls).unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            // Only the first claim's lease is lapsed: once the idle worker holds the job, its
            // lease stands, or the fenced worker, idle again, could take the job a third time.
            let lapsed = db
                .execute(
                    "UPDATE dbn_jobs SET lease_expires_at = clock_timestamp() - interval '1 second' \
                     WHERE status = 'running' AND attempts = 1",
                    &[],
                )
                .unwrap();
            if lapsed == 0 {
                let row = db
                    .query_one("SELECT status, attempts FROM dbn_jobs", &[])
                    .unwrap();
                let (status, attempts): (String, i32) = (row.get(0), row.get(1));
                assert!(
                    attempts >= 2,
                    "the job ended ({status}) before the idle worker took it"
                );
                return true;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        false
    })
    .await
    .unwrap();
    assert!(claimed, "the idle worker never claimed the lapsed job");
    let taken = wait_job(&client, &base, &id, |j| j["attempts"] == 2).await;
    assert_eq!(taken["status"], "running", "{taken}");
    // Every epoch once: the fenced run's epochs after the takeover were not recorded.
    assert_ran_once(&client, &base, &id, 2, 120).await;
    let ready = client.get(format!("{base}/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    kill(&mut server);
}

/// A TCP proxy to `target` that can be cut: while down, it closes every connection it
/// accepts, as a bucket behind a failed network would look. Returns its URL and its switch.
async fn switchable_proxy(target: &str) -> (String, std::sync::Arc<std::sync::atomic::AtomicBool>) {
    use std::sync::atomic::{AtomicBool, Ordering};
    let target = target
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let up = std::sync::Arc::new(AtomicBool::new(true));
    let switch = up.clone();
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            if !up.load(Ordering::SeqCst) {
                drop(inbound);
                continue;
            }
            let target = target.clone();
            tokio::spawn(async move {
                if let Ok(mut outbound) = tokio::net::TcpStream::connect(&target).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    });
    (format!("http://{addr}"), switch)
}

/// A worker that must fetch an uploaded dataset from the bucket while the bucket is out of
/// reach tries again with backoff, then puts the job back in the queue instead of failing it;
/// once the bucket is back the job trains on that dataset and succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dataset_fetch_that_fails_is_retried_and_the_job_waits_for_the_bucket() {
    use std::sync::atomic::Ordering;
    let Some((admin, endpoint)) = services::services("dataset_fetch_retried") else {
        return;
    };
    let shared = shared_stores(&admin, &endpoint).await;
    let client = crate::common::http_client();
    let (mut api, api_base) = replica(&shared, &[("DBN_ROLE", "api")]);
    let form = crate::common::fixture_upload(false);
    let r = client
        .post(format!("{api_base}/v1/datasets?name=digits"))
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);

    // The worker reaches the bucket through a proxy that is cut before the job comes.
    let (proxy, up) = switchable_proxy(&endpoint).await;
    let mut worker_env: Vec<(String, String)> = shared
        .iter()
        .filter(|(k, _)| k != "AWS_ENDPOINT")
        .cloned()
        .collect();
    worker_env.push(("AWS_ENDPOINT".into(), proxy));
    let (mut worker, _) = replica(&worker_env, &[("DBN_ROLE", "worker")]);
    up.store(false, Ordering::SeqCst);
    let mut spec = crate::app::small_spec(1);
    spec["dataset"] = "digits".into();
    let id = submit(&client, &api_base, &spec).await;
    let waiting = wait_job(&client, &api_base, &id, |j| {
        j["attempts"].as_u64() >= Some(2)
    })
    .await;
    assert!(!crate::app::is_terminal(&waiting), "{waiting}");
    up.store(true, Ordering::SeqCst);
    let done = wait_job(&client, &api_base, &id, crate::app::is_terminal).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    let model = done["model_id"].as_str().unwrap();
    let card = get(&client, format!("{api_base}/v1/models/{model}")).await;
    assert_eq!(card["provenance"]["dataset"], "digits", "{card}");
    kill(&mut worker);
    kill(&mut api);
}

/// PostgreSQL drops every connection of the job database mid-job, three times (as a restart
/// of the server looks to its clients): the replica reconnects, the job goes on or resumes,
/// and it ends once, with every epoch and one model.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_survives_the_database_dropping_its_connections() {
    let Some((admin, endpoint)) = services::services("database_connections_dropped") else {
        return;
    };
    let shared = shared_stores(&admin, &endpoint).await;
    let client = crate::common::http_client();
    let (mut server, base) = replica(&shared, &[("DBN_LEASE_SECS", "4")]);
    let spec =
        json!({"architecture": {"hidden": [300, 300]}, "pretrain": {"epochs": 12}, "seed": 5});
    let id = submit(&client, &base, &spec).await;
    let url = shared._database.url.clone();
    let database = url.rsplit('/').next().unwrap().to_string();
    for epochs in [2, 8, 14] {
        wait_job(&client, &base, &id, |j| {
            crate::app::is_terminal(j) || j["history"].as_array().is_some_and(|h| h.len() >= epochs)
        })
        .await;
        let (admin, database) = (admin.clone(), database.clone());
        let dropped = tokio::task::spawn_blocking(move || {
            let mut db = postgres::Client::connect(&admin, postgres::NoTls).unwrap();
            db.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                 WHERE datname = $1 AND pid <> pg_backend_pid()",
                &[&database],
            )
            .unwrap()
        })
        .await
        .unwrap();
        assert!(dropped >= 1, "the replica held connections to drop");
    }
    // Dropped connections fail the calls that use them, not the claim: one attempt.
    assert_ran_once(&client, &base, &id, 1, 24).await;
    let ready = client.get(format!("{base}/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    kill(&mut server);
}
