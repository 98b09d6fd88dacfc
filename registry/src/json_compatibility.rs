//! Whether one JSON Schema can read data written with another, by Confluent's rules: the two
//! are compared keyword by keyword, each difference gets one of Confluent's difference types,
//! and the schemas are compatible when every difference is of a compatible type.
//!
//! The rules follow from what each schema accepts. A reader may accept more than the writer
//! did (a wider type, a looser bound, a removed constraint, a longer enum, a property removed
//! from an open content model) but not less. An object is an *open* content model when it
//! allows any additional property: then a property added with a schema breaks compatibility
//! (the writer may have written anything under that name), while in a closed content model
//! (`additionalProperties: false`) adding an optional property is fine and removing one is not.

use std::collections::BTreeSet;

use serde_json::{Map, Value};

/// Confluent's difference types that keep compatibility.
const COMPATIBLE: &[&str] = &[
    "ID_CHANGED",
    "DESCRIPTION_CHANGED",
    "TITLE_CHANGED",
    "DEFAULT_CHANGED",
    "SCHEMA_REMOVED",
    "TYPE_EXTENDED",
    "MAX_LENGTH_INCREASED",
    "MAX_LENGTH_REMOVED",
    "MIN_LENGTH_DECREASED",
    "MIN_LENGTH_REMOVED",
    "PATTERN_REMOVED",
    "MAXIMUM_INCREASED",
    "MAXIMUM_REMOVED",
    "MINIMUM_DECREASED",
    "MINIMUM_REMOVED",
    "EXCLUSIVE_MAXIMUM_INCREASED",
    "EXCLUSIVE_MAXIMUM_REMOVED",
    "EXCLUSIVE_MINIMUM_DECREASED",
    "EXCLUSIVE_MINIMUM_REMOVED",
    "MULTIPLE_OF_REDUCED",
    "MULTIPLE_OF_REMOVED",
    "REQUIRED_ATTRIBUTE_WITH_DEFAULT_ADDED",
    "REQUIRED_ATTRIBUTE_REMOVED",
    "DEPENDENCY_ARRAY_NARROWED",
    "DEPENDENCY_ARRAY_REMOVED",
    "DEPENDENCY_SCHEMA_REMOVED",
    "MAX_PROPERTIES_INCREASED",
    "MAX_PROPERTIES_REMOVED",
    "MIN_PROPERTIES_DECREASED",
    "MIN_PROPERTIES_REMOVED",
    "ADDITIONAL_PROPERTIES_ADDED",
    "ADDITIONAL_PROPERTIES_EXTENDED",
    "UNEVALUATED_PROPERTIES_ADDED",
    "UNEVALUATED_PROPERTIES_EXTENDED",
    "PROPERTY_WITH_EMPTY_SCHEMA_ADDED_TO_OPEN_CONTENT_MODEL",
    "REQUIRED_PROPERTY_WITH_DEFAULT_ADDED_TO_UNOPEN_CONTENT_MODEL",
    "OPTIONAL_PROPERTY_ADDED_TO_UNOPEN_CONTENT_MODEL",
    "PROPERTY_WITH_FALSE_REMOVED_FROM_CLOSED_CONTENT_MODEL",
    "PROPERTY_REMOVED_FROM_OPEN_CONTENT_MODEL",
    "PROPERTY_ADDED_IS_COVERED_BY_PARTIALLY_OPEN_CONTENT_MODEL",
    "PROPERTY_REMOVED_IS_COVERED_BY_PARTIALLY_OPEN_CONTENT_MODEL",
    "MAX_ITEMS_INCREASED",
    "MAX_ITEMS_REMOVED",
    "MIN_ITEMS_DECREASED",
    "MIN_ITEMS_REMOVED",
    "MAX_CONTAINS_INCREASED",
    "MAX_CONTAINS_REMOVED",
    "MIN_CONTAINS_DECREASED",
    "MIN_CONTAINS_REMOVED",
    "UNIQUE_ITEMS_REMOVED",
    "ADDITIONAL_ITEMS_ADDED",
    "ADDITIONAL_ITEMS_EXTENDED",
    "UNEVALUATED_ITEMS_ADDED",
    "UNEVALUATED_ITEMS_EXTENDED",
    "ITEM_WITH_EMPTY_SCHEMA_ADDED_TO_OPEN_CONTENT_MODEL",
    "ITEM_ADDED_TO_CLOSED_CONTENT_MODEL",
    "ITEM_WITH_FALSE_REMOVED_FROM_CLOSED_CONTENT_MODEL",
    "ITEM_REMOVED_FROM_OPEN_CONTENT_MODEL",
    "ITEM_ADDED_IS_COVERED_BY_PARTIALLY_OPEN_CONTENT_MODEL",
    "ITEM_REMOVED_IS_COVERED_BY_PARTIALLY_OPEN_CONTENT_MODEL",
    "ENUM_ARRAY_EXTENDED",
    "COMBINED_TYPE_EXTENDED",
    "PRODUCT_TYPE_NARROWED",
    "SUM_TYPE_EXTENDED",
    "NOT_TYPE_NARROWED",
];

/// How deep schemas (and `$ref`s) are followed; deeper ones compare as equal.
const MAX_DEPTH: usize = 64;

/// The most schema comparisons one check makes; a pair of schemas that needs more is refused
/// as incompatible rather than compared for ever.
const MAX_COMPARISONS: usize = 100_000;

/// What breaks when data written with `writer` is read with `reader`, as Confluent names each
/// difference with where it is (`PROPERTY_ADDED_TO_OPEN_CONTENT_MODEL #/properties/b`); empty
/// when compatible.
pub fn incompatibilities(reader: &Value, writer: &Value) -> Vec<String> {
    let mut diff = Diff {
        roots: (writer, reader),
        found: Vec::new(),
        budget: &std::cell::Cell::new(MAX_COMPARISONS),
    };
    diff.compare(writer, reader, "#", 0);
    diff.found
        .into_iter()
        .filter(|(kind, _)| !COMPATIBLE.contains(&kind.as_str()))
        .map(|(kind, path)| format!("{kind} {path}"))
        .collect()
}

