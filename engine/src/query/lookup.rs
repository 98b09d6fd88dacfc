//! How a pull query over a table finds its rows, decided from its `WHERE` clause alone: each
//! disjunct either looks keys up (`=`, `IN`), scans a range of one string key, or needs a table
//! scan. With `ksql.query.pull.table.scan.enabled=false`, a query that needs a scan is refused
//! with ksqlDB's messages.

use eddy_sql::ast::{BinaryOp, Expr, ExprKind};

use crate::catalog::DataSource;
use crate::error::{EngineError, Result};
use crate::schema::ColumnKind;

/// Refuses a pull query over `table` that would scan it, when the session disables scans.
pub(crate) fn check_without_table_scans(
    table: &DataSource,
    filter: Option<&Expr>,
    properties: &std::collections::HashMap<String, String>,
) -> Result<()> {
    let disabled = |name: &str| {
        properties
            .get(name)
            .is_some_and(|v| v.eq_ignore_ascii_case("false"))
    };
    if !disabled("ksql.query.pull.table.scan.enabled") {
        return Ok(());
    }
    let needs_scan = || EngineError::statement("Query requires table scan to be enabled");
    let Some(filter) = filter else {
        return Err(needs_scan());
    };
    let keys: Vec<&crate::schema::Column> = table
        .columns
        .iter()
        .filter(|c| c.kind == ColumnKind::Key)
        .collect();
    let disjuncts = split(filter, BinaryOp::Or);
    let mut ranges = false;
    for disjunct in &disjuncts {
        let mut bounds: Vec<(&str, BinaryOp)> = Vec::new();
        for conjunct in split(disjunct, BinaryOp::And) {
            key_bounds(conjunct, &keys, &mut bounds)?;
        }
        if bounds.is_empty() {
            return Err(EngineError::statement(format!(
                "WHERE clause missing key column for disjunct: ({disjunct})"
            )));
        }
        if keys
            .iter()
            .any(|k| !bounds.iter().any(|(name, _)| *name == k.name))
        {
            return Err(EngineError::statement(
                "Multi-column sources must specify every key in the WHERE clause.",
            ));
        }
        for key in &keys {
            if bounds.iter().filter(|(name, _)| *name == key.name).count() > 1 {
                return Err(EngineError::statement(
                    "A comparison condition on the key column cannot be combined with other comparisons such as an IN predicate",
                ));
            }
        }
        for (_, op) in &bounds {
            match op {
                BinaryOp::Eq => {}
                BinaryOp::NotEq => {
                    let described: Vec<String> = keys
                        .iter()
                        .map(|k| format!("`{}` {} KEY", k.name, crate::schema::type_display(&k.ty)))
                        .collect();
                    return Err(EngineError::statement(format!(
                        "Bound on key columns '[{}]' must currently be '='. ",
                        described.join(", ")
                    )));
                }
                _ => ranges = true,
            }
        }
    }
    // A range is read from the store's key order: one string key, one disjunct, no windows.
    let range_scannable = !disabled("ksql.query.pull.range.scan.enabled")
        && disjuncts.len() == 1
        && table.window.is_none()
        && keys.len() == 1
        && keys[0].ty == eddy_sql::ast::SqlType::String;
    if ranges && !range_scannable {
        return Err(needs_scan());
    }
    Ok(())
}

/// Refuses key values a lookup cannot use: NULL, which no key equals, and a string where the
/// key is not one (`ID IN ('10', 8)` for an INT key), as ksqlDB does.
pub(crate) fn check_key_values(table: &DataSource, filter: &Expr) -> Result<()> {
    use eddy_sql::ast::{Literal, SqlType};
    let keys: Vec<&crate::schema::Column> = table.key_columns().collect();
    let mut problem = None;
    filter.any(&mut |e| {
        let ExprKind::InList {
            expr,
            negated: false,
            list,
        } = &e.kind
        else {
            return false;
        };
        let Some(key) = key_of(expr, &keys).and_then(|k| keys.iter().find(|c| c.name == k)) else {
            return false;
        };
        for item in list {
            match &item.kind {
                ExprKind::Literal(Literal::Null) => {
                    problem = Some(format!(
                        "Primary key columns can not be NULL: ({} = null)",
                        key.name
                    ));
                }
                ExprKind::Literal(Literal::String(text)) if key.ty != SqlType::String => {
                    problem = Some(format!(
                        "'{text}' can not be converted to the type of the key column: {} {} KEY",
                        key.name,
                        crate::schema::type_display(&key.ty)
                    ));
                }
                _ => continue,
            }
            return true;
        }
        false
    });
    match problem {
        Some(message) => Err(EngineError::statement(message)),
        None => Ok(()),
    }
}

