//! SQLite's `lower()`, replaced on every connection by one that lower-cases all of Unicode.
//!
//! SQLite's built-in `lower()` folds ASCII letters only, so the triggers that normalise
//! emails stored `ÉLODIE@example.com` as `Élodie@example.com`, which never matches HubSpot's
//! `élodie@example.com`. Emails must compare alike on both backends and in Rust
//! ([`crate::ids::Email`]: `trim().to_lowercase()`), so each connection of the pool
//! overrides `lower(X)` with Rust's `str::to_lowercase` before anything else runs on it
//! (migrations and triggers included). Overriding the built-in rather than adding a function
//! under a new name keeps the database usable by other tools (the `sqlite3` shell, a user's
//! own scripts): there the triggers still work, with SQLite's ASCII-only `lower()`.
//!
//! sqlx 0.9 has no safe API for application-defined functions, hence the one FFI call below.

// The workspace denies `unsafe_code`; this module is its one exception (see above).
#![allow(unsafe_code)]

use libsqlite3_sys as ffi;
use sqlx::SqliteConnection;
use std::ffi::c_int;

/// `lower\0`: the name of the function replaced.
const NAME: &[u8] = b"lower\0";

/// Replaces `lower(X)` on `conn` with the Unicode lower-casing of [`str::to_lowercase`].
pub(crate) async fn register(conn: &mut SqliteConnection) -> Result<(), sqlx::Error> {
    let mut handle = conn.lock_handle().await?;
    let db = handle.as_raw_handle().as_ptr();
    // SAFETY: `db` is the open connection, exclusively ours while `handle` is held. The name
    // is NUL-terminated and static; there is no user data, hence no destructor.
    // DETERMINISTIC and INNOCUOUS: same output for the same input and no side effects, so
    // SQLite lets the schema's triggers call it even with `trusted_schema` off.
    let rc = unsafe {
        ffi::sqlite3_create_function_v2(
            db,
            NAME.as_ptr().cast(),
            1,
            ffi::SQLITE_UTF8 | ffi::SQLITE_DETERMINISTIC | ffi::SQLITE_INNOCUOUS,
            std::ptr::null_mut(),
            Some(lower),
            None,
            None,
            None,
        )
    };
    if rc == ffi::SQLITE_OK {
        Ok(())
    } else {
        Err(sqlx::Error::Configuration(
            format!("cannot register the Unicode lower() on SQLite (error code {rc})").into(),
        ))
    }
}

/// The SQL function: NULL stays NULL, anything else is read as text and lower-cased.
unsafe extern "C" fn lower(
    ctx: *mut ffi::sqlite3_context,
    argc: c_int,
    argv: *mut *mut ffi::sqlite3_value,
) {
    // SAFETY (whole body): SQLite calls this with `argc` valid values in `argv` (registered
    // with exactly one argument), and the text it returns stays valid until the value is
    // read again or the call ends; the result is copied (SQLITE_TRANSIENT) before returning.
    unsafe {
        if argc != 1 {
            ffi::sqlite3_result_null(ctx);
            return;
        }
        let value = *argv;
        if ffi::sqlite3_value_type(value) == ffi::SQLITE_NULL {
            ffi::sqlite3_result_null(ctx);
            return;
        }
        let text = ffi::sqlite3_value_text(value);
        let len = ffi::sqlite3_value_bytes(value);
        let bytes = if text.is_null() || len <= 0 {
            &[][..]
        } else {
            std::slice::from_raw_parts(text, len as usize)
        };
        // SQLite stores UTF-8 in a UTF-8 database; anything else is lossily decoded rather
        // than failing the statement.
        let lowered = String::from_utf8_lossy(bytes).to_lowercase();
        ffi::sqlite3_result_text(
            ctx,
            lowered.as_ptr().cast(),
            lowered.len() as c_int,
            ffi::SQLITE_TRANSIENT(),
        );
    }
}
