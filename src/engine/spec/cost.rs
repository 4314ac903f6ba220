//! What a run costs, in multiply-adds: the shares of a job's progress that pretraining and
//! each fine-tuning stage take.

use super::{Finetune, TrainingSpec};
use crate::engine::finetune::WakeSleepInit;

impl TrainingSpec {
    /// Multiply-adds of pretraining layer `i` on `n` examples: every CD-k step is 2k + 3
    /// products of V × H per example (up, k times down and up, two for the statistics).
    pub fn layer_work(&self, i: usize, n_inputs: usize, classes: usize, n: usize) -> f64 {
        let c = self.layer_config(i);
        c.epochs as f64
            * n as f64
            * (2.0 * c.cd_k_mean() + 3.0)
            * self.layer_visible(i, n_inputs, classes) as f64
            * self.architecture.hidden[i] as f64
    }

    /// The fraction of a run's arithmetic that fine-tuning takes (0 without fine-tuning).
    pub fn finetune_share(&self, n_inputs: usize, classes: usize, n: usize) -> f64 {
        let hidden = &self.architecture.hidden;
        let pretrain: f64 = (0..hidden.len())
            .map(|i| self.layer_work(i, n_inputs, classes, n))
            .sum();
        let (forward, below) = self.forward_work(n_inputs);
        let stages = self.finetune_stages();
        if stages.is_empty() {
            return 0.0;
        }
        let mut finetune = 0.0;
        for stage in &stages {
            match self.stage_work(stage, n_inputs, classes, n, forward, below) {
                Some(work) => finetune += work,
                // Without pretraining all the work is wake-sleep's.
                None => return 1.0,
            }
        }
        finetune / (pretrain + finetune).max(1.0)
    }

    /// The shares of fine-tuning's arithmetic that each of its stages takes (summing to 1).
    pub fn stage_shares(&self, n_inputs: usize, classes: usize, n: usize) -> Vec<f64> {
        let (forward, below) = self.forward_work(n_inputs);
        let work: Vec<f64> = self
            .finetune_stages()
            .iter()
            .map(|s| {
                self.stage_work(s, n_inputs, classes, n, forward, below)
                    .unwrap_or(1.0)
            })
            .collect();
        let total: f64 = work.iter().sum();
        work.iter()
            .map(|w| w / total.max(f64::MIN_POSITIVE))
            .collect()
    }

    /// Multiply-adds of one pass up the stack, and the top layer's size.
    fn forward_work(&self, n_inputs: usize) -> (f64, usize) {
        let mut forward = 0.0;
        let mut below = n_inputs;
        for &h in &self.architecture.hidden {
            forward += (below * h) as f64;
            below = h;
        }
        (forward, below)
    }

    /// Multiply-adds of one fine-tuning stage on `n` examples (`None`: wake-sleep from random
    /// weights, which is all of the run's work); backpropagation is three products per layer
    /// and example (forward, two backward).
    fn stage_work(
        &self,
        stage: &Finetune,
        n_inputs: usize,
        classes: usize,
        n: usize,
        forward: f64,
        below: usize,
    ) -> Option<f64> {
        let hidden = &self.architecture.hidden;
        Some(match stage {
            Finetune::Backprop(c) => {
                3.0 * c.epochs as f64 * n as f64 * (forward + (below * classes) as f64)
            }
            // Below the top: six products per layer (up, down, two predictions, two
            // updates); the top: 2k + 3 products. The discriminative term adds a mean-field
            // up-pass and two products at the top.
            Finetune::UpDown(c) => {
                let top = (self.layer_visible(hidden.len() - 1, n_inputs, classes)
                    * hidden[hidden.len() - 1]) as f64;
                let k = c.cd_k.iter().sum::<usize>() as f64 / c.cd_k.len().max(1) as f64;
                let hybrid = if c.discriminative > 0.0 {
                    forward + top
                } else {
                    0.0
                };
                c.epochs as f64
                    * n as f64
                    * (6.0 * (forward - top.min(forward)) + (2.0 * k + 3.0) * top + hybrid)
            }
            // Encoder and decoder: twice the forward products, three each per example.
            Finetune::Autoencoder(c) => 6.0 * c.epochs as f64 * n as f64 * forward,
            Finetune::WakeSleep(c) if c.init == WakeSleepInit::Random => return None,
            // Wake: up, down and an update per layer; sleep the same.
            Finetune::WakeSleep(c) => 6.0 * c.epochs as f64 * n as f64 * forward,
        })
    }
}
