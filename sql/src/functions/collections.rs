//! ksqlDB's functions over maps and arrays that DataFusion lacks or defines differently:
//! `AS_MAP`, `MAP_UNION`, `ENTRIES`, `GENERATE_SERIES`, `SLICE` and `ARRAY_REMOVE`, and the
//! combinations
//! `CUBE_EXPLODE` explodes into rows.

use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, Int32Array, Int64Array, Int64Builder, ListArray, ListBuilder, MapArray,
    StringArray, StructArray, UInt32Array,
};
use datafusion::arrow::buffer::OffsetBuffer;
use datafusion::arrow::compute::{cast, take};
use datafusion::arrow::datatypes::{DataType, Field, Fields};
use datafusion::logical_expr::TypeSignature;

use super::udf::{INT, Scalar, any1, at, check_built_len, function, refused, string_at, strings};

fn fail(e: impl std::fmt::Display) -> String {
    e.to_string()
}

/// The type of a map with string keys and values of `value`, as Eddy lays maps out.
pub(super) fn map_type(value: &DataType) -> DataType {
    DataType::Map(
        Arc::new(Field::new(
            "entries",
            DataType::Struct(Fields::from(vec![
                Field::new("key", DataType::Utf8, false),
                Field::new("value", value.clone(), true),
            ])),
            false,
        )),
        false,
    )
}

fn map_value_type(ty: &DataType) -> Option<DataType> {
    match ty {
        DataType::Map(entries, _) => match entries.data_type() {
            DataType::Struct(kv) if kv.len() == 2 => Some(kv[1].data_type().clone()),
            _ => None,
        },
        _ => None,
    }
}

fn list_value_type(ty: &DataType) -> Option<DataType> {
    match ty {
        DataType::List(item) => Some(item.data_type().clone()),
        _ => None,
    }
}

/// A row of a map as (key, index into the map's values), in the map's order.
fn map_row(map: &MapArray, row: usize, keys: &StringArray) -> Vec<(String, usize)> {
    let offsets = map.value_offsets();
    let (start, end) = (offsets[row] as usize, offsets[row + 1] as usize);
    (start..end)
        .filter(|&i| keys.is_valid(i))
        .map(|i| (keys.value(i).to_string(), i))
        .collect()
}

fn map_parts(array: &ArrayRef) -> Result<(MapArray, StringArray), String> {
    let map = array
        .as_any()
        .downcast_ref::<MapArray>()
        .cloned()
        .ok_or("expected a map")?;
    let keys = cast(map.keys(), &DataType::Utf8).map_err(fail)?;
    let keys = keys
        .as_any()
        .downcast_ref::<StringArray>()
        .cloned()
        .ok_or("expected string keys")?;
    Ok((map, keys))
}

/// Builds a map column from, per row, its (key, value source, value index) entries.
pub(super) fn build_map(
    rows: Vec<Option<Vec<(String, usize, usize)>>>,
    sources: &[&dyn Array],
    value_type: &DataType,
) -> Result<ArrayRef, String> {
    let mut offsets = vec![0i32];
    let mut keys: Vec<String> = Vec::new();
    let mut picks: Vec<(usize, usize)> = Vec::new();
    let mut valid = Vec::with_capacity(rows.len());
    for row in &rows {
        if let Some(entries) = row {
            for (k, source, index) in entries {
                keys.push(k.clone());
                picks.push((*source, *index));
            }
        }
        valid.push(row.is_some());
        offsets.push(keys.len() as i32);
    }
    let values = if sources.is_empty() || picks.is_empty() {
        datafusion::arrow::array::new_empty_array(value_type)
    } else {
        datafusion::arrow::compute::interleave(sources, &picks).map_err(fail)?
    };
    let values = if values.data_type() == value_type {
        values
    } else {
        cast(&values, value_type).map_err(fail)?
    };
    let DataType::Map(entries_field, _) = map_type(value_type) else {
        return Err("not a map type".into());
    };
    let DataType::Struct(kv) = entries_field.data_type().clone() else {
        return Err("not a map type".into());
    };
    let entries = StructArray::try_new(
        kv,
        vec![Arc::new(StringArray::from(keys)) as ArrayRef, values],
        None,
    )
    .map_err(fail)?;
    let map = MapArray::try_new(
        entries_field,
        OffsetBuffer::new(offsets.into()),
        entries,
        Some(valid.into()),
        false,
    )
    .map_err(fail)?;
    Ok(Arc::new(map))
}

