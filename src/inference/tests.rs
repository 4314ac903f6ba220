//! The batcher against its oracle: every merged answer equals the engine's answer for that
//! call alone, and the queue's bounds, cancellation and waiting rules hold.

use std::sync::Arc;
use std::time::Duration;

use ndarray::Array2;

use super::*;
use crate::engine::dbn::Dbn;
use crate::engine::persist::{ModelCard, Provenance};
use crate::engine::rbm::Rbm;
use crate::engine::rng_from_seed;

/// A 12-8-6 net whose top RBM has 4 label units, with random weights large enough that the
/// probabilities differ from row to row.
fn model() -> Arc<ModelEntry> {
    let mut rng = rng_from_seed(7);
    let layers = vec![
        Rbm::new(12, 8, 0, 0.5, &mut rng).unwrap(),
        Rbm::new(12, 6, 4, 0.5, &mut rng).unwrap(),
    ];
    Arc::new(ModelEntry {
        id: "m".into(),
        card: ModelCard {
            name: "test".into(),
            sizes: vec![12, 8, 6],
            label_classes: 4,
            image_shape: None,
            spec: None,
            provenance: Provenance::default(),
            metrics: Default::default(),
        },
        dbn: Dbn::new(layers).unwrap(),
        bytes: 0,
    })
}

fn inputs(rows: usize, salt: usize) -> Array2<f32> {
    Array2::from_shape_fn((rows, 12), |(i, j)| {
        ((i * 7 + j * 3 + salt * 5) % 11) as f32 / 10.0
    })
}

fn config(slots: usize, queue: usize, max_batch: usize, max_wait: Duration) -> BatchConfig {
    BatchConfig {
        slots,
        queue_capacity: queue,
        max_batch,
        max_wait,
        budget: super::cost::Budget::UNLIMITED,
    }
}

async fn within<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(30), f)
        .await
        .expect("the call finished")
}

type Answer = Result<Array2<f32>, InferenceError>;

/// Starts one call of `rows` rows (inputs salted by `salt`) in the background.
fn call(
    inference: &Inference,
    model: &Arc<ModelEntry>,
    how: Classifier,
    rows: usize,
    salt: usize,
) -> tokio::task::JoinHandle<Answer> {
    let (inference, model) = (inference.clone(), model.clone());
    tokio::spawn(async move { inference.classify(model, how, inputs(rows, salt)).await })
}

