//! Thin entry point: parse the CLI, load the config, set up logging, bind,
//! hand over to `server::run` (SIGINT/SIGTERM: drain and stop; SIGHUP:
//! reload the spawned pools); print one error line and exit 0, 1 or 2.

use std::process::ExitCode;

use clap::Parser;

use cgihost::cli::Cli;
use cgihost::config::Config;
use cgihost::router::App;

fn main() -> ExitCode {
    let cli = Cli::parse();
    cgihost::log::init(cli.verbose as i8 - cli.quiet as i8);
    let config = match Config::load(&cli) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("cgihost: {e}");
            return ExitCode::from(2);
        }
    };
    if cli.check_config {
        for line in config.route_lines() {
            println!("{line}");
        }
        println!("configuration ok");
        return ExitCode::SUCCESS;
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cgihost: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let served = runtime.block_on(serve(config));
    cgihost::log::flush_access_log();
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cgihost: {e}");
            ExitCode::from(1)
        }
    }
}

async fn serve(config: Config) -> Result<(), Box<dyn std::error::Error>> {
    use tokio::signal::unix::{signal, SignalKind};
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", config.listen))?;
    let app = App::new(config)?;
    // Install the handlers before announcing readiness: a signal that
    // arrives right after "listening on" must drain, not kill.
    let term = signal(SignalKind::terminate()).map_err(|e| format!("SIGTERM handler: {e}"))?;
    let int = signal(SignalKind::interrupt()).map_err(|e| format!("SIGINT handler: {e}"))?;
    let hup = signal(SignalKind::hangup()).map_err(|e| format!("SIGHUP handler: {e}"))?;
    for line in app.config.route_lines() {
        tracing::info!("route: {line}");
    }
    tracing::info!("listening on http://{}", listener.local_addr()?);
    tokio::spawn(reload_on_sighup(app.clone(), hup));
    cgihost::server::run(listener, app, shutdown_signal(term, int)).await?;
    Ok(())
}

async fn reload_on_sighup(app: std::sync::Arc<App>, mut hup: tokio::signal::unix::Signal) {
    while hup.recv().await.is_some() {
        tracing::info!("SIGHUP received: reloading FastCGI pools");
        app.fastcgi.reload_pools();
    }
}

/// Resolves on the first SIGTERM or SIGINT.
async fn shutdown_signal(
    mut term: tokio::signal::unix::Signal,
    mut int: tokio::signal::unix::Signal,
) {
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = int.recv() => tracing::info!("SIGINT received"),
    }
}
