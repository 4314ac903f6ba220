//! The command line. The subcommands:
//!
//! - `serve` (the default): run the HTTP server.
//! - `openapi`: print the OpenAPI document, or write it to a file.
//! - `healthcheck`: exit 0 when the server at `--addr` answers `/healthz`.
//! - `train`: train a model from a JSON training spec and save it.
//! - `finetune`: fine-tune a greedily trained model as a spec's `finetune` section says.
//! - `eval`: a model's MNIST test error and confusion matrix.
//! - `compact`: store a model's weights as bfloat16 and measure it again.
//! - `sample`: generated digits of a chosen class as a PNG grid.
//! - `ais`: the first RBM's partition function by annealed importance sampling, and the test
//!   set's average log-probability.
//! - `mnist fetch`: download the four MNIST files.
//!
//! The server's settings, the global `--threads` and `--mnist-dir`, `healthcheck --addr` and
//! `mnist fetch --mirror` also read `DBN_…` environment variables; the other subcommands'
//! flags do not.

mod ais;
mod compact;
mod eval;
mod finetune;
mod mnist;
mod progress;
mod sample;
mod serve;
mod train;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::engine::data::{Dataset, MnistSplit};
use crate::engine::EngineError;

/// Deep belief nets learned by contrastive divergence.
#[derive(Debug, Parser)]
#[command(
    name = "dbn-serve",
    version,
    about,
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    /// Worker threads for the numerics (default: all cores). Results are reproducible for a
    /// given seed and thread count.
    #[arg(long, env = "DBN_THREADS", global = true)]
    threads: Option<usize>,
    /// Directory holding the four MNIST files (standard names, gzipped or raw).
    #[arg(
        long,
        env = "DBN_MNIST_DIR",
        default_value = "data/mnist",
        global = true
    )]
    mnist_dir: PathBuf,
    #[command(subcommand)]
    command: Option<Command>,
    /// With no subcommand: serve with these settings.
    #[command(flatten)]
    serve: crate::config::ServeConfig,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the HTTP server (the default).
    Serve(Box<crate::config::ServeConfig>),
    /// Print the OpenAPI document (or write it to a file).
    Openapi(serve::OpenapiArgs),
    /// Exit 0 when the server at `--addr` answers `/healthz` (for container health checks).
    Healthcheck(serve::HealthcheckArgs),
    /// Train a model from a JSON training spec and save it.
    Train(train::TrainArgs),
    /// Fine-tune a greedily trained model as a spec's `finetune` section says (or, for a model
    /// already fine-tuned so, train only the spec's `classifier` stage).
    Finetune(finetune::FinetuneArgs),
    /// Measure a model's error on the MNIST test set, with a confusion matrix.
    Eval(eval::EvalArgs),
    /// Store a model's weights as bfloat16 (half the bytes) and measure it again.
    Compact(compact::CompactArgs),
    /// MNIST on demand: `mnist fetch` downloads the four files.
    Mnist(mnist::MnistArgs),
    /// Generate digits of a chosen class and save them as a PNG grid.
    Sample(sample::SampleArgs),
    /// Estimate the first RBM's partition function by annealed importance sampling and the
    /// average log-probability of the MNIST test set, in nats.
    Ais(ais::AisArgs),
}

/// Failures of a command, reported on stderr with a non-zero exit.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    Render(#[from] crate::render::RenderError),
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Serve(#[from] crate::startup::ServeError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Runs the command line; the binary's `main`.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let command = cli.command.unwrap_or(Command::Serve(Box::new(cli.serve)));
    let json_logs =
        matches!(&command, Command::Serve(c) if c.log_format == crate::config::LogFormat::Json);
    let filter = tracing_subscriber::EnvFilter::try_from_env("DBN_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    if json_logs {
        logs.json().init();
    } else {
        logs.init();
    }
    let threads = cli
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    if let Err(e) = rayon::ThreadPoolBuilder::new()
        .num_threads(threads.max(1))
        .build_global()
    {
        tracing::warn!("thread pool: {e}");
    }
    let ctx = Context {
        threads: rayon::current_num_threads(),
        mnist_dir: cli.mnist_dir,
    };
    let result = match command {
        Command::Serve(config) => serve::run(&ctx, *config),
        Command::Openapi(args) => serve::openapi(args),
        Command::Healthcheck(args) => serve::healthcheck(args),
        Command::Train(args) => train::run(&ctx, args),
        Command::Finetune(args) => finetune::run(&ctx, args),
        Command::Eval(args) => eval::run(&ctx, args),
        Command::Compact(args) => compact::run(&ctx, args),
        Command::Mnist(args) => mnist::run(&ctx, args),
        Command::Ais(args) => ais::run(&ctx, args),
        Command::Sample(args) => sample::run(&ctx, args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Settings shared by the subcommands.
struct Context {
    threads: usize,
    mnist_dir: PathBuf,
}

impl Context {
    fn load_mnist(&self, split: MnistSplit) -> Result<Dataset, CliError> {
        let data = Dataset::load_mnist(&self.mnist_dir, split).map_err(EngineError::from)?;
        tracing::info!(
            "loaded {} MNIST {:?} images from {}",
            data.len(),
            split,
            self.mnist_dir.display()
        );
        Ok(data)
    }
}
