//! The `crm-sync` binary: parse, run, and report a failure as one line on stderr.

use std::process::ExitCode;

use clap::Parser as _;
use crm_sync::cli::{self, Cli};

#[tokio::main]
async fn main() -> ExitCode {
    // Usage errors exit here with clap's own message and status 2.
    let cli = Cli::parse();
    match cli::run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", e.one_line());
            ExitCode::from(e.exit_code())
        }
    }
}
