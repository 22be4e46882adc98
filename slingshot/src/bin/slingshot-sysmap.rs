//! `slingshot-sysmap FILE [--listen ADDR]`: serves a sys-map file over HTTP,
//! so services can be pointed at it with `SLINGSHOT_SYS_MAP=http://ADDR`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use slingshot::sysmap::file::FileSysMap;
use slingshot::telemetry::{LogArgs, Output};

/// Serves a sys-map file over HTTP: every endpoint of its "endpoints" object
/// at GET /PATH, as the sys-map service does.
#[derive(Parser, Debug)]
#[command(name = "slingshot-sysmap", disable_version_flag = true)]
struct Cli {
    /// The sys-map file (JSON with "endpoints" and optionally "backends").
    file: PathBuf,
    /// Address to listen on.
    #[arg(
        long,
        env = "SLINGSHOT_SYSMAP_LISTEN",
        value_name = "ADDR",
        default_value = "127.0.0.1:8910"
    )]
    listen: String,
    #[command(flatten)]
    log: LogArgs,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    cli.log.init(Output::Stdout);
    let map = match FileSysMap::load(&cli.file) {
        Ok(map) => map,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let listener = match tokio::net::TcpListener::bind(&cli.listen).await {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!("error: cannot listen on {}: {e}", cli.listen);
            return ExitCode::FAILURE;
        }
    };
    let paths: Vec<&str> = map.paths().collect();
    tracing::info!(file = %cli.file.display(), listen = %cli.listen, endpoints = ?paths, "serving the sys-map");
    match slingshot::sysmap::server::serve(map, listener).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
