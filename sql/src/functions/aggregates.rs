//! ksqlDB aggregate functions DataFusion has no equivalent for: `ATTR`, `TOPK`, `TOPKDISTINCT`,
//! `HISTOGRAM`, and `LATEST_BY_OFFSET` / `EARLIEST_BY_OFFSET` with their `n` and `ignoreNulls`
//! arguments. Each keeps the values of its group (so it can also retract one, as a table
//! aggregation needs) and computes its result from them.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, ListArray};
use datafusion::arrow::datatypes::{DataType, Field};
use datafusion::common::{DataFusionError, Result as DfResult, ScalarValue};
use datafusion::logical_expr::function::AccumulatorArgs;
use datafusion::logical_expr::{
    Accumulator, AggregateUDF, AggregateUDFImpl, Signature, TypeSignature, Volatility,
};

/// Which function a [`ValuesAggregate`] computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Kind {
    Attr,
    TopK,
    TopKDistinct,
    Histogram,
    /// `LATEST_BY_OFFSET(x [, n] [, ignoreNulls])`.
    Latest,
    /// `EARLIEST_BY_OFFSET(x [, n] [, ignoreNulls])`.
    Earliest,
    /// `COLLECT_LIST` that can take a value back out (for a table source).
    CollectList,
    /// `COLLECT_SET` that can take a value back out (for a table source).
    CollectSet,
}

/// An aggregate computed from all the values of its group.
#[derive(Debug, PartialEq, Eq, Hash)]
struct ValuesAggregate {
    name: &'static str,
    kind: Kind,
    signature: Signature,
}

impl AggregateUDFImpl for ValuesAggregate {
    fn name(&self) -> &str {
        self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, args: &[DataType]) -> DfResult<DataType> {
        let value = args.first().cloned().unwrap_or(DataType::Null);
        Ok(match self.kind {
            Kind::Attr => value,
            // TOPK(sort, other..., k): each element a struct of the sort column and the others.
            Kind::TopK if args.len() > 2 => DataType::List(Arc::new(Field::new(
                "item",
                DataType::Struct(topk_fields(args).into()),
                true,
            ))),
            Kind::TopK | Kind::TopKDistinct | Kind::CollectList | Kind::CollectSet => {
                DataType::List(Arc::new(Field::new("item", value, true)))
            }
            Kind::Histogram => super::collections::map_type(&DataType::Int64),
            // With a count, the latest (or earliest) n values as an array; else one value.
            Kind::Latest | Kind::Earliest if args.get(1).is_some_and(DataType::is_integer) => {
                DataType::List(Arc::new(Field::new("item", value, true)))
            }
            Kind::Latest | Kind::Earliest => value,
        })
    }

    fn accumulator(&self, args: AccumulatorArgs) -> DfResult<Box<dyn Accumulator>> {
        let types: Vec<DataType> = args
            .expr_fields
            .iter()
            .map(|f| f.data_type().clone())
            .collect();
        let value_type = if self.kind == Kind::TopK && types.len() > 2 {
            DataType::Struct(topk_fields(&types).into())
        } else {
            types.first().cloned().unwrap_or(DataType::Null)
        };
        Ok(Box::new(ValuesAccumulator {
            kind: self.kind,
            value_type,
            return_type: args.return_field.data_type().clone(),
            values: Vec::new(),
            k: None,
            ignore_nulls: true,
        }))
    }
}

#[derive(Debug)]
struct ValuesAccumulator {
    kind: Kind,
    value_type: DataType,
    return_type: DataType,
    values: Vec<ScalarValue>,
    /// TOPK's `k`, or LATEST_BY_OFFSET's `n`, read from its second argument.
    k: Option<usize>,
    /// LATEST_BY_OFFSET's `ignoreNulls` (its last argument when boolean; true by default).
    ignore_nulls: bool,
}

