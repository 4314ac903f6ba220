//! `dbn-serve ais --model FILE`: the average log-probability of the MNIST test set under the
//! model's first RBM, in nats, with its partition function estimated by annealed importance
//! sampling (Salakhutdinov & Murray 2008).

use std::path::PathBuf;
use std::time::Instant;

use clap::{Args, ValueEnum};

use super::{CliError, Context};
use crate::engine::data::MnistSplit;
use crate::engine::persist;
use crate::engine::rbm::{log_prob_report, sample_binary, AisConfig};

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Binarize {
    /// Each pixel on with its intensity as probability, drawn once with the seed (as the
    /// paper's binarised MNIST).
    Sample,
    /// Each pixel on when its intensity is at least 0.5.
    Threshold,
}

#[derive(Debug, Args)]
pub struct AisArgs {
    /// The model file (.safetensors); its first RBM is measured.
    #[arg(long)]
    model: PathBuf,
    /// Annealing runs.
    #[arg(long, default_value_t = 100)]
    runs: usize,
    /// Intermediate distributions (the paper's 14,500 by default).
    #[arg(long, default_value_t = 14_500)]
    steps: usize,
    /// How the test images are made binary.
    #[arg(long, value_enum, default_value = "sample")]
    binarize: Binarize,
    /// Up-pass samples per test image for the DBN's variational lower bound (nets of two or
    /// more layers without labels on top).
    #[arg(long, default_value_t = 10)]
    dbn_samples: usize,
    /// Seed of the annealing and of the binarisation.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Measure the last this many training images instead of the test set, to choose
    /// settings without looking at it; the base-rate model then uses the other training
    /// images (0: the test set).
    #[arg(long, default_value_t = 0)]
    validation: usize,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(ctx: &Context, args: AisArgs) -> Result<(), CliError> {
    let (dbn, _) = persist::load(&args.model)?;
    dbn.refuse_sequence_model("log-probability by AIS")?;
    let rbm = &dbn.layers()[0];
    let train = ctx.load_mnist(MnistSplit::Train)?;
    let (train, test, held) = if args.validation > 0 {
        if args.validation >= train.len() {
            return Err(CliError::Usage(format!(
                "--validation {} leaves no training images (MNIST has {})",
                args.validation,
                train.len()
            )));
        }
        let (train, valid) = train.split_last(args.validation);
        (train, valid, "validation")
    } else {
        (train, ctx.load_mnist(MnistSplit::Test)?, "test")
    };
    if rbm.label_units > 0 || rbm.n_visible() != test.n_pixels() {
        return Err(CliError::Usage(format!(
            "the model's first RBM has {} visible units ({} of them labels); MNIST has {} pixels",
            rbm.n_visible(),
            rbm.label_units,
            test.n_pixels()
        )));
    }
    let mut rng = crate::engine::rng_from_seed(args.seed);
    let binary =
        |images: &ndarray::Array2<f32>, rng: &mut crate::engine::EngineRng| match args.binarize {
            Binarize::Sample => sample_binary(images.view(), rng),
            Binarize::Threshold => images.mapv(|p| (p >= 0.5) as u8 as f32),
        };
    let train_bin = binary(&train.images, &mut rng);
    let test_bin = binary(&test.images, &mut rng);
    let config = AisConfig::schedule(args.runs, args.steps);
    let started = Instant::now();
    let report = log_prob_report(
        rbm,
        train_bin.view(),
        Some(test_bin.view()),
        &config,
        &mut rng,
    )?;
    let seconds = started.elapsed().as_secs_f64();
    let est = &report.estimate;
    let spread = est.spread();
    let (train_lp, test_lp) = (report.train, report.test.unwrap_or(f64::NAN));
    let bound = dbn.log_prob_bound_with_ais(
        train_bin.view(),
        test_bin.view(),
        &config,
        args.dbn_samples,
        &mut rng,
    )?;
    if args.json {
        let mut out = serde_json::json!({
            "model": args.model,
            "runs": args.runs,
            "steps": args.steps,
            "log_z": est.log_z,
            "log_z_low": est.log_z_low,
            "log_z_high": est.log_z_high,
            "log_z_base": est.log_z_base,
            "run_log_z_min": spread.min,
            "run_log_z_median": spread.median,
            "run_log_z_max": spread.max,
            "run_log_z_std": spread.std,
            "effective_runs": spread.effective_runs,
            "measured_on": held,
            "train_log_prob": train_lp,
            "dbn_top_log_z": bound.as_ref().map(|(e, _)| e.log_z),
            "test_log_prob_dbn_bound": bound.as_ref().map(|(_, b)| *b),
            "seconds": seconds,
        });
        out[format!("{held}_log_prob")] = test_lp.into();
        println!("{out}");
    } else {
        let (lo, hi) = report.range(test_lp);
        println!(
            "{}: first RBM {}-{}, AIS with {} runs over {} distributions in {seconds:.1} s",
            args.model.display(),
            rbm.n_visible(),
            rbm.n_hidden(),
            args.runs,
            args.steps
        );
        println!(
            "ln Z = {:.2} (±3 s.e.: {:.2} .. {:.2}; base-rate model {:.2})",
            est.log_z, est.log_z_low, est.log_z_high, est.log_z_base
        );
        println!(
            "spread of the {} runs' own estimates ln Z_0 + ln w_i: min {:.2}, median {:.2}, max \
             {:.2}, s.d. {:.2}; effective runs (Σw)²/Σw² = {:.1}",
            args.runs, spread.min, spread.median, spread.max, spread.std, spread.effective_runs
        );
        println!("average log-probability, {held}: {test_lp:.2} nats ({lo:.2} .. {hi:.2})");
        println!("average log-probability, train: {train_lp:.2} nats");
        if let Some((top, b)) = &bound {
            println!(
                "whole DBN: top RBM ln Z = {:.2} (±3 s.e.: {:.2} .. {:.2}); variational lower \
                 bound on the {held} log-probability: {b:.2} nats ({} samples per image)",
                top.log_z, top.log_z_low, top.log_z_high, args.dbn_samples
            );
        }
    }
    Ok(())
}
