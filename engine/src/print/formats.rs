//! How `PRINT` tells a topic's formats, as ksqlDB's `RecordFormatter` does: every format is a
//! candidate until a key (or value) it cannot read is seen; each record prints with the first
//! candidate left, and bytes no format reads print as Kafka prints bytes. Keys also try each
//! format inside session, hopping and tumbling windows.

use std::sync::Arc;

use eddy_registry::{Parsed, SchemaRegistry};
use prost_reflect::DynamicMessage;

use super::text;

/// The formats tried, in ksqlDB's order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Base {
    Avro,
    Protobuf,
    Json,
    JsonSr,
    KafkaInt,
    KafkaBigint,
    KafkaDouble,
    KafkaString,
}

const BASES: [Base; 8] = [
    Base::Avro,
    Base::Protobuf,
    Base::Json,
    Base::JsonSr,
    Base::KafkaInt,
    Base::KafkaBigint,
    Base::KafkaDouble,
    Base::KafkaString,
];

impl Base {
    fn name(self) -> &'static str {
        match self {
            Base::Avro => "AVRO",
            Base::Protobuf => "PROTOBUF",
            Base::Json => "JSON",
            Base::JsonSr => "JSON_SR",
            Base::KafkaInt => "KAFKA_INT",
            Base::KafkaBigint => "KAFKA_BIGINT",
            Base::KafkaDouble => "KAFKA_DOUBLE",
            Base::KafkaString => "KAFKA_STRING",
        }
    }
}

/// A window a key may be wrapped in, as Kafka Streams serializes windowed keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Window {
    /// The key, then the window's end and start (8 bytes each, big-endian).
    Session,
    /// The key, then the window's start.
    Hopping,
    Tumbling,
}

