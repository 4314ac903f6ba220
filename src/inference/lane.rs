//! One lane of merged calls (a model and a classification method) and the task that serves it.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use ndarray::{concatenate, s, Array2, ArrayView2, Axis};
use tokio::sync::{oneshot, Notify};

use super::{Classifier, InferenceError, Shared};
use crate::store::ModelEntry;

type Reply = oneshot::Sender<Result<Array2<f32>, InferenceError>>;

/// A call waiting in a lane.
pub(super) struct Pending {
    model: Arc<ModelEntry>,
    /// [rows, n_inputs]
    x: Array2<f32>,
    reply: Reply,
    since: Instant,
}

impl Pending {
    pub(super) fn new(model: Arc<ModelEntry>, x: Array2<f32>, reply: Reply) -> Self {
        Pending {
            model,
            x,
            reply,
            since: Instant::now(),
        }
    }
}

/// The calls of one lane, in arrival order.
#[derive(Default)]
pub(super) struct Lane {
    state: Mutex<LaneState>,
    arrived: Notify,
}

#[derive(Default)]
struct LaneState {
    items: VecDeque<Pending>,
    rows: usize,
    /// A task serves the lane; it ends when it finds the lane empty.
    running: bool,
}

impl Lane {
    fn lock(&self) -> MutexGuard<'_, LaneState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues a call. True when no task serves the lane, so the caller must start one.
    pub(super) fn push(&self, call: Pending) -> bool {
        let mut state = self.lock();
        state.rows += call.x.nrows();
        state.items.push_back(call);
        self.arrived.notify_one();
        !std::mem::replace(&mut state.running, true)
    }

    /// The oldest call's arrival and the rows waiting; `None` (and the lane marked unserved)
    /// when the lane is empty.
    fn peek_or_retire(&self) -> Option<(Instant, usize)> {
        let mut state = self.lock();
        match state.items.front() {
            Some(first) => Some((first.since, state.rows)),
            None => {
                state.running = false;
                None
            }
        }
    }

    /// Takes the next batch: calls of the oldest call's model, in order, up to `max_rows`
    /// rows (at least one call). Calls whose callers are gone are dropped. Returns the batch
    /// and how many calls left the lane.
    fn take(&self, max_rows: usize) -> (Vec<Pending>, usize) {
        let mut state = self.lock();
        let mut batch: Vec<Pending> = Vec::new();
        let (mut rows, mut left) = (0, 0);
        while let Some(next) = state.items.front() {
            let same_model = batch
                .first()
                .is_none_or(|b| Arc::ptr_eq(&b.model, &next.model));
            let fits = batch.is_empty() || rows + next.x.nrows() <= max_rows;
            if !same_model || !fits {
                break;
            }
            let call = state.items.pop_front().expect("front exists");
            state.rows -= call.x.nrows();
            left += 1;
            if !call.reply.is_closed() {
                rows += call.x.nrows();
                batch.push(call);
            }
        }
        (batch, left)
    }
}

/// Serves a lane until it is empty: waits for a slot (calls pile up meanwhile), lets the
/// batch fill for up to `max_wait` when other computations run, then computes it.
pub(super) async fn run(shared: Arc<Shared>, lane: Arc<Lane>, how: Classifier) {
    let config = shared.config.clone();
    while let Some((oldest, _)) = lane.peek_or_retire() {
        let slot = match shared.acquire().await {
            Ok(slot) => slot,
            Err(e) => {
                let (calls, left) = lane.take(usize::MAX);
                shared.leave_queue(left);
                for call in calls {
                    let _ = call
                        .reply
                        .send(Err(InferenceError::Internal(e.to_string())));
                }
                continue;
            }
        };
        // `busy` counts this lane's slot too: more than one means the engine is not idle.
        let deadline = tokio::time::Instant::from_std(oldest + config.max_wait);
        while shared.busy.load(std::sync::atomic::Ordering::SeqCst) > 1 {
            let rows = lane.peek_or_retire().map_or(0, |(_, rows)| rows);
            if rows >= config.max_batch || tokio::time::Instant::now() >= deadline {
                break;
            }
            let _ = tokio::time::timeout_at(deadline, lane.arrived.notified()).await;
        }
        let (batch, left) = lane.take(config.max_batch.max(1));
        shared.leave_queue(left);
        if batch.is_empty() {
            continue;
        }
        {
            let now = Instant::now();
            let mut stats = shared.stats();
            stats.observe_batch(batch.iter().map(|c| c.x.nrows()).sum());
            for call in &batch {
                stats.observe_wait((now - call.since).as_secs_f64());
            }
        }
        let timing = shared.clone();
        let answers = tokio::task::spawn_blocking(move || {
            let _slot = slot;
            let started = Instant::now();
            compute(how, batch);
            let seconds = started.elapsed().as_secs_f64();
            timing.stats().batch_seconds.observe(seconds);
        })
        .await;
        if let Err(e) = answers {
            // The computation panicked: its callers' replies were dropped with it, so they
            // see an internal error.
            tracing::error!("inference batch: {e}");
        }
    }
}

/// Computes a batch and answers its callers. A batch that fails is retried call by call, so
/// each caller gets its own result or error.
fn compute(how: Classifier, batch: Vec<Pending>) {
    let model = batch[0].model.clone();
    let merged = if batch.len() == 1 {
        how.run(&model, batch[0].x.view())
    } else {
        let views: Vec<ArrayView2<f32>> = batch.iter().map(|c| c.x.view()).collect();
        concatenate(Axis(0), &views)
            .map_err(|e| crate::engine::EngineError::Shape(e.to_string()))
            .and_then(|x| how.run(&model, x.view()))
    };
    match merged {
        Ok(probs) => {
            let mut row = 0;
            for call in batch {
                let n = call.x.nrows();
                let mine = probs.slice(s![row..row + n, ..]).to_owned();
                row += n;
                let _ = call.reply.send(Ok(mine));
            }
        }
        Err(e) if batch.len() == 1 => {
            let call = batch.into_iter().next().expect("one call");
            let _ = call.reply.send(Err(e.into()));
        }
        Err(_) => {
            for call in batch {
                let alone = how.run(&model, call.x.view()).map_err(Into::into);
                let _ = call.reply.send(alone);
            }
        }
    }
}
