//! The first PostgreSQL connection, and why it failed in the operator's words: a refused
//! port, a missing database or role, a wrong password, or something that is not PostgreSQL
//! answering — never the driver's internals (source lines, frame lengths).

use sqlx::ConnectOptions as _;
use sqlx::postgres::{PgConnectOptions, PgConnection};
use std::io::ErrorKind;
use std::time::Duration;

/// Why the first connection to PostgreSQL failed; `Display` says what to do about it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PgConnectFailure {
    /// Nothing listens on that host and port.
    #[error(
        "connection refused: nothing listens on {address} (is PostgreSQL running there? check \
         database.url or DATABASE_URL)"
    )]
    Refused {
        /// `host:port` from the URL.
        address: String,
    },
    /// The server accepted the TCP connection but never answered.
    #[error(
        "no answer from {address} within {} s (is that host and port PostgreSQL's, and \
         reachable? check database.url or DATABASE_URL)",
        seconds
    )]
    NoAnswer {
        /// `host:port` from the URL.
        address: String,
        /// How long it waited.
        seconds: u64,
    },
    /// The server answered with something other than PostgreSQL's protocol.
    #[error(
        "what answers on {address} is not PostgreSQL (check the host and port in database.url; \
         PostgreSQL's usual port is 5432)"
    )]
    NotPostgres {
        /// `host:port` from the URL.
        address: String,
    },
    /// The server has no database of that name.
    #[error(
        "database \"{name}\" does not exist (create it, e.g. `createdb {name}`, or name another \
         database in database.url)"
    )]
    NoDatabase {
        /// The database the URL names.
        name: String,
    },
    /// The server has no role (user) of that name.
    #[error(
        "role \"{user}\" does not exist (create it, e.g. `createuser {user}`, or name another \
         user in database.url)"
    )]
    NoRole {
        /// The user the URL names.
        user: String,
    },
    /// The server refused the user's password.
    #[error("password authentication failed for user \"{user}\" (check database.url)")]
    BadPassword {
        /// The user the URL names.
        user: String,
    },
    /// The server refused the connection for another reason (its own one-line message).
    #[error("the server refused the connection: {message}")]
    Rejected {
        /// PostgreSQL's message, without position or source details.
        message: String,
    },
    /// The host could not be reached for another reason (unknown host name, no route, ...).
    #[error("{message} (check the host in database.url)")]
    Network {
        /// The operating system's words.
        message: String,
    },
}

/// Opens one connection and closes it again, or says why it cannot be opened. The pool is not
/// used for this: it retries a refused connection until its own timeout, which would hide
/// "refused" behind a long wait.
pub(super) async fn probe(
    options: &PgConnectOptions,
    limit: Duration,
) -> Result<(), PgConnectFailure> {
    let address = format!("{}:{}", options.get_host(), options.get_port());
    match tokio::time::timeout(limit, options.connect()).await {
        Ok(Ok(connection)) => {
            close(connection).await;
            Ok(())
        }
        Ok(Err(e)) => Err(classify(&e, options, address)),
        Err(_) => Err(PgConnectFailure::NoAnswer {
            address,
            seconds: limit.as_secs(),
        }),
    }
}

async fn close(connection: PgConnection) {
    use sqlx::Connection as _;
    // The probe's only job is done; a failed goodbye changes nothing.
    let _ = connection.close().await;
}

/// The failure a connection error stands for.
fn classify(e: &sqlx::Error, options: &PgConnectOptions, address: String) -> PgConnectFailure {
    match e {
        sqlx::Error::Io(io) if io.kind() == ErrorKind::ConnectionRefused => {
            PgConnectFailure::Refused { address }
        }
        // A server that hangs up on PostgreSQL's start-up message, or answers it with bytes
        // that do not parse, speaks another protocol.
        sqlx::Error::Io(io)
            if matches!(
                io.kind(),
                ErrorKind::UnexpectedEof
                    | ErrorKind::ConnectionReset
                    | ErrorKind::ConnectionAborted
                    | ErrorKind::BrokenPipe
                    | ErrorKind::InvalidData
            ) =>
        {
            PgConnectFailure::NotPostgres { address }
        }
        sqlx::Error::Protocol(_) | sqlx::Error::Decode(_) => {
            PgConnectFailure::NotPostgres { address }
        }
        sqlx::Error::Io(io) => PgConnectFailure::Network {
            message: io.to_string(),
        },
        sqlx::Error::Database(db) => refused_by_server(db.code().as_deref(), db.message(), options),
        other => PgConnectFailure::Rejected {
            message: other.to_string(),
        },
    }
}

/// A refusal by PostgreSQL itself, by its SQLSTATE.
fn refused_by_server(
    code: Option<&str>,
    message: &str,
    options: &PgConnectOptions,
) -> PgConnectFailure {
    let user = options.get_username().to_owned();
    match code {
        // invalid_catalog_name
        Some("3D000") => PgConnectFailure::NoDatabase {
            // PostgreSQL's default database is the user's name.
            name: options.get_database().unwrap_or(&user).to_owned(),
        },
        // invalid_authorization_specification: also a pg_hba.conf refusal, told apart by
        // PostgreSQL's wording.
        Some("28000") if message.contains("does not exist") => PgConnectFailure::NoRole { user },
        // invalid_password
        Some("28P01") => PgConnectFailure::BadPassword { user },
        _ => PgConnectFailure::Rejected {
            message: message.to_owned(),
        },
    }
}
