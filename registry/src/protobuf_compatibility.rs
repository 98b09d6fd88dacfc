//! Whether one Protobuf schema can read data written with another, by Confluent's rules: the
//! two are compared message by message and field number by field number, each difference gets
//! one of Confluent's difference types, and the schemas are compatible when every difference is
//! of a compatible type. Adding or removing optional fields, messages, enums, enum values and
//! oneofs, renaming fields and moving messages are compatible; changing the package, removing a
//! message, changing a field's kind (scalar, message, map) or scalar group, pointing it at a
//! message of another name (or an incompatible one), adding or removing a required field,
//! removing a field from a oneof, or moving fields into a oneof in ways that lose data are not.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use prost_reflect::{FieldDescriptor, Kind, MessageDescriptor};

use crate::protobuf::ProtobufSchema;

/// Confluent's difference types that break compatibility.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Breaking {
    PackageChanged,
    MessageRemoved,
    FieldKindChanged,
    FieldScalarKindChanged,
    FieldNamedTypeChanged,
    RequiredFieldAdded,
    RequiredFieldRemoved,
    OneofFieldRemoved,
    MultipleFieldsMovedToOneof,
    FieldMovedToExistingOneof,
}

impl Breaking {
    fn name(self) -> &'static str {
        match self {
            Breaking::PackageChanged => "PACKAGE_CHANGED",
            Breaking::MessageRemoved => "MESSAGE_REMOVED",
            Breaking::FieldKindChanged => "FIELD_KIND_CHANGED",
            Breaking::FieldScalarKindChanged => "FIELD_SCALAR_KIND_CHANGED",
            Breaking::FieldNamedTypeChanged => "FIELD_NAMED_TYPE_CHANGED",
            Breaking::RequiredFieldAdded => "REQUIRED_FIELD_ADDED",
            Breaking::RequiredFieldRemoved => "REQUIRED_FIELD_REMOVED",
            Breaking::OneofFieldRemoved => "ONEOF_FIELD_REMOVED",
            Breaking::MultipleFieldsMovedToOneof => "MULTIPLE_FIELDS_MOVED_TO_ONEOF",
            Breaking::FieldMovedToExistingOneof => "FIELD_MOVED_TO_EXISTING_ONEOF",
        }
    }
}

/// What breaks when data written with `writer` is read with `reader`, as Confluent words each
/// difference (`FIELD_SCALAR_KIND_CHANGED M.a (#1)`); empty when compatible.
pub fn incompatibilities(reader: &ProtobufSchema, writer: &ProtobufSchema) -> Vec<String> {
    let mut diff = Diff::default();
    // Confluent compares the earlier schema (the writer) to the update (the reader).
    let (original, update) = (writer.file(), reader.file());
    if original.package_name() != update.package_name() {
        diff.add(Breaking::PackageChanged, original.package_name());
    }
    diff.types(
        &original.messages().collect::<Vec<_>>(),
        &update.messages().collect::<Vec<_>>(),
    );
    diff.broken
}

#[derive(Default)]
struct Diff {
    broken: Vec<String>,
    /// Message pairs being compared, so that recursive types end.
    visiting: HashSet<(String, String)>,
    /// Message pairs compared already, and whether they broke: a message reached by many
    /// paths is compared once, not once per path.
    compared: HashMap<(String, String), bool>,
}

/// How a field's values are read, for `FIELD_KIND_CHANGED`.
#[derive(Debug, PartialEq, Eq)]
enum FieldKind {
    Scalar,
    Message,
    Map,
}

/// The wire-compatible groups of scalars (enums read as numbers).
fn scalar_group(kind: &Kind) -> &'static str {
    match kind {
        Kind::Int32 | Kind::Int64 | Kind::Uint32 | Kind::Uint64 | Kind::Bool | Kind::Enum(_) => {
            "number"
        }
        Kind::Sint32 | Kind::Sint64 => "signed number",
        Kind::String | Kind::Bytes => "string or bytes",
        Kind::Fixed32 | Kind::Sfixed32 => "fixed32",
        Kind::Fixed64 | Kind::Sfixed64 => "fixed64",
        Kind::Float => "float",
        Kind::Double => "double",
        Kind::Message(_) => "message",
    }
}

