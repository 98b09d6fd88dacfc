//! The PostgreSQL source's configuration, under Debezium's key names so that an existing
//! Debezium connector's configuration mostly carries over.

use std::collections::BTreeMap;

use crate::error::{ConnectError, Result};
use crate::properties::Properties;

/// How `NUMERIC` values are written (Debezium's `decimal.handling.mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecimalHandling {
    /// As a JSON string holding the exact decimal.
    String,
    /// As a JSON number (a double; precision may be lost).
    Double,
}

/// Whether the tables' current rows are read before the changes (Debezium's `snapshot.mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SnapshotMode {
    /// Read every included table once, consistently with the slot, then stream changes.
    Initial,
    /// Stream changes only, from the slot's creation on.
    NoData,
}

/// Whether the connector creates its publication (Debezium's `publication.autocreate.mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PublicationMode {
    /// `FOR ALL TABLES`, unless it exists.
    AllTables,
    /// `FOR TABLE` the included tables, unless it exists.
    Filtered,
    /// The publication must exist.
    Disabled,
}

/// A PostgreSQL change-data-capture source.
#[derive(Debug, Clone)]
pub struct PostgresSourceConfig {
    /// `database.hostname`, `database.port` (5432), `database.user` (a role with `REPLICATION`
    /// and `SELECT` on the tables), `database.password`, `database.dbname`.
    pub database: super::Database,
    /// `topic.prefix` (Debezium 1's `database.server.name`): topics are
    /// `<prefix>.<schema>.<table>`.
    pub topic_prefix: String,
    /// `table.include.list`: `schema.table` patterns (regular expressions matching the whole
    /// name); empty for every table in the publication.
    pub table_include: Vec<regex::Regex>,
    /// `slot.name`.
    pub slot: String,
    /// `publication.name`.
    pub publication: String,
    /// `publication.autocreate.mode`.
    pub publication_mode: PublicationMode,
    /// `snapshot.mode`.
    pub snapshot: SnapshotMode,
    /// `tombstones.on.delete`: a delete is followed by a record with the key and no value.
    pub tombstones_on_delete: bool,
    /// `decimal.handling.mode`.
    pub decimals: DecimalHandling,
    /// `max.batch.size`: records of one transaction held before a chunk of it is written.
    pub max_batch_size: usize,
    /// `transforms` naming Debezium's outbox event router: events instead of changes.
    pub outbox: Option<super::outbox::OutboxRouter>,
}