/// `AS_MAP(keys, values)`: a map pairing each key with the value at its position.
pub(super) fn as_map(args: &[ArrayRef], rows: usize) -> Result<ArrayRef, String> {
    let keys = args[0]
        .as_any()
        .downcast_ref::<ListArray>()
        .ok_or("AS_MAP takes an array of keys")?;
    let values = args[1]
        .as_any()
        .downcast_ref::<ListArray>()
        .ok_or("AS_MAP takes an array of values")?;
    let key_strings = cast(keys.values(), &DataType::Utf8).map_err(fail)?;
    let key_strings = key_strings
        .as_any()
        .downcast_ref::<StringArray>()
        .ok_or("keys")?;
    let value_type = list_value_type(values.data_type()).ok_or("values")?;
    let at = |a: &ListArray, i: usize| if a.len() == 1 { 0 } else { i };
    let mut out = Vec::with_capacity(rows);
    for i in 0..rows {
        let (ki, vi) = (at(keys, i), at(values, i));
        if keys.is_null(ki) || values.is_null(vi) {
            out.push(None);
            continue;
        }
        let (ks, ke) = (
            keys.value_offsets()[ki] as usize,
            keys.value_offsets()[ki + 1] as usize,
        );
        let (vs, ve) = (
            values.value_offsets()[vi] as usize,
            values.value_offsets()[vi + 1] as usize,
        );
        let n = (ke - ks).min(ve - vs);
        let mut entries = Vec::with_capacity(n);
        for j in 0..n {
            if key_strings.is_valid(ks + j) {
                entries.push((key_strings.value(ks + j).to_string(), 0, vs + j));
            }
        }
        out.push(Some(entries));
    }
    build_map(out, &[values.values().as_ref()], &value_type)
}

/// `SPLIT_TO_MAP(text, entry_delimiter, kv_delimiter)`: the entries between entry delimiters
/// (empty ones skipped), each split at the key-value delimiter into a key and the piece after
/// it; entries without one are left out, a later key wins. Null for an empty delimiter, as in
/// ksqlDB.
pub(super) fn split_to_map(args: &[ArrayRef], rows: usize) -> Result<ArrayRef, String> {
    let text = |a: &ArrayRef| -> Result<StringArray, String> {
        let cast = cast(a, &DataType::Utf8).map_err(fail)?;
        cast.as_any()
            .downcast_ref::<StringArray>()
            .cloned()
            .ok_or_else(|| "expected a string".to_string())
    };
    let (input, entry_delimiters, kv_delimiters) =
        (text(&args[0])?, text(&args[1])?, text(&args[2])?);
    let get = |a: &StringArray, i: usize| {
        let i = if a.len() == 1 { 0 } else { i };
        a.is_valid(i).then(|| a.value(i).to_string())
    };
    let mut values: Vec<String> = Vec::new();
    let mut out = Vec::with_capacity(rows);
    for i in 0..rows {
        let (Some(t), Some(entry_d), Some(kv_d)) = (
            get(&input, i),
            get(&entry_delimiters, i),
            get(&kv_delimiters, i),
        ) else {
            out.push(None);
            continue;
        };
        if entry_d.is_empty() || kv_d.is_empty() {
            out.push(None);
            continue;
        }
        let mut entries: Vec<(String, usize, usize)> = Vec::new();
        for entry in t.split(entry_d.as_str()).filter(|e| !e.is_empty()) {
            if !entry.contains(kv_d.as_str()) {
                continue;
            }
            let mut parts = entry.split(kv_d.as_str());
            let key = parts.next().unwrap_or_default().to_string();
            values.push(parts.next().unwrap_or_default().to_string());
            let at = values.len() - 1;
            match entries.iter_mut().find(|(k, _, _)| *k == key) {
                Some(existing) => existing.2 = at,
                None => entries.push((key, 0, at)),
            }
        }
        out.push(Some(entries));
    }
    let values = StringArray::from(values);
    build_map(out, &[&values], &DataType::Utf8)
}

