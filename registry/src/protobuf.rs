//! Protobuf schemas: `.proto` text compiled with `protox` into descriptors that `prost-reflect`
//! reads messages with, the schemas it imports supplied by the registry's references, and the
//! compatibility rules Confluent's registry checks between two versions.
//!
//! Besides Google's well-known types (built into `protox`), the types Confluent's Protobuf
//! converter writes with are known without a reference: `confluent/type/decimal.proto`,
//! `google/type/date.proto`, `google/type/timeofday.proto` and `confluent/meta.proto`.

use std::collections::HashMap;

use prost_reflect::{DescriptorPool, FileDescriptor, MessageDescriptor};
use protox::Compiler;
use protox::file::{ChainFileResolver, File, FileResolver, GoogleFileResolver};

use crate::error::{RegistryError, Result};

/// The name the compiled schema itself gets among its imports.
const MAIN_FILE: &str = "__eddy_registered_schema.proto";

/// Confluent's decimal type, as its Protobuf converter writes DECIMAL.
pub const DECIMAL_PROTO: &str = "syntax = \"proto3\";\npackage confluent.type;\n\n\
    message Decimal {\n  bytes value = 1;\n  uint32 precision = 2;\n  int32 scale = 3;\n}\n";
/// Google's calendar date, as Confluent's converter writes DATE.
pub const DATE_PROTO: &str = "syntax = \"proto3\";\npackage google.type;\n\n\
    message Date {\n  int32 year = 1;\n  int32 month = 2;\n  int32 day = 3;\n}\n";
/// Google's time of day, as Confluent's converter writes TIME.
pub const TIME_OF_DAY_PROTO: &str = "syntax = \"proto3\";\npackage google.type;\n\n\
    message TimeOfDay {\n  int32 hours = 1;\n  int32 minutes = 2;\n  int32 seconds = 3;\n  \
    int32 nanos = 4;\n}\n";

/// Confluent's metadata options (`confluent.field_meta` and the like), which carry a decimal's
/// precision and scale among their `params`.
pub const META_PROTO: &str = "syntax = \"proto3\";\npackage confluent;\n\n\
    import \"google/protobuf/descriptor.proto\";\n\n\
    message Meta {\n  string doc = 1;\n  map<string, string> params = 2;\n}\n\n\
    extend google.protobuf.FileOptions {\n  Meta file_meta = 1088;\n}\n\
    extend google.protobuf.MessageOptions {\n  Meta message_meta = 1088;\n}\n\
    extend google.protobuf.FieldOptions {\n  Meta field_meta = 1088;\n}\n\
    extend google.protobuf.EnumOptions {\n  Meta enum_meta = 1088;\n}\n\
    extend google.protobuf.EnumValueOptions {\n  Meta enum_value_meta = 1088;\n}\n";

/// A compiled Protobuf schema: the file it is, within the pool of everything it imports.
#[derive(Debug, Clone)]
pub struct ProtobufSchema {
    file: FileDescriptor,
}

impl ProtobufSchema {
    /// The schema's own file.
    pub fn file(&self) -> &FileDescriptor {
        &self.file
    }

    /// Every descriptor the schema and its imports define.
    pub fn pool(&self) -> &DescriptorPool {
        self.file.parent_pool()
    }

    /// The messages the schema's file defines at its top level, in order: Confluent's message
    /// indexes count from these.
    pub fn messages(&self) -> Vec<MessageDescriptor> {
        self.file.messages().collect()
    }
}

/// Source text by file name, for the compiler.
struct Sources(HashMap<String, String>);

impl FileResolver for Sources {
    fn open_file(&self, name: &str) -> std::result::Result<File, protox::Error> {
        match self.0.get(name) {
            Some(source) => File::from_source(name, source),
            None => Err(protox::Error::file_not_found(name)),
        }
    }
}

/// Compiles `text`, whose imports are `referenced` (each by the name it is imported as, with
/// its text); 42201 with the compiler's message when it does not compile.
pub fn compile(text: &str, referenced: &[(String, String)]) -> Result<ProtobufSchema> {
    if let Some(bytes) = descriptor_bytes(text) {
        return compile_descriptor(text, &bytes, referenced);
    }
    let mut sources = known_sources(referenced);
    // Confluent's registry lets a schema use its metadata options without importing them.
    let implicit_meta = text.contains("(confluent.") && !text.contains("confluent/meta.proto");
    let compiled = if implicit_meta {
        with_import(text, "confluent/meta.proto")
    } else {
        text.to_string()
    };
    sources.insert(MAIN_FILE.to_string(), compiled);
    let mut compiler = Compiler::with_file_resolver(resolver(sources));
    compiler
        .open_file(MAIN_FILE)
        .map_err(|e| RegistryError::invalid_schema(format!("{text}, details: {e}")))?;
    finish(text, &compiler.descriptor_pool(), MAIN_FILE)
}

/// The bytes of a schema sent as a base64 `FileDescriptorProto`, as Confluent's clients (the
/// Python and Go serializers among them) register Protobuf schemas; `None` for `.proto` text.
fn descriptor_bytes(text: &str) -> Option<Vec<u8>> {
    use base64::Engine as _;
    if text.is_empty() || text.contains(|c: char| c.is_whitespace() || c == ';') {
        return None;
    }
    base64::engine::general_purpose::STANDARD.decode(text).ok()
}

