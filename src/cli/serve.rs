//! `dbn-serve serve` (and `dbn-serve` alone): the HTTP server until SIGINT or SIGTERM; and
//! `dbn-serve openapi`: the API description.

use std::path::PathBuf;

use clap::Args;

use super::{CliError, Context};
use crate::config::ServeConfig;

pub fn run(ctx: &Context, config: ServeConfig) -> Result<(), CliError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("http")
        .build()
        .map_err(|source| CliError::Io {
            path: PathBuf::from("<tokio runtime>"),
            source,
        })?;
    runtime.block_on(async {
        let server = crate::http::start(config, Some(ctx.mnist_dir.clone())).await?;
        println!("dbn-serve listening on http://{}", server.addr);
        shutdown_signal().await;
        tracing::info!("shutting down");
        server.stop().await;
        Ok(())
    })
}

async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!("cannot listen for SIGTERM: {e}");
                    let _ = interrupt.await;
                    return;
                }
            };
        tokio::select! {
            _ = interrupt => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
    }
}

#[derive(Debug, Args)]
pub struct OpenapiArgs {
    /// Write here instead of standard output.
    #[arg(long)]
    out: Option<PathBuf>,
}

pub fn openapi(args: OpenapiArgs) -> Result<(), CliError> {
    let text = crate::http::openapi::document();
    match args.out {
        Some(path) => crate::engine::persist::write_atomic(&path, text.as_bytes())?,
        None => print!("{text}"),
    }
    Ok(())
}