impl ValuesAccumulator {
    /// Whether a value counts: nulls do for `ATTR` (a null differs from any value), not for
    /// the others.
    fn keeps(&self, valid: bool) -> bool {
        valid
            || self.kind == Kind::Attr
            || (matches!(self.kind, Kind::Latest | Kind::Earliest) && !self.ignore_nulls)
    }

    /// LATEST/EARLIEST_BY_OFFSET keep only as many values as they return.
    fn bound(&mut self) {
        let keep = self.k.unwrap_or(1);
        match self.kind {
            Kind::Latest if self.values.len() > keep => {
                self.values.drain(..self.values.len() - keep);
            }
            Kind::Earliest => self.values.truncate(keep),
            _ => {}
        }
    }

    fn read_k(&mut self, values: &[ArrayRef]) -> DfResult<()> {
        if self.kind == Kind::TopK && values.len() > 2 {
            if self.k.is_none()
                && let Some(k) = values.last()
                && !k.is_empty()
                && let ScalarValue::Int32(Some(n)) =
                    ScalarValue::try_from_array(k, 0)?.cast_to(&DataType::Int32)?
            {
                self.k = Some(n.max(0) as usize);
            }
            return Ok(());
        }
        if matches!(self.kind, Kind::Latest | Kind::Earliest) {
            for arg in values.iter().skip(1) {
                if arg.is_empty() {
                    continue;
                }
                match ScalarValue::try_from_array(arg, 0)? {
                    ScalarValue::Boolean(Some(b)) => self.ignore_nulls = b,
                    n if n.data_type().is_integer() => {
                        if let ScalarValue::Int64(Some(n)) = n.cast_to(&DataType::Int64)? {
                            self.k = Some(n.max(0) as usize);
                        }
                    }
                    _ => {}
                }
            }
            return Ok(());
        }
        if self.k.is_none()
            && let Some(k) = values.get(1)
            && !k.is_empty()
        {
            let k = ScalarValue::try_from_array(k, 0)?;
            if let ScalarValue::Int32(Some(n)) = k.cast_to(&DataType::Int32)? {
                self.k = Some(n.max(0) as usize);
            }
        }
        Ok(())
    }
}

impl Accumulator for ValuesAccumulator {
    fn update_batch(&mut self, values: &[ArrayRef]) -> DfResult<()> {
        self.read_k(values)?;
        if self.kind == Kind::TopK && values.len() > 2 {
            // Rows whose sort value is null do not rank.
            let DataType::Struct(fields) = &self.value_type else {
                return Ok(());
            };
            let columns = &values[..values.len() - 1];
            for i in 0..columns[0].len() {
                if columns[0].is_valid(i) {
                    let row = datafusion::arrow::array::StructArray::try_new(
                        fields.clone(),
                        columns.iter().map(|c| c.slice(i, 1)).collect(),
                        None,
                    )?;
                    self.values.push(ScalarValue::Struct(Arc::new(row)));
                }
            }
            return Ok(());
        }
        let column = &values[0];
        for i in 0..column.len() {
            if self.keeps(column.is_valid(i)) {
                self.values.push(ScalarValue::try_from_array(column, i)?);
            }
        }
        self.bound();
        Ok(())
    }

    fn retract_batch(&mut self, values: &[ArrayRef]) -> DfResult<()> {
        let column = &values[0];
        for i in 0..column.len() {
            if self.keeps(column.is_valid(i)) {
                let value = ScalarValue::try_from_array(column, i)?;
                if let Some(at) = self.values.iter().position(|v| *v == value) {
                    self.values.remove(at);
                }
            }
        }
        Ok(())
    }

    fn supports_retract_batch(&self) -> bool {
        true
    }

