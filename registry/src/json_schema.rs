//! Whether a JSON document is a JSON Schema at all, as Confluent's registry checks before it
//! takes one: the document must be valid under its draft's meta-schema (the `$schema` it names
//! among drafts 4, 6, 7, 2019-09 and 2020-12, or draft 7 as Confluent assumes when it names
//! none it knows), checked with the `jsonschema` crate; and its `pattern`s and
//! `patternProperties` must be regular expressions, which the later drafts' meta-schemas leave
//! as annotations but the compatibility rules compile.

use jsonschema::Draft;
use serde_json::Value;

/// Why `schema` is not a JSON Schema, with where (`#/properties/a/type: ...`).
pub fn check(schema: &Value) -> Result<(), String> {
    let valid = match Draft::Draft7.detect(schema) {
        Draft::Draft4 => jsonschema::draft4::meta::validate(schema),
        Draft::Draft6 => jsonschema::draft6::meta::validate(schema),
        Draft::Draft201909 => jsonschema::draft201909::meta::validate(schema),
        Draft::Draft202012 => jsonschema::draft202012::meta::validate(schema),
        _ => jsonschema::draft7::meta::validate(schema),
    };
    valid.map_err(|e| format!("#{}: {e}", e.instance_path()))?;
    patterns(schema, "#")
}

/// Every `pattern` and `patternProperties` name compiles, outside the keywords whose values are
/// data rather than schemas.
fn patterns(value: &Value, path: &str) -> Result<(), String> {
    let compiles = |pattern: &str, at: &str| {
        regex::Regex::new(pattern)
            .map(|_| ())
            .map_err(|e| format!("{at}: {pattern:?} is not a regular expression: {e}"))
    };
    match value {
        Value::Object(map) => map.iter().try_for_each(|(keyword, v)| {
            let at = format!("{path}/{keyword}");
            match (keyword.as_str(), v) {
                ("enum" | "const" | "default" | "examples", _) => Ok(()),
                ("pattern", Value::String(pattern)) => compiles(pattern, &at),
                ("patternProperties", Value::Object(schemas)) => {
                    schemas.keys().try_for_each(|p| compiles(p, &at))?;
                    patterns(v, &at)
                }
                _ => patterns(v, &at),
            }
        }),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .try_for_each(|(i, v)| patterns(v, &format!("{path}/{i}"))),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn schemas_of_every_draft_shape_pass_and_malformed_keywords_say_where() {
        for schema in [
            json!(true),
            json!({}),
            json!({"type": "object", "properties": {"a": {"type": ["string", "null"]}},
                   "required": ["a"], "additionalProperties": false}),
            json!({"oneOf": [{"type": "null"}, {"type": "integer", "connect.type": "int64"}]}),
            json!({"type": "array", "items": [{"type": "string"}], "minItems": 1}),
            json!({"$schema": "http://json-schema.org/draft-04/schema#",
                   "definitions": {"x": {"type": "number", "minimum": 0, "exclusiveMinimum": true}},
                   "$ref": "#/definitions/x"}),
            json!({"$schema": "https://json-schema.org/draft/2020-12/schema",
                   "prefixItems": [{"type": "string"}], "unevaluatedItems": false}),
            // A `pattern` in data is not a pattern.
            json!({"type": "object", "default": {"pattern": "("}}),
            json!({"type": "string", "pattern": "^[a-z]+$", "maxLength": 5}),
        ] {
            assert_eq!(check(&schema), Ok(()), "{schema}");
        }
        for (schema, expected) in [
            (json!({"type": 5}), "#/type: 5 is not valid"),
            (json!({"type": "text"}), "#/type: \"text\" is not valid"),
            (
                json!({"properties": {"a": {"type": "strin"}}}),
                "#/properties/a/type: \"strin\" is not valid",
            ),
            (
                json!({"required": "a"}),
                "#/required: \"a\" is not of type \"array\"",
            ),
            (
                json!({"maxLength": -1}),
                "#/maxLength: -1 is less than the minimum of 0",
            ),
            (
                json!({"pattern": "("}),
                "#/pattern: \"(\" is not a \"regex\"",
            ),
            (json!({"anyOf": []}), "#/anyOf: [] has less than 1 item"),
            (json!({"items": [1]}), "#/items: [1] is not valid"),
            // Later drafts leave `pattern` unchecked; the compatibility rules need it to compile.
            (
                json!({"$schema": "https://json-schema.org/draft/2020-12/schema",
                       "patternProperties": {"(": {}}}),
                "#/patternProperties: \"(\" is not a regular expression",
            ),
            // Draft 4's boolean exclusiveMinimum is not draft 7's number.
            (
                json!({"type": "number", "minimum": 1, "exclusiveMinimum": true}),
                "#/exclusiveMinimum: true is not of type \"number\"",
            ),
        ] {
            let err = check(&schema).unwrap_err();
            assert!(err.starts_with(expected), "{schema}: {err}");
        }
    }
}