/// A schema as the comparison sees it (as the everit library Confluent uses models it).
#[derive(Debug, Clone)]
enum Node {
    /// `true` or `{}`: anything.
    Empty,
    /// `false`: nothing.
    False,
    String(Map<String, Value>),
    Number(Map<String, Value>),
    Boolean,
    Null,
    Object(Map<String, Value>),
    Array(Map<String, Value>),
    Enum(Vec<Value>),
    Not(Value),
    Combined(Criterion, Vec<Value>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Criterion {
    All,
    Any,
    One,
}

impl Node {
    fn kind(&self) -> &'static str {
        match self {
            Node::Empty => "empty",
            Node::False => "false",
            Node::String(_) => "string",
            Node::Number(_) => "number",
            Node::Boolean => "boolean",
            Node::Null => "null",
            Node::Object(_) => "object",
            Node::Array(_) => "array",
            Node::Enum(_) => "enum",
            Node::Not(_) => "not",
            Node::Combined(..) => "combined",
        }
    }
}

/// The node of one `type` name, with the schema's keywords.
fn typed(name: &str, map: &Map<String, Value>) -> Node {
    match name {
        "string" => Node::String(map.clone()),
        "integer" | "number" => {
            let mut map = map.clone();
            map.insert("type".into(), Value::String(name.into()));
            Node::Number(map)
        }
        "boolean" => Node::Boolean,
        "null" => Node::Null,
        "object" => Node::Object(map.clone()),
        "array" => Node::Array(map.clone()),
        _ => Node::Empty,
    }
}

/// A schema's node: its `type` (a list of types is a sum), its `enum`/`const`, `not` and
/// combinators; several of those together are a product of them.
fn node(schema: &Value) -> Node {
    let map = match schema {
        Value::Bool(true) => return Node::Empty,
        Value::Bool(false) => return Node::False,
        Value::Object(map) => map,
        _ => return Node::Empty,
    };
    let mut parts: Vec<Value> = Vec::new();
    let mut rest = map.clone();
    for combinator in ["allOf", "anyOf", "oneOf", "enum", "const", "not"] {
        if let Some(value) = rest.remove(combinator) {
            parts.push(Value::Object(Map::from_iter([(
                combinator.to_string(),
                value,
            )])));
        }
    }
    let typed_part = match rest.get("type") {
        Some(Value::Array(types)) if types.len() == 1 => types[0].as_str().map(|t| typed(t, &rest)),
        Some(Value::Array(types)) => {
            let variants = types
                .iter()
                .map(|t| {
                    let mut one = rest.clone();
                    one.insert("type".into(), t.clone());
                    Value::Object(one)
                })
                .collect();
            Some(Node::Combined(Criterion::Any, variants))
        }
        Some(Value::String(t)) => Some(typed(t, &rest)),
        _ => inferred(&rest),
    };
    if parts.is_empty() {
        return typed_part.unwrap_or(Node::Empty);
    }
    if typed_part.is_none() && parts.len() == 1 {
        let part = parts.remove(0);
        let (name, value) = part
            .as_object()
            .and_then(|m| m.iter().next())
            .map(|(k, v)| (k.clone(), v.clone()))
            .unwrap_or_default();
        return match name.as_str() {
            "allOf" | "anyOf" | "oneOf" => {
                let criterion = match name.as_str() {
                    "allOf" => Criterion::All,
                    "anyOf" => Criterion::Any,
                    _ => Criterion::One,
                };
                let mut subs: Vec<Value> = Vec::new();
                for sub in value.as_array().cloned().unwrap_or_default() {
                    if !subs.contains(&sub) {
                        subs.push(sub);
                    }
                }
                Node::Combined(criterion, subs)
            }
            "enum" => Node::Enum(value.as_array().cloned().unwrap_or_default()),
            "const" => Node::Enum(vec![value]),
            _ => Node::Not(value),
        };
    }
    if typed_part.is_some() {
        parts.push(Value::Object(rest));
    }
    Node::Combined(Criterion::All, parts)
}

/// The type a schema without `type` has by its keywords.
fn inferred(map: &Map<String, Value>) -> Option<Node> {
    let has = |keys: &[&str]| keys.iter().any(|k| map.contains_key(*k));
    if has(&[
        "properties",
        "required",
        "additionalProperties",
        "patternProperties",
        "minProperties",
        "maxProperties",
    ]) {
        Some(Node::Object(map.clone()))
    } else if has(&[
        "items",
        "additionalItems",
        "minItems",
        "maxItems",
        "uniqueItems",
        "contains",
    ]) {
        Some(Node::Array(map.clone()))
    } else if has(&["minLength", "maxLength", "pattern"]) {
        Some(Node::String(map.clone()))
    } else if has(&[
        "minimum",
        "maximum",
        "exclusiveMinimum",
        "exclusiveMaximum",
        "multipleOf",
    ]) {
        Some(Node::Number(map.clone()))
    } else {
        None
    }
}

/// Differences found: each type's name and where.
type Found = Vec<(String, String)>;

struct Diff<'a> {
    /// The documents `$ref`s point into: the writer's, the reader's.
    roots: (&'a Value, &'a Value),
    found: Vec<(String, String)>,
    /// Schema comparisons left, shared with sub-comparisons: unions nested in unions compare
    /// every member with every member, which a hostile schema could make endless.
    budget: &'a std::cell::Cell<usize>,
}

fn is_compatible(found: &[(String, String)]) -> bool {
    found
        .iter()
        .all(|(kind, _)| COMPATIBLE.contains(&kind.as_str()))
}