    fn evaluate(&mut self) -> DfResult<ScalarValue> {
        match self.kind {
            Kind::Attr => {
                let first = self.values.first();
                Ok(match first {
                    Some(v) if self.values.iter().all(|x| x == v) => v.clone(),
                    _ => ScalarValue::try_from(&self.return_type)?,
                })
            }
            Kind::TopK | Kind::TopKDistinct => {
                let mut sorted = self.values.clone();
                // Structs rank by their sort column, the first field.
                let rank = |v: &ScalarValue| match v {
                    ScalarValue::Struct(row) if row.num_columns() > 0 => {
                        ScalarValue::try_from_array(row.column(0), 0).unwrap_or(ScalarValue::Null)
                    }
                    other => other.clone(),
                };
                sorted.sort_by(|a, b| {
                    rank(b)
                        .partial_cmp(&rank(a))
                        .unwrap_or(std::cmp::Ordering::Equal)
                });
                if self.kind == Kind::TopKDistinct {
                    sorted.dedup();
                }
                sorted.truncate(self.k.unwrap_or(sorted.len()));
                Ok(ScalarValue::List(ScalarValue::new_list_nullable(
                    &sorted,
                    &self.value_type,
                )))
            }
            Kind::CollectList | Kind::CollectSet => {
                let mut values = self.values.clone();
                if self.kind == Kind::CollectSet {
                    let mut seen: Vec<ScalarValue> = Vec::new();
                    values.retain(|v| {
                        if seen.contains(v) {
                            false
                        } else {
                            seen.push(v.clone());
                            true
                        }
                    });
                }
                Ok(ScalarValue::List(ScalarValue::new_list_nullable(
                    &values,
                    &self.value_type,
                )))
            }
            Kind::Latest | Kind::Earliest => match &self.return_type {
                DataType::List(_) => Ok(ScalarValue::List(ScalarValue::new_list_nullable(
                    &self.values,
                    &self.value_type,
                ))),
                _ => {
                    let pick = if self.kind == Kind::Latest {
                        self.values.last()
                    } else {
                        self.values.first()
                    };
                    match pick {
                        Some(v) => Ok(v.clone()),
                        None => ScalarValue::try_from(&self.return_type),
                    }
                }
            },
            Kind::Histogram => {
                let mut counts: Vec<(String, i64)> = Vec::new();
                for v in &self.values {
                    let key = match v {
                        ScalarValue::Utf8(Some(s)) => s.clone(),
                        other => other.to_string(),
                    };
                    match counts.iter_mut().find(|(k, _)| *k == key) {
                        Some((_, n)) => *n += 1,
                        None => counts.push((key, 1)),
                    }
                }
                let keys: ArrayRef = Arc::new(datafusion::arrow::array::ListArray::new(
                    Arc::new(Field::new("item", DataType::Utf8, true)),
                    datafusion::arrow::buffer::OffsetBuffer::new(
                        vec![0, counts.len() as i32].into(),
                    ),
                    Arc::new(datafusion::arrow::array::StringArray::from(
                        counts.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>(),
                    )),
                    None,
                ));
                let values: ArrayRef =
                    Arc::new(datafusion::arrow::array::ListArray::from_iter_primitive::<
                        datafusion::arrow::datatypes::Int64Type,
                        _,
                        _,
                    >(vec![Some(
                        counts.iter().map(|(_, n)| Some(*n)),
                    )]));
                let map = super::collections::as_map(&[keys, values], 1)
                    .map_err(DataFusionError::Execution)?;
                ScalarValue::try_from_array(&map, 0)
            }
        }
    }

    fn size(&self) -> usize {
        std::mem::size_of_val(self) + self.values.iter().map(ScalarValue::size).sum::<usize>()
    }

