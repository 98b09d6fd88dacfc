//! ksqlDB's functions over maps and arrays that DataFusion lacks or defines differently:
//! `AS_MAP`, `MAP_UNION`, `ENTRIES` and `GENERATE_SERIES`.

use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, Int64Array, Int64Builder, ListArray, ListBuilder, MapArray, StringArray,
    StructArray, UInt32Array,
};
use datafusion::arrow::buffer::OffsetBuffer;
use datafusion::arrow::compute::{cast, take};
use datafusion::arrow::datatypes::{DataType, Field, Fields};

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
fn build_map(
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
        let mut v = start;
        while (step > 0 && v <= end) || (step < 0 && v >= end) {
            builder.values().append_value(v);
            v += step;
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

#[cfg(test)]
mod tests {

    #[test]
    fn text_splits_into_a_map_as_ksqldb_splits_it() {
        let text = |v: &[Option<&str>]| Arc::new(StringArray::from(v.to_vec())) as ArrayRef;
        let input = text(&[
            Some("apple:green//banana:yellow/cherry:red/apple:red"),
            Some("a=b/c:d"),
            Some("a:b"),
        ]);
        let out = split_to_map(
            &[
                input,
                text(&[Some("/")]),
                text(&[Some(":"), Some(":"), Some("")]),
            ],
            3,
        )
        .unwrap();
        let out = out.as_any().downcast_ref::<MapArray>().unwrap();
        let entries = |i: usize| {
            let row = out.value(i);
            let keys = row
                .column(0)
                .as_any()
                .downcast_ref::<StringArray>()
                .unwrap()
                .clone();
            let values = row
                .column(1)
                .as_any()
                .downcast_ref::<StringArray>()
                .unwrap()
                .clone();
            keys.iter()
                .zip(values.iter())
                .map(|(k, v)| (k.unwrap().to_string(), v.unwrap().to_string()))
                .collect::<Vec<_>>()
        };
        let pairs = |p: &[(&str, &str)]| {
            p.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<Vec<_>>()
        };
        // Empty entries are skipped and a later key wins.
        assert_eq!(
            entries(0),
            pairs(&[("apple", "red"), ("banana", "yellow"), ("cherry", "red")])
        );
        // An entry without the key-value delimiter is left out.
        assert_eq!(entries(1), pairs(&[("c", "d")]));
        // An empty delimiter gives null.
        assert!(out.is_null(2));
    }

    use datafusion::arrow::array::{Int32Array, Int64Array, ListArray};

    use super::*;

    #[test]
    fn series_count_down_when_the_end_is_lower() {
        let args: Vec<ArrayRef> = vec![
            Arc::new(Int32Array::from(vec![0, 4])),
            Arc::new(Int32Array::from(vec![3, 2])),
        ];
        let out = generate_series(&args, 2).unwrap();
        let lists = out.as_any().downcast_ref::<ListArray>().unwrap();
        let row = |i: usize| {
            let v = cast(&lists.value(i), &DataType::Int64).unwrap();
            v.as_any()
                .downcast_ref::<Int64Array>()
                .unwrap()
                .values()
                .to_vec()
        };
        assert_eq!(row(0), [0, 1, 2, 3]);
        assert_eq!(row(1), [4, 3, 2]);
        assert_eq!(
            out.data_type(),
            &series_type(&[DataType::Int32, DataType::Int32]).unwrap()
        );
    }

    #[test]
    fn maps_union_with_the_second_winning() {
        let a = as_map(
            &[
                Arc::new(ListArray::new(
                    Arc::new(Field::new("item", DataType::Utf8, true)),
                    OffsetBuffer::new(vec![0, 2].into()),
                    Arc::new(StringArray::from(vec!["x", "y"])),
                    None,
                )),
                Arc::new(ListArray::from_iter_primitive::<
                    datafusion::arrow::datatypes::Int64Type,
                    _,
                    _,
                >(vec![Some(vec![Some(1), Some(2)])])),
            ],
            1,
        )
        .unwrap();
        let b = as_map(
            &[
                Arc::new(ListArray::new(
                    Arc::new(Field::new("item", DataType::Utf8, true)),
                    OffsetBuffer::new(vec![0, 1].into()),
                    Arc::new(StringArray::from(vec!["y"])),
                    None,
                )),
                Arc::new(ListArray::from_iter_primitive::<
                    datafusion::arrow::datatypes::Int64Type,
                    _,
                    _,
                >(vec![Some(vec![Some(9)])])),
            ],
            1,
        )
        .unwrap();
        let union = map_union(&[a, b], 1).unwrap();
        let (map, keys) = map_parts(&union).unwrap();
        let row: Vec<(String, i64)> = map_row(&map, 0, &keys)
            .into_iter()
            .map(|(k, i)| {
                let v = map
                    .values()
                    .as_any()
                    .downcast_ref::<Int64Array>()
                    .unwrap()
                    .value(i);
                (k, v)
            })
            .collect();
        assert_eq!(row, [("x".to_string(), 1), ("y".to_string(), 9)]);
    }
}