fn field_kind(field: &FieldDescriptor) -> FieldKind {
    match field.kind() {
        Kind::Message(_) if field.is_map() => FieldKind::Map,
        Kind::Message(_) => FieldKind::Message,
        _ => FieldKind::Scalar,
    }
}

/// A message's name within its package.
fn local_name(message: &MessageDescriptor) -> String {
    let package = message.package_name();
    let full = message.full_name();
    match full.strip_prefix(package).and_then(|s| s.strip_prefix('.')) {
        Some(local) if !package.is_empty() => local.to_string(),
        _ => full.to_string(),
    }
}

fn is_required(field: &FieldDescriptor) -> bool {
    field.cardinality() == prost_reflect::Cardinality::Required
}

/// The real (not proto3-optional) oneof a field is in.
fn oneof_of(field: &FieldDescriptor) -> Option<String> {
    field
        .containing_oneof()
        .filter(|o| !o.is_synthetic())
        .map(|o| o.name().to_string())
}

impl Diff {
    fn add(&mut self, kind: Breaking, path: &str) {
        self.broken.push(format!("{} {path}", kind.name()));
    }

    /// Messages of one scope, matched by name; map entries are not messages of their own.
    fn types(&mut self, original: &[MessageDescriptor], update: &[MessageDescriptor]) {
        let named = |messages: &[MessageDescriptor]| -> BTreeMap<String, MessageDescriptor> {
            messages
                .iter()
                .filter(|m| !m.is_map_entry())
                .map(|m| (m.name().to_string(), m.clone()))
                .collect()
        };
        let updated = named(update);
        for (name, old) in named(original) {
            match updated.get(&name) {
                None => self.add(Breaking::MessageRemoved, old.full_name()),
                Some(new) => self.message(&old, new),
            }
        }
    }

    fn message(&mut self, original: &MessageDescriptor, update: &MessageDescriptor) {
        let key = (
            original.full_name().to_string(),
            update.full_name().to_string(),
        );
        if !self.visiting.insert(key.clone()) {
            return;
        }
        let path = original.full_name().to_string();
        let by_tag = |m: &MessageDescriptor| -> BTreeMap<u32, FieldDescriptor> {
            m.fields().map(|f| (f.number(), f)).collect()
        };
        let (original_all, update_all) = (by_tag(original), by_tag(update));
        // Fields moved into a oneof of the update: one field joining a new oneof is fine, more
        // (or one joining fields that were already in a oneof) loses data.
        let mut top_level_moved: BTreeSet<u32> = BTreeSet::new();
        for oneof in update.oneofs().filter(|o| !o.is_synthetic()) {
            let (mut moved, mut existing) = (0, 0);
            for field in oneof.fields() {
                match original_all.get(&field.number()) {
                    Some(old) if oneof_of(old).is_none() => {
                        moved += 1;
                        top_level_moved.insert(field.number());
                    }
                    Some(_) => existing += 1,
                    None => {}
                }
            }
            let at = format!("{path}.{}", oneof.name());
            if moved > 1 {
                self.add(Breaking::MultipleFieldsMovedToOneof, &at);
            } else if moved == 1 && existing > 0 {
                self.add(Breaking::FieldMovedToExistingOneof, &at);
            }
        }
        // Fields that left a oneof of the original and are nowhere in the update.
        for field in original_all.values() {
            if oneof_of(field).is_some() && !update_all.contains_key(&field.number()) {
                let at = format!("{path}.{} (#{})", field.name(), field.number());
                self.add(Breaking::OneofFieldRemoved, &at);
            }
        }
        // Top-level fields: removed, added, or compared by number.
        for (number, old) in &original_all {
            if oneof_of(old).is_some() || top_level_moved.contains(number) {
                continue;
            }
            if !update_all.contains_key(number) && is_required(old) {
                let at = format!("{path}.{} (#{number})", old.name());
                self.add(Breaking::RequiredFieldRemoved, &at);
            }
        }
        for (number, new) in &update_all {
            if !original_all.contains_key(number) && oneof_of(new).is_none() && is_required(new) {
                let at = format!("{path}.{} (#{number})", new.name());
                self.add(Breaking::RequiredFieldAdded, &at);
            }
        }
        // Every field in both, wherever it sits, compared by number.
        for (number, old) in &original_all {
            if let Some(new) = update_all.get(number) {
                self.field(&path, old, new);
            }
        }
        self.types(
            &original.child_messages().collect::<Vec<_>>(),
            &update.child_messages().collect::<Vec<_>>(),
        );
        self.visiting.remove(&key);
    }

