//! The PostgreSQL sink's configuration, under the JDBC sink connector's keys
//! (`connection.url`, `topics`, `table.name.format`, `insert.mode`, `pk.mode`, `pk.fields`,
//! `delete.enabled`, `batch.size`) and Kafka Connect's `errors.*`.

use std::collections::BTreeMap;

use crate::dead_letter::ErrorHandling;
use crate::error::{ConnectError, Result};
use crate::properties::Properties;

/// How rows are written (`insert.mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InsertMode {
    /// `INSERT`: a row per record.
    Insert,
    /// `INSERT ... ON CONFLICT (key) DO UPDATE`: a row per key, the latest record's.
    Upsert,
}

/// Where a row's primary key comes from (`pk.mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PkMode {
    /// No key.
    None,
    /// The record's key: a JSON object's fields, or one value named by `pk.fields`.
    RecordKey,
    /// Fields of the record's value named by `pk.fields`.
    RecordValue,
}

/// A PostgreSQL sink's configuration.
#[derive(Debug, Clone)]
pub struct PostgresSinkConfig {
    /// Host, port (5432 unless named) and database from `connection.url`; user from
    /// `connection.user` (or `connection.username`), and `connection.password`.
    pub database: super::Database,
    /// `topics`.
    pub topics: Vec<String>,
    /// `table.name.format`: `${topic}` stands for the topic's name.
    pub table_format: String,
    /// `insert.mode`.
    pub insert_mode: InsertMode,
    /// `pk.mode`.
    pub pk_mode: PkMode,
    /// `pk.fields`.
    pub pk_fields: Vec<String>,
    /// `delete.enabled`: a record without a value deletes its key's row.
    pub delete_enabled: bool,
    /// `batch.size`: records per database transaction at most.
    pub batch_size: usize,
    /// `errors.*`: what a record that cannot be written does.
    pub errors: ErrorHandling,
}

impl PostgresSinkConfig {
    /// Reads the configuration from a connector's properties (keys compared without case).
    pub fn from_properties(properties: &BTreeMap<String, String>) -> Result<Self> {
        let props = Properties::new(properties);
        let config = |msg: String| ConnectError::Config(msg);
        let url = props.required("connection.url")?;
        let (host, port, dbname) = parse_url(url)?;
        let tls = url_tls(url)?;
        let list = |key: &str| -> Vec<String> {
            props.list(key).into_iter().map(str::to_string).collect()
        };
        let topics = list("topics");
        if topics.is_empty() {
            return Err(config("the connector needs 'topics'".into()));
        }
        let insert_mode = match props
            .choice("insert.mode", "insert", &["insert", "upsert"])?
            .as_str()
        {
            "upsert" => InsertMode::Upsert,
            _ => InsertMode::Insert,
        };
        let pk_mode = match props
            .choice("pk.mode", "none", &["none", "record_key", "record_value"])?
            .as_str()
        {
            "record_key" => PkMode::RecordKey,
            "record_value" => PkMode::RecordValue,
            _ => PkMode::None,
        };
        let pk_fields = list("pk.fields");
        if insert_mode == InsertMode::Upsert && pk_mode == PkMode::None {
            return Err(config(
                "'insert.mode' upsert needs a 'pk.mode' other than none".into(),
            ));
        }
        if pk_mode == PkMode::RecordValue && pk_fields.is_empty() {
            return Err(config("'pk.mode' record_value needs 'pk.fields'".into()));
        }
        let delete_enabled = props.flag("delete.enabled", false)?;
        if delete_enabled && pk_mode != PkMode::RecordKey {
            return Err(config("'delete.enabled' needs 'pk.mode' record_key".into()));
        }
        let batch_size = props.batch_size("batch.size", 3000)?;
        Ok(PostgresSinkConfig {
            database: super::Database {
                host,
                port,
                dbname,
                user: props
                    .get("connection.user")
                    .or_else(|| props.get("connection.username"))
                    .ok_or_else(|| config("the connector needs 'connection.user'".into()))?
                    .to_string(),
                password: props
                    .get("connection.password")
                    .unwrap_or_default()
                    .to_string(),
                tls,
            },
            topics,
            table_format: props
                .get("table.name.format")
                .unwrap_or("${topic}")
                .to_string(),
            insert_mode,
            pk_mode,
            pk_fields,
            delete_enabled,
            batch_size,
            errors: ErrorHandling::from_properties(properties)?,
        })
    }

