//! Compatibility levels, and checking a new schema against a subject's earlier ones by them.

use std::fmt;
use std::str::FromStr;

use apache_avro::schema_compatibility::SchemaCompatibility;

use crate::error::RegistryError;
use crate::schema::Parsed;

/// What a new version of a subject must be able to do with the earlier ones' data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Level {
    /// Anything goes.
    None,
    /// The new schema reads data written with the latest one (Confluent's default).
    #[default]
    Backward,
    /// ... with every earlier one.
    BackwardTransitive,
    /// The latest schema reads data written with the new one.
    Forward,
    /// Every earlier schema reads data written with the new one.
    ForwardTransitive,
    /// Both backward and forward, with the latest.
    Full,
    /// Both, with every earlier one.
    FullTransitive,
}

impl Level {
    fn name(self) -> &'static str {
        match self {
            Level::None => "NONE",
            Level::Backward => "BACKWARD",
            Level::BackwardTransitive => "BACKWARD_TRANSITIVE",
            Level::Forward => "FORWARD",
            Level::ForwardTransitive => "FORWARD_TRANSITIVE",
            Level::Full => "FULL",
            Level::FullTransitive => "FULL_TRANSITIVE",
        }
    }

    /// Which of a subject's earlier versions (oldest first) a new one is checked against: none,
    /// the latest, or every one for a transitive level.
    pub fn against<T>(self, earlier: &[T]) -> &[T] {
        match self {
            Level::None => &[],
            level if level.transitive() => earlier,
            _ => earlier.last().map_or(&[], std::slice::from_ref),
        }
    }

    fn transitive(self) -> bool {
        matches!(
            self,
            Level::BackwardTransitive | Level::ForwardTransitive | Level::FullTransitive
        )
    }

    fn backward(self) -> bool {
        matches!(
            self,
            Level::Backward | Level::BackwardTransitive | Level::Full | Level::FullTransitive
        )
    }

    fn forward(self) -> bool {
        matches!(
            self,
            Level::Forward | Level::ForwardTransitive | Level::Full | Level::FullTransitive
        )
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Level {
    type Err = RegistryError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s.to_ascii_uppercase().as_str() {
            "NONE" => Level::None,
            "BACKWARD" => Level::Backward,
            "BACKWARD_TRANSITIVE" => Level::BackwardTransitive,
            "FORWARD" => Level::Forward,
            "FORWARD_TRANSITIVE" => Level::ForwardTransitive,
            "FULL" => Level::Full,
            "FULL_TRANSITIVE" => Level::FullTransitive,
            _ => return Err(RegistryError::invalid_compatibility_level(s)),
        })
    }
}

/// Why `new` breaks `level` against `earlier` (each with its version, oldest first): one
/// message per broken pair, none when it is compatible.
pub fn check(level: Level, new: &Parsed, earlier: &[(i32, Parsed)]) -> Vec<String> {
    let mut broken = Vec::new();
    for (version, old) in level.against(earlier).iter().rev() {
        let mut why = Vec::new();
        // `reads(reader, writer)`: why data written with `writer` cannot be read with `reader`.
        let reads = |reader: &Parsed, writer: &Parsed| -> Option<String> {
            match (reader, writer) {
                (Parsed::Avro(r), Parsed::Avro(w)) => SchemaCompatibility::can_read(w, r)
                    .err()
                    .map(|e| e.to_string()),
                (Parsed::Protobuf(r), Parsed::Protobuf(w)) => {
                    let broken = crate::protobuf_compatibility::incompatibilities(r, w);
                    (!broken.is_empty()).then(|| broken.join(", "))
                }
                (Parsed::Json(r), Parsed::Json(w)) => {
                    let broken = crate::json_compatibility::incompatibilities(r, w);
                    (!broken.is_empty()).then(|| broken.join(", "))
                }
                _ => Some("the schema type changed".into()),
            }
        };
        if level.backward()
            && let Some(e) = reads(new, old)
        {
            why.push(format!(
                "the new schema cannot read data written with it: {e}"
            ));
        }
        if level.forward()
            && let Some(e) = reads(old, new)
        {
            why.push(format!(
                "it cannot read data written with the new schema: {e}"
            ));
        }
        for reason in why {
            broken.push(format!(
                "{{oldSchemaVersion: {version}}}, {{compatibility: '{level}'}}, {{description: '{reason}'}}"
            ));
        }
    }
    broken
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::{SchemaType, parse};

    fn avro(text: &str) -> Parsed {
        parse(SchemaType::Avro, text, &[]).unwrap().1
    }

    const V1: &str = r#"{"type":"record","name":"U","fields":[{"name":"id","type":"long"}]}"#;
    const ADDED_WITH_DEFAULT: &str = r#"{"type":"record","name":"U","fields":[{"name":"id","type":"long"},{"name":"n","type":"string","default":""}]}"#;
    const ADDED_NO_DEFAULT: &str = r#"{"type":"record","name":"U","fields":[{"name":"id","type":"long"},{"name":"n","type":"string"}]}"#;
    const ID_REMOVED: &str = r#"{"type":"record","name":"U","fields":[]}"#;

    #[test]
    fn levels_check_the_directions_they_name() {
        let earlier = vec![(1, avro(V1))];
        assert!(check(Level::Backward, &avro(ADDED_WITH_DEFAULT), &earlier).is_empty());
        let broken = check(Level::Backward, &avro(ADDED_NO_DEFAULT), &earlier);
        assert_eq!(broken.len(), 1, "{broken:?}");
        assert!(broken[0].contains("oldSchemaVersion: 1"), "{broken:?}");
        // Removing a field without a default: old readers miss it (forward), new ones do not.
        assert!(check(Level::Backward, &avro(ID_REMOVED), &earlier).is_empty());
        assert_eq!(check(Level::Forward, &avro(ID_REMOVED), &earlier).len(), 1);
        assert_eq!(check(Level::Full, &avro(ID_REMOVED), &earlier).len(), 1);
        assert!(check(Level::None, &avro(r#""string""#), &earlier).is_empty());
    }

    #[test]
    fn transitive_levels_check_every_earlier_version() {
        // v2 drops `n`'s default: fine against v1 (which lacks n) backward? No: v2 reading v1
        // data needs a default for n. So v1 -> v2 breaks, while v2 is fine against v3 = v2.
        let earlier = vec![(1, avro(V1)), (2, avro(ADDED_WITH_DEFAULT))];
        let new = avro(ADDED_NO_DEFAULT);
        assert!(check(Level::Backward, &new, &earlier).is_empty());
        let broken = check(Level::BackwardTransitive, &new, &earlier);
        assert_eq!(broken.len(), 1, "{broken:?}");
        assert!(broken[0].contains("oldSchemaVersion: 1"), "{broken:?}");
    }

    #[test]
    fn levels_parse_in_any_case_and_unknown_ones_get_42203() {
        assert_eq!(
            "full_transitive".parse::<Level>().unwrap(),
            Level::FullTransitive
        );
        assert_eq!("sideways".parse::<Level>().unwrap_err().code, 42203);
    }
}
