//! `dbn-serve train --spec FILE.json`: greedy training, then the test error, then the model.

use std::path::PathBuf;

use clap::Args;

use super::progress::ConsoleProgress;
use super::{CliError, Context};
use crate::engine::data::Dataset;
use crate::engine::data::MnistSplit;
use crate::engine::dbn::{evaluated_card, train_model, Checkpoint, TrainOutcome};
use crate::engine::persist;
use crate::engine::spec::{Limits, TrainingSpec};
use crate::engine::EngineError;

#[derive(Debug, Args)]
pub struct TrainArgs {
    /// The training spec (JSON); see examples/mnist-dbn.json.
    #[arg(long)]
    spec: PathBuf,
    /// Where to save the model (default: models/NAME.safetensors).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Skip measuring the test error after training.
    #[arg(long)]
    no_test: bool,
    /// Write a checkpoint here (atomically) after every epoch.
    #[arg(long)]
    checkpoint: Option<PathBuf>,
    /// Continue from the checkpoint file (`--checkpoint`) if it exists; the spec must be the
    /// one that run used.
    #[arg(long, requires = "checkpoint")]
    resume: bool,
    /// Stop after this many epochs of this invocation, leaving the checkpoint to resume from
    /// (training in time-boxed slices).
    #[arg(long, requires = "checkpoint")]
    stop_after_epochs: Option<usize>,
}

pub fn run(ctx: &Context, args: TrainArgs) -> Result<(), CliError> {
    let spec = read_spec(&args.spec)?;
    if spec.dataset != "mnist" {
        return Err(CliError::Usage(format!(
            "dataset {:?}: the command line trains on \"mnist\" only",
            spec.dataset
        )));
    }
    let train = ctx.load_mnist(MnistSplit::Train)?;
    let spec = spec.check_for(&train, &Limits::default())?;
    let out = default_out(&spec, args.out);

    let mut progress = ConsoleProgress::new(args.checkpoint.clone(), args.stop_after_epochs);
    let resume_from = match (&args.checkpoint, args.resume) {
        (Some(path), true) if !path.is_file() => {
            tracing::warn!(
                "no checkpoint at {}: starting from the beginning",
                path.display()
            );
            None
        }
        (Some(path), true) => {
            let bytes = std::fs::read(path).map_err(|source| CliError::Io {
                path: path.clone(),
                source,
            })?;
            Some(Checkpoint::from_bytes(&bytes)?)
        }
        _ => None,
    };
    if let Some(checkpoint) = &resume_from {
        tracing::info!("resuming at {}", checkpoint.position());
    }
    let mut rng = crate::engine::rng_from_seed(spec.seed);
    let outcome = train_model(&spec, &train, &mut progress, &mut rng, resume_from);
    let outcome = match outcome {
        Err(EngineError::Cancelled) if progress.stopped_on_request() => {
            let path = args
                .checkpoint
                .as_ref()
                .expect("required by --stop-after-epochs");
            println!(
                "stopped as asked; resume with --resume --checkpoint {}",
                path.display()
            );
            return Ok(());
        }
        other => other?,
    };
    tracing::info!("training took {:.1}s", outcome.seconds);

    save_trained(ctx, &spec, &outcome, &train, &out, !args.no_test)
}

/// Reads and parses a training spec file.
pub(super) fn read_spec(path: &std::path::Path) -> Result<TrainingSpec, CliError> {
    let text = std::fs::read_to_string(path).map_err(|source| CliError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    serde_json::from_str(&text).map_err(|e| CliError::Usage(format!("{}: {e}", path.display())))
}

/// `out`, or `models/NAME.safetensors`.
pub(super) fn default_out(spec: &TrainingSpec, out: Option<PathBuf>) -> PathBuf {
    let name = spec.name.clone().unwrap_or_else(|| "model".into());
    out.unwrap_or_else(|| PathBuf::from(format!("models/{name}.safetensors")))
}

/// Measures the test errors (when `test`) and saves the model with its card.
pub(super) fn save_trained(
    ctx: &Context,
    spec: &TrainingSpec,
    outcome: &TrainOutcome,
    train: &Dataset,
    out: &std::path::Path,
    test: bool,
) -> Result<(), CliError> {
    // Every model has test metrics: errors for those that classify, reconstruction error
    // (and a wake-sleep net's bound) for the others.
    let test = if test {
        Some(ctx.load_mnist(MnistSplit::Test)?)
    } else {
        None
    };
    let card = evaluated_card(spec, outcome, train, test.as_ref(), ctx.threads, true)?;
    for (name, value) in &card.metrics {
        match &test {
            Some(t) if name.starts_with("test_error") => {
                tracing::info!("{name} ({} images): {:.2}%", t.len(), 100.0 * value)
            }
            _ if name.ends_with("validation_error") => {
                tracing::info!("{name}: {:.2}%", 100.0 * value)
            }
            _ if name.starts_with("test_") && spec.sequence.is_some() => {
                tracing::info!("{name} (test sequences): {value:.3}")
            }
            _ => tracing::info!("{name}: {value:.3}"),
        }
    }
    persist::save(out, &outcome.dbn, &card)?;
    println!("{}", out.display());
    Ok(())
}
