//! Whether a JSON document is a JSON Schema at all, as Confluent's registry checks before it
//! takes one: each keyword the schema uses has the shape the specification gives it (`type` a
//! known type name or a list of them, `properties` an object of schemas, `required` a list of
//! names, bounds non-negative integers, patterns regular expressions, and so on), at every
//! level. Unknown keywords are allowed, as the specification allows them.

use serde_json::{Map, Value};

/// How deep schemas may nest.
const MAX_DEPTH: usize = 128;

const TYPES: [&str; 7] = [
    "null", "boolean", "object", "array", "number", "string", "integer",
];

/// Why `schema` is not a JSON Schema, with where (`#/properties/a/type: ...`).
pub fn check(schema: &Value) -> Result<(), String> {
    check_at(schema, "#", 0)
}

fn check_at(schema: &Value, path: &str, depth: usize) -> Result<(), String> {
    if depth > MAX_DEPTH {
        return Err(format!("{path}: nested more than {MAX_DEPTH} levels deep"));
    }
    let map = match schema {
        Value::Bool(_) => return Ok(()),
        Value::Object(map) => map,
        other => {
            return Err(format!(
                "{path}: a schema is an object or a boolean, not {other}"
            ));
        }
    };
    for (keyword, value) in map {
        let at = format!("{path}/{keyword}");
        check_keyword(keyword, value, &at, depth)?;
    }
    Ok(())
}

fn check_keyword(keyword: &str, value: &Value, at: &str, depth: usize) -> Result<(), String> {
    let schemas_in = |object: &Map<String, Value>| -> Result<(), String> {
        object
            .iter()
            .try_for_each(|(name, schema)| check_at(schema, &format!("{at}/{name}"), depth + 1))
    };
    match keyword {
        "type" => match value {
            Value::String(name) => known_type(name, at),
            Value::Array(names) if !names.is_empty() => names.iter().try_for_each(|n| match n {
                Value::String(name) => known_type(name, at),
                other => Err(format!("{at}: a type name is a string, not {other}")),
            }),
            other => Err(format!(
                "{at}: expected a type name or a list of them, got {other}"
            )),
        },
        "properties" | "patternProperties" | "definitions" | "$defs" | "dependentSchemas" => {
            let object = value
                .as_object()
                .ok_or_else(|| format!("{at}: expected an object of schemas, got {value}"))?;
            if keyword == "patternProperties" {
                for pattern in object.keys() {
                    regex::Regex::new(pattern).map_err(|e| {
                        format!("{at}: {pattern:?} is not a regular expression: {e}")
                    })?;
                }
            }
            schemas_in(object)
        }
        "required" => match value {
            Value::Array(names) if names.iter().all(Value::is_string) => Ok(()),
            // Draft 3 put `required: true` on the property itself.
            Value::Bool(_) => Ok(()),
            other => Err(format!(
                "{at}: expected a list of property names, got {other}"
            )),
        },
        "items" | "prefixItems" => match value {
            Value::Array(schemas) => schemas
                .iter()
                .enumerate()
                .try_for_each(|(i, s)| check_at(s, &format!("{at}/{i}"), depth + 1)),
            schema => check_at(schema, at, depth + 1),
        },
        "additionalProperties"
        | "additionalItems"
        | "not"
        | "contains"
        | "propertyNames"
        | "if"
        | "then"
        | "else"
        | "unevaluatedItems"
        | "unevaluatedProperties" => check_at(value, at, depth + 1),
        "allOf" | "anyOf" | "oneOf" => match value {
            Value::Array(schemas) if !schemas.is_empty() => schemas
                .iter()
                .enumerate()
                .try_for_each(|(i, s)| check_at(s, &format!("{at}/{i}"), depth + 1)),
            other => Err(format!(
                "{at}: expected a non-empty list of schemas, got {other}"
            )),
        },
        "enum" => match value {
            Value::Array(_) => Ok(()),
            other => Err(format!("{at}: expected a list of values, got {other}")),
        },
        "minLength" | "maxLength" | "minItems" | "maxItems" | "minProperties" | "maxProperties"
        | "minContains" | "maxContains" => match value.as_f64() {
            Some(n) if n >= 0.0 && n.fract() == 0.0 => Ok(()),
            _ => Err(format!(
                "{at}: expected a non-negative integer, got {value}"
            )),
        },
        "minimum" | "maximum" => match value {
            Value::Number(_) => Ok(()),
            other => Err(format!("{at}: expected a number, got {other}")),
        },
        // A number since draft 6, a boolean before.
        "exclusiveMinimum" | "exclusiveMaximum" => match value {
            Value::Number(_) | Value::Bool(_) => Ok(()),
            other => Err(format!("{at}: expected a number, got {other}")),
        },
        "multipleOf" => match value.as_f64() {
            Some(n) if n > 0.0 => Ok(()),
            _ => Err(format!("{at}: expected a number above 0, got {value}")),
        },
        "pattern" => {
            let pattern = value
                .as_str()
                .ok_or_else(|| format!("{at}: expected a regular expression, got {value}"))?;
            regex::Regex::new(pattern)
                .map(|_| ())
                .map_err(|e| format!("{at}: {pattern:?} is not a regular expression: {e}"))
        }
        "uniqueItems" => match value {
            Value::Bool(_) => Ok(()),
            other => Err(format!("{at}: expected a boolean, got {other}")),
        },
        "$ref" | "$schema" | "$id" | "id" | "title" | "description" | "format" => {
            match (keyword, value) {
                (_, Value::String(_)) => Ok(()),
                // `id` may also name a property in a schema's `properties`-like use; only the
                // `$` keywords and the annotations must be strings.
                ("id", _) => Ok(()),
                (_, other) => Err(format!("{at}: expected a string, got {other}")),
            }
        }
        _ => Ok(()),
    }
}

fn known_type(name: &str, at: &str) -> Result<(), String> {
    if TYPES.contains(&name) {
        Ok(())
    } else {
        Err(format!(
            "{at}: unknown type {name:?}; a type is one of {}",
            TYPES.join(", ")
        ))
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
            json!({"definitions": {"x": {"type": "number", "exclusiveMinimum": true}},
                   "$ref": "#/definitions/x"}),
            json!({"type": "string", "pattern": "^[a-z]+$", "maxLength": 5}),
        ] {
            assert_eq!(check(&schema), Ok(()), "{schema}");
        }
        for (schema, expected) in [
            (json!({"type": 5}), "#/type: expected a type name"),
            (json!({"type": "text"}), "#/type: unknown type \"text\""),
            (
                json!({"properties": {"a": {"type": "strin"}}}),
                "#/properties/a/type: unknown type",
            ),
            (json!({"required": "a"}), "#/required: expected a list"),
            (
                json!({"maxLength": -1}),
                "#/maxLength: expected a non-negative integer",
            ),
            (
                json!({"pattern": "("}),
                "#/pattern: \"(\" is not a regular expression",
            ),
            (json!({"anyOf": []}), "#/anyOf: expected a non-empty list"),
            (
                json!({"items": [1]}),
                "#/items/0: a schema is an object or a boolean",
            ),
        ] {
            let err = check(&schema).unwrap_err();
            assert!(err.starts_with(expected), "{schema}: {err}");
        }
    }
}
