//! The PostgreSQL job store against a real server: several stores (as several replicas would
//! hold) over one database never claim a job twice, a lapsed lease hands the job to another
//! replica and the first learns it lost it, and migrations run once and refuse a newer schema.

#[path = "../common/scaleout.rs"]
mod scaleout;

use std::collections::HashSet;
use std::sync::{Arc, Barrier};
use std::time::Duration;

use dbn_serve::engine::observer::{Phase, Progress};
use dbn_serve::engine::spec::TrainingSpec;
use dbn_serve::store::{
    Claim, JobProgress, JobRecord, JobStatus, JobStore, PostgresJobStore, StoreError,
};

fn replica(url: &str, name: &str, lease: Duration) -> PostgresJobStore {
    PostgresJobStore::connect(url, name.into(), lease).expect("connects and migrates")
}

fn queue(store: &PostgresJobStore, ids: impl IntoIterator<Item = String>) {
    for id in ids {
        let job = JobRecord::queued(id, TrainingSpec::digit_model(), 1);
        store.insert(&job, 1000).unwrap();
    }
}

#[test]
fn replicas_racing_for_jobs_claim_each_exactly_once() {
    let Some((admin, _)) = scaleout::services("replicas_racing_for_jobs") else {
        return;
    };
    let url = scaleout::fresh_database(&admin);
    let stores: Vec<Arc<PostgresJobStore>> = (0..4)
        .map(|i| Arc::new(replica(&url, &format!("r{i}"), Duration::from_secs(60))))
        .collect();
    queue(&stores[0], (0..60).map(|i| format!("job-{i:03}")));
    let start = Arc::new(Barrier::new(stores.len()));
    let racers: Vec<_> = stores
        .iter()
        .map(|store| {
            let (store, start) = (store.clone(), start.clone());
            std::thread::spawn(move || {
                start.wait();
                let mut mine = Vec::new();
                while let Some(job) = store.claim_next(2).unwrap() {
                    assert_eq!((job.status, job.attempts), (JobStatus::Running, 1));
                    mine.push(job.id);
                }
                mine
            })
        })
        .collect();
    let claimed: Vec<Vec<String>> = racers.into_iter().map(|t| t.join().unwrap()).collect();
    let all: Vec<&String> = claimed.iter().flatten().collect();
    let distinct: HashSet<&&String> = all.iter().collect();
    assert_eq!(all.len(), 60, "{claimed:?}");
    assert_eq!(distinct.len(), 60, "a job was claimed twice: {claimed:?}");
    // Every replica finishes only what it holds.
    let first = &claimed.iter().find(|c| !c.is_empty()).unwrap()[0];
    let holder = claimed.iter().position(|c| c.contains(first)).unwrap();
    let other = (holder + 1) % stores.len();
    let first_claim = claim(first, 1);
    assert!(!stores[other]
        .finish(&first_claim, JobStatus::Failed, None, None, 3)
        .unwrap());
    assert_eq!(
        stores[0].get(first).unwrap().unwrap().status,
        JobStatus::Running
    );
    assert!(stores[holder]
        .finish(&first_claim, JobStatus::Succeeded, None, Some("m"), 3)
        .unwrap());
    assert_eq!(
        stores[0].get(first).unwrap().unwrap().status,
        JobStatus::Succeeded
    );
    let counts = stores[1].counts().unwrap();
    assert_eq!(counts[1], (JobStatus::Running, 59));
    // The queue's capacity counts every replica's jobs.
    let extra = JobRecord::queued("job-x".into(), TrainingSpec::digit_model(), 1);
    stores[2].insert(&extra, 1).unwrap();
    let more = JobRecord::queued("job-y".into(), TrainingSpec::digit_model(), 1);
    assert!(matches!(
        stores[3].insert(&more, 1),
        Err(StoreError::Full(_))
    ));
    assert!(matches!(
        stores[3].insert(&extra, 10),
        Err(StoreError::Conflict(_))
    ));
}

