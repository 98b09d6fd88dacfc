//! Arrays as a writer's schema decoded them, made into the columns' types with ksqlDB's rules
//! (its `ConnectDataTranslator`): a field matches a column of its name or, failing that, of its
//! upper-cased name; a column no field matches is null; integers widen, floats become DOUBLE,
//! and any scalar may be read as a STRING; anything else is refused for the whole schema.

use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, ListArray, MapArray, StructArray, new_null_array,
};
use datafusion::arrow::compute::{CastOptions, cast_with_options};
use datafusion::arrow::datatypes::{DataType, Field, FieldRef, Fields};

/// `array` as `target`, or why the writer's type cannot be read as it; `path` names the field
/// as ksqlDB does (`FOO->ARRAY->BAR`).
pub fn conform(array: &ArrayRef, target: &DataType, path: &str) -> Result<ArrayRef, String> {
    let source = array.data_type();
    if source == target {
        return Ok(array.clone());
    }
    if *source == DataType::Null {
        return Ok(new_null_array(target, array.len()));
    }
    let castable = match target {
        DataType::Boolean => false,
        DataType::Int32 => matches!(source, DataType::Int8 | DataType::Int16),
        DataType::Int64 => matches!(source, DataType::Int8 | DataType::Int16 | DataType::Int32),
        DataType::Float64 => matches!(source, DataType::Float32),
        DataType::Utf8 => {
            source.is_integer()
                || source.is_floating()
                || matches!(
                    source,
                    DataType::Boolean | DataType::Utf8View | DataType::LargeUtf8
                )
                || matches!(source, DataType::Dictionary(_, v) if **v == DataType::Utf8)
        }
        DataType::Binary => matches!(
            source,
            DataType::FixedSizeBinary(_) | DataType::LargeBinary | DataType::BinaryView
        ),
        DataType::Decimal128(..) => matches!(
            source,
            DataType::Decimal32(..) | DataType::Decimal64(..) | DataType::Decimal128(..)
        ),
        // Dates, times and timestamps are ints and longs to ksqlDB, with a logical type.
        DataType::Date32 => *source == DataType::Int32,
        DataType::Time32(_) => matches!(source, DataType::Int32 | DataType::Time64(_)),
        DataType::Timestamp(..) => matches!(source, DataType::Int64 | DataType::Timestamp(..)),
        DataType::List(item) => return conform_list(array, item, path),
        DataType::Map(entries, sorted) => return conform_map(array, entries, *sorted, path),
        DataType::Struct(fields) => return conform_struct(array, fields, path),
        _ => false,
    };
    if !castable {
        return Err(mismatch(source, target, path));
    }
    let options = CastOptions {
        safe: true,
        ..CastOptions::default()
    };
    cast_with_options(array, target, &options).map_err(|_| mismatch(source, target, path))
}

fn mismatch(source: &DataType, target: &DataType, path: &str) -> String {
    let path = if path.is_empty() { "the value" } else { path };
    format!(
        "Cannot deserialize type {} as type {} for path: {path}",
        type_name(source),
        type_name(target)
    )
}

/// An Arrow type as the ksqlDB type (or Avro type) a user would recognise.
fn type_name(ty: &DataType) -> String {
    match eddy_sql::types::from_arrow(ty) {
        Ok(sql) => crate::schema::type_display(&sql),
        Err(_) => match ty {
            DataType::Union(..) => "UNION".to_string(),
            DataType::Float32 => "FLOAT".to_string(),
            other => other.to_string(),
        },
    }
}

fn child_path(path: &str, child: &str) -> String {
    if path.is_empty() {
        child.to_string()
    } else {
        format!("{path}->{child}")
    }
}

fn conform_list(array: &ArrayRef, item: &FieldRef, path: &str) -> Result<ArrayRef, String> {
    let Some(list) = array.as_list_opt::<i32>() else {
        return Err(mismatch(
            array.data_type(),
            &DataType::List(item.clone()),
            path,
        ));
    };
    let values = conform(list.values(), item.data_type(), &child_path(path, "ARRAY"))?;
    let list = ListArray::try_new(
        item.clone(),
        list.offsets().clone(),
        values,
        list.nulls().cloned(),
    )
    .map_err(|e| e.to_string())?;
    Ok(Arc::new(list))
}

fn conform_map(
    array: &ArrayRef,
    entries: &FieldRef,
    sorted: bool,
    path: &str,
) -> Result<ArrayRef, String> {
    let target = DataType::Map(entries.clone(), sorted);
    let (Some(map), DataType::Struct(kv)) = (array.as_map_opt(), entries.data_type()) else {
        return Err(mismatch(array.data_type(), &target, path));
    };
    let (Some(key_field), Some(value_field)) = (kv.first(), kv.get(1)) else {
        return Err(mismatch(array.data_type(), &target, path));
    };
    let keys = conform(
        map.keys(),
        key_field.data_type(),
        &child_path(path, "MAP_KEY"),
    )?;
    let values = conform(
        map.values(),
        value_field.data_type(),
        &child_path(path, "MAP_VAL"),
    )?;
    let entries_array =
        StructArray::try_new(kv.clone(), vec![keys, values], None).map_err(|e| e.to_string())?;
    let map = MapArray::try_new(
        entries.clone(),
        map.offsets().clone(),
        entries_array,
        map.nulls().cloned(),
        sorted,
    )
    .map_err(|e| e.to_string())?;
    Ok(Arc::new(map))
}

/// The writer's child for each of `targets`, by ksqlDB's matching, conformed; `None` where no
/// field matches.
pub fn match_fields(
    fields: &Fields,
    children: &[ArrayRef],
    targets: &[FieldRef],
    path: &str,
) -> Result<Vec<Option<ArrayRef>>, String> {
    let mut matched: Vec<Option<ArrayRef>> = vec![None; targets.len()];
    for (field, child) in fields.iter().zip(children) {
        let exact = targets.iter().position(|t| t.name() == field.name());
        let Some(at) = exact.or_else(|| {
            let upper = field.name().to_uppercase();
            targets.iter().position(|t| *t.name() == upper)
        }) else {
            continue;
        };
        let target = &targets[at];
        matched[at] = Some(conform(
            child,
            target.data_type(),
            &child_path(path, target.name()),
        )?);
    }
    Ok(matched)
}

fn conform_struct(array: &ArrayRef, targets: &Fields, path: &str) -> Result<ArrayRef, String> {
    let Some(source) = array.as_struct_opt() else {
        return Err(mismatch(
            array.data_type(),
            &DataType::Struct(targets.clone()),
            path,
        ));
    };
    let targets_list: Vec<FieldRef> = targets.iter().cloned().collect();
    let matched = match_fields(source.fields(), source.columns(), &targets_list, path)?;
    let children: Vec<ArrayRef> = matched
        .into_iter()
        .zip(targets.iter())
        .map(|(m, t)| m.unwrap_or_else(|| new_null_array(t.data_type(), array.len())))
        .collect();
    // Every target field is nullable, so a struct of conformed children always fits.
    let fields: Fields = targets
        .iter()
        .map(|t| Arc::new(Field::new(t.name(), t.data_type().clone(), true)))
        .collect();
    let conformed = StructArray::try_new(fields, children, source.nulls().cloned())
        .map_err(|e| e.to_string())?;
    Ok(Arc::new(conformed))
}