impl Diff<'_> {
    fn add(&mut self, kind: &str, path: &str) {
        self.found.push((kind.to_string(), path.to_string()));
    }

    /// A comparison of its own, to see whether it is compatible before keeping its findings.
    fn sub(
        &self,
        original: &Value,
        update: &Value,
        path: &str,
        depth: usize,
    ) -> Vec<(String, String)> {
        let mut sub = Diff {
            roots: self.roots,
            found: Vec::new(),
            budget: self.budget,
        };
        sub.compare(original, update, path, depth);
        sub.found
    }

    /// `schema` with a local `$ref` followed (in the writer's document for the original side).
    fn resolve(&self, schema: &Value, original: bool) -> Option<Value> {
        let pointer = schema.get("$ref")?.as_str()?.strip_prefix('#')?;
        let root = if original { self.roots.0 } else { self.roots.1 };
        root.pointer(pointer).cloned()
    }

    fn compare(&mut self, original: &Value, update: &Value, path: &str, depth: usize) {
        if depth > MAX_DEPTH {
            return;
        }
        match self.budget.get() {
            0 => return self.add("SCHEMA_TOO_COMPLEX_TO_COMPARE", path),
            left => self.budget.set(left - 1),
        }
        let original = self
            .resolve(original, true)
            .unwrap_or_else(|| original.clone());
        let update = self
            .resolve(update, false)
            .unwrap_or_else(|| update.clone());
        let (old, new) = (node(&original), node(&update));
        match (&old, &new) {
            (Node::Combined(..), Node::Combined(..)) => {}
            (_, Node::Combined(criterion, subs)) => {
                if subs.len() == 1 {
                    let found = self.sub(&original, &subs[0], path, depth + 1);
                    if is_compatible(&found) {
                        self.found.extend(found);
                        return;
                    }
                } else if *criterion != Criterion::All {
                    for sub in subs {
                        let found = self.sub(&original, sub, path, depth + 1);
                        if is_compatible(&found) {
                            self.found.extend(found);
                            self.add("SUM_TYPE_EXTENDED", path);
                            return;
                        }
                    }
                }
            }
            (Node::Combined(_, subs), _) if subs.len() == 1 => {
                let found = self.sub(&subs[0], &update, path, depth + 1);
                if is_compatible(&found) {
                    self.found.extend(found);
                    return;
                }
            }
            _ => {}
        }
        if old.kind() != new.kind() {
            if !matches!(old, Node::False) && !matches!(new, Node::Empty) {
                self.add("TYPE_CHANGED", path);
            }
            return;
        }
        match (old, new) {
            (Node::String(o), Node::String(n)) => strings(self, &o, &n, path),
            (Node::Number(o), Node::Number(n)) => numbers(self, &o, &n, path),
            (Node::Enum(o), Node::Enum(n)) if o != n => {
                let kind = if o.iter().all(|v| n.contains(v)) {
                    "ENUM_ARRAY_EXTENDED"
                } else if n.iter().all(|v| o.contains(v)) {
                    "ENUM_ARRAY_NARROWED"
                } else {
                    "ENUM_ARRAY_CHANGED"
                };
                self.add(kind, &format!("{path}/enum"));
            }
            (Node::Not(o), Node::Not(n)) => {
                // The reader may exclude less than the writer did.
                let found = self.sub(&n, &o, &format!("{path}/not"), depth + 1);
                if is_compatible(&found) {
                    if o != n {
                        self.add("NOT_TYPE_NARROWED", path);
                    }
                } else {
                    self.add("NOT_TYPE_EXTENDED", path);
                }
            }
            (Node::Object(o), Node::Object(n)) => self.objects(&o, &n, path, depth),
            (Node::Array(o), Node::Array(n)) => self.arrays(&o, &n, path, depth),
            (Node::Combined(oc, os), Node::Combined(nc, ns)) => {
                self.combined((oc, &os), (nc, &ns), path, depth)
            }
            _ => {}
        }
    }

    fn combined(
        &mut self,
        (old_criterion, old): (Criterion, &[Value]),
        (new_criterion, new): (Criterion, &[Value]),
        path: &str,
        depth: usize,
    ) {
        if old_criterion != new_criterion {
            let extended = new_criterion == Criterion::Any
                || (new_criterion == Criterion::One && old.len() == 1)
                || (new_criterion == Criterion::All && old.len() == 1 && new.len() == 1);
            if !extended {
                self.add("COMBINED_TYPE_CHANGED", path);
                return;
            }
            self.add("COMBINED_TYPE_EXTENDED", path);
        }
        let product = new_criterion == Criterion::All;
        if old.len() < new.len() {
            self.add(
                if product {
                    "PRODUCT_TYPE_EXTENDED"
                } else {
                    "SUM_TYPE_EXTENDED"
                },
                path,
            );
        } else if old.len() > new.len() {
            self.add(
                if product {
                    "PRODUCT_TYPE_NARROWED"
                } else {
                    "SUM_TYPE_NARROWED"
                },
                path,
            );
        }
        // Which original subschema each update subschema can stand for, then the largest
        // matching of the two sides (augmenting paths; the sets are small).
        let mut edges: Vec<Vec<(usize, Found)>> = Vec::new();
        for (i, o) in old.iter().enumerate() {
            let at = format!("{path}/{}/{i}", criterion_name(old_criterion));
            let mut row = Vec::new();
            for (j, n) in new.iter().enumerate() {
                let found = self.sub(o, n, &at, depth + 1);
                if is_compatible(&found) {
                    row.push((j, found));
                }
            }
            edges.push(row);
        }
        let mut matched: Vec<Option<usize>> = vec![None; new.len()];
        fn augment(
            i: usize,
            edges: &[Vec<(usize, Found)>],
            seen: &mut [bool],
            matched: &mut [Option<usize>],
        ) -> bool {
            for (j, _) in &edges[i] {
                if seen[*j] {
                    continue;
                }
                seen[*j] = true;
                if matched[*j].is_none_or(|k| augment(k, edges, seen, matched)) {
                    matched[*j] = Some(i);
                    return true;
                }
            }
            false
        }
        let mut size = 0;
        for i in 0..old.len() {
            let mut seen = vec![false; new.len()];
            if augment(i, &edges, &mut seen, &mut matched) {
                size += 1;
            }
        }
        for (j, i) in matched.iter().enumerate() {
            if let Some(i) = i
                && let Some((_, found)) = edges[*i].iter().find(|(k, _)| *k == j)
            {
                self.found.extend(found.iter().cloned());
            }
        }
        if size < old.len().min(new.len()) {
            self.add("COMBINED_TYPE_SUBSCHEMAS_CHANGED", path);
        }
    }

    fn objects(
        &mut self,
        o: &Map<String, Value>,
        n: &Map<String, Value>,
        path: &str,
        depth: usize,
    ) {
        let props = |m: &Map<String, Value>| {
            m.get("properties")
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default()
        };
        let required = |m: &Map<String, Value>| -> BTreeSet<String> {
            m.get("required")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(|v| v.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default()
        };
        let (old_props, new_props) = (props(o), props(n));
        let (old_required, new_required) = (required(o), required(n));
        let has_default = |name: &str| {
            new_props
                .get(name)
                .is_some_and(|s| s.get("default").is_some())
        };
        for name in old_props.keys() {
            if new_props.contains_key(name) {
                let at = format!("{path}/required/{name}");
                match (old_required.contains(name), new_required.contains(name)) {
                    (true, false) => self.add("REQUIRED_ATTRIBUTE_REMOVED", &at),
                    (false, true) if has_default(name) => {
                        self.add("REQUIRED_ATTRIBUTE_WITH_DEFAULT_ADDED", &at)
                    }
                    (false, true) => self.add("REQUIRED_ATTRIBUTE_ADDED", &at),
                    _ => {}
                }
            }
        }
        let names: BTreeSet<&String> = old_props.keys().chain(new_props.keys()).collect();
        for name in names {
            let at = format!("{path}/properties/{name}");
            match (old_props.get(name), new_props.get(name)) {
                (Some(old), None) => {
                    if open(n) {
                        self.add("PROPERTY_REMOVED_FROM_OPEN_CONTENT_MODEL", &at);
                    } else if let Some(partial) = partially_open(n, name) {
                        let found = self.sub(old, &partial, &at, depth + 1);
                        let ok = is_compatible(&found);
                        self.found.extend(found);
                        self.add(
                            if ok {
                                "PROPERTY_REMOVED_IS_COVERED_BY_PARTIALLY_OPEN_CONTENT_MODEL"
                            } else {
                                "PROPERTY_REMOVED_NOT_COVERED_BY_PARTIALLY_OPEN_CONTENT_MODEL"
                            },
                            &at,
                        );
                    } else if *old == Value::Bool(false) {
                        self.add("PROPERTY_WITH_FALSE_REMOVED_FROM_CLOSED_CONTENT_MODEL", &at);
                    } else {
                        self.add("PROPERTY_REMOVED_FROM_CLOSED_CONTENT_MODEL", &at);
                    }
                }
                (None, Some(new)) => {
                    if open(o) {
                        if matches!(node(new), Node::Empty) {
                            self.add(
                                "PROPERTY_WITH_EMPTY_SCHEMA_ADDED_TO_OPEN_CONTENT_MODEL",
                                &at,
                            );
                        } else {
                            self.add("PROPERTY_ADDED_TO_OPEN_CONTENT_MODEL", &at);
                        }
                        continue;
                    }
                    if let Some(partial) = partially_open(o, name) {
                        let found = self.sub(&partial, new, &at, depth + 1);
                        let ok = is_compatible(&found);
                        self.found.extend(found);
                        self.add(
                            if ok {
                                "PROPERTY_ADDED_IS_COVERED_BY_PARTIALLY_OPEN_CONTENT_MODEL"
                            } else {
                                "PROPERTY_ADDED_NOT_COVERED_BY_PARTIALLY_OPEN_CONTENT_MODEL"
                            },
                            &at,
                        );
                    }
                    if !new_required.contains(name) {
                        self.add("OPTIONAL_PROPERTY_ADDED_TO_UNOPEN_CONTENT_MODEL", &at);
                    } else if has_default(name) {
                        self.add(
                            "REQUIRED_PROPERTY_WITH_DEFAULT_ADDED_TO_UNOPEN_CONTENT_MODEL",
                            &at,
                        );
                    } else {
                        self.add("REQUIRED_PROPERTY_ADDED_TO_UNOPEN_CONTENT_MODEL", &at);
                    }
                }
                (Some(old), Some(new)) => self.compare(old, new, &at, depth + 1),
                (None, None) => {}
            }
        }
        self.dependencies(o, n, path, depth);
        // additionalProperties: permitted or not, and with what schema.
        let at = format!("{path}/additionalProperties");
        let additional = |m: &Map<String, Value>| match m.get("additionalProperties") {
            Some(Value::Bool(false)) => (false, None),
            Some(Value::Bool(true)) | None => (true, None),
            Some(schema) => (true, Some(schema.clone())),
        };
        match (additional(o), additional(n)) {
            ((op, _), (np, _)) if op != np => self.add(
                if np {
                    "ADDITIONAL_PROPERTIES_ADDED"
                } else {
                    "ADDITIONAL_PROPERTIES_REMOVED"
                },
                &at,
            ),
            ((_, None), (_, Some(_))) => self.add("ADDITIONAL_PROPERTIES_NARROWED", &at),
            ((_, Some(_)), (_, None)) => self.add("ADDITIONAL_PROPERTIES_EXTENDED", &at),
            ((_, Some(os)), (_, Some(ns))) => self.compare(&os, &ns, &at, depth + 1),
            _ => {}
        }
        self.unevaluated((o, n), path, "unevaluatedProperties", depth);
        bounds(self, o, n, path, "maxProperties", "MAX_PROPERTIES");
        bounds(self, o, n, path, "minProperties", "MIN_PROPERTIES");
    }

    /// `dependencies` (and their 2019 forms): a property's list of the properties it needs
    /// may shrink or go, not grow or come; a schema it needs may go, not come.
    fn dependencies(
        &mut self,
        o: &Map<String, Value>,
        n: &Map<String, Value>,
        path: &str,
        depth: usize,
    ) {
        let of = |m: &Map<String, Value>| -> Map<String, Value> {
            let mut all = Map::new();
            for keyword in ["dependencies", "dependentRequired", "dependentSchemas"] {
                if let Some(entries) = m.get(keyword).and_then(Value::as_object) {
                    all.extend(entries.clone());
                }
            }
            all
        };
        let (old, new) = (of(o), of(n));
        let names: BTreeSet<&String> = old.keys().chain(new.keys()).collect();
        for name in names {
            let at = format!("{path}/dependencies/{name}");
            let set = |v: &Value| -> Option<BTreeSet<String>> {
                v.as_array().map(|a| {
                    a.iter()
                        .filter_map(|s| s.as_str().map(str::to_string))
                        .collect()
                })
            };
            match (old.get(name), new.get(name)) {
                (Some(a), None) if set(a).is_some() => self.add("DEPENDENCY_ARRAY_REMOVED", &at),
                (Some(_), None) => self.add("DEPENDENCY_SCHEMA_REMOVED", &at),
                (None, Some(b)) if set(b).is_some() => self.add("DEPENDENCY_ARRAY_ADDED", &at),
                (None, Some(_)) => self.add("DEPENDENCY_SCHEMA_ADDED", &at),
                (Some(a), Some(b)) => match (set(a), set(b)) {
                    (Some(a), Some(b)) if a == b => {}
                    (Some(a), Some(b)) if b.is_superset(&a) => {
                        self.add("DEPENDENCY_ARRAY_EXTENDED", &at)
                    }
                    (Some(a), Some(b)) if a.is_superset(&b) => {
                        self.add("DEPENDENCY_ARRAY_NARROWED", &at)
                    }
                    (Some(_), Some(_)) => self.add("DEPENDENCY_ARRAY_CHANGED", &at),
                    (None, None) => self.compare(a, b, &at, depth + 1),
                    _ => self.add("TYPE_CHANGED", &at),
                },
                (None, None) => {}
            }
        }
    }

    /// Arrays as Confluent compares them: the schema every item has, the tuple's item schemas
    /// (which may come and go by the content model, as properties do), `additionalItems`,
    /// `unevaluatedItems` and the count bounds.
    fn arrays(&mut self, o: &Map<String, Value>, n: &Map<String, Value>, path: &str, depth: usize) {
        let at = format!("{path}/items");
        fn every_item(m: &Map<String, Value>) -> Option<&Value> {
            m.get("items").filter(|v| !v.is_array())
        }
        match (every_item(o), every_item(n)) {
            (None, Some(_)) => self.add("SCHEMA_ADDED", &at),
            (Some(_), None) => self.add("SCHEMA_REMOVED", &at),
            (Some(a), Some(b)) => self.compare(a, b, &at, depth + 1),
            (None, None) => {}
        }
        self.tuples(o, n, &at, depth);
        let at = format!("{path}/additionalItems");
        fn additional(m: &Map<String, Value>) -> (bool, Option<&Value>) {
            match m.get("additionalItems") {
                Some(Value::Bool(false)) => (false, None),
                Some(Value::Bool(true)) | None => (true, None),
                Some(schema) => (true, Some(schema)),
            }
        }
        match (additional(o), additional(n)) {
            ((op, _), (np, _)) if op != np => self.add(
                if np {
                    "ADDITIONAL_ITEMS_ADDED"
                } else {
                    "ADDITIONAL_ITEMS_REMOVED"
                },
                &at,
            ),
            ((_, None), (_, Some(_))) => self.add("ADDITIONAL_ITEMS_NARROWED", &at),
            ((_, Some(_)), (_, None)) => self.add("ADDITIONAL_ITEMS_EXTENDED", &at),
            ((_, Some(os)), (_, Some(ns))) => self.compare(os, ns, &at, depth + 1),
            _ => {}
        }
        self.unevaluated((o, n), path, "unevaluatedItems", depth);
        bounds(self, o, n, path, "maxItems", "MAX_ITEMS");
        bounds(self, o, n, path, "minItems", "MIN_ITEMS");
        let unique = |m: &Map<String, Value>| m.get("uniqueItems") == Some(&Value::Bool(true));
        match (unique(o), unique(n)) {
            (true, false) => self.add("UNIQUE_ITEMS_REMOVED", &format!("{path}/uniqueItems")),
            (false, true) => self.add("UNIQUE_ITEMS_ADDED", &format!("{path}/uniqueItems")),
            _ => {}
        }
        bounds(self, o, n, path, "maxContains", "MAX_CONTAINS");
        bounds(self, o, n, path, "minContains", "MIN_CONTAINS");
    }

    /// A tuple's item schemas: those both name compare in place; one the update drops or adds
    /// is judged by the content model beyond the tuple, as a property is.
    fn tuples(&mut self, o: &Map<String, Value>, n: &Map<String, Value>, at: &str, depth: usize) {
        let tuple = |m: &Map<String, Value>| -> Vec<Value> {
            m.get("items")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default()
        };
        let (os, ns) = (tuple(o), tuple(n));
        for (i, (a, b)) in os.iter().zip(&ns).enumerate() {
            self.compare(a, b, &format!("{at}/{i}"), depth + 1);
        }
        for (i, old) in os.iter().enumerate().skip(ns.len()) {
            let at = format!("{at}/{i}");
            if open_items(n) {
                self.add("ITEM_REMOVED_FROM_OPEN_CONTENT_MODEL", &at);
            } else if let Some(partial) = partially_open_items(n) {
                let found = self.sub(old, &partial, &at, depth + 1);
                let ok = is_compatible(&found);
                self.found.extend(found);
                self.add(
                    if ok {
                        "ITEM_REMOVED_IS_COVERED_BY_PARTIALLY_OPEN_CONTENT_MODEL"
                    } else {
                        "ITEM_REMOVED_NOT_COVERED_BY_PARTIALLY_OPEN_CONTENT_MODEL"
                    },
                    &at,
                );
            } else if *old == Value::Bool(false) {
                self.add("ITEM_WITH_FALSE_REMOVED_FROM_CLOSED_CONTENT_MODEL", &at);
            } else {
                self.add("ITEM_REMOVED_FROM_CLOSED_CONTENT_MODEL", &at);
            }
        }
        for (i, new) in ns.iter().enumerate().skip(os.len()) {
            let at = format!("{at}/{i}");
            if open_items(o) {
                if matches!(node(new), Node::Empty) {
                    self.add("ITEM_WITH_EMPTY_SCHEMA_ADDED_TO_OPEN_CONTENT_MODEL", &at);
                } else {
                    self.add("ITEM_ADDED_TO_OPEN_CONTENT_MODEL", &at);
                }
            } else if let Some(partial) = partially_open_items(o) {
                let found = self.sub(&partial, new, &at, depth + 1);
                let ok = is_compatible(&found);
                self.found.extend(found);
                self.add(
                    if ok {
                        "ITEM_ADDED_IS_COVERED_BY_PARTIALLY_OPEN_CONTENT_MODEL"
                    } else {
                        "ITEM_ADDED_NOT_COVERED_BY_PARTIALLY_OPEN_CONTENT_MODEL"
                    },
                    &at,
                );
            } else {
                self.add("ITEM_ADDED_TO_CLOSED_CONTENT_MODEL", &at);
            }
        }
    }

    /// `unevaluatedItems` or `unevaluatedProperties`: `false` is the closed form, `true` or
    /// `{}` the open one, any other schema the partially open one.
    fn unevaluated(
        &mut self,
        (o, n): (&Map<String, Value>, &Map<String, Value>),
        path: &str,
        keyword: &str,
        depth: usize,
    ) {
        let at = format!("{path}/{keyword}");
        let closed = |v: &Value| matches!(node(v), Node::False);
        let anything = |v: &Value| matches!(node(v), Node::Empty);
        let change = match (o.get(keyword), n.get(keyword)) {
            (None, None) => return,
            (None, Some(u)) if closed(u) => "REMOVED",
            (None, Some(_)) => "NARROWED",
            (Some(o), None) if closed(o) => "ADDED",
            (Some(_), None) => "EXTENDED",
            (Some(o), Some(u)) if closed(o) && !closed(u) => "ADDED",
            (Some(o), Some(u)) if !closed(o) && closed(u) => "REMOVED",
            (Some(o), Some(u)) if anything(o) && !anything(u) => "NARROWED",
            (Some(o), Some(u)) if !anything(o) && anything(u) => "EXTENDED",
            (Some(o), Some(u)) => return self.compare(o, u, &at, depth + 1),
        };
        let name = if keyword == "unevaluatedItems" {
            "UNEVALUATED_ITEMS"
        } else {
            "UNEVALUATED_PROPERTIES"
        };
        self.add(&format!("{name}_{change}"), &at);
    }
}