impl Window {
    fn name(self) -> &'static str {
        match self {
            Window::Session => "SESSION",
            Window::Hopping => "HOPPING",
            Window::Tumbling => "TUMBLING",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Candidate {
    base: Base,
    window: Option<Window>,
}

impl Candidate {
    fn name(self) -> String {
        match self.window {
            Some(w) => format!("{}({})", w.name(), self.base.name()),
            None => self.base.name().to_string(),
        }
    }
}

/// The formats the keys (or the values) seen so far may be in.
pub struct Detector {
    candidates: Vec<Candidate>,
    seen: bool,
    registry: Option<Arc<SchemaRegistry>>,
}

impl Detector {
    /// A detector for keys (`windowed`: with the windowed candidates) or values.
    pub fn new(registry: Option<Arc<SchemaRegistry>>, windowed: bool) -> Self {
        let candidates = BASES
            .iter()
            .flat_map(|&base| {
                let windows: &[Option<Window>] = if windowed {
                    &[
                        Some(Window::Session),
                        Some(Window::Hopping),
                        Some(Window::Tumbling),
                        None,
                    ]
                } else {
                    &[None]
                };
                windows
                    .iter()
                    .map(move |&window| Candidate { base, window })
            })
            .collect();
        Detector {
            candidates,
            seen: false,
            registry,
        }
    }

    /// The formats still possible, as `PRINT` lists them.
    pub fn possible(&self) -> Vec<String> {
        if !self.seen {
            return vec!["¯\\_(ツ)_/¯ - no data processed".to_string()];
        }
        self.candidates.iter().map(|c| c.name()).collect()
    }

    /// The first candidate's name, to notice when it is ruled out.
    pub fn active(&self) -> Option<String> {
        self.possible().into_iter().next()
    }

    /// `bytes` as the first possible format reads it; formats that cannot are ruled out.
    pub fn format(&mut self, bytes: Option<&[u8]>) -> String {
        let Some(bytes) = bytes else {
            return "<null>".to_string();
        };
        self.seen = true;
        let mut first = None;
        let registry = self.registry.clone();
        self.candidates.retain(
            |candidate| match read(registry.as_deref(), *candidate, bytes) {
                Some(text) => {
                    first.get_or_insert(text);
                    true
                }
                None => false,
            },
        );
        first.unwrap_or_else(|| text::kafka_bytes(bytes))
    }
}

fn read(registry: Option<&SchemaRegistry>, candidate: Candidate, bytes: &[u8]) -> Option<String> {
    let long_at = |at: usize| -> Option<i64> {
        let chunk: [u8; 8] = bytes.get(at..at + 8)?.try_into().ok()?;
        Some(i64::from_be_bytes(chunk))
    };
    match candidate.window {
        None => read_base(registry, candidate.base, bytes),
        Some(Window::Session) => {
            let key_len = bytes.len().checked_sub(16)?;
            let key = read_base(registry, candidate.base, &bytes[..key_len])?;
            let (end, start) = (long_at(key_len)?, long_at(key_len + 8)?);
            Some(format!("[{key}@{start}/{end}]"))
        }
        Some(Window::Hopping | Window::Tumbling) => {
            let key_len = bytes.len().checked_sub(8)?;
            let key = read_base(registry, candidate.base, &bytes[..key_len])?;
            Some(format!("[{key}@{}/-]", long_at(key_len)?))
        }
    }
}

/// `bytes` as `base` reads them, or `None` when they are not in it.
fn read_base(registry: Option<&SchemaRegistry>, base: Base, bytes: &[u8]) -> Option<String> {
    match base {
        Base::Avro => {
            let (id, body) = framed(bytes)?;
            let Ok(Some(Parsed::Avro(schema))) = registry?.parsed_by_id(id) else {
                return None;
            };
            let reader = apache_avro::reader::datum::GenericDatumReader::builder(&schema)
                .build()
                .ok()?;
            let value = reader.read_value(&mut &body[..]).ok()?;
            Some(text::avro(&value))
        }
        Base::Protobuf => {
            let framed = crate::codec::protobuf::wire::read(bytes).ok()?;
            let Ok(Some(Parsed::Protobuf(schema))) = registry?.parsed_by_id(framed.id) else {
                return None;
            };
            let message = crate::codec::protobuf::message_at(&schema, &framed.indexes).ok()?;
            let message = DynamicMessage::decode(message, framed.body).ok()?;
            Some(text::protobuf(&message))
        }
        Base::Json => {
            let text = utf8_text(bytes)?;
            serde_json::from_str::<serde::de::IgnoredAny>(text).ok()?;
            Some(text.to_string())
        }
        Base::JsonSr => {
            let (id, body) = framed(bytes)?;
            let Ok(Some(Parsed::Json(_))) = registry?.parsed_by_id(id) else {
                return None;
            };
            let text = std::str::from_utf8(body).ok()?;
            serde_json::from_str::<serde::de::IgnoredAny>(text).ok()?;
            Some(text::compact_json(text))
        }
        Base::KafkaInt => Some(i32::from_be_bytes(bytes.try_into().ok()?).to_string()),
        Base::KafkaBigint => Some(i64::from_be_bytes(bytes.try_into().ok()?).to_string()),
        Base::KafkaDouble => Some(text::java_double(
            f64::from_be_bytes(bytes.try_into().ok()?),
            false,
        )),
        Base::KafkaString => utf8_text(bytes).map(str::to_string),
    }
}

/// Confluent's framing: the magic byte, the schema id, the rest.
fn framed(bytes: &[u8]) -> Option<(u32, &[u8])> {
    let [0, a, b, c, d, body @ ..] = bytes else {
        return None;
    };
    Some((u32::from_be_bytes([*a, *b, *c, *d]), body))
}

/// Non-empty UTF-8 text without the replacement character (which Java's decoder would have put
/// where the bytes were not UTF-8).
fn utf8_text(bytes: &[u8]) -> Option<&str> {
    let text = std::str::from_utf8(bytes).ok()?;
    (!text.is_empty() && !text.contains('\u{fffd}')).then_some(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_are_ruled_out_by_what_they_cannot_read() {
        let mut values = Detector::new(None, false);
        assert_eq!(values.possible(), ["¯\\_(ツ)_/¯ - no data processed"]);
        assert_eq!(values.format(Some(br#"{"id": 1}"#)), r#"{"id": 1}"#);
        assert_eq!(values.possible(), ["JSON", "KAFKA_STRING"]);
        assert_eq!(values.format(Some(b"plain")), "plain");
        assert_eq!(values.possible(), ["KAFKA_STRING"]);
        assert_eq!(values.format(None), "<null>");
        assert_eq!(values.format(Some(b"\xff\x00")), "\\xFF\\x00");
        assert!(values.possible().is_empty());

        let mut keys = Detector::new(None, true);
        assert_eq!(keys.format(Some(&7i32.to_be_bytes())), "7");
        assert_eq!(
            keys.possible(),
            ["KAFKA_INT", "KAFKA_STRING"],
            "four bytes are too short for a window"
        );
        let mut windowed = Detector::new(None, true);
        let key = [b"k1".as_slice(), &1000i64.to_be_bytes()].concat();
        assert_eq!(windowed.format(Some(&key)), "[k1@1000/-]");
        assert_eq!(
            windowed.possible(),
            ["HOPPING(KAFKA_STRING)", "TUMBLING(KAFKA_STRING)"]
        );
    }
}