/// `MAP_UNION(a, b)`: every entry of both; on a shared key, `b`'s value.
pub(super) fn map_union(args: &[ArrayRef], rows: usize) -> Result<ArrayRef, String> {
    let value_type = map_value_type(args[0].data_type())
        .or_else(|| map_value_type(args[1].data_type()))
        .ok_or("MAP_UNION takes two maps")?;
    let (a, a_keys) = map_parts(&args[0])?;
    let (b, b_keys) = map_parts(&args[1])?;
    let at = |m: &MapArray, i: usize| if m.len() == 1 { 0 } else { i };
    let mut out = Vec::with_capacity(rows);
    for i in 0..rows {
        let (ai, bi) = (at(&a, i), at(&b, i));
        if a.is_null(ai) && b.is_null(bi) {
            out.push(None);
            continue;
        }
        let mut entries: Vec<(String, usize, usize)> = Vec::new();
        if a.is_valid(ai) {
            entries.extend(map_row(&a, ai, &a_keys).into_iter().map(|(k, j)| (k, 0, j)));
        }
        if b.is_valid(bi) {
            for (k, j) in map_row(&b, bi, &b_keys) {
                match entries.iter_mut().find(|(e, _, _)| *e == k) {
                    Some(entry) => *entry = (k, 1, j),
                    None => entries.push((k, 1, j)),
                }
            }
        }
        out.push(Some(entries));
    }
    let a_values = cast(a.values(), &value_type).map_err(fail)?;
    let b_values = cast(b.values(), &value_type).map_err(fail)?;
    build_map(out, &[a_values.as_ref(), b_values.as_ref()], &value_type)
}

/// The type `ENTRIES` returns for a map of `value`: `ARRAY<STRUCT<K STRING, V value>>`.
pub(super) fn entries_type(map: &DataType) -> Result<DataType, String> {
    let value = map_value_type(map).ok_or("ENTRIES takes a map")?;
    Ok(DataType::List(Arc::new(Field::new(
        "item",
        DataType::Struct(Fields::from(vec![
            Field::new("K", DataType::Utf8, true),
            Field::new("V", value, true),
        ])),
        true,
    ))))
}

