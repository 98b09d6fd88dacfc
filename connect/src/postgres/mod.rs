//! PostgreSQL: change data capture (`source`), its outbox transform (`outbox`), and a sink
//! (`sink`), each configured in its own file.
pub mod change;
pub mod outbox;
pub mod sink;
pub mod sink_config;
pub mod source;
pub mod source_config;

pub use sink::PostgresSink;
pub use sink_config::PostgresSinkConfig;
pub use source::{PartialTransaction, Position, PostgresSource};
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
        let (client, connection) = config.connect(tokio_postgres::NoTls).await?;
        let name = name.to_string();
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(connector = %name, "PostgreSQL connection ended: {e}");
            }
        });
        Ok(client)
    }
}

/// `name` as a quoted SQL identifier.
fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}