impl PostgresSourceConfig {
    /// Reads the configuration from a connector's properties (keys compared without case).
    pub fn from_properties(properties: &BTreeMap<String, String>) -> Result<Self> {
        let props = Properties::new(properties);
        let host = props.required("database.hostname")?.to_string();
        let user = props.required("database.user")?.to_string();
        let dbname = props.required("database.dbname")?.to_string();
        if let Some(plugin) = props.get("plugin.name")
            && !plugin.eq_ignore_ascii_case("pgoutput")
        {
            return Err(ConnectError::Config(format!(
                "'plugin.name' is '{plugin}'; Eddy decodes PostgreSQL's built-in pgoutput only"
            )));
        }
        let port = match props.get("database.port") {
            None => 5432,
            Some(p) => p.parse().map_err(|_| {
                ConnectError::Config(format!("'database.port' is '{p}', not a port number"))
            })?,
        };
        let topic_prefix = props
            .get("topic.prefix")
            .or_else(|| props.get("database.server.name"))
            .map(str::to_string)
            .ok_or_else(|| ConnectError::Config("the connector needs 'topic.prefix'".into()))?;
        let table_include = props
            .list("table.include.list")
            .into_iter()
            .map(|t| {
                regex::Regex::new(&format!("^(?:{t})$")).map_err(|e| {
                    ConnectError::Config(format!("'table.include.list' has '{t}': {e}"))
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let publication_mode = match props
            .choice(
                "publication.autocreate.mode",
                "all_tables",
                &["all_tables", "filtered", "disabled"],
            )?
            .as_str()
        {
            "filtered" => PublicationMode::Filtered,
            "disabled" => PublicationMode::Disabled,
            _ => PublicationMode::AllTables,
        };
        let snapshot = match props
            .choice("snapshot.mode", "initial", &["initial", "no_data", "never"])?
            .as_str()
        {
            "initial" => SnapshotMode::Initial,
            _ => SnapshotMode::NoData,
        };
        let decimals = match props
            .get("decimal.handling.mode")
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            None | Some("string") => DecimalHandling::String,
            Some("double") => DecimalHandling::Double,
            Some(other) => {
                return Err(ConnectError::Config(format!(
                    "'decimal.handling.mode' is '{other}'; Eddy writes JSON without a schema, \
                     so decimals are 'string' (the default) or 'double'"
                )));
            }
        };
        let tombstones_on_delete = props.flag("tombstones.on.delete", true)?;
        let max_batch_size = props.batch_size("max.batch.size", 2048)?;
        Ok(PostgresSourceConfig {
            max_batch_size,
            outbox: super::outbox::OutboxRouter::from_properties(properties)?,
            database: super::Database {
                host,
                port,
                user,
                password: props
                    .get("database.password")
                    .unwrap_or_default()
                    .to_string(),
                dbname,
                tls: super::tls::Tls::from_properties(&props, "database.")?,
            },
            topic_prefix,
            table_include,
            slot: props.get("slot.name").unwrap_or("debezium").to_string(),
            publication: props
                .get("publication.name")
                .unwrap_or("dbz_publication")
                .to_string(),
            publication_mode,
            snapshot,
            tombstones_on_delete,
            decimals,
        })
    }

    /// Whether table `schema.table` is captured.
    pub fn includes(&self, schema: &str, table: &str) -> bool {
        let name = format!("{schema}.{table}");
        self.table_include.is_empty() || self.table_include.iter().any(|r| r.is_match(&name))
    }

    /// The topic a table's changes go to.
    pub fn topic_for(&self, schema: &str, table: &str) -> String {
        format!("{}.{schema}.{table}", self.topic_prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::properties::tests::props;

    #[test]
    fn debezium_keys_carry_over_with_debezium_defaults() {
        let config = PostgresSourceConfig::from_properties(&props(&[
            (
                "connector.class",
                "io.debezium.connector.postgresql.PostgresConnector",
            ),
            ("database.hostname", "db"),
            ("database.user", "cdc"),
            ("database.dbname", "shop"),
            ("topic.prefix", "shop"),
            ("table.include.list", "public.orders, public.outbox"),
        ]))
        .unwrap();
        assert_eq!(config.database.port, 5432);
        assert_eq!(config.slot, "debezium");
        assert_eq!(config.publication, "dbz_publication");
        assert!(config.includes("public", "orders") && config.includes("public", "outbox"));
        assert!(!config.includes("public", "orders_archive") && !config.includes("x", "orders"));
        assert_eq!(config.snapshot, SnapshotMode::Initial);
        assert!(config.tombstones_on_delete);
        assert_eq!(config.topic_for("public", "orders"), "shop.public.orders");
    }

    #[test]
    fn a_missing_or_malformed_key_is_named() {
        let err = PostgresSourceConfig::from_properties(&props(&[("database.hostname", "db")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("'database.user'"), "{err}");
        let err = PostgresSourceConfig::from_properties(&props(&[
            ("database.hostname", "db"),
            ("database.user", "u"),
            ("database.dbname", "d"),
            ("topic.prefix", "p"),
            ("database.port", "five"),
        ]))
        .unwrap_err()
        .to_string();
        assert!(err.contains("'database.port' is 'five'"), "{err}");
        let err = PostgresSourceConfig::from_properties(&props(&[
            ("database.hostname", "db"),
            ("database.user", "u"),
            ("database.dbname", "d"),
            ("topic.prefix", "p"),
            ("plugin.name", "decoderbufs"),
        ]))
        .unwrap_err()
        .to_string();
        assert!(err.contains("pgoutput"), "{err}");
        let base = [
            ("database.hostname", "db"),
            ("database.user", "u"),
            ("database.dbname", "d"),
            ("topic.prefix", "p"),
        ];
        for (key, value, named) in [
            ("table.include.list", "public.(orders", "table.include.list"),
            ("max.batch.size", "0", "max.batch.size"),
            ("max.batch.size", "99999999999", "max.batch.size"),
            ("snapshot.mode", "sometimes", "snapshot.mode"),
        ] {
            let mut pairs = base.to_vec();
            pairs.push((key, value));
            let err = PostgresSourceConfig::from_properties(&props(&pairs))
                .unwrap_err()
                .to_string();
            assert!(err.contains(named), "{key}={value}: {err}");
        }
    }
}