#[test]
fn a_lapsed_lease_moves_the_job_to_another_replica() {
    let Some((admin, _)) = scaleout::services("a_lapsed_lease") else {
        return;
    };
    let url = scaleout::fresh_database(&admin);
    let lease = Duration::from_secs(60);
    let (a, b) = (replica(&url, "a", lease), replica(&url, "b", lease));
    // Leases lapse here by decree, not by waiting: no timing to go wrong on a slow machine.
    let mut db = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    let mut lapse = |id: &str| {
        db.execute(
            "UPDATE dbn_jobs SET lease_expires_at = clock_timestamp() - interval '1 second' \
             WHERE id = $1",
            &[&id],
        )
        .unwrap();
    };
    queue(&a, ["job-1".to_string(), "job-2".to_string()]);
    let job = a.claim_next(10).unwrap().unwrap();
    assert_eq!(job.id, "job-1");
    let a1 = job.claim();
    // A live lease keeps the job from B; a heartbeat renews a lapsed one before anyone
    // claims it.
    lapse("job-1");
    let beat = a.heartbeat(std::slice::from_ref(&a1), 11).unwrap();
    assert!(beat.lost.is_empty() && beat.cancel.is_empty(), "{beat:?}");
    let b2 = b.claim_next(12).unwrap().unwrap().claim();
    assert_eq!(b2.job, "job-2");
    assert!(b.claim_next(12).unwrap().is_none());
    // A cancel asked through A reaches B's heartbeat, and B's job keeps running meanwhile.
    assert!(!a.cancel("job-2", 13).unwrap());
    assert_eq!(
        b.heartbeat(std::slice::from_ref(&b2), 13).unwrap().cancel,
        ["job-2"]
    );
    assert!(a.claim_next(13).unwrap().is_none());
    assert_eq!(b.get("job-2").unwrap().unwrap().status, JobStatus::Running);
    // A stops renewing (it died, or stalled): once the lease lapses B takes job-1 over.
    lapse("job-1");
    let taken = b.claim_next(14).unwrap().unwrap();
    assert_eq!(
        (taken.id.as_str(), taken.attempts, taken.started_at),
        ("job-1", 2, Some(10))
    );
    // A learns it lost the job, and its writes no longer apply.
    let beat = a.heartbeat(std::slice::from_ref(&a1), 15).unwrap();
    assert_eq!(beat.lost, std::slice::from_ref(&a1));
    assert!(!a.requeue(&a1).unwrap());
    assert!(!a.holds(&a1).unwrap());
    assert!(!a.finish(&a1, JobStatus::Failed, None, None, 15).unwrap());
    assert_eq!(b.get("job-1").unwrap().unwrap().status, JobStatus::Running);
    // B's job-2, asked to cancel, ends cancelled (not retried) when B's lease on it lapses.
    lapse("job-2");
    assert!(a.claim_next(16).unwrap().is_none());
    assert_eq!(
        a.get("job-2").unwrap().unwrap().status,
        JobStatus::Cancelled
    );
    assert!(b
        .finish(&taken.claim(), JobStatus::Succeeded, None, Some("m"), 17)
        .unwrap());
}

fn claim(job: &str, number: u32) -> Claim {
    Claim {
        job: job.into(),
        number,
    }
}