fn criterion_name(criterion: Criterion) -> &'static str {
    match criterion {
        Criterion::All => "allOf",
        Criterion::Any => "anyOf",
        Criterion::One => "oneOf",
    }
}

/// An object that allows any additional property: no pattern properties, `additionalProperties`
/// absent or `true`, and `unevaluatedProperties` absent or anything.
fn open(m: &Map<String, Value>) -> bool {
    m.get("patternProperties")
        .and_then(Value::as_object)
        .is_none_or(Map::is_empty)
        && matches!(
            m.get("additionalProperties"),
            None | Some(Value::Bool(true))
        )
        && m.get("unevaluatedProperties")
            .is_none_or(|u| matches!(node(u), Node::Empty))
}

/// The schema a partially open object gives a property it does not name.
fn partially_open(m: &Map<String, Value>, name: &str) -> Option<Value> {
    if let Some(patterns) = m.get("patternProperties").and_then(Value::as_object) {
        for (pattern, schema) in patterns {
            if regex::Regex::new(pattern).is_ok_and(|r| r.is_match(name)) {
                return Some(schema.clone());
            }
        }
    }
    match m.get("additionalProperties") {
        Some(Value::Bool(false)) => None,
        Some(Value::Bool(true)) | None => unevaluated_schema(m, "unevaluatedProperties"),
        Some(schema) => Some(schema.clone()),
    }
}

