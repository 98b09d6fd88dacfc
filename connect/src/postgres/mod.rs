//! PostgreSQL: change data capture (`source`), its outbox transform (`outbox`), and a sink
//! (`sink`), each configured in its own file.
pub mod change;
pub mod outbox;
pub mod sink;
pub mod sink_config;
pub mod source;
pub mod source_config;
pub mod tls;

pub use sink::PostgresSink;
pub use sink_config::PostgresSinkConfig;
pub use source::{PartialTransaction, Position, PostgresSource, SourceProgress};
pub use source_config::PostgresSourceConfig;

/// Where a connector reaches its database, and as whom.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Database {
    /// Host.
    pub host: String,
    /// Port.
    pub port: u16,
    /// User.
    pub user: String,
    /// Password.
    pub password: String,
    /// Database name.
    pub dbname: String,
    /// TLS (`sslmode` and its files).
    pub tls: tls::Tls,
}

impl Database {
    /// An ordinary (not replication) connection for connector `name`, driven on the runtime.
    async fn connect(&self, name: &str) -> crate::Result<tokio_postgres::Client> {
        let mut config = tokio_postgres::Config::new();
        config
            .host(&self.host)
            .port(self.port)
            .user(&self.user)
            .password(&self.password)
            .dbname(&self.dbname)
            .application_name("eddy");
        config.ssl_mode(self.tls.postgres_mode());
        let name = name.to_string();
        let client = if self.tls.mode == tls::SslMode::Disable {
            let (client, connection) = config.connect(tokio_postgres::NoTls).await?;
            tokio::spawn(drive(connection, name));
            client
        } else {
            let connector =
                tokio_postgres_rustls::MakeRustlsConnect::new(self.tls.client_config()?);
            let (client, connection) = config.connect(connector).await?;
            tokio::spawn(drive(connection, name));
            client
        };
        Ok(client)
    }
}

/// Runs a connection until it ends.
async fn drive<C: std::future::Future<Output = Result<(), tokio_postgres::Error>>>(
    connection: C,
    name: String,
) {
    if let Err(e) = connection.await {
        tracing::debug!(connector = %name, "PostgreSQL connection ended: {e}");
    }
}

/// `name` as a quoted SQL identifier.
fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}