    /// The table a topic's records go to, as (schema, table).
    pub(super) fn table_for(&self, topic: &str) -> (Option<String>, String) {
        let name = self.table_format.replace("${topic}", topic);
        let mut parts: Vec<&str> = name.split('.').collect();
        let table = parts.pop().unwrap_or_default().to_string();
        (parts.pop().map(str::to_string), table)
    }
}

/// The TLS settings among a JDBC URL's parameters (`?sslmode=verify-full&sslrootcert=...`),
/// as PostgreSQL's JDBC driver reads them: `ssl=true` alone means `verify-full`.
fn url_tls(url: &str) -> Result<super::tls::Tls> {
    let mut params: BTreeMap<String, String> = url
        .split_once('?')
        .map(|(_, query)| query)
        .unwrap_or_default()
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let ssl_on = params
        .get("ssl")
        .is_some_and(|v| v.eq_ignore_ascii_case("true"));
    if ssl_on && !params.keys().any(|k| k.eq_ignore_ascii_case("sslmode")) {
        params.insert("sslmode".into(), "verify-full".into());
    }
    super::tls::Tls::from_properties(&Properties::new(&params), "")
        .map_err(|e| ConnectError::Config(format!("'connection.url': {e}")))
}

/// `jdbc:postgresql://host[:port]/database[?...]` as (host, port, database).
fn parse_url(url: &str) -> Result<(String, u16, String)> {
    let bad = || {
        ConnectError::Config(format!(
            "'connection.url' is '{url}'; expected jdbc:postgresql://host[:port]/database"
        ))
    };
    let rest = url
        .strip_prefix("jdbc:postgresql://")
        .or_else(|| url.strip_prefix("postgresql://"))
        .or_else(|| url.strip_prefix("postgres://"))
        .ok_or_else(bad)?;
    let rest = rest.split('?').next().unwrap_or_default();
    let (authority, dbname) = rest.split_once('/').ok_or_else(bad)?;
    let (host, port) = match authority.rsplit_once(':') {
        Some((host, port)) => (host, port.parse().map_err(|_| bad())?),
        None => (authority, 5432),
    };
    if host.is_empty() || dbname.is_empty() {
        return Err(bad());
    }
    Ok((host.to_string(), port, dbname.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::properties::tests::props;

    #[test]
    fn the_jdbc_sinks_keys_are_read_and_checked() {
        let config = PostgresSinkConfig::from_properties(&props(&[
            (
                "connection.url",
                "jdbc:postgresql://db:6543/shop?sslmode=disable",
            ),
            ("connection.user", "eddy"),
            ("topics", "a, b"),
            ("insert.mode", "upsert"),
            ("pk.mode", "record_key"),
            ("pk.fields", "id"),
            ("delete.enabled", "true"),
        ]))
        .unwrap();
        assert_eq!(
            (config.database.host.as_str(), config.database.port),
            ("db", 6543)
        );
        assert_eq!(config.database.dbname, "shop");
        assert_eq!(config.topics, vec!["a", "b"]);
        assert_eq!(
            config.table_for("shop.public.orders"),
            (Some("public".into()), "orders".into())
        );
        let refused = |pairs: &[(&str, &str)]| {
            let mut all = vec![
                ("connection.url", "jdbc:postgresql://db/shop"),
                ("connection.user", "eddy"),
                ("topics", "a"),
            ];
            all.extend_from_slice(pairs);
            PostgresSinkConfig::from_properties(&props(&all))
                .unwrap_err()
                .to_string()
        };
        assert!(refused(&[("insert.mode", "upsert")]).contains("pk.mode"));
        assert!(refused(&[("delete.enabled", "true")]).contains("record_key"));
        assert!(refused(&[("insert.mode", "merge")]).contains("'insert.mode' is 'merge'"));
        assert!(refused(&[("connection.url", "mysql://x/y")]).contains("connection.url"));
        assert!(refused(&[("batch.size", "100000000000")]).contains("batch.size"));
        assert!(
            refused(&[("connection.url", "jdbc:postgresql://db:port/x")])
                .contains("connection.url")
        );
    }
}