/// `ENTRIES(map, sorted)`: the map's entries as structs, ordered by key when `sorted`.
pub(super) fn entries(args: &[ArrayRef], rows: usize) -> Result<ArrayRef, String> {
    let out_type = entries_type(args[0].data_type())?;
    let (map, keys) = map_parts(&args[0])?;
    let sorted = cast(&args[1], &DataType::Boolean).map_err(fail)?;
    let sorted = sorted
        .as_any()
        .downcast_ref::<datafusion::arrow::array::BooleanArray>()
        .cloned()
        .ok_or("ENTRIES takes a boolean")?;
    let at = |n: usize, i: usize| if n == 1 { 0 } else { i };
    let mut offsets = vec![0i32];
    let mut key_values: Vec<String> = Vec::new();
    let mut indices: Vec<u32> = Vec::new();
    let mut valid = Vec::with_capacity(rows);
    for i in 0..rows {
        let mi = at(map.len(), i);
        if map.is_null(mi) {
            valid.push(false);
            offsets.push(key_values.len() as i32);
            continue;
        }
        let mut row = map_row(&map, mi, &keys);
        let si = at(sorted.len(), i);
        if sorted.is_valid(si) && sorted.value(si) {
            row.sort_by(|x, y| x.0.cmp(&y.0));
        }
        for (k, j) in row {
            key_values.push(k);
            indices.push(j as u32);
        }
        valid.push(true);
        offsets.push(key_values.len() as i32);
    }
    let values = take(map.values().as_ref(), &UInt32Array::from(indices), None).map_err(fail)?;
    let DataType::List(item) = out_type else {
        return Err("not a list".into());
    };
    let DataType::Struct(fields) = item.data_type().clone() else {
        return Err("not a struct".into());
    };
    let structs = StructArray::try_new(
        fields,
        vec![Arc::new(StringArray::from(key_values)) as ArrayRef, values],
        None,
    )
    .map_err(fail)?;
    Ok(Arc::new(
        ListArray::try_new(
            item,
            OffsetBuffer::new(offsets.into()),
            Arc::new(structs),
            Some(valid.into()),
        )
        .map_err(fail)?,
    ))
}

/// The type `GENERATE_SERIES` returns: an array of the wider of its argument types.
pub(super) fn series_type(args: &[DataType]) -> Result<DataType, String> {
    let element = if args
        .iter()
        .all(|t| matches!(t, DataType::Int8 | DataType::Int16 | DataType::Int32))
    {
        DataType::Int32
    } else {
        DataType::Int64
    };
    Ok(DataType::List(Arc::new(Field::new("item", element, true))))
}

/// `GENERATE_SERIES(start, end[, step])`: from `start` to `end` inclusive, counting down when
/// `end` is below `start` and no step is given.
pub(super) fn generate_series(args: &[ArrayRef], rows: usize) -> Result<ArrayRef, String> {
    let ints = |a: &ArrayRef| -> Result<Int64Array, String> {
        let c = cast(a, &DataType::Int64).map_err(fail)?;
        c.as_any()
            .downcast_ref::<Int64Array>()
            .cloned()
            .ok_or_else(|| "expected integers".to_string())
    };
    let starts = ints(&args[0])?;
    let ends = ints(&args[1])?;
    let steps = args.get(2).map(ints).transpose()?;
    let at = |a: &Int64Array, i: usize| {
        let j = if a.len() == 1 { 0 } else { i };
        (!a.is_null(j)).then(|| a.value(j))
    };
    let mut builder = ListBuilder::new(Int64Builder::new());
    for i in 0..rows {
        let (Some(start), Some(end)) = (at(&starts, i), at(&ends, i)) else {
            builder.append(false);
            continue;
        };
        let step = match &steps {
            Some(s) => match at(s, i) {
                Some(0) => return Err("GENERATE_SERIES step cannot be zero".into()),
                Some(s) => s,
                None => {
                    builder.append(false);
                    continue;
                }
            },
            None if end < start => -1,
            None => 1,
        };
        if (step > 0 && start > end) || (step < 0 && start < end) {
            return Err(format!(
                "GENERATE_SERIES step has the wrong sign: from {start} to {end} by {step}"
            ));
        }
        let count = (i128::from(end) - i128::from(start)) / i128::from(step) + 1;
        check_built_len("GENERATE_SERIES", count as u128, "elements")?;
        let values = builder.values();
        for n in 0..count {
            // Between start and end by the count above, so it fits.
            values.append_value((i128::from(start) + n * i128::from(step)) as i64);
        }
        builder.append(true);
    }
    let list: ArrayRef = Arc::new(builder.finish());
    let wanted = series_type(
        &args
            .iter()
            .map(|a| a.data_type().clone())
            .collect::<Vec<_>>(),
    )?;
    if list.data_type() == &wanted {
        Ok(list)
    } else {
        cast(&list, &wanted).map_err(fail)
    }
}