/// The key values a pull query over a one-key table can look up instead of scanning: every
/// disjunct of `filter` must pin the key with `KEY = literal` or `KEY IN (literals)` among its
/// conjuncts (the other conjuncts still filter the rows found). `None` means a scan.
pub(crate) fn lookup_keys(
    table: &DataSource,
    filter: Option<&Expr>,
) -> Option<Vec<serde_json::Value>> {
    let keys: Vec<&crate::schema::Column> = table.key_columns().collect();
    let [key] = keys.as_slice() else {
        return None;
    };
    let mut values = Vec::new();
    for disjunct in split(filter?, BinaryOp::Or) {
        let pinned = split(disjunct, BinaryOp::And)
            .into_iter()
            .find_map(|conjunct| pinned_values(conjunct, &key.name))?;
        values.extend(pinned);
    }
    values.dedup();
    Some(values)
}

/// Whether `filter` does nothing but pin a one-key table's key to literals, in every
/// disjunct and every conjunct, so looking those keys up answers it whole.
pub(crate) fn only_key_pins(table: &DataSource, filter: Option<&Expr>) -> bool {
    let keys: Vec<&crate::schema::Column> = table.key_columns().collect();
    let ([key], Some(filter)) = (keys.as_slice(), filter) else {
        return false;
    };
    // A literal of another type than the key's is left to the planner, which refuses or
    // coerces it as it would in any WHERE.
    let fits = |value: &serde_json::Value| {
        use eddy_sql::ast::SqlType;
        match (&key.ty, value) {
            (SqlType::String, serde_json::Value::String(_)) => true,
            (SqlType::Boolean, serde_json::Value::Bool(_)) => true,
            (SqlType::Int | SqlType::Bigint, serde_json::Value::Number(n)) => n.is_i64(),
            (SqlType::Double, serde_json::Value::Number(_)) => true,
            _ => false,
        }
    };
    split(filter, BinaryOp::Or).into_iter().all(|disjunct| {
        split(disjunct, BinaryOp::And).into_iter().all(|conjunct| {
            pinned_values(conjunct, &key.name).is_some_and(|values| values.iter().all(fits))
        })
    })
}

/// The literals `conjunct` pins the key `key` to, if it does.
fn pinned_values(conjunct: &Expr, key: &str) -> Option<Vec<serde_json::Value>> {
    let is_key = |e: &Expr| matches!(&e.kind, ExprKind::Column { name, .. } if name.value == key);
    match &conjunct.kind {
        ExprKind::Binary {
            left,
            op: BinaryOp::Eq,
            right,
        } => {
            let literal = if is_key(left) {
                right
            } else if is_key(right) {
                left
            } else {
                return None;
            };
            Some(vec![literal_value(literal)?])
        }
        ExprKind::InList {
            expr,
            negated: false,
            list,
        } if is_key(expr) => list.iter().map(literal_value).collect(),
        _ => None,
    }
}

/// A literal as the JSON value the key codec reads; `None` for anything else (a scan then
/// decides, which is always correct).
fn literal_value(expr: &Expr) -> Option<serde_json::Value> {
    use eddy_sql::ast::Literal;
    match &expr.kind {
        ExprKind::Literal(Literal::Integer(i)) => Some((*i).into()),
        ExprKind::Literal(Literal::String(s)) => Some(s.clone().into()),
        ExprKind::Literal(Literal::Boolean(b)) => Some((*b).into()),
        ExprKind::Literal(Literal::Decimal(text) | Literal::Double(text)) => {
            serde_json::from_str(text).ok()
        }
        _ => None,
    }
}