async fn until_waiting(inference: &Inference, calls: usize) {
    while inference.snapshot().waiting < calls {
        tokio::task::yield_now().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn merged_calls_get_the_answers_they_would_get_alone() {
    let model = model();
    let inference = Inference::new(config(1, 100, 64, Duration::ZERO));
    // Hold the only slot so that every call below piles up in the lane, then let go.
    let held = inference.slot().await.unwrap();
    let calls: Vec<_> = (0..20)
        .map(|c| call(&inference, &model, Classifier::FreeEnergy, 1 + c % 3, c))
        .collect();
    until_waiting(&inference, 20).await;
    drop(held);
    for (c, pending) in calls.into_iter().enumerate() {
        let got = within(pending).await.unwrap().unwrap();
        let alone = model
            .dbn
            .classify_free_energy(inputs(1 + c % 3, c).view())
            .unwrap();
        assert_eq!(got.dim(), alone.dim());
        for (a, b) in got.iter().zip(&alone) {
            assert!((a - b).abs() <= 1e-6, "{a} vs {b}");
        }
    }
    let stats = inference.snapshot().stats;
    // 20 calls of 1-3 rows (39 rows) fit in one batch of at most 64 rows.
    assert_eq!(stats.batch_rows.count(), 1, "one merged batch");
    assert_eq!(stats.batch_rows.sum(), 39.0);
    assert_eq!(inference.snapshot().waiting, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_are_cut_at_the_row_limit_in_arrival_order() {
    let model = model();
    let inference = Inference::new(config(1, 100, 4, Duration::ZERO));
    let held = inference.slot().await.unwrap();
    let calls: Vec<_> = [3, 2, 2, 5]
        .into_iter()
        .enumerate()
        .map(|(c, rows)| call(&inference, &model, Classifier::FreeEnergy, rows, c))
        .collect();
    until_waiting(&inference, 4).await;
    drop(held);
    for pending in calls {
        within(pending).await.unwrap().unwrap();
    }
    // 3 | 2+2 | 5 (a call larger than the limit computes alone).
    let stats = inference.snapshot().stats;
    assert_eq!(stats.batch_rows.count(), 3);
    assert_eq!(stats.batch_rows.sum(), 12.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_refuses_and_a_drained_one_accepts_again() {
    let model = model();
    let inference = Inference::new(config(1, 3, 64, Duration::ZERO));
    let held = inference.slot().await.unwrap();
    let waiting: Vec<_> = (0..3)
        .map(|c| call(&inference, &model, Classifier::FreeEnergy, 1, c))
        .collect();
    until_waiting(&inference, 3).await;
    let refused = inference
        .classify(model.clone(), Classifier::FreeEnergy, inputs(1, 9))
        .await;
    assert!(
        matches!(refused, Err(InferenceError::Overloaded(3))),
        "{refused:?}"
    );
    assert!(matches!(
        inference.slot().await,
        Err(InferenceError::Overloaded(3))
    ));
    drop(held);
    for pending in waiting {
        within(pending).await.unwrap().unwrap();
    }
    within(inference.classify(model, Classifier::FreeEnergy, inputs(1, 9)))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_that_gives_up_is_left_out_of_the_batch() {
    let model = model();
    let inference = Inference::new(config(1, 100, 64, Duration::ZERO));
    let held = inference.slot().await.unwrap();
    let impatient = tokio::time::timeout(
        Duration::from_millis(20),
        inference.classify(model.clone(), Classifier::FreeEnergy, inputs(5, 1)),
    )
    .await;
    assert!(impatient.is_err(), "it timed out while the slot was held");
    let patient = call(&inference, &model, Classifier::FreeEnergy, 2, 2);
    until_waiting(&inference, 2).await;
    drop(held);
    within(patient).await.unwrap().unwrap();
    let snapshot = inference.snapshot();
    assert_eq!(
        snapshot.stats.batch_rows.sum(),
        2.0,
        "only the patient call's rows"
    );
    assert_eq!(snapshot.waiting, 0, "the abandoned call left the queue");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_engine_lets_the_batch_fill_and_an_idle_one_does_not_wait() {
    let model = model();
    // A maximum wait far longer than the test: only a full batch may end the wait.
    let inference = Inference::new(config(2, 100, 3, Duration::from_secs(3600)));
    // Idle engine: a lone call goes at once.
    within(inference.classify(model.clone(), Classifier::FreeEnergy, inputs(1, 0)))
        .await
        .unwrap();
    // Busy engine (another computation holds a slot): three single rows arriving one by one
    // are computed as one batch of three.
    let other = inference.slot().await.unwrap();
    let mut calls = Vec::new();
    for c in 0..3 {
        calls.push(call(&inference, &model, Classifier::FreeEnergy, 1, c));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for pending in calls {
        within(pending).await.unwrap().unwrap();
    }
    drop(other);
    let stats = inference.snapshot().stats;
    assert_eq!(stats.batch_rows.count(), 2, "the lone call, then one batch");
    assert_eq!(stats.batch_rows.sum(), 4.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_engine_error_reaches_each_caller_of_a_merged_batch() {
    let model = model();
    let inference = Inference::new(config(1, 100, 64, Duration::ZERO));
    let held = inference.slot().await.unwrap();
    // The model has no discriminative net: every call fails, each with its own error.
    let calls: Vec<_> = (0..3)
        .map(|c| call(&inference, &model, Classifier::Discriminative, 1, c))
        .collect();
    until_waiting(&inference, 3).await;
    drop(held);
    for pending in calls {
        let result = within(pending).await.unwrap();
        assert!(
            matches!(result, Err(InferenceError::Engine(_))),
            "{result:?}"
        );
    }
}