/// `ARRAY_LENGTH(array)`: the element count as an INT.
fn array_length(args: &[ArrayRef], rows: usize) -> Result<ArrayRef, String> {
    let array = &args[0];
    let lengths: Int32Array = (0..rows)
        .map(|i| {
            let i = at(i, array.len());
            if array.is_null(i) {
                return None;
            }
            match array.data_type() {
                DataType::List(_) => array
                    .as_any()
                    .downcast_ref::<datafusion::arrow::array::ListArray>()
                    .map(|l| l.value_length(i)),
                _ => None,
            }
        })
        .collect();
    Ok(Arc::new(lengths))
}

/// `ARRAY_SORT(array[, 'ASC'|'DESC'])`: each array's elements sorted, nulls last either way, as
/// ksqlDB sorts them; null for a direction it does not know.
fn array_sort(args: &[ArrayRef], rows: usize) -> Result<ArrayRef, String> {
    use datafusion::arrow::array::{ListArray, new_null_array};
    use datafusion::arrow::buffer::{NullBuffer, OffsetBuffer};
    use datafusion::arrow::compute::{SortOptions, sort};
    let list_type = args[0].data_type().clone();
    let DataType::List(field) = &list_type else {
        return Err(format!("ARRAY_SORT takes an array, not {list_type}"));
    };
    let lists = args[0]
        .as_any()
        .downcast_ref::<ListArray>()
        .ok_or("expected an array")?;
    let directions = match args.get(1) {
        Some(d) => Some(strings(d)?),
        None => None,
    };
    let mut pieces: Vec<ArrayRef> = Vec::with_capacity(rows);
    let mut lengths: Vec<usize> = Vec::with_capacity(rows);
    let mut valid: Vec<bool> = Vec::with_capacity(rows);
    for i in 0..rows {
        let j = at(i, lists.len());
        let descending = match &directions {
            None => Some(false),
            Some(d) => match string_at(d, i).map(str::to_ascii_uppercase).as_deref() {
                Some("ASC") => Some(false),
                Some("DESC") => Some(true),
                _ => None,
            },
        };
        match (lists.is_null(j), descending) {
            (false, Some(descending)) => {
                let sorted = sort(
                    &lists.value(j),
                    Some(SortOptions {
                        descending,
                        nulls_first: false,
                    }),
                )
                .map_err(|e| e.to_string())?;
                lengths.push(sorted.len());
                pieces.push(sorted);
                valid.push(true);
            }
            _ => {
                lengths.push(0);
                valid.push(false);
            }
        }
    }
    let values = if pieces.is_empty() {
        new_null_array(field.data_type(), 0)
    } else {
        let refs: Vec<&dyn Array> = pieces.iter().map(|a| a.as_ref()).collect();
        datafusion::arrow::compute::concat(&refs).map_err(|e| e.to_string())?
    };
    let sorted = ListArray::try_new(
        field.clone(),
        OffsetBuffer::from_lengths(lengths),
        values,
        Some(NullBuffer::from(valid)),
    )
    .map_err(|e| e.to_string())?;
    Ok(Arc::new(sorted))
}

