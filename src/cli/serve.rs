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
        if config.fetch_mnist {
            let plan = crate::fetch::FetchPlan::mnist(&ctx.mnist_dir);
            if !crate::fetch::is_complete(&plan) {
                tracing::info!("fetching MNIST into {}", plan.dir.display());
                match crate::fetch::fetch(&plan).await {
                    Ok(_) => tracing::info!("MNIST is ready in {}", plan.dir.display()),
                    Err(e) => tracing::error!("{e}"),
                }
            }
        }
        let server = crate::startup::start(config, Some(ctx.mnist_dir.clone())).await?;
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

#[derive(Debug, Args)]
pub struct HealthcheckArgs {
    /// The server's address (a wildcard address is checked on loopback).
    #[arg(long, env = "DBN_ADDR", default_value = "127.0.0.1:8080")]
    addr: std::net::SocketAddr,
}

/// One `GET /healthz` over plain TCP with a short timeout; no HTTP client needed in the image.
pub fn healthcheck(args: HealthcheckArgs) -> Result<(), CliError> {
    use std::io::{Read, Write};
    use std::time::Duration;
    let mut addr = args.addr;
    if addr.ip().is_unspecified() {
        addr.set_ip(if addr.is_ipv4() {
            std::net::Ipv4Addr::LOCALHOST.into()
        } else {
            std::net::Ipv6Addr::LOCALHOST.into()
        });
    }
    let io = |source| CliError::Io {
        path: PathBuf::from(addr.to_string()),
        source,
    };
    let mut stream =
        std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(3)).map_err(io)?;
    stream
        .set_read_timeout(Some(Duration::from_secs(3)))
        .map_err(io)?;
    stream
        .write_all(b"GET /healthz HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .map_err(io)?;
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).map_err(io)?;
    if head.starts_with(b"HTTP/1.") && &head[9..12] == b"200" {
        println!("healthy");
        Ok(())
    } else {
        Err(CliError::Usage(format!(
            "unhealthy: {}",
            String::from_utf8_lossy(&head)
        )))
    }
}
