//! A JSON value read into a STRING column, written back as compact JSON text in the order it
//! came: ksqlDB reads it as a Jackson node, whose text keeps an object's keys as written
//! (serde_json's own map would sort them).

use std::fmt::{self, Write};

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

/// A JSON value, objects keeping their keys' order.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum OrderedJson {
    /// `null`.
    Null,
    /// `true` or `false`.
    Bool(bool),
    /// A number, as serde_json holds it.
    Number(serde_json::Number),
    /// A string.
    String(String),
    /// An array.
    Array(Vec<OrderedJson>),
    /// An object, its entries in the order written.
    Object(Vec<(String, OrderedJson)>),
}

impl OrderedJson {
    /// An object's entry by key.
    pub(crate) fn get(&self, key: &str) -> Option<&OrderedJson> {
        match self {
            OrderedJson::Object(entries) => entries.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    /// The text of a string.
    pub(crate) fn as_str(&self) -> Option<&str> {
        match self {
            OrderedJson::String(s) => Some(s),
            _ => None,
        }
    }

    /// An object's entries, in the order written.
    pub(crate) fn entries(&self) -> Option<&[(String, OrderedJson)]> {
        match self {
            OrderedJson::Object(entries) => Some(entries),
            _ => None,
        }
    }
}

impl<'de> Deserialize<'de> for OrderedJson {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(OrderedVisitor)
    }
}

struct OrderedVisitor;

impl<'de> Visitor<'de> for OrderedVisitor {
    type Value = OrderedJson;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_unit<E: de::Error>(self) -> Result<OrderedJson, E> {
        Ok(OrderedJson::Null)
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<OrderedJson, E> {
        Ok(OrderedJson::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<OrderedJson, E> {
        Ok(OrderedJson::Number(v.into()))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<OrderedJson, E> {
        Ok(OrderedJson::Number(v.into()))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<OrderedJson, E> {
        serde_json::Number::from_f64(v)
            .map(OrderedJson::Number)
            .ok_or_else(|| E::custom("a number JSON cannot hold"))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<OrderedJson, E> {
        Ok(OrderedJson::String(v.to_string()))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<OrderedJson, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(OrderedJson::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<OrderedJson, A::Error> {
        let mut entries = Vec::new();
        while let Some(entry) = map.next_entry::<String, OrderedJson>()? {
            entries.push(entry);
        }
        Ok(OrderedJson::Object(entries))
    }
}

impl fmt::Display for OrderedJson {
    /// Compact JSON, as Jackson's `JsonNode.toString` writes it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let quoted = |s: &str| serde_json::to_string(s).unwrap_or_default();
        match self {
            OrderedJson::Null => f.write_str("null"),
            OrderedJson::Bool(b) => write!(f, "{b}"),
            OrderedJson::Number(n) => write!(f, "{n}"),
            OrderedJson::String(s) => f.write_str(&quoted(s)),
            OrderedJson::Array(items) => {
                f.write_char('[')?;
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        f.write_char(',')?;
                    }
                    write!(f, "{item}")?;
                }
                f.write_char(']')
            }
            OrderedJson::Object(entries) => {
                f.write_char('{')?;
                for (i, (key, value)) in entries.iter().enumerate() {
                    if i > 0 {
                        f.write_char(',')?;
                    }
                    write!(f, "{}:{value}", quoted(key))?;
                }
                f.write_char('}')
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::OrderedJson;

    #[test]
    fn objects_keep_their_keys_in_the_order_written() {
        let text = r#"{ "ITEMID": 6, "CATEGORY": {"NAME": "Food", "ID": 2}, "tags": ["a", null, 1.5, true] }"#;
        let value: OrderedJson = serde_json::from_str(text).unwrap();
        assert_eq!(
            value.to_string(),
            r#"{"ITEMID":6,"CATEGORY":{"NAME":"Food","ID":2},"tags":["a",null,1.5,true]}"#
        );
        let quoted: OrderedJson = serde_json::from_str(r#"{"a\"b": "c\nd"}"#).unwrap();
        assert_eq!(quoted.to_string(), r#"{"a\"b":"c\nd"}"#);
    }
}
