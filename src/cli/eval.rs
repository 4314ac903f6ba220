//! `dbn-serve eval --model FILE`: test error on MNIST's test set and the confusion matrix, or
//! for a model without labels the test reconstruction error.

use std::path::PathBuf;
use std::time::Instant;

use clap::{Args, ValueEnum};

use super::{CliError, Context};
use crate::engine::data::MnistSplit;
use crate::engine::dbn::ConfusionMatrix;
use crate::engine::persist;

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Method {
    /// Exact free energy of each label (deterministic).
    FreeEnergy,
    /// Count labels during Gibbs sampling in the top two layers.
    Gibbs,
    /// The feed-forward network of discriminative fine-tuning.
    Discriminative,
}

#[derive(Debug, Args)]
pub struct EvalArgs {
    /// The model file (.safetensors).
    #[arg(long)]
    model: PathBuf,
    #[arg(long, value_enum, default_value = "free-energy")]
    method: Method,
    /// Gibbs steps per image (method gibbs).
    #[arg(long, default_value_t = 100)]
    gibbs_steps: usize,
    /// Seed of the Gibbs chains.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(ctx: &Context, args: EvalArgs) -> Result<(), CliError> {
    let (dbn, card) = persist::load(&args.model)?;
    let test = ctx.load_mnist(MnistSplit::Test)?;
    if dbn.temporal().is_some() {
        // A sequence model continues the test sequences its spec makes.
        let metrics = crate::engine::dbn::test_metrics(card.spec.as_ref(), &dbn, &test)?;
        if args.json {
            println!(
                "{}",
                serde_json::json!({"model": card.name, "metrics": metrics})
            );
        } else {
            for (name, value) in &metrics {
                println!("{name}: {value:.3}");
            }
        }
        return Ok(());
    }
    if dbn.label_classes() == 0 && dbn.classifier().is_none() {
        // A model that cannot classify is measured by how well it rebuilds the images.
        let started = Instant::now();
        let metrics = crate::engine::dbn::test_metrics(None, &dbn, &test)?;
        let error = metrics
            .get("test_reconstruction_error")
            .copied()
            .ok_or_else(|| {
                CliError::Usage(format!(
                    "the model takes {} inputs; MNIST has {} pixels",
                    dbn.n_inputs(),
                    test.n_pixels()
                ))
            })?;
        let bound = metrics.get("test_log_prob_bound").copied();
        let seconds = started.elapsed().as_secs_f64();
        if args.json {
            let out = serde_json::json!({
                "model": card.name, "images": test.len(),
                "test_reconstruction_error": error, "test_log_prob_bound": bound,
                "seconds": seconds,
            });
            println!("{out}");
        } else {
            println!(
                "model {} ({:?}): test reconstruction error {error:.3} (mean over {} images \
                 of the summed squared pixel error), {seconds:.2}s",
                card.name,
                card.sizes,
                test.len()
            );
            if let Some(bound) = bound {
                println!(
                    "variational lower bound on ln p(v) of the binarised test images: \
                     {bound:.2} nats"
                );
            }
        }
        return Ok(());
    }
    if dbn.label_classes() != test.classes || dbn.n_inputs() != test.n_pixels() {
        return Err(CliError::Usage(format!(
            "the model takes {} inputs and {} labels; MNIST has {} pixels and {} classes",
            dbn.n_inputs(),
            dbn.label_classes(),
            test.n_pixels(),
            test.classes
        )));
    }
    let started = Instant::now();
    let probs = match args.method {
        Method::FreeEnergy => dbn.classify_free_energy(test.images.view())?,
        Method::Discriminative => dbn.classify_discriminative(test.images.view())?,
        Method::Gibbs => {
            let mut rng = crate::engine::rng_from_seed(args.seed);
            dbn.classify_gibbs(test.images.view(), args.gibbs_steps, &mut rng)?
        }
    };
    let seconds = started.elapsed().as_secs_f64();
    let cm = ConfusionMatrix::from_predictions(probs.view(), &test.labels);
    let error = cm.errors() as f64 / cm.total().max(1) as f64;
    if args.json {
        let out = serde_json::json!({
            "model": card.name, "method": format!("{:?}", args.method), "images": cm.total(),
            "errors": cm.errors(), "error_rate": error, "class_error_rates": cm.class_errors(),
            "confusion": cm.counts, "seconds": seconds,
        });
        println!("{out}");
        return Ok(());
    }
    println!(
        "model {} ({:?}), {:?}: test error {:.2}% ({} of {} images), {:.2}s, {:.0} images/s",
        card.name,
        card.sizes,
        args.method,
        100.0 * error,
        cm.errors(),
        cm.total(),
        seconds,
        cm.total() as f64 / seconds
    );
    println!("confusion matrix (rows: true label, columns: predicted)");
    print!("     ");
    (0..cm.counts.len()).for_each(|k| print!("{k:>6}"));
    println!("   error");
    for (k, (row, e)) in cm.counts.iter().zip(cm.class_errors()).enumerate() {
        print!("{k:>4} ");
        row.iter().for_each(|c| print!("{c:>6}"));
        println!("  {:5.2}%", 100.0 * e);
    }
    Ok(())
}