/// The fencing token is the claim, not the replica: a replica that claims its own lapsed job
/// again (a second worker, after a heartbeat outage) refuses every write of the first claim.
#[test]
fn a_replica_that_claims_its_own_lapsed_job_again_fences_the_first_claim() {
    let Some((admin, _)) = scaleout::services("own_lapsed_job") else {
        return;
    };
    let url = scaleout::fresh_database(&admin);
    let a = replica(&url, "a", Duration::from_secs(60));
    let mut db = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    queue(&a, ["job-1".to_string()]);
    let first = a.claim_next(10).unwrap().unwrap().claim();
    db.execute(
        "UPDATE dbn_jobs SET lease_expires_at = clock_timestamp() - interval '1 second'",
        &[],
    )
    .unwrap();
    let second = a.claim_next(11).unwrap().unwrap().claim();
    assert_eq!((first.number, second.number), (1, 2));
    let progress = JobProgress {
        progress: Progress {
            phase: Phase::Pretrain,
            layer: 0,
            layers: 1,
            epoch: 1,
            epochs: 1,
            batch: 0,
            batches: 1,
            fraction: 0.5,
            examples_per_sec: 0.0,
        },
        eta_seconds: None,
    };
    assert!(!a.holds(&first).unwrap());
    assert!(!a.record_progress(&first, &progress, Some(&[])).unwrap());
    assert!(!a.requeue(&first).unwrap());
    assert!(!a.finish(&first, JobStatus::Failed, None, None, 12).unwrap());
    // The heartbeat renews the second claim and reports the first lost.
    let beat = a.heartbeat(&[first.clone(), second.clone()], 13).unwrap();
    assert_eq!(beat.lost, [first]);
    assert!(a.holds(&second).unwrap());
    assert!(a.record_progress(&second, &progress, None).unwrap());
    assert!(a
        .finish(&second, JobStatus::Succeeded, None, Some("m"), 14)
        .unwrap());
    let job = a.get("job-1").unwrap().unwrap();
    assert_eq!((job.status, job.attempts), (JobStatus::Succeeded, 2));
    assert_eq!(job.progress.unwrap().progress.fraction, 0.5);
}

#[test]
fn migrations_run_once_and_a_newer_schema_is_refused() {
    let Some((admin, _)) = scaleout::services("migrations") else {
        return;
    };
    let url = scaleout::fresh_database(&admin);
    // Replicas starting together each see the same, once-migrated schema.
    let starts: Vec<_> = (0..3)
        .map(|i| {
            let url = url.url.clone();
            std::thread::spawn(move || {
                replica(&url, &format!("r{i}"), Duration::from_secs(5));
            })
        })
        .collect();
    for s in starts {
        s.join().unwrap();
    }
    let mut client = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    let applied: i64 = client
        .query_one("SELECT COUNT(*) FROM dbn_migrations", &[])
        .unwrap()
        .get(0);
    assert_eq!(applied, 1);
    client
        .execute("INSERT INTO dbn_migrations (version) VALUES (99)", &[])
        .unwrap();
    match PostgresJobStore::connect(&url, "late".into(), Duration::from_secs(5)) {
        Err(StoreError::Database(m)) => assert!(m.contains("newer"), "{m}"),
        Err(e) => panic!("wrong error: {e}"),
        Ok(_) => panic!("a newer schema was accepted"),
    }
    // No server there: a clear "unavailable", not a hang.
    match PostgresJobStore::connect(
        "postgres://nobody@127.0.0.1:1/none?connect_timeout=2",
        "x".into(),
        Duration::from_secs(5),
    ) {
        Err(StoreError::Unavailable(_)) => {}
        Err(e) => panic!("wrong error: {e}"),
        Ok(_) => panic!("connected to nothing"),
    }
}