/// A schema sent as a serialized `FileDescriptorProto`: its imports compiled from the known
/// and referenced sources, then the descriptor itself added.
fn compile_descriptor(
    text: &str,
    bytes: &[u8],
    referenced: &[(String, String)],
) -> Result<ProtobufSchema> {
    use prost_reflect::prost::Message as _;
    let invalid =
        |e: &dyn std::fmt::Display| RegistryError::invalid_schema(format!("{text}, details: {e}"));
    let mut descriptor =
        prost_reflect::prost_types::FileDescriptorProto::decode(bytes).map_err(|e| invalid(&e))?;
    if descriptor.name().is_empty() {
        descriptor.name = Some(MAIN_FILE.to_string());
    }
    let name = descriptor.name().to_string();
    let mut compiler = Compiler::with_file_resolver(resolver(known_sources(referenced)));
    for dependency in &descriptor.dependency {
        compiler.open_file(dependency).map_err(|e| invalid(&e))?;
    }
    let mut pool = compiler.descriptor_pool();
    pool.add_file_descriptor_proto(descriptor)
        .map_err(|e| invalid(&e))?;
    finish(text, &pool, &name)
}

/// Confluent's and Google's types, and the referenced schemas, by file name.
fn known_sources(referenced: &[(String, String)]) -> HashMap<String, String> {
    let mut sources: HashMap<String, String> = [
        ("confluent/type/decimal.proto", DECIMAL_PROTO),
        ("google/type/date.proto", DATE_PROTO),
        ("google/type/timeofday.proto", TIME_OF_DAY_PROTO),
        ("confluent/meta.proto", META_PROTO),
    ]
    .into_iter()
    .map(|(n, t)| (n.to_string(), t.to_string()))
    .collect();
    sources.extend(referenced.iter().cloned());
    sources
}

fn resolver(sources: HashMap<String, String>) -> ChainFileResolver {
    let mut resolver = ChainFileResolver::new();
    resolver.add(Sources(sources));
    resolver.add(GoogleFileResolver::new());
    resolver
}

/// The compiled file `name` of `pool`, which must define a message.
fn finish(text: &str, pool: &DescriptorPool, name: &str) -> Result<ProtobufSchema> {
    let file = pool
        .get_file_by_name(name)
        .ok_or_else(|| RegistryError::invalid_schema(format!("{text}, details: no file")))?;
    if file.messages().next().is_none() {
        return Err(RegistryError::invalid_schema(format!(
            "{text}, details: the schema defines no message"
        )));
    }
    Ok(ProtobufSchema { file })
}

/// `text` with `import "{file}";` after its `syntax` statement (or first, without one).
fn with_import(text: &str, file: &str) -> String {
    let import = format!("import \"{file}\";\n");
    match text
        .find("syntax")
        .and_then(|at| text[at..].find(';').map(|end| at + end + 1))
    {
        Some(after) => format!("{}\n{import}{}", &text[..after], &text[after..]),
        None => format!("{import}{text}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schemas_compile_with_their_imports_and_known_types() {
        let event = "syntax = \"proto3\";\nmessage Event { int64 TIMESTAMP = 1; }";
        let schema = compile(
            "syntax = \"proto3\";\nimport \"event.proto\";\nimport \"google/protobuf/timestamp.proto\";\n\
             import \"confluent/type/decimal.proto\";\n\
             message Logistics { Event EVENT = 1; google.protobuf.Timestamp AT = 2; \
             confluent.type.Decimal PRICE = 3; }",
            &[("event.proto".into(), event.into())],
        )
        .unwrap();
        let names: Vec<String> = schema
            .messages()
            .iter()
            .map(|m| m.full_name().to_string())
            .collect();
        assert_eq!(names, ["Logistics"]);
        // Confluent's field metadata needs no import.
        compile(
            "syntax = \"proto3\"; import \"confluent/type/decimal.proto\"; message D { \
             confluent.type.Decimal d = 1 [(confluent.field_meta) = { params: [{ key: \"precision\", value: \"4\" }] }]; }",
            &[],
        )
        .unwrap();
        let bad = compile("syntax = \"proto3\";\nmessage M { Missing m = 1; }", &[]).unwrap_err();
        assert_eq!(bad.code, 42201);
        assert!(bad.message.contains("Missing"), "{bad}");
    }

    #[test]
    fn a_schema_may_come_as_a_base64_file_descriptor() {
        use base64::Engine as _;
        use prost_reflect::prost::Message as _;
        let source = compile(
            "syntax = \"proto3\";\npackage bank;\nimport \"google/protobuf/timestamp.proto\";\n\
             message Payment { int64 id = 1; google.protobuf.Timestamp at = 2; }",
            &[],
        )
        .unwrap();
        let mut proto = source.file().file_descriptor_proto().clone();
        proto.name = Some("payment.proto".into());
        let text = base64::engine::general_purpose::STANDARD.encode(proto.encode_to_vec());
        let schema = compile(&text, &[]).unwrap();
        assert_eq!(schema.messages()[0].full_name(), "bank.Payment");
        assert_eq!(
            compile("bm90IGEgZGVzY3JpcHRvcg==", &[]).unwrap_err().code,
            42201
        );
    }
}