    fn state(&mut self) -> DfResult<Vec<ScalarValue>> {
        Ok(vec![
            ScalarValue::List(ScalarValue::new_list_nullable(
                &self.values,
                &self.value_type,
            )),
            ScalarValue::Int64(self.k.map(|k| k as i64)),
            ScalarValue::Boolean(Some(self.ignore_nulls)),
        ])
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> DfResult<()> {
        if let Some(lists) = states
            .first()
            .and_then(|s| s.as_any().downcast_ref::<ListArray>())
        {
            for row in 0..lists.len() {
                if lists.is_valid(row) {
                    let values = lists.value(row);
                    for i in 0..values.len() {
                        if self.keeps(values.is_valid(i)) {
                            self.values.push(ScalarValue::try_from_array(&values, i)?);
                        }
                    }
                }
            }
        }
        if self.k.is_none()
            && let Some(k) = states.get(1)
            && !k.is_empty()
            && let ScalarValue::Int64(Some(n)) = ScalarValue::try_from_array(k, 0)?
        {
            self.k = Some(n.max(0) as usize);
        }
        if let Some(flag) = states.get(2)
            && !flag.is_empty()
            && let ScalarValue::Boolean(Some(b)) = ScalarValue::try_from_array(flag, 0)?
        {
            self.ignore_nulls = b;
        }
        self.bound();
        Ok(())
    }
}

/// The fields of TOPK's struct elements: the sort column, then `col0`, `col1`, ... (the last
/// argument, `k`, is not one).
fn topk_fields(args: &[DataType]) -> Vec<Field> {
    let columns = &args[..args.len().saturating_sub(1)];
    columns
        .iter()
        .enumerate()
        .map(|(i, ty)| {
            let name = if i == 0 {
                "sort_col".to_string()
            } else {
                format!("col{}", i - 1)
            };
            Field::new(name, ty.clone(), true)
        })
        .collect()
}

/// The aggregate functions a query can call, by ksqlDB's name, as `SHOW FUNCTIONS` lists them.
pub const AGGREGATE_FUNCTIONS: &[&str] = &[
    "ATTR",
    "AVG",
    "COLLECT_LIST",
    "COLLECT_SET",
    "CORRELATION",
    "COUNT",
    "COUNT_DISTINCT",
    "EARLIEST_BY_OFFSET",
    "HISTOGRAM",
    "LATEST_BY_OFFSET",
    "MAX",
    "MIN",
    "STDDEV_POP",
    "STDDEV_SAMP",
    "STDDEV_SAMPLE",
    "SUM",
    "SUM_LIST",
    "TOPK",
    "TOPKDISTINCT",
    "VARIANCE",
    "VAR_SAMP",
];

/// An aggregate function as a call resolves to it: the DataFusion function, and how it is
/// called.
#[derive(Debug, Clone)]
pub struct AggregateFunction {
    /// The function.
    pub udf: Arc<AggregateUDF>,
    /// Whether it aggregates distinct values only (`COUNT_DISTINCT`, `COLLECT_SET`).
    pub distinct: bool,
    /// Whether it skips nulls.
    pub ignore_nulls: bool,
}

impl AggregateFunction {
    fn plain(udf: Arc<AggregateUDF>) -> Self {
        AggregateFunction {
            udf,
            distinct: false,
            ignore_nulls: false,
        }
    }
}

/// ksqlDB's aggregate function `name` (upper-case): DataFusion's where its semantics match,
/// else one of this module's.
pub fn aggregate_function(name: &str) -> Option<AggregateFunction> {
    use datafusion::functions_aggregate as f;
    let plain = AggregateFunction::plain;
    Some(match name {
        "COUNT" => plain(f::count::count_udaf()),
        "COUNT_DISTINCT" => AggregateFunction {
            distinct: true,
            ..plain(f::count::count_udaf())
        },
        // SUM_LIST(x) is planned as SUM(KSQL_LIST_SUM(x)): each array summed, then summed up.
        "SUM" | "SUM_LIST" => plain(f::sum::sum_udaf()),
        "MIN" => plain(f::min_max::min_udaf()),
        "MAX" => plain(f::min_max::max_udaf()),
        "AVG" => plain(f::average::avg_udaf()),
        "COLLECT_LIST" => plain(f::array_agg::array_agg_udaf()),
        "COLLECT_SET" => AggregateFunction {
            distinct: true,
            ..plain(f::array_agg::array_agg_udaf())
        },
        "STDDEV_SAMP" | "STDDEV_SAMPLE" => plain(f::stddev::stddev_udaf()),
        "STDDEV_POP" => plain(f::stddev::stddev_pop_udaf()),
        "CORRELATION" => plain(f::correlation::corr_udaf()),
        "VAR_SAMP" | "VARIANCE" => plain(f::variance::var_samp_udaf()),
        other => plain(aggregate(other)?),
    })
}

/// The function a call of aggregate `name` (upper-case) with `arity` arguments resolves to;
/// `over_table` when the rows are a table's changes, whose old values are taken back out.
pub fn aggregate_call(name: &str, arity: usize, over_table: bool) -> Option<AggregateFunction> {
    use datafusion::functions_aggregate::first_last;
    let skipping_nulls = |udf| AggregateFunction {
        ignore_nulls: true,
        ..AggregateFunction::plain(udf)
    };
    match (name, arity) {
        // With the value alone, DataFusion's own first/last value (nulls skipped) will do.
        ("LATEST_BY_OFFSET", 1) => Some(skipping_nulls(first_last::last_value_udaf())),
        ("EARLIEST_BY_OFFSET", 1) => Some(skipping_nulls(first_last::first_value_udaf())),
        // DataFusion's array_agg cannot take a value back out; a table's updates must.
        ("COLLECT_LIST" | "COLLECT_SET", _) if over_table => {
            aggregate(&format!("{name}_RETRACTING")).map(AggregateFunction::plain)
        }
        _ => aggregate_function(name),
    }
}

/// Whether `name` (any case) is an aggregate function.
pub fn is_aggregate(name: &str) -> bool {
    aggregate_function(&name.to_ascii_uppercase()).is_some()
}

/// The aggregate called `name` (upper-case), if it is one of these.
pub fn aggregate(name: &str) -> Option<Arc<AggregateUDF>> {
    let (name, kind, arity) = match name {
        "ATTR" => ("ATTR", Kind::Attr, 1),
        "TOPK" => ("TOPK", Kind::TopK, 0),
        "TOPKDISTINCT" => ("TOPKDISTINCT", Kind::TopKDistinct, 2),
        "HISTOGRAM" => ("HISTOGRAM", Kind::Histogram, 1),
        "LATEST_BY_OFFSET" => ("LATEST_BY_OFFSET", Kind::Latest, 3),
        "EARLIEST_BY_OFFSET" => ("EARLIEST_BY_OFFSET", Kind::Earliest, 3),
        "COLLECT_LIST_RETRACTING" => ("COLLECT_LIST", Kind::CollectList, 1),
        "COLLECT_SET_RETRACTING" => ("COLLECT_SET", Kind::CollectSet, 1),
        _ => return None,
    };
    let signature = if kind == Kind::TopK {
        Signature::variadic_any(Volatility::Immutable)
    } else if matches!(kind, Kind::Latest | Kind::Earliest) {
        Signature::one_of(
            (1..=arity).map(TypeSignature::Any).collect(),
            Volatility::Immutable,
        )
    } else {
        Signature::new(TypeSignature::Any(arity), Volatility::Immutable)
    };
    Some(Arc::new(AggregateUDF::from(ValuesAggregate {
        name,
        kind,
        signature,
    })))
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::Int64Array;

    use super::*;

    #[test]
    fn every_listed_aggregate_resolves() {
        for name in AGGREGATE_FUNCTIONS {
            assert!(is_aggregate(name), "{name} is listed but does not resolve");
        }
        assert!(!is_aggregate("UCASE"));
    }

    fn accumulator(kind: Kind) -> ValuesAccumulator {
        ValuesAccumulator {
            kind,
            value_type: DataType::Int64,
            return_type: DataType::Int64,
            values: Vec::new(),
            k: None,
            ignore_nulls: true,
        }
    }

    #[test]
    fn latest_by_offset_keeps_the_last_n_values_and_nulls_when_asked() {
        let mut acc = accumulator(Kind::Latest);
        acc.return_type = DataType::List(Arc::new(Field::new("item", DataType::Int64, true)));
        let n: ArrayRef = Arc::new(Int64Array::from(vec![2]));
        let keep_nulls: ArrayRef =
            Arc::new(datafusion::arrow::array::BooleanArray::from(vec![false]));
        for v in [Some(1), Some(2), None, Some(3)] {
            acc.update_batch(&[
                Arc::new(Int64Array::from(vec![v])),
                n.clone(),
                keep_nulls.clone(),
            ])
            .unwrap();
        }
        assert_eq!(
            acc.evaluate().unwrap(),
            ScalarValue::List(ScalarValue::new_list_nullable(
                &[ScalarValue::Int64(None), ScalarValue::Int64(Some(3))],
                &DataType::Int64
            ))
        );
        // By default nulls are skipped, and one value is returned.
        let mut acc = accumulator(Kind::Earliest);
        for v in [None, Some(5), Some(6)] {
            acc.update_batch(&[Arc::new(Int64Array::from(vec![v]))])
                .unwrap();
        }
        assert_eq!(acc.evaluate().unwrap(), ScalarValue::Int64(Some(5)));
    }

    #[test]
    fn topk_with_other_columns_ranks_structs_by_the_sort_column() {
        let types = [DataType::Int64, DataType::Utf8, DataType::Int32];
        let mut acc = accumulator(Kind::TopK);
        acc.value_type = DataType::Struct(topk_fields(&types).into());
        let k: ArrayRef = Arc::new(datafusion::arrow::array::Int32Array::from(vec![2, 2, 2]));
        acc.update_batch(&[
            Arc::new(Int64Array::from(vec![Some(5), None, Some(9)])),
            Arc::new(datafusion::arrow::array::StringArray::from(vec![
                "five", "none", "nine",
            ])),
            k,
        ])
        .unwrap();
        let ScalarValue::List(list) = acc.evaluate().unwrap() else {
            panic!("TOPK returns a list");
        };
        let rows = list.value(0);
        let rows = rows
            .as_any()
            .downcast_ref::<datafusion::arrow::array::StructArray>()
            .unwrap();
        // The null sort value does not rank; 9 comes before 5.
        assert_eq!(rows.len(), 2);
        let names = rows
            .column(1)
            .as_any()
            .downcast_ref::<datafusion::arrow::array::StringArray>()
            .unwrap();
        assert_eq!((names.value(0), names.value(1)), ("nine", "five"));
    }

    #[test]
    fn attr_is_the_value_only_while_every_row_agrees() {
        let mut acc = accumulator(Kind::Attr);
        acc.update_batch(&[Arc::new(Int64Array::from(vec![Some(1), Some(1)]))])
            .unwrap();
        assert_eq!(acc.evaluate().unwrap(), ScalarValue::Int64(Some(1)));
        acc.update_batch(&[Arc::new(Int64Array::from(vec![None]))])
            .unwrap();
        assert_eq!(acc.evaluate().unwrap(), ScalarValue::Int64(None));
        acc.retract_batch(&[Arc::new(Int64Array::from(vec![None]))])
            .unwrap();
        assert_eq!(acc.evaluate().unwrap(), ScalarValue::Int64(Some(1)));
    }

    #[test]
    fn topk_keeps_the_largest_k_and_survives_its_state() {
        let mut acc = accumulator(Kind::TopK);
        let values: ArrayRef = Arc::new(Int64Array::from(vec![3, 9, 1, 9]));
        let k: ArrayRef = Arc::new(Int64Array::from(vec![2, 2, 2, 2]));
        acc.update_batch(&[values, k]).unwrap();
        let expected = ScalarValue::List(ScalarValue::new_list_nullable(
            &[ScalarValue::Int64(Some(9)), ScalarValue::Int64(Some(9))],
            &DataType::Int64,
        ));
        assert_eq!(acc.evaluate().unwrap(), expected);
        let state: Vec<ArrayRef> = acc
            .state()
            .unwrap()
            .iter()
            .map(|s| s.to_array().unwrap())
            .collect();
        let mut restored = accumulator(Kind::TopK);
        restored.merge_batch(&state).unwrap();
        assert_eq!(restored.evaluate().unwrap(), expected);
    }
}
