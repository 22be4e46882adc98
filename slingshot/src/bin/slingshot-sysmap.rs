//! `slingshot-sysmap FILE [--listen ADDR]`: serves a sys-map file over HTTP
//! (default 127.0.0.1:8910), so services can be pointed at it with
//! `SLINGSHOT_SYS_MAP=http://127.0.0.1:8910`.

use std::process::ExitCode;

use slingshot::sysmap::file::FileSysMap;

const USAGE: &str = "usage: slingshot-sysmap FILE [--listen ADDR]   (default ADDR 127.0.0.1:8910)";

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    slingshot::telemetry::init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (file, listen) = match args.as_slice() {
        [file] => (file, "127.0.0.1:8910"),
        [file, flag, addr] if flag == "--listen" => (file, addr.as_str()),
        _ => {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    let map = match FileSysMap::load(file) {
        Ok(map) => map,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let listener = match tokio::net::TcpListener::bind(listen).await {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!("error: cannot listen on {listen}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let paths: Vec<&str> = map.paths().collect();
    tracing::info!(file = %file, listen = %listen, endpoints = ?paths, "serving the sys-map");
    match slingshot::sysmap::server::serve(map, listener).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
