//! What every benchmark shares: a runtime around its async body that turns a failure into one
//! error line and exit status 1, and the peak-RSS reading the figures quote.

// Each benchmark is its own crate and uses only part of this module.
#![allow(dead_code)]

use std::future::Future;

/// Any benchmark failure; printed as one line.
pub type BoxError = Box<dyn std::error::Error>;

/// Runs `bench` on a multi-threaded runtime; prints its error and exits 1 when it fails, so a
/// broken benchmark is never mistaken for a finished one.
pub fn run_to_exit(bench: impl Future<Output = Result<(), BoxError>>) {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start a tokio runtime: {e}");
            std::process::exit(1);
        }
    };
    if let Err(e) = runtime.block_on(bench) {
        eprintln!("benchmark failed: {e}");
        std::process::exit(1);
    }
}

/// This process's peak resident set so far (Linux `VmHWM`), in MB; `None` where the kernel does
/// not say.
pub fn peak_rss_mb() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024)
}