/// The schema `unevaluatedItems`/`unevaluatedProperties` gives when it is neither `false` nor
/// anything.
fn unevaluated_schema(m: &Map<String, Value>, keyword: &str) -> Option<Value> {
    m.get(keyword)
        .filter(|u| !matches!(node(u), Node::False | Node::Empty))
        .cloned()
}

/// An array whose items past its tuple may be anything: `additionalItems` absent or `true`,
/// and `unevaluatedItems` absent or anything.
fn open_items(m: &Map<String, Value>) -> bool {
    matches!(m.get("additionalItems"), None | Some(Value::Bool(true)))
        && m.get("unevaluatedItems")
            .is_none_or(|u| matches!(node(u), Node::Empty))
}

/// The schema a partially open array gives items past its tuple.
fn partially_open_items(m: &Map<String, Value>) -> Option<Value> {
    match m.get("additionalItems") {
        Some(Value::Bool(false)) => None,
        Some(Value::Bool(true)) | None => unevaluated_schema(m, "unevaluatedItems"),
        Some(schema) => Some(schema.clone()),
    }
}

fn strings(diff: &mut Diff<'_>, o: &Map<String, Value>, n: &Map<String, Value>, path: &str) {
    bounds(diff, o, n, path, "maxLength", "MAX_LENGTH");
    bounds(diff, o, n, path, "minLength", "MIN_LENGTH");
    let at = format!("{path}/pattern");
    match (o.get("pattern"), n.get("pattern")) {
        (None, Some(_)) => diff.add("PATTERN_ADDED", &at),
        (Some(_), None) => diff.add("PATTERN_REMOVED", &at),
        (Some(a), Some(b)) if a != b => diff.add("PATTERN_CHANGED", &at),
        _ => {}
    }
}

