//! Log lines written on a test's own thread, captured for the test to read.
//!
//! `tracing` caches each callsite's interest for the whole process, and while one dispatcher
//! is registered it asks the default of whichever thread reaches the callsite first
//! (tokio-rs/tracing#3611). A test holding a scoped `set_default` subscriber therefore goes
//! blind, now and then, when a sibling test without one reaches a shared callsite first: the
//! interest is cached as "never" and the event is not even built. So one global subscriber is
//! installed once per test binary, which keeps every callsite's interest on, and its writer
//! hands each line to the capture of the thread that logged it, if that thread holds one.

use std::cell::RefCell;
use std::io::Write;
use std::sync::{Arc, Mutex, Once};

thread_local! {
    static CAPTURE: RefCell<Option<CapturedLog>> = const { RefCell::new(None) };
}

/// What this thread has logged at INFO and above since [`capture_this_thread`].
#[derive(Clone, Default)]
pub struct CapturedLog(Arc<Mutex<Vec<u8>>>);

impl CapturedLog {
    /// The captured lines as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

/// Captures what this thread logs from now on. A `#[tokio::test]` runs its runtime on the
/// test's thread, so that is everything the test's futures log.
pub fn capture_this_thread() -> CapturedLog {
    static GLOBAL: Once = Once::new();
    GLOBAL.call_once(|| {
        let subscriber = tracing_subscriber::fmt()
            .with_writer(|| ToThisThreadsCapture)
            .with_ansi(false)
            .finish();
        tracing::subscriber::set_global_default(subscriber)
            .expect("no other global subscriber in a test binary");
    });
    let log = CapturedLog::default();
    CAPTURE.with(|capture| *capture.borrow_mut() = Some(log.clone()));
    log
}

/// Appends to the logging thread's capture, or drops the line when it has none.
struct ToThisThreadsCapture;

impl Write for ToThisThreadsCapture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        CAPTURE.with(|capture| {
            if let Some(log) = &*capture.borrow() {
                log.0.lock().unwrap().extend_from_slice(buf);
            }
        });
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
