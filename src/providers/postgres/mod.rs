//! PostgreSQL: connecting (TLS as libpq's sslmode says), telling why a
//! connection failed, quoting, and the work built on it: accounts, table
//! measures, dumps and restores.

pub mod accounts;
pub mod dump;
mod engine;
pub mod replay;
pub mod scram;
pub mod tables;
pub mod wal;
mod watch;

use tokio_postgres::{Client, config::SslMode as PgSslMode, error::SqlState};

use crate::api::database::SslMode;
pub use crate::providers::database::{EngineError as PgError, Password, Target};
pub use engine::Postgres;
pub use watch::Watch;

pub const CONNECTION_REFUSED: &str = "ConnectionRefused";
pub const TIMEOUT: &str = "Timeout";
pub const AUTHENTICATION_FAILED: &str = "AuthenticationFailed";
pub const TLS_FAILED: &str = "TLSFailed";
pub const UNREACHABLE: &str = "Unreachable";
pub const QUERY_FAILED: &str = "QueryFailed";

/// Classifies a tokio-postgres error.
pub fn classify(e: &tokio_postgres::Error) -> PgError {
    let text = crate::providers::artifacts::error_chain(e);
    if let Some(db) = e.as_db_error() {
        let auth = [
            SqlState::INVALID_PASSWORD,
            SqlState::INVALID_AUTHORIZATION_SPECIFICATION,
        ];
        let reason = if auth.contains(db.code()) {
            AUTHENTICATION_FAILED
        } else {
            QUERY_FAILED
        };
        return PgError::new(reason, text);
    }
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if err.is::<rustls::Error>() {
            return PgError::new(TLS_FAILED, text);
        }
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            if io.get_ref().is_some_and(|inner| inner.is::<rustls::Error>()) {
                return PgError::new(TLS_FAILED, text);
            }
            let reason = match io.kind() {
                std::io::ErrorKind::ConnectionRefused => CONNECTION_REFUSED,
                std::io::ErrorKind::TimedOut => TIMEOUT,
                _ => UNREACHABLE,
            };
            return PgError::new(reason, text);
        }
        cur = err.source();
    }
    if text.contains("timeout") || text.contains("timed out") {
        PgError::new(TIMEOUT, text)
    } else if text.contains("TLS") || text.contains("tls") || text.contains("certificate") {
        PgError::new(TLS_FAILED, text)
    } else if e.is_closed() || text.contains("error connecting") {
        PgError::new(UNREACHABLE, text)
    } else {
        PgError::new(QUERY_FAILED, text)
    }
}

impl From<tokio_postgres::Error> for PgError {
    fn from(e: tokio_postgres::Error) -> Self {
        classify(&e)
    }
}

impl Target {
    /// Connects to `dbname`. The connection task ends with the returned client.
    pub async fn connect(&self, dbname: &str) -> Result<Client, PgError> {
        Ok(self.connect_kept(dbname).await?.0)
    }

    /// Connects to `dbname`; the receiver hears when the connection ends
    /// (the server closed it, the network broke, the client was dropped).
    pub async fn connect_kept(&self, dbname: &str) -> Result<(Client, tokio::sync::oneshot::Receiver<()>), PgError> {
        let mut config = tokio_postgres::Config::new();
        config
            .host(&self.host)
            .port(self.port)
            .user(&self.user)
            .password(self.password.0.as_bytes())
            .dbname(dbname)
            .application_name("reprise")
            .connect_timeout(self.connect_timeout)
            .ssl_mode(match self.ssl_mode {
                SslMode::Disable => PgSslMode::Disable,
                SslMode::Prefer => PgSslMode::Prefer,
                _ => PgSslMode::Require,
            });
        let tls = connector(self.ssl_mode, self.ca_pem.as_deref()).map_err(|e| PgError::new(TLS_FAILED, e))?;
        // tokio-postgres bounds each connect attempt; bound the whole of it too
        // (a server that accepts and never answers the startup message).
        let (client, connection) = tokio::time::timeout(self.connect_timeout, config.connect(tls))
            .await
            .map_err(|_| {
                PgError::new(
                    TIMEOUT,
                    format!(
                        "{}:{} did not answer within {:?}",
                        self.host, self.port, self.connect_timeout
                    ),
                )
            })??;
        let (ended, on_end) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "PostgreSQL connection ended");
            }
            let _ = ended.send(());
        });
        Ok((client, on_end))
    }

    /// Environment for libpq tools (pg_dump, pg_restore): the password goes
    /// through the environment, never the command line.
    pub fn libpq_env(&self, ca_file: Option<&std::path::Path>) -> Vec<(String, String)> {
        let mode = match (self.ssl_mode, ca_file.is_some()) {
            (SslMode::Disable, _) => "disable",
            (SslMode::Prefer, _) => "prefer",
            (SslMode::Require, false) => "require",
            (SslMode::Require, true) | (SslMode::VerifyCA, _) => "verify-ca",
            (SslMode::VerifyFull, _) => "verify-full",
        };
        let mut env = vec![
            ("PGHOST".into(), self.host.clone()),
            ("PGPORT".into(), self.port.to_string()),
            ("PGUSER".into(), self.user.clone()),
            ("PGPASSWORD".into(), self.password.0.clone()),
            ("PGSSLMODE".into(), mode.into()),
            (
                "PGCONNECT_TIMEOUT".into(),
                self.connect_timeout.as_secs().max(2).to_string(),
            ),
            ("PGAPPNAME".into(), "reprise".into()),
        ];
        if let Some(f) = ca_file {
            env.push(("PGSSLROOTCERT".into(), f.display().to_string()));
        }
        env
    }
}

