//! Shows training progress: a one-line bar redrawn in place on a terminal, plain log lines
//! otherwise; per-epoch metrics are always logged.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use std::path::PathBuf;

use crate::engine::dbn::Checkpoint;
use crate::engine::observer::{Control, EpochMetrics, Observer, Progress};

/// An observer for the command line; optionally writes a checkpoint after every epoch.
pub struct ConsoleProgress {
    terminal: bool,
    started: Instant,
    last_draw: Instant,
    checkpoint: Option<PathBuf>,
    /// Stop after this many epochs (once their checkpoint is written).
    stop_after: Option<usize>,
    epochs: usize,
}

impl ConsoleProgress {
    pub fn new(checkpoint: Option<PathBuf>, stop_after: Option<usize>) -> Self {
        let now = Instant::now();
        ConsoleProgress {
            terminal: std::io::stderr().is_terminal(),
            started: now,
            last_draw: now - Duration::from_secs(1),
            checkpoint,
            stop_after,
            epochs: 0,
        }
    }

    /// Whether training stopped because `stop_after` epochs were done.
    pub fn stopped_on_request(&self) -> bool {
        self.stop_after.is_some_and(|n| self.epochs >= n)
    }
}

fn eta(elapsed: Duration, fraction: f64) -> String {
    if fraction <= 0.0 {
        return "?".into();
    }
    let left = elapsed.as_secs_f64() * (1.0 - fraction) / fraction;
    format!("{}m{:02}s", (left / 60.0) as u64, (left % 60.0) as u64)
}

impl Observer for ConsoleProgress {
    fn on_batch(&mut self, p: &Progress) -> Control {
        if self.terminal && self.last_draw.elapsed() > Duration::from_millis(200) {
            self.last_draw = Instant::now();
            let width = 30;
            let filled = (p.fraction * width as f64) as usize;
            eprint!(
                "\r{:?} layer {}/{} epoch {}/{} [{}{}] {:5.1}% {:7.0} ex/s ETA {}  ",
                p.phase,
                p.layer + 1,
                p.layers,
                p.epoch,
                p.epochs,
                "#".repeat(filled.min(width)),
                " ".repeat(width - filled.min(width)),
                100.0 * p.fraction,
                p.examples_per_sec,
                eta(self.started.elapsed(), p.fraction)
            );
            let _ = std::io::stderr().flush();
        }
        Control::Continue
    }

    fn on_epoch(&mut self, p: &Progress, m: &EpochMetrics) -> Control {
        if self.terminal {
            eprint!("\r{}\r", " ".repeat(100));
        }
        let opt = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.4}"));
        if m.phase == crate::engine::observer::Phase::Finetune {
            tracing::info!(
                "fine-tuning epoch {}/{}: train_error={} cross_entropy={} recon_train={} recon_valid={} valid_error={} valid_ce={} log_prob_bound={} {:.2}s {:.0} ex/s ({:.1}% done)",
                m.epoch,
                p.epochs,
                opt(m.train_error),
                opt(m.cross_entropy),
                opt(m.recon_error_train),
                opt(m.recon_error_validation),
                opt(m.validation_error),
                opt(m.validation_cross_entropy),
                opt(m.log_prob_bound),
                m.seconds,
                m.examples_per_sec,
                100.0 * p.fraction
            );
            return Control::Continue;
        }
        tracing::info!(
            "layer {}/{} epoch {}/{}: recon_train={} recon_valid={} fe_gap={} momentum={} {:.2}s {:.0} ex/s ({:.1}% done)",
            m.layer + 1,
            p.layers,
            m.epoch,
            p.epochs,
            opt(m.recon_error_train),
            opt(m.recon_error_validation),
            opt(m.free_energy_gap),
            m.momentum,
            m.seconds,
            m.examples_per_sec,
            100.0 * p.fraction
        );
        Control::Continue
    }

    fn wants_checkpoints(&self) -> bool {
        self.checkpoint.is_some()
    }

    fn on_checkpoint(&mut self, checkpoint: &Checkpoint) -> Control {
        let Some(path) = &self.checkpoint else {
            return Control::Continue;
        };
        let written = checkpoint
            .to_bytes()
            .and_then(|bytes| crate::engine::persist::write_atomic(path, &bytes));
        match written {
            Ok(()) => {
                self.epochs += 1;
                if self.stopped_on_request() {
                    Control::Stop
                } else {
                    Control::Continue
                }
            }
            Err(e) => {
                // Training on without the checkpoint the user asked for would put the work at risk.
                tracing::error!("checkpoint {}: {e}; stopping", path.display());
                Control::Stop
            }
        }
    }
}