    fn field(&mut self, path: &str, original: &FieldDescriptor, update: &FieldDescriptor) {
        let at = format!("{path}.{} (#{})", original.name(), original.number());
        let (old_kind, new_kind) = (field_kind(original), field_kind(update));
        if old_kind != new_kind {
            self.add(Breaking::FieldKindChanged, &at);
            return;
        }
        match (original.kind(), update.kind()) {
            (Kind::Message(old), Kind::Message(new)) if old_kind == FieldKind::Map => {
                self.map_part(&at, &old.map_entry_key_field(), &new.map_entry_key_field());
                self.map_part(
                    &at,
                    &old.map_entry_value_field(),
                    &new.map_entry_value_field(),
                );
            }
            (Kind::Message(old), Kind::Message(new)) => self.named(&at, &old, &new),
            (old, new) => {
                if scalar_group(&old) != scalar_group(&new) {
                    self.add(Breaking::FieldScalarKindChanged, &at);
                }
            }
        }
    }

    /// A map's key or value type, compared as a field's type is.
    fn map_part(&mut self, at: &str, original: &FieldDescriptor, update: &FieldDescriptor) {
        match (original.kind(), update.kind()) {
            (Kind::Message(old), Kind::Message(new)) => self.named(at, &old, &new),
            (Kind::Message(_), _) | (_, Kind::Message(_)) => {
                self.add(Breaking::FieldKindChanged, at)
            }
            (old, new) => {
                if scalar_group(&old) != scalar_group(&new) {
                    self.add(Breaking::FieldScalarKindChanged, at);
                }
            }
        }
    }

