//! `dbn-serve mnist fetch [--dir DIR]`: downloads MNIST's four files from public mirrors
//! (checked, atomic, resumable; see [`crate::fetch`]).

use std::path::PathBuf;

use clap::{Args, Subcommand};

use super::{CliError, Context};
use crate::fetch::{fetch, FetchPlan, Fetched};

#[derive(Debug, Args)]
pub struct MnistArgs {
    #[command(subcommand)]
    command: MnistCommand,
}

#[derive(Debug, Subcommand)]
enum MnistCommand {
    /// Download the four MNIST files into the MNIST directory (only those missing or wrong).
    Fetch(FetchArgs),
}

#[derive(Debug, Args)]
struct FetchArgs {
    /// Where to put the files (default: the MNIST directory, `--mnist-dir`).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Base URLs to download from, tried in turn (default: the public mirrors).
    #[arg(long = "mirror", env = "DBN_MNIST_MIRRORS", value_delimiter = ',')]
    mirrors: Vec<String>,
}

pub fn run(ctx: &Context, args: MnistArgs) -> Result<(), CliError> {
    let MnistCommand::Fetch(args) = args.command;
    let mut plan = FetchPlan::mnist(args.dir.as_ref().unwrap_or(&ctx.mnist_dir));
    if !args.mirrors.is_empty() {
        plan.mirrors = args.mirrors;
    }
    plan.progress = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::Usage(format!("starting the downloader: {e}")))?;
    let done = runtime
        .block_on(fetch(&plan))
        .map_err(|e| CliError::Usage(e.to_string()))?;
    for item in done {
        match item {
            Fetched::Present(file) => println!("{file}: present"),
            Fetched::Downloaded { file, url } => println!("{file}: downloaded from {url}"),
        }
    }
    println!("MNIST is ready in {}", plan.dir.display());
    Ok(())
}