/// `SLICE(array, from, to)`: the elements from `from` to `to`, both 1-based and included (a
/// null bound is the array's start or end); null for bounds outside the array or crossed, as
/// Java's `subList` refuses them.
fn slice(args: &[ArrayRef], rows: usize) -> Result<ArrayRef, String> {
    let DataType::List(field) = args[0].data_type() else {
        return Err(format!("SLICE takes an array, not {}", args[0].data_type()));
    };
    let lists = args[0]
        .as_any()
        .downcast_ref::<ListArray>()
        .ok_or_else(|| "SLICE takes an array".to_string())?;
    let bounds = |a: &ArrayRef| -> Result<Int64Array, String> {
        let cast = cast(a, &DataType::Int64).map_err(fail)?;
        cast.as_any()
            .downcast_ref::<Int64Array>()
            .cloned()
            .ok_or_else(|| "SLICE takes whole-number bounds".to_string())
    };
    let (from, to) = (bounds(&args[1])?, bounds(&args[2])?);
    let mut picked: Vec<u32> = Vec::new();
    let mut offsets = vec![0i32];
    let mut valid = Vec::with_capacity(rows);
    for i in 0..rows {
        let row = at(i, lists.len());
        let bound = |b: &Int64Array| {
            let j = at(i, b.len());
            (!b.is_null(j)).then(|| b.value(j))
        };
        let len = i64::from(lists.value_length(row));
        let start = bound(&from).map_or(0, |f| f.saturating_sub(1));
        let end = bound(&to).unwrap_or(len);
        let inside = !lists.is_null(row) && 0 <= start && start <= end && end <= len;
        if inside {
            let base = i64::from(lists.value_offsets()[row]);
            for k in (base + start)..(base + end) {
                picked.push(u32::try_from(k).map_err(fail)?);
            }
        }
        offsets.push(i32::try_from(picked.len()).map_err(fail)?);
        valid.push(inside);
    }
    let values = take(lists.values().as_ref(), &UInt32Array::from(picked), None).map_err(fail)?;
    let list = ListArray::try_new(
        field.clone(),
        OffsetBuffer::new(offsets.into()),
        values,
        Some(valid.into()),
    )
    .map_err(fail)?;
    Ok(Arc::new(list))
}

/// `ARRAY_REMOVE(array, value)`: the array without every element equal to the value (arrays,
/// maps and structs compared as a whole); a null value removes the nulls.
fn array_remove(args: &[ArrayRef], rows: usize) -> Result<ArrayRef, String> {
    use datafusion::common::ScalarValue;
    let DataType::List(field) = args[0].data_type() else {
        return Err(format!(
            "ARRAY_REMOVE takes an array, not {}",
            args[0].data_type()
        ));
    };
    let lists = args[0]
        .as_any()
        .downcast_ref::<ListArray>()
        .ok_or_else(|| "ARRAY_REMOVE takes an array".to_string())?;
    let victims = if args[1].data_type() == field.data_type() {
        args[1].clone()
    } else {
        cast(&args[1], field.data_type()).map_err(fail)?
    };
    let values = lists.values();
    let mut picked: Vec<u32> = Vec::new();
    let mut offsets = vec![0i32];
    let mut valid = Vec::with_capacity(rows);
    for i in 0..rows {
        let row = at(i, lists.len());
        let present = !lists.is_null(row);
        if present {
            let victim =
                ScalarValue::try_from_array(&victims, at(i, victims.len())).map_err(fail)?;
            let offsets_of = lists.value_offsets();
            for k in offsets_of[row] as usize..offsets_of[row + 1] as usize {
                let removed = if victim.is_null() {
                    values.is_null(k)
                } else {
                    !values.is_null(k)
                        && ScalarValue::try_from_array(values, k).map_err(fail)? == victim
                };
                if !removed {
                    picked.push(u32::try_from(k).map_err(fail)?);
                }
            }
        }
        offsets.push(i32::try_from(picked.len()).map_err(fail)?);
        valid.push(present);
    }
    let kept = take(values.as_ref(), &UInt32Array::from(picked), None).map_err(fail)?;
    let list = ListArray::try_new(
        field.clone(),
        OffsetBuffer::new(offsets.into()),
        kept,
        Some(valid.into()),
    )
    .map_err(fail)?;
    Ok(Arc::new(list))
}

/// The most elements `CUBE_EXPLODE` takes: it makes 2^n rows, so 20 already make a million.
const CUBE_MAX_ELEMENTS: usize = 20;