/// Connections to the databases of one instance, each opened once and kept
/// for the rest of a reconcile (checking data, grants and owners all read the
/// same databases).
pub struct Sessions {
    target: Target,
    open: std::collections::HashMap<String, Client>,
}

impl Sessions {
    pub fn new(target: Target) -> Self {
        Self {
            target,
            open: Default::default(),
        }
    }

    pub fn target(&self) -> &Target {
        &self.target
    }

    /// The connection to `db`, opened on first use.
    pub async fn get(&mut self, db: &str) -> Result<&Client, PgError> {
        if !self.open.contains_key(db) {
            let c = self.target.connect(db).await?;
            self.open.insert(db.to_string(), c);
        }
        Ok(&self.open[db])
    }
}

/// TLS with libpq's sslmode semantics: `Prefer`/`Require` encrypt without
/// checking the certificate (unless a CA bundle is given: then the CA is
/// checked, as libpq does with a root certificate), `VerifyCA` checks the chain
/// but not the host name, `VerifyFull` checks both.
fn connector(mode: SslMode, ca_pem: Option<&[u8]>) -> Result<tokio_postgres_rustls::MakeRustlsConnect, String> {
    use crate::providers::tls::{Check, client_config};
    let check = match (mode, ca_pem) {
        (SslMode::Disable, _) | (SslMode::Prefer | SslMode::Require, None) => Check::Nothing,
        (SslMode::VerifyCA | SslMode::VerifyFull, None) => {
            return Err(format!("sslMode {mode:?} needs a CA bundle (caBundleSecretRef)"));
        }
        (SslMode::VerifyFull, Some(_)) => Check::Full,
        (_, Some(_)) => Check::Chain,
    };
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(client_config(
        check, ca_pem,
    )?))
}

/// Quotes an identifier as PostgreSQL's `quote_ident` does: any name, even
/// one holding quotes or semicolons, stays one identifier.
pub fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `schema.table`, both quoted.
pub fn qualified(schema: &str, name: &str) -> String {
    format!("{}.{}", ident(schema), ident(name))
}

/// Quotes a string literal (standard_conforming_strings, on by default since 9.1).
pub fn literal(value: &str) -> String {
    let escaped = value.replace('\'', "''");
    if value.contains('\\') {
        format!("E'{}'", escaped.replace('\\', "\\\\"))
    } else {
        format!("'{escaped}'")
    }
}

/// `server_version` of a connected server, and its number (e.g. 150004).
pub async fn server_version(client: &Client) -> Result<(String, i32), PgError> {
    let row = client
        .query_one(
            "SELECT current_setting('server_version'), current_setting('server_version_num')::int",
            &[],
        )
        .await?;
    Ok((row.get(0), row.get(1)))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn identifiers_and_literals_cannot_break_out() {
        assert_eq!(ident("orders"), "\"orders\"");
        assert_eq!(
            ident(r#"robert"; DROP TABLE orders;--"#),
            r#""robert""; DROP TABLE orders;--""#
        );
        assert_eq!(qualified("public", "a\"b"), "\"public\".\"a\"\"b\"");
        assert_eq!(literal("it's"), "'it''s'");
        assert_eq!(literal(r"a\'b"), r"E'a\\''b'");
    }

    #[test]
    fn passwords_are_redacted_in_debug_output() {
        let t = Target {
            host: "db".into(),
            port: 5432,
            user: "admin".into(),
            password: Password("s3cret-value".into()),
            ssl_mode: SslMode::Disable,
            ca_pem: None,
            connect_timeout: Duration::from_secs(1),
        };
        assert!(!format!("{t:?}").contains("s3cret-value"));
    }
}