fn numbers(diff: &mut Diff<'_>, o: &Map<String, Value>, n: &Map<String, Value>, path: &str) {
    bounds(diff, o, n, path, "maximum", "MAXIMUM");
    bounds(diff, o, n, path, "minimum", "MINIMUM");
    bounds(diff, o, n, path, "exclusiveMaximum", "EXCLUSIVE_MAXIMUM");
    bounds(diff, o, n, path, "exclusiveMinimum", "EXCLUSIVE_MINIMUM");
    let at = format!("{path}/multipleOf");
    let multiple = |m: &Map<String, Value>| m.get("multipleOf").and_then(Value::as_f64);
    match (multiple(o), multiple(n)) {
        (None, Some(_)) => diff.add("MULTIPLE_OF_ADDED", &at),
        (Some(_), None) => diff.add("MULTIPLE_OF_REMOVED", &at),
        (Some(a), Some(b)) if a != b => {
            let (a, b) = (a as i64, b as i64);
            if a != 0 && b % a == 0 {
                diff.add("MULTIPLE_OF_EXPANDED", &at);
            } else if b != 0 && a % b == 0 {
                diff.add("MULTIPLE_OF_REDUCED", &at);
            } else {
                diff.add("MULTIPLE_OF_CHANGED", &at);
            }
        }
        _ => {}
    }
    let integer = |m: &Map<String, Value>| m.get("type") == Some(&Value::String("integer".into()));
    match (integer(o), integer(n)) {
        (true, false) => diff.add("TYPE_EXTENDED", path),
        (false, true) => diff.add("TYPE_NARROWED", path),
        _ => {}
    }
}