/// `CUBE_EXPLODE(array)` as a scalar: the list of every combination of the array's elements
/// with some of them null, in ksqlDB's order (from all null to none null; a null element has
/// only one combination); the query then explodes it into one row per combination. A null
/// array makes no rows.
fn cube_explode(args: &[ArrayRef], rows: usize) -> Result<ArrayRef, String> {
    let DataType::List(item) = args[0].data_type() else {
        return Err(format!(
            "CUBE_EXPLODE takes an array, not {}",
            args[0].data_type()
        ));
    };
    let lists = args[0]
        .as_any()
        .downcast_ref::<ListArray>()
        .ok_or_else(|| "CUBE_EXPLODE takes an array".to_string())?;
    let values = lists.values();
    let mut picks: Vec<Option<u32>> = Vec::new();
    let mut inner_offsets = vec![0i32];
    let mut outer_offsets = vec![0i32];
    for i in 0..rows {
        let row = at(i, lists.len());
        if !lists.is_null(row) {
            let n = lists.value_length(row) as usize;
            if n > CUBE_MAX_ELEMENTS {
                return Err(format!(
                    "CUBE_EXPLODE input size ({n}) exceeds the maximum of {CUBE_MAX_ELEMENTS} columns. The output cardinality is 2^N rows and would exhaust server memory."
                ));
            }
            let start = lists.value_offsets()[row] as usize;
            // A set bit for each element that is not null, the first element highest.
            let present = (0..n)
                .filter(|&k| !values.is_null(start + k))
                .fold(0u32, |mask, k| mask | 1 << (n - 1 - k));
            for combination in 0..(1u32 << n) {
                if combination & present != combination {
                    continue;
                }
                for p in 0..n {
                    let kept = combination & (1 << (n - 1 - p)) != 0;
                    picks.push(kept.then(|| (start + p) as u32));
                }
                inner_offsets.push(i32::try_from(picks.len()).map_err(fail)?);
            }
        }
        outer_offsets.push(i32::try_from(inner_offsets.len() - 1).map_err(fail)?);
    }
    let taken = take(values.as_ref(), &UInt32Array::from(picks), None).map_err(fail)?;
    let inner = ListArray::try_new(
        item.clone(),
        OffsetBuffer::new(inner_offsets.into()),
        taken,
        None,
    )
    .map_err(fail)?;
    let outer = ListArray::try_new(
        Arc::new(Field::new_list_field(inner.data_type().clone(), true)),
        OffsetBuffer::new(outer_offsets.into()),
        Arc::new(inner),
        None,
    )
    .map_err(fail)?;
    Ok(Arc::new(outer))
}

/// `KSQL_LIST_SUM(array)`, which `SUM_LIST` aggregates: the sum of an array's non-null
/// elements in their own type (an INT sum wraps around, as Java's does), 0 for an empty one,
/// null for a null array.
fn list_sum(args: &[ArrayRef], rows: usize) -> Result<ArrayRef, String> {
    use datafusion::arrow::datatypes::{Float64Type, Int32Type, Int64Type};
    let lists = args[0]
        .as_any()
        .downcast_ref::<ListArray>()
        .ok_or_else(|| format!("SUM_LIST takes an array, not {}", args[0].data_type()))?;
    match lists.values().data_type() {
        DataType::Int32 => Ok(sum_each_list::<Int32Type>(lists, rows)),
        DataType::Int64 => Ok(sum_each_list::<Int64Type>(lists, rows)),
        DataType::Float64 => Ok(sum_each_list::<Float64Type>(lists, rows)),
        other => Err(format!(
            "Function 'sum_list' does not accept parameters (ARRAY<{other}>)."
        )),
    }
}