    /// A field's message type: the same name within its package, and compatible.
    fn named(&mut self, at: &str, original: &MessageDescriptor, update: &MessageDescriptor) {
        if local_name(original) != local_name(update) {
            self.add(Breaking::FieldNamedTypeChanged, at);
            return;
        }
        let key = (
            original.full_name().to_string(),
            update.full_name().to_string(),
        );
        let broke = match self.compared.get(&key) {
            Some(broke) => *broke,
            None => {
                let before = self.broken.len();
                self.message(original, update);
                let broke = self.broken.len() > before;
                self.compared.insert(key, broke);
                broke
            }
        };
        if broke {
            self.add(Breaking::FieldNamedTypeChanged, at);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protobuf::compile;

    fn schema(body: &str) -> ProtobufSchema {
        compile(&format!("syntax = \"proto3\";\n{body}"), &[]).unwrap()
    }

    /// What breaks when `old` data is read with `new`, as difference types.
    fn broken(new: &str, old: &str) -> Vec<String> {
        incompatibilities(&schema(new), &schema(old))
            .into_iter()
            .map(|b| b.split(' ').next().unwrap_or_default().to_string())
            .collect()
    }

    #[test]
    fn confluents_compatible_changes_pass() {
        let v1 = "message M { int64 a = 1; string s = 2; Color c = 3; }\nenum Color { RED = 0; }";
        for v2 in [
            // A field added, a field removed, a field renamed.
            "message M { int64 a = 1; string s = 2; Color c = 3; bool b = 4; }\nenum Color { RED = 0; }",
            "message M { int64 a = 1; Color c = 3; }\nenum Color { RED = 0; }",
            "message M { int64 renamed = 1; string s = 2; Color c = 3; }\nenum Color { RED = 0; }",
            // Wire-compatible scalars: int64 to int32 or bool, string to bytes, an enum to int32.
            "message M { bool a = 1; bytes s = 2; int32 c = 3; }",
            // A message added before, an enum value added.
            "message N {}\nmessage M { int64 a = 1; string s = 2; Color c = 3; }\nenum Color { RED = 0; BLUE = 1; }",
            // One field moved into a new oneof.
            "message M { oneof o { int64 a = 1; } string s = 2; Color c = 3; }\nenum Color { RED = 0; }",
        ] {
            assert_eq!(broken(v2, v1), Vec::<String>::new(), "{v2}");
        }
    }

    #[test]
    fn confluents_breaking_changes_are_named() {
        let v1 = "package p;\nmessage M { int64 a = 1; string s = 2; Inner i = 3; oneof o { int32 x = 4; int32 y = 5; } }\nmessage Inner { int64 n = 1; }";
        for (v2, expected) in [
            (
                "package q;\nmessage M { int64 a = 1; string s = 2; Inner i = 3; oneof o { int32 x = 4; int32 y = 5; } }\nmessage Inner { int64 n = 1; }",
                "PACKAGE_CHANGED",
            ),
            (
                "package p;\nmessage M { sint64 a = 1; string s = 2; Inner i = 3; oneof o { int32 x = 4; int32 y = 5; } }\nmessage Inner { int64 n = 1; }",
                "FIELD_SCALAR_KIND_CHANGED",
            ),
            (
                "package p;\nmessage M { int64 a = 1; Inner s = 2; Inner i = 3; oneof o { int32 x = 4; int32 y = 5; } }\nmessage Inner { int64 n = 1; }",
                "FIELD_KIND_CHANGED",
            ),
            (
                "package p;\nmessage M { int64 a = 1; string s = 2; Other i = 3; oneof o { int32 x = 4; int32 y = 5; } }\nmessage Other { int64 n = 1; }\nmessage Inner { int64 n = 1; }",
                "FIELD_NAMED_TYPE_CHANGED",
            ),
            (
                "package p;\nmessage M { int64 a = 1; string s = 2; Inner i = 3; oneof o { int32 x = 4; } }\nmessage Inner { int64 n = 1; }",
                "ONEOF_FIELD_REMOVED",
            ),
            (
                "package p;\nmessage M { oneof n { int64 a = 1; string s = 2; } Inner i = 3; oneof o { int32 x = 4; int32 y = 5; } }\nmessage Inner { int64 n = 1; }",
                "MULTIPLE_FIELDS_MOVED_TO_ONEOF",
            ),
            (
                "package p;\nmessage M { int64 a = 1; string s = 2; oneof o { int32 x = 4; int32 y = 5; } }",
                "MESSAGE_REMOVED",
            ),
        ] {
            let got = broken(v2, v1);
            assert!(
                got.iter().any(|b| b == expected),
                "{expected}: {got:?} for {v2}"
            );
        }
        // A message field whose message changed incompatibly breaks through it.
        let got = broken(
            "package p;\nmessage M { int64 a = 1; string s = 2; Inner i = 3; oneof o { int32 x = 4; int32 y = 5; } }\nmessage Inner { string n = 1; }",
            v1,
        );
        assert!(
            got.contains(&"FIELD_NAMED_TYPE_CHANGED".to_string()),
            "{got:?}"
        );
        // A message reached by many paths is compared once: 40 levels of two fields each to
        // the next level would be 2^40 comparisons otherwise.
        let mut chain = String::from("message L40 { int64 v = 1; }\n");
        for i in (0..40).rev() {
            chain.push_str(&format!(
                "message L{i} {{ L{n} a = 1; L{n} b = 2; }}\n",
                n = i + 1
            ));
        }
        let started = std::time::Instant::now();
        assert!(broken(&chain, &chain).is_empty());
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
        // Recursive messages compare without end.
        let tree = "message T { int64 v = 1; repeated T children = 2; }";
        assert!(broken(tree, tree).is_empty());
    }

    #[test]
    fn required_fields_may_be_neither_added_nor_removed() {
        let v1 = "syntax = \"proto2\";\nmessage M { required int64 a = 1; }";
        let v2 = "syntax = \"proto2\";\nmessage M { required int64 a = 1; required int64 b = 2; }";
        let (s1, s2) = (compile(v1, &[]).unwrap(), compile(v2, &[]).unwrap());
        assert!(incompatibilities(&s2, &s1)[0].starts_with("REQUIRED_FIELD_ADDED"));
        assert!(incompatibilities(&s1, &s2)[0].starts_with("REQUIRED_FIELD_REMOVED"));
    }
}