/// A numeric bound `keyword` added, removed, raised or lowered, as `{name}_ADDED` and so on.
fn bounds(
    diff: &mut Diff<'_>,
    o: &Map<String, Value>,
    n: &Map<String, Value>,
    path: &str,
    keyword: &str,
    name: &str,
) {
    let value = |m: &Map<String, Value>| m.get(keyword).and_then(Value::as_f64);
    let change = match (value(o), value(n)) {
        (None, Some(_)) => "ADDED",
        (Some(_), None) => "REMOVED",
        (Some(a), Some(b)) if a < b => "INCREASED",
        (Some(a), Some(b)) if a > b => "DECREASED",
        _ => return,
    };
    diff.add(&format!("{name}_{change}"), &format!("{path}/{keyword}"));
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The breaking difference types when data written with `old` is read with `new`.
    fn broken(new: Value, old: Value) -> Vec<String> {
        incompatibilities(&new, &old)
            .into_iter()
            .map(|b| b.split(' ').next().unwrap_or_default().to_string())
            .collect()
    }

    fn object(properties: Value, extra: Value) -> Value {
        let mut schema = json!({"type": "object", "properties": properties});
        if let (Some(s), Some(e)) = (schema.as_object_mut(), extra.as_object()) {
            s.extend(e.clone());
        }
        schema
    }

    #[test]
    fn content_models_decide_whether_properties_may_come_and_go() {
        let open_v1 = object(json!({"a": {"type": "string"}}), json!({}));
        let open_v2 = object(
            json!({"a": {"type": "string"}, "b": {"type": "integer"}}),
            json!({}),
        );
        // In an open model the writer may have put anything under `b`.
        assert_eq!(
            broken(open_v2.clone(), open_v1.clone()),
            ["PROPERTY_ADDED_TO_OPEN_CONTENT_MODEL"]
        );
        assert!(broken(open_v1, open_v2).is_empty());
        let closed = json!({"additionalProperties": false});
        let closed_v1 = object(json!({"a": {"type": "string"}}), closed.clone());
        let closed_v2 = object(
            json!({"a": {"type": "string"}, "b": {"type": "integer"}}),
            closed.clone(),
        );
        assert!(broken(closed_v2.clone(), closed_v1.clone()).is_empty());
        assert_eq!(
            broken(closed_v1.clone(), closed_v2),
            ["PROPERTY_REMOVED_FROM_CLOSED_CONTENT_MODEL"]
        );
        let required = object(
            json!({"a": {"type": "string"}, "b": {"type": "integer"}}),
            json!({"additionalProperties": false, "required": ["b"]}),
        );
        assert_eq!(
            broken(required, closed_v1),
            ["REQUIRED_PROPERTY_ADDED_TO_UNOPEN_CONTENT_MODEL"]
        );
    }

    #[test]
    fn types_bounds_and_enums_may_widen_but_not_narrow() {
        let int = json!({"type": "integer"});
        let number = json!({"type": "number"});
        assert!(broken(number.clone(), int.clone()).is_empty());
        assert_eq!(broken(int.clone(), number), ["TYPE_NARROWED"]);
        assert_eq!(broken(json!({"type": "string"}), int), ["TYPE_CHANGED"]);
        let nullable = json!({"type": ["string", "null"]});
        assert!(broken(nullable.clone(), json!({"type": "string"})).is_empty());
        assert_eq!(
            broken(json!({"type": "string"}), nullable),
            ["TYPE_CHANGED"]
        );
        let short = json!({"type": "string", "maxLength": 5});
        let long = json!({"type": "string", "maxLength": 10});
        assert!(broken(long.clone(), short.clone()).is_empty());
        assert_eq!(broken(short, long), ["MAX_LENGTH_DECREASED"]);
        let two = json!({"enum": ["a", "b"]});
        let three = json!({"enum": ["a", "b", "c"]});
        assert!(broken(three.clone(), two.clone()).is_empty());
        assert_eq!(broken(two, three), ["ENUM_ARRAY_NARROWED"]);
    }

    #[test]
    fn dependencies_may_loosen_but_not_tighten() {
        let needs = |names: Value| json!({"type": "object", "dependencies": {"card": names}});
        assert!(broken(needs(json!(["billing"])), needs(json!(["billing", "zip"]))).is_empty());
        assert_eq!(
            broken(needs(json!(["billing", "zip"])), needs(json!(["billing"]))),
            ["DEPENDENCY_ARRAY_EXTENDED"]
        );
        assert!(broken(json!({"type": "object"}), needs(json!(["billing"]))).is_empty());
        assert_eq!(
            broken(needs(json!(["billing"])), json!({"type": "object"})),
            ["DEPENDENCY_ARRAY_ADDED"]
        );
    }

    #[test]
    fn connects_nullable_unions_and_references_compare_by_their_members() {
        // Kafka Connect writes an optional field as oneOf null or its type.
        let optional = |t: &str| json!({"oneOf": [{"type": "null"}, {"type": t}]});
        assert!(broken(optional("number"), optional("integer")).is_empty());
        assert_eq!(
            broken(optional("string"), optional("integer")),
            ["COMBINED_TYPE_SUBSCHEMAS_CHANGED"]
        );
        let with_ref = |t: &str| {
            json!({"definitions": {"id": {"type": t}}, "type": "object",
                   "properties": {"id": {"$ref": "#/definitions/id"}}})
        };
        assert!(broken(with_ref("number"), with_ref("integer")).is_empty());
        assert_eq!(
            broken(with_ref("string"), with_ref("integer")),
            ["TYPE_CHANGED"]
        );
        // Unions nested in unions end too, refused once they take too long to compare.
        let mut nested = json!({"type": "string"});
        for _ in 0..12 {
            nested = json!({"oneOf": [nested.clone(), nested.clone(), {"type": "null"}]});
        }
        let started = std::time::Instant::now();
        let _ = broken(nested.clone(), nested);
        assert!(started.elapsed() < std::time::Duration::from_secs(10));
        // A reference to itself ends.
        let tree = json!({"type": "object", "properties": {"child": {"$ref": "#"}}});
        assert!(broken(tree.clone(), tree).is_empty());
    }
    #[test]
    fn tuples_follow_their_content_model_as_properties_do() {
        let tuple = |items: Value, extra: Value| {
            let mut schema = json!({"type": "array", "items": items});
            if let (Some(s), Some(e)) = (schema.as_object_mut(), extra.as_object()) {
                s.extend(e.clone());
            }
            schema
        };
        let one = json!([{"type": "string"}]);
        let two = json!([{"type": "string"}, {"type": "integer"}]);
        // Open: an old writer may have put anything second.
        assert_eq!(
            broken(tuple(two.clone(), json!({})), tuple(one.clone(), json!({}))),
            ["ITEM_ADDED_TO_OPEN_CONTENT_MODEL"]
        );
        let closed = json!({"additionalItems": false});
        assert!(
            broken(
                tuple(two.clone(), closed.clone()),
                tuple(one.clone(), closed.clone())
            )
            .is_empty()
        );
        // Partially open: the old writer's extra items were numbers, so an integer slot breaks
        // and a number slot does not.
        let numbers = json!({"additionalItems": {"type": "number"}});
        assert!(
            broken(
                tuple(json!([{"type": "string"}, {"type": "number"}]), json!({})),
                tuple(one.clone(), numbers.clone())
            )
            .is_empty()
        );
        assert!(
            broken(
                tuple(two.clone(), json!({})),
                tuple(one.clone(), numbers.clone())
            )
            .contains(&"ITEM_ADDED_NOT_COVERED_BY_PARTIALLY_OPEN_CONTENT_MODEL".to_string())
        );
        // unevaluatedItems false closes a tuple as additionalItems false does.
        let sealed = json!({"unevaluatedItems": false});
        assert_eq!(
            broken(
                tuple(one.clone(), sealed.clone()),
                tuple(one.clone(), json!({}))
            ),
            ["UNEVALUATED_ITEMS_REMOVED"]
        );
        assert!(broken(tuple(two, sealed.clone()), tuple(one.clone(), sealed)).is_empty());
        // A contains-count bound may not appear or tighten.
        let at_most =
            |n: u64| json!({"type": "array", "contains": {"type": "string"}, "maxContains": n});
        assert_eq!(broken(at_most(2), at_most(3)), ["MAX_CONTAINS_DECREASED"]);
        assert!(broken(at_most(3), at_most(2)).is_empty());
        // unevaluatedProperties false closes an object: a property added is then fine.
        let sealed = json!({"unevaluatedProperties": false});
        let v1 = object(json!({"a": {"type": "string"}}), sealed.clone());
        let v2 = object(
            json!({"a": {"type": "string"}, "b": {"type": "integer"}}),
            sealed,
        );
        assert!(broken(v2.clone(), v1.clone()).is_empty());
        assert_eq!(
            broken(v1, v2),
            ["PROPERTY_REMOVED_FROM_CLOSED_CONTENT_MODEL"]
        );
    }
}