/// Each list's non-null elements summed (wrapping for integers), read from the lists' one
/// values array by their offsets.
fn sum_each_list<T: datafusion::arrow::datatypes::ArrowPrimitiveType>(
    lists: &ListArray,
    rows: usize,
) -> ArrayRef {
    use datafusion::arrow::array::{ArrowNativeTypeOp, AsArray, PrimitiveArray};
    let values = lists.values().as_primitive::<T>();
    let offsets = lists.value_offsets();
    let sums: PrimitiveArray<T> = (0..rows)
        .map(|i| {
            let i = at(i, lists.len());
            if lists.is_null(i) {
                return None;
            }
            let (start, end) = (offsets[i] as usize, offsets[i + 1] as usize);
            Some(
                (start..end)
                    .filter(|&j| values.is_valid(j))
                    .fold(T::Native::ZERO, |sum, j| sum.add_wrapping(values.value(j))),
            )
        })
        .collect();
    Arc::new(sums)
}

/// The functions of this file, as the catalogue registers them.
pub(super) fn functions() -> Vec<Scalar> {
    vec![
        function(
            "KSQL_LIST_SUM",
            TypeSignature::Any(1),
            |args| match args.first() {
                Some(DataType::List(item))
                    if matches!(
                        item.data_type(),
                        DataType::Int32 | DataType::Int64 | DataType::Float64
                    ) =>
                {
                    Ok(item.data_type().clone())
                }
                Some(t) => Err(format!(
                    "Function 'sum_list' does not accept parameters ({t})."
                )),
                None => Err("Function 'sum_list' does not accept parameters ().".into()),
            },
            list_sum,
        ),
        function("ARRAY_LENGTH", any1(), INT, array_length),
        function(
            "ARRAY_SORT",
            TypeSignature::OneOf(vec![TypeSignature::Any(1), TypeSignature::Any(2)]),
            |args| match args.first() {
                Some(t @ DataType::List(_)) => Ok(t.clone()),
                Some(t) => Err(format!(
                    "Function 'array_sort' does not accept parameters ({t})."
                )),
                None => Err("Function 'array_sort' does not accept parameters ().".into()),
            },
            array_sort,
        ),
        function(
            "AS_MAP",
            TypeSignature::Any(2),
            |args| match args.get(1) {
                Some(DataType::List(item)) => Ok(map_type(item.data_type())),
                _ => Err("AS_MAP takes an array of keys and an array of values".into()),
            },
            as_map,
        ),
        function(
            "SPLIT_TO_MAP",
            TypeSignature::Any(3),
            |_| Ok(map_type(&DataType::Utf8)),
            split_to_map,
        ),
        function(
            "MAP_UNION",
            TypeSignature::Any(2),
            |args| {
                args.iter()
                    .find(|t| matches!(t, DataType::Map(..)))
                    .cloned()
                    .ok_or_else(|| "MAP_UNION takes two maps".to_string())
            },
            map_union,
        ),
        function(
            "ENTRIES",
            TypeSignature::Any(2),
            |args| entries_type(&args[0]),
            entries,
        ),
        function(
            "GENERATE_SERIES",
            TypeSignature::OneOf(vec![TypeSignature::Any(2), TypeSignature::Any(3)]),
            series_type,
            generate_series,
        ),
        function(
            "SLICE",
            TypeSignature::Any(3),
            |args| match args {
                [list @ DataType::List(_), from, to]
                    if [from, to]
                        .iter()
                        .all(|t| t.is_integer() || **t == DataType::Null) =>
                {
                    Ok(list.clone())
                }
                _ => Err(refused("SLICE", args)),
            },
            slice,
        ),
        function(
            "ARRAY_REMOVE",
            TypeSignature::Any(2),
            |args| match args {
                [list @ DataType::List(_), _] => Ok(list.clone()),
                _ => Err(refused("ARRAY_REMOVE", args)),
            },
            array_remove,
        ),
        function(
            "CUBE_EXPLODE",
            TypeSignature::Any(1),
            |args| match args {
                [list @ DataType::List(_)] => Ok(DataType::List(Arc::new(Field::new_list_field(
                    list.clone(),
                    true,
                )))),
                _ => Err(format!(
                    "{}\nValid alternatives are:\ncube_explode(ARRAY<T>)",
                    refused("cube_explode", args)
                )),
            },
            cube_explode,
        ),
    ]
}
