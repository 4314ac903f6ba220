//! What a fine-tuning run shares with its caller: the observer, its share of the job's
//! progress, held-out data, and the learning state that checkpoints carry between epochs so
//! that an interrupted run continues bit for bit.

use std::time::Instant;

use ndarray::{Array2, ArrayView2};

use super::net::Dense;
use crate::engine::dbn::{Checkpoint, Dbn, FinetuneCheckpoint};
use crate::engine::error::{EngineError, Result};
use crate::engine::observer::{
    examples_per_sec, job_fraction, Control, EpochMetrics, Observer, Phase, Progress,
};
use crate::engine::EngineRng;

/// Who watches a fine-tuning run and where it sits in the whole job.
pub struct FinetuneRun<'a> {
    pub observer: &'a mut dyn Observer,
    /// The part of the whole job's progress this run covers.
    pub fraction: (f64, f64),
    /// Held-out examples and labels, measured after every epoch.
    pub validation: Option<(ArrayView2<'a, f32>, &'a [u8])>,
    /// The learning state to continue from (taken from a checkpoint), if any.
    pub resume: Option<FinetuneState>,
    /// The pretrained model backpropagation's classifier belongs to: checkpoints of a
    /// backprop run hold it with the classifier in training attached.
    pub base: Option<&'a Dbn>,
    /// Metrics of the epochs before this run (pretraining, and fine-tuning before a resume),
    /// which checkpoints carry along.
    pub earlier: &'a [EpochMetrics],
    /// Identifies the spec and data; see [`crate::engine::dbn::run_fingerprint`].
    pub fingerprint: u64,
}

/// Fine-tuning's learning state at an epoch boundary, besides the weights.
#[derive(Debug, Clone, PartialEq)]
pub struct FinetuneState {
    /// The first epoch still to run (0-based).
    pub next_epoch: usize,
    /// The example order, which every epoch shuffles further.
    pub order: Vec<u32>,
    /// Momentum increments of the classifier's layers (backpropagation; empty for up-down).
    pub increments: Vec<Dense>,
    /// The persistent fantasy chains of up-down's top RBM ([chains, visible units]), when
    /// its negative phase is persistent and has started.
    pub chains: Option<Array2<f32>>,
}

impl FinetuneState {
    /// The state of a run over `n` examples that has not started.
    pub(crate) fn fresh(n: usize, increments: Vec<Dense>) -> Self {
        FinetuneState {
            next_epoch: 0,
            order: (0..n as u32).collect(),
            increments,
            chains: None,
        }
    }

    /// Checks that this state fits a run of `epochs` epochs over `n` examples whose
    /// increments have the shapes of `like`.
    pub(crate) fn check(&self, n: usize, epochs: usize, like: &[Dense]) -> Result<()> {
        let bad = |m: String| Err(EngineError::Model(format!("checkpoint: {m}")));
        if self.next_epoch > epochs {
            return bad(format!(
                "it is at epoch {} of a {epochs}-epoch run",
                self.next_epoch + 1
            ));
        }
        let mut seen = vec![false; n];
        for &i in &self.order {
            match seen.get_mut(i as usize) {
                Some(s) if !*s => *s = true,
                _ => return bad("the example order is not a permutation of the data".into()),
            }
        }
        if self.order.len() != n {
            return bad(format!(
                "{} examples in order, {n} in the data",
                self.order.len()
            ));
        }
        let shapes_match =
            self.increments.len() == like.len()
                && self.increments.iter().zip(like).all(|(a, b)| {
                    a.weights.dim() == b.weights.dim() && a.bias.len() == b.bias.len()
                });
        if !shapes_match {
            return bad("the momentum increments do not match the network".into());
        }
        Ok(())
    }
}

impl FinetuneRun<'_> {
    /// Progress after `done` of the `n` examples of `epoch` (0-based), mapped into this run's
    /// part of the whole job.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn progress(
        &self,
        epoch: usize,
        epochs: usize,
        batch: usize,
        batches: usize,
        done: usize,
        n: usize,
        started: Instant,
    ) -> Progress {
        Progress {
            phase: Phase::Finetune,
            layer: 0,
            layers: 1,
            epoch: (epoch + 1).min(epochs),
            epochs,
            batch,
            batches,
            fraction: job_fraction(self.fraction, epoch, epochs, done, n),
            examples_per_sec: examples_per_sec(done, started),
        }
    }

    /// Hands the observer a checkpoint of `model` (built only when the observer wants one)
    /// with `state`, this run's epochs so far and the generator as it stands.
    pub(crate) fn checkpoint(
        &mut self,
        model: impl FnOnce() -> Result<Dbn>,
        state: FinetuneState,
        history: &[EpochMetrics],
        rng: &EngineRng,
    ) -> Result<Control> {
        if !self.observer.wants_checkpoints() {
            return Ok(Control::Continue);
        }
        let checkpoint = Checkpoint::Finetune(FinetuneCheckpoint {
            dbn: model()?,
            state,
            history: self.earlier.iter().chain(history).cloned().collect(),
            rng: rng.clone(),
            fingerprint: self.fingerprint,
        });
        Ok(self.observer.on_checkpoint(&checkpoint))
    }
}