#[test]
fn the_connection_is_encrypted_when_the_server_offers_tls_and_verified_when_asked() {
    let Some((admin, _)) = scaleout::services("tls") else {
        return;
    };
    let url = scaleout::fresh_database(&admin);
    let mut client = postgres::Client::connect(&admin, postgres::NoTls).unwrap();
    let ssl: String = client.query_one("SHOW ssl", &[]).unwrap().get(0);
    if ssl != "on" {
        eprintln!("tls: skipped (the server has ssl = {ssl})");
        return;
    }
    // The default mode (prefer) encrypts, whatever signed the server's certificate.
    let store = replica(&url, "tls", Duration::from_secs(5));
    store.counts().unwrap();
    let database = url.rsplit('/').next().unwrap();
    let encrypted: Vec<bool> = client
        .query(
            "SELECT s.ssl FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
             WHERE a.datname = $1 AND a.application_name = 'dbn-serve'",
            &[&database],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(
        !encrypted.is_empty() && encrypted.iter().all(|&e| e),
        "{encrypted:?}"
    );
    // verify-full checks the certificate: this server's self-signed one is refused.
    let strict = format!("{}?sslmode=verify-full", url.url);
    match PostgresJobStore::connect(&strict, "v".into(), Duration::from_secs(5)) {
        Err(StoreError::Unavailable(m)) => assert!(m.contains("TLS"), "{m}"),
        Err(e) => panic!("wrong error: {e}"),
        Ok(_) => panic!("an unverifiable certificate was accepted"),
    }
    // disable never encrypts.
    let plain = format!("{}?sslmode=disable", url.url);
    drop(store);
    let store = PostgresJobStore::connect(&plain, "p".into(), Duration::from_secs(5)).unwrap();
    store.counts().unwrap();
}

#[test]
fn a_test_database_is_dropped_even_when_its_test_fails() {
    let Some((admin, _)) = scaleout::services("test_database_guard") else {
        return;
    };
    let made = std::sync::Mutex::new(String::new());
    let failed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let db = scaleout::fresh_database(&admin);
        *made.lock().unwrap() = db.url.rsplit('/').next().unwrap().to_string();
        panic!("a test failing with its database open");
    }));
    assert!(failed.is_err());
    let name = made.into_inner().unwrap();
    assert!(name.starts_with("dbn_test_"), "{name}");
    let mut client = postgres::Client::connect(&admin, postgres::NoTls).unwrap();
    let left: i64 = client
        .query_one(
            "SELECT count(*) FROM pg_database WHERE datname = $1",
            &[&name],
        )
        .unwrap()
        .get(0);
    assert_eq!(left, 0, "{name} is still there");
}

#[test]
fn start_up_gives_up_on_a_migration_lock_held_too_long_with_a_clear_error() {
    use dbn_serve::store::postgres::MIGRATION_LOCK;
    let Some((admin, _)) = scaleout::services("migration_lock_timeout") else {
        return;
    };
    let url = scaleout::fresh_database(&admin);
    // A stale session holds the lock.
    let mut stale = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    stale
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
        .unwrap();
    let started = std::time::Instant::now();
    let refused = PostgresJobStore::connect_waiting(
        &url,
        "late".into(),
        Duration::from_secs(5),
        Duration::from_secs(1),
    );
    let err = match refused {
        Ok(_) => panic!("connected while the migration lock was held"),
        Err(e) => e.to_string(),
    };
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
    assert!(
        err.contains("migration lock") && err.contains("pg_locks"),
        "{err}"
    );
    // Once the lock is free, start-up goes through.
    stale
        .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
        .unwrap();
    replica(&url, "on-time", Duration::from_secs(5));
}

/// When the server drops every connection (a restart), one call fails on its dead connection
/// and the idle ones are dropped with it: the calls after it connect afresh and succeed.
#[test]
fn after_the_server_drops_its_connections_only_one_call_fails() {
    let Some((admin, _)) = scaleout::services("connections_dropped") else {
        return;
    };
    let url = scaleout::fresh_database(&admin);
    let store = Arc::new(replica(&url, "a", Duration::from_secs(60)));
    queue(&store, (0..20).map(|i| format!("job-{i}")));
    // Several threads at once leave several connections idle in the pool.
    let start = Arc::new(Barrier::new(6));
    let threads: Vec<_> = (0..6)
        .map(|_| {
            let (store, start) = (store.clone(), start.clone());
            std::thread::spawn(move || {
                start.wait();
                for _ in 0..30 {
                    store.list(None, 50, None).unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let name = url.rsplit('/').next().unwrap().to_string();
    let mut db = postgres::Client::connect(&admin, postgres::NoTls).unwrap();
    let dropped = db
        .execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE datname = $1 AND pid <> pg_backend_pid()",
            &[&name],
        )
        .unwrap();
    assert!(
        dropped >= 2,
        "several idle connections to drop, got {dropped}"
    );
    let failures = (0..6)
        .filter(|_| store.list(None, 50, None).is_err())
        .count();
    assert!(failures <= 1, "{failures} calls failed after the drop");
    assert!(store.list(None, 50, None).is_ok());
}