/// The operands of nested `op`s (`a AND b AND c` → `[a, b, c]`).
#[recursive::recursive]
fn split(expr: &Expr, op: BinaryOp) -> Vec<&Expr> {
    match &expr.kind {
        ExprKind::Binary {
            left,
            op: found,
            right,
        } if *found == op => {
            let mut parts = split(left, op);
            parts.extend(split(right, op));
            parts
        }
        _ => vec![expr],
    }
}

fn key_of<'k>(expr: &Expr, keys: &[&'k crate::schema::Column]) -> Option<&'k str> {
    match &expr.kind {
        ExprKind::Column { name, .. } => keys
            .iter()
            .find(|k| k.name == name.value)
            .map(|k| k.name.as_str()),
        _ => None,
    }
}

fn mentions_column(expr: &Expr) -> bool {
    expr.any(&mut |e| matches!(e.kind, ExprKind::Column { .. }))
}

fn mentions_key(expr: &Expr, keys: &[&crate::schema::Column]) -> bool {
    expr.any(&mut |e| key_of(e, keys).is_some())
}

/// The key bounds one conjunct sets, refusing comparisons that cannot be looked up.
fn key_bounds<'k>(
    conjunct: &Expr,
    keys: &[&'k crate::schema::Column],
    bounds: &mut Vec<(&'k str, BinaryOp)>,
) -> Result<()> {
    let unresolvable = || {
        EngineError::statement(
            "A comparison must be between a key column and a resolvable expression.",
        )
    };
    match &conjunct.kind {
        ExprKind::Binary { left, op, right } if op.is_comparison() => {
            let (key, other, op) = match (key_of(left, keys), key_of(right, keys)) {
                (Some(key), _) => (key, right, *op),
                (None, Some(key)) => (key, left, op.flipped()),
                (None, None) => {
                    if mentions_key(left, keys) || mentions_key(right, keys) {
                        return Err(EngineError::statement(
                            "A comparison must directly reference a key column.",
                        ));
                    }
                    return Ok(());
                }
            };
            if mentions_column(other) {
                return Err(unresolvable());
            }
            bounds.push((key, op));
        }
        ExprKind::InList {
            expr,
            negated: false,
            list,
        } => {
            if let Some(key) = key_of(expr, keys) {
                if list.iter().any(mentions_column) {
                    return Err(unresolvable());
                }
                bounds.push((key, BinaryOp::Eq));
            }
        }
        _ => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn table(sql: &str) -> DataSource {
        crate::catalog::declared(sql)
    }

    fn check(
        table: &DataSource,
        filter: &str,
        range_scans: bool,
    ) -> std::result::Result<(), String> {
        let mut properties = HashMap::new();
        properties.insert(
            "ksql.query.pull.table.scan.enabled".to_string(),
            "false".to_string(),
        );
        properties.insert(
            "ksql.query.pull.range.scan.enabled".to_string(),
            range_scans.to_string(),
        );
        let filter = eddy_sql::parse_expression(filter).unwrap();
        check_without_table_scans(table, Some(&filter), &properties).map_err(|e| e.to_string())
    }

    #[test]
    fn key_lookups_pass_and_scans_are_refused_with_ksqldbs_messages() {
        let t = table(
            "CREATE TABLE t (id STRING PRIMARY KEY, n BIGINT) WITH (kafka_topic='t', value_format='JSON');",
        );
        for ok in [
            "id = 'a'",
            "'a' = id",
            "id IN ('a', 'b')",
            "id = 'a' AND n > 1",
            "id = 'a' OR id = 'b'",
            "id = CONCAT('a', 'b')",
            "id >= 'a'",
        ] {
            assert_eq!(check(&t, ok, true), Ok(()), "{ok}");
        }
        let cases = [
            (
                "n = 100",
                "WHERE clause missing key column for disjunct: (N = 100)",
            ),
            (
                "'0' < id AND id < '9'",
                "cannot be combined with other comparisons",
            ),
            (
                "id = 'a' AND id IN ('a')",
                "cannot be combined with other comparisons",
            ),
            (
                "id != 'a'",
                "Bound on key columns '[`ID` STRING KEY]' must currently be '='.",
            ),
            ("id = n", "between a key column and a resolvable expression"),
            (
                "id IN ('a', n)",
                "between a key column and a resolvable expression",
            ),
            ("id || 'x' = 'ax'", "must directly reference a key column"),
            (
                "id <= 'a' OR id >= 'c'",
                "Query requires table scan to be enabled",
            ),
        ];
        for (filter, message) in cases {
            let error = check(&t, filter, true).unwrap_err();
            assert!(error.contains(message), "{filter}: {error}");
        }
        // Without range scans, a range needs a table scan.
        assert!(
            check(&t, "id >= 'a'", false)
                .unwrap_err()
                .contains("table scan")
        );
    }

    #[test]
    fn key_values_must_be_keys() {
        let t = table(
            "CREATE TABLE t (id INT PRIMARY KEY, n BIGINT) WITH (kafka_topic='t', value_format='JSON');",
        );
        let values = |filter: &str| {
            check_key_values(&t, &eddy_sql::parse_expression(filter).unwrap())
                .map_err(|e| e.to_string())
        };
        assert_eq!(values("id IN (1, 2)"), Ok(()));
        assert_eq!(values("n IN ('x')"), Ok(()));
        assert!(
            values("id IN (NULL)")
                .unwrap_err()
                .contains("can not be NULL: (ID = null)")
        );
        assert!(
            values("id IN ('10', 8)").unwrap_err().contains(
                "'10' can not be converted to the type of the key column: ID INTEGER KEY"
            )
        );
    }

    #[test]
    fn multi_column_and_non_string_keys_need_every_key_and_no_range() {
        let t = table(
            "CREATE TABLE t (a INT PRIMARY KEY, b INT PRIMARY KEY, n BIGINT) WITH (kafka_topic='t', format='JSON');",
        );
        assert_eq!(check(&t, "a = 1 AND b = 2", true), Ok(()));
        let error = check(&t, "a = 1", true).unwrap_err();
        assert!(
            error.contains("Multi-column sources must specify every key"),
            "{error}"
        );
        let error = check(&t, "a <= 1 AND b >= 2", true).unwrap_err();
        assert!(error.contains("table scan"), "{error}");
        let numeric = table(
            "CREATE TABLE u (id INT PRIMARY KEY, n BIGINT) WITH (kafka_topic='u', value_format='JSON');",
        );
        assert!(
            check(&numeric, "id >= 12", true)
                .unwrap_err()
                .contains("table scan")
        );
    }

    #[test]
    fn key_literals_become_lookups_and_anything_else_a_scan() {
        let t = table(
            "CREATE TABLE t (id BIGINT PRIMARY KEY, n BIGINT) WITH (kafka_topic='t', value_format='JSON');",
        );
        let keys = |filter: &str| {
            let filter = eddy_sql::parse_expression(filter).unwrap();
            lookup_keys(&t, Some(&filter))
        };
        use serde_json::json;
        assert_eq!(keys("id = 7"), Some(vec![json!(7)]));
        assert_eq!(keys("7 = id AND n > 1"), Some(vec![json!(7)]));
        assert_eq!(
            keys("id IN (1, 2) OR id = 3"),
            Some(vec![json!(1), json!(2), json!(3)])
        );
        assert_eq!(keys("id = 1 OR n = 2"), None);
        assert_eq!(keys("id > 1"), None);
        assert_eq!(keys("id = n"), None);
        assert_eq!(lookup_keys(&t, None), None);
    }

    #[test]
    fn only_literals_of_the_keys_type_make_a_pure_lookup() {
        let t = table(
            "CREATE TABLE t (id INT PRIMARY KEY, n BIGINT) WITH (kafka_topic='t', value_format='JSON');",
        );
        let pure =
            |filter: &str| only_key_pins(&t, Some(&eddy_sql::parse_expression(filter).unwrap()));
        assert!(pure("id = 1"));
        assert!(pure("id IN (1, 2) OR id = 3"));
        assert!(
            !pure("id = '1'"),
            "a string for an INT key is the planner's to refuse"
        );
        assert!(!pure("id = 1 AND n = 2"));
        assert!(!pure("id > 1"));
    }
}
