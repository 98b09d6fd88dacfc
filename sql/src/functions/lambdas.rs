//! ksqlDB's lambda functions, over arrays and maps: `TRANSFORM`, `FILTER` and `REDUCE`.
//!
//! They are DataFusion higher-order functions: DataFusion plans the lambda bodies (which may
//! capture columns of the row) and hands each function its lambdas to evaluate. A function
//! flattens the elements of every row into one array, evaluates a lambda over all of them at
//! once (captured columns repeated per element), and rebuilds the rows. `REDUCE` evaluates its
//! lambda once per element position, over the rows that have an element there.

use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, ListArray, MapArray, StructArray, UInt32Array,
};
use datafusion::arrow::buffer::OffsetBuffer;
use datafusion::arrow::compute::{cast, filter, interleave, take, take_arrays};
use datafusion::arrow::datatypes::{DataType, Field, FieldRef, Fields};
use datafusion::common::{Result, exec_err, plan_err};
use datafusion::logical_expr::{
    ColumnarValue, HigherOrderFunctionArgs, HigherOrderReturnFieldArgs, HigherOrderSignature,
    HigherOrderUDF, HigherOrderUDFImpl, LambdaArgument, LambdaParametersProgress, ValueOrLambda,
    Volatility,
};

/// Which lambda function.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Kind {
    Transform,
    Filter,
    Reduce,
}

/// One of ksqlDB's lambda functions.
#[derive(Debug, PartialEq, Eq, Hash)]
struct LambdaFunction {
    kind: Kind,
    signature: HigherOrderSignature,
}

/// The functions that take lambdas, by their ksqlDB names.
pub const LAMBDA_FUNCTIONS: &[&str] = &["FILTER", "REDUCE", "TRANSFORM"];

/// The lambda function called `name` (any case), if it is one.
pub fn higher_order_function(name: &str) -> Option<Arc<HigherOrderUDF>> {
    let kind = match name.to_ascii_uppercase().as_str() {
        "TRANSFORM" => Kind::Transform,
        "FILTER" => Kind::Filter,
        "REDUCE" => Kind::Reduce,
        _ => return None,
    };
    Some(Arc::new(HigherOrderUDF::from(LambdaFunction {
        kind,
        signature: HigherOrderSignature::variadic_any(Volatility::Immutable),
    })))
}

/// A collection argument's element fields: an array's item, or a map's key and value.
fn element_fields(function: &str, collection: &Field) -> Result<Vec<FieldRef>> {
    match collection.data_type() {
        DataType::List(item) => Ok(vec![item.clone()]),
        DataType::Map(entries, _) => match entries.data_type() {
            DataType::Struct(fields) if fields.len() == 2 => {
                Ok(vec![fields[0].clone(), fields[1].clone()])
            }
            other => plan_err!("unexpected map entries {other}"),
        },
        DataType::Null => Ok(vec![Arc::new(Field::new("item", DataType::Null, true))]),
        other => plan_err!(
            "Function '{function}' does not accept parameters ({}). It takes an ARRAY or a MAP and lambdas.",
            crate::types::from_arrow(other)
                .map(|t| crate::types::type_display(&t))
                .unwrap_or_else(|_| other.to_string())
        ),
    }
}

impl LambdaFunction {
    fn name_upper(&self) -> &'static str {
        match self.kind {
            Kind::Transform => "TRANSFORM",
            Kind::Filter => "FILTER",
            Kind::Reduce => "REDUCE",
        }
    }

    /// How many value arguments come before the lambdas.
    fn values(&self) -> usize {
        match self.kind {
            Kind::Reduce => 2,
            _ => 1,
        }
    }
}

impl HigherOrderUDFImpl for LambdaFunction {
    fn name(&self) -> &str {
        match self.kind {
            Kind::Transform => "transform",
            Kind::Filter => "filter",
            Kind::Reduce => "reduce",
        }
    }

    fn signature(&self) -> &HigherOrderSignature {
        &self.signature
    }

    fn lambda_parameters(
        &self,
        _step: usize,
        fields: &[ValueOrLambda<FieldRef, Option<FieldRef>>],
    ) -> Result<LambdaParametersProgress> {
        let name = self.name_upper();
        let values: Vec<&FieldRef> = fields
            .iter()
            .filter_map(|f| match f {
                ValueOrLambda::Value(v) => Some(v),
                ValueOrLambda::Lambda(_) => None,
            })
            .collect();
        let lambdas = fields.len() - values.len();
        let Some(collection) = values.first() else {
            return plan_err!("Function '{name}' needs an ARRAY or a MAP");
        };
        let elements = element_fields(name, collection)?;
        let is_map = elements.len() == 2;
        let expected_lambdas = match (self.kind, is_map) {
            (Kind::Transform, true) => 2,
            _ => 1,
        };
        if values.len() != self.values() || lambdas != expected_lambdas {
            let shape = match (self.kind, is_map) {
                (Kind::Transform, false) => "TRANSFORM(array, x => ...)",
                (Kind::Transform, true) => "TRANSFORM(map, (k, v) => new_key, (k, v) => new_value)",
                (Kind::Filter, false) => "FILTER(array, x => ...)",
                (Kind::Filter, true) => "FILTER(map, (k, v) => ...)",
                (Kind::Reduce, false) => "REDUCE(array, initial, (s, x) => ...)",
                (Kind::Reduce, true) => "REDUCE(map, initial, (s, k, v) => ...)",
            };
            return plan_err!("Function '{name}' is called as {shape}");
        }
        let params = match self.kind {
            Kind::Reduce => {
                let mut params = vec![values[1].clone()];
                params.extend(elements);
                params
            }
            _ => elements,
        };
        Ok(LambdaParametersProgress::Complete(vec![
            params;
            expected_lambdas
        ]))
    }

    fn return_field_from_args(&self, args: HigherOrderReturnFieldArgs) -> Result<FieldRef> {
        let mut values = Vec::new();
        let mut lambdas = Vec::new();
        for field in args.arg_fields {
            match field {
                ValueOrLambda::Value(v) => values.push(v.clone()),
                ValueOrLambda::Lambda(l) => lambdas.push(l.clone()),
            }
        }
        let (Some(collection), Some(first_lambda)) = (values.first(), lambdas.first()) else {
            return plan_err!(
                "Function '{}' needs a collection and a lambda",
                self.name_upper()
            );
        };
        let data_type = match (self.kind, collection.data_type()) {
            (Kind::Filter, t) => t.clone(),
            (Kind::Transform, DataType::List(item)) => DataType::List(Arc::new(Field::new(
                item.name(),
                first_lambda.data_type().clone(),
                true,
            ))),
            (Kind::Transform, DataType::Map(entries, sorted)) => {
                let Some(value_lambda) = lambdas.get(1) else {
                    return plan_err!("TRANSFORM of a map takes two lambdas");
                };
                let DataType::Struct(fields) = entries.data_type() else {
                    return plan_err!("unexpected map entries {}", entries.data_type());
                };
                let entry = Fields::from(vec![
                    Field::new(fields[0].name(), first_lambda.data_type().clone(), false),
                    Field::new(fields[1].name(), value_lambda.data_type().clone(), true),
                ]);
                DataType::Map(
                    Arc::new(Field::new(entries.name(), DataType::Struct(entry), false)),
                    *sorted,
                )
            }
            (Kind::Transform, other) => other.clone(),
            (Kind::Reduce, _) => match values.get(1).map(|v| v.data_type()) {
                Some(DataType::Null) | None => first_lambda.data_type().clone(),
                Some(initial) => initial.clone(),
            },
        };
        Ok(Arc::new(Field::new(self.name(), data_type, true)))
    }

    fn invoke_with_args(&self, args: HigherOrderFunctionArgs) -> Result<ColumnarValue> {
        let rows = args.number_rows;
        let mut values = Vec::new();
        let mut lambdas = Vec::new();
        for arg in &args.args {
            match arg {
                ValueOrLambda::Value(v) => values.push(v.to_array(rows)?),
                ValueOrLambda::Lambda(l) => lambdas.push(l),
            }
        }
        let (Some(collection), Some(lambda)) = (values.first(), lambdas.first()) else {
            return exec_err!("{} needs a collection and a lambda", self.name_upper());
        };
        let return_type = args.return_field.data_type().clone();
        if collection.data_type() == &DataType::Null {
            return Ok(ColumnarValue::Array(match (self.kind, values.get(1)) {
                (Kind::Reduce, Some(initial)) => cast(initial, &return_type)?,
                _ => datafusion::arrow::array::new_null_array(&return_type, rows),
            }));
        }
        let elements = Elements::of(collection)?;
        let result = match self.kind {
            Kind::Transform => transform(&elements, &lambdas, &return_type)?,
            Kind::Filter => filter_elements(&elements, lambda)?,
            Kind::Reduce => {
                let Some(initial) = values.get(1) else {
                    return exec_err!("REDUCE needs an initial state");
                };
                reduce(&elements, initial, lambda, &return_type)?
            }
        };
        Ok(ColumnarValue::Array(result))
    }
}

/// The elements of every row of an array or map column, flattened, with the row each came
/// from.
struct Elements<'a> {
    collection: &'a ArrayRef,
    /// An array's items, or a map's keys and values, of every non-null row in order.
    columns: Vec<ArrayRef>,
    /// The row of each element.
    rows: UInt32Array,
    /// How many elements each row has (none for a null row).
    lengths: Vec<usize>,
}

impl<'a> Elements<'a> {
    fn of(collection: &'a ArrayRef) -> Result<Self> {
        let (offsets, nulls, flat): (&[i32], _, Vec<ArrayRef>) = match collection.data_type() {
            DataType::List(_) => {
                let list = collection.as_list::<i32>();
                (
                    list.value_offsets(),
                    list.nulls(),
                    vec![list.values().clone()],
                )
            }
            DataType::Map(..) => {
                let map = collection.as_map();
                (
                    map.value_offsets(),
                    map.nulls(),
                    vec![map.keys().clone(), map.values().clone()],
                )
            }
            other => return exec_err!("expected an ARRAY or a MAP, got {other}"),
        };
        let mut positions = Vec::new();
        let mut rows = Vec::new();
        let mut lengths = Vec::with_capacity(collection.len());
        for row in 0..collection.len() {
            if nulls.is_some_and(|n| n.is_null(row)) {
                lengths.push(0);
                continue;
            }
            let (start, end) = (offsets[row] as u32, offsets[row + 1] as u32);
            positions.extend(start..end);
            rows.extend(std::iter::repeat_n(row as u32, (end - start) as usize));
            lengths.push((end - start) as usize);
        }
        let positions = UInt32Array::from(positions);
        let columns = flat
            .iter()
            .map(|c| take(c.as_ref(), &positions, None))
            .collect::<std::result::Result<_, _>>()?;
        Ok(Elements {
            collection,
            columns,
            rows: UInt32Array::from(rows),
            lengths,
        })
    }

    fn count(&self) -> usize {
        self.rows.len()
    }

    /// Evaluates `lambda` over every element: its parameters are the element's columns.
    fn evaluate(&self, lambda: &LambdaArgument) -> Result<ArrayRef> {
        let params: Vec<Box<dyn Fn() -> Result<ArrayRef> + '_>> = self
            .columns
            .iter()
            .map(|c| Box::new(move || Ok(c.clone())) as Box<dyn Fn() -> Result<ArrayRef>>)
            .collect();
        let params: Vec<&dyn Fn() -> Result<ArrayRef>> =
            params.iter().map(|p| p.as_ref()).collect();
        lambda
            .evaluate(&params, |captured| {
                Ok(take_arrays(captured, &self.rows, None)?)
            })?
            .into_array(self.count())
    }

    /// The collection's rows again, over new elements (`columns`), `lengths` of them per row.
    fn rebuild(
        &self,
        columns: Vec<ArrayRef>,
        lengths: &[usize],
        data_type: &DataType,
    ) -> Result<ArrayRef> {
        let offsets = OffsetBuffer::<i32>::from_lengths(lengths.iter().copied());
        let nulls = self.collection.logical_nulls();
        match data_type {
            DataType::List(item) => {
                let Some(values) = columns.into_iter().next() else {
                    return exec_err!("an array needs its items");
                };
                let values = cast(&values, item.data_type())?;
                Ok(Arc::new(ListArray::try_new(
                    item.clone(),
                    offsets,
                    values,
                    nulls,
                )?))
            }
            DataType::Map(entries, sorted) => {
                let DataType::Struct(fields) = entries.data_type() else {
                    return exec_err!("unexpected map entries {}", entries.data_type());
                };
                let columns = columns
                    .iter()
                    .zip(fields.iter())
                    .map(|(c, f)| cast(c, f.data_type()))
                    .collect::<std::result::Result<Vec<_>, _>>()?;
                let entries_array = StructArray::try_new(fields.clone(), columns, None)?;
                Ok(Arc::new(MapArray::try_new(
                    entries.clone(),
                    offsets,
                    entries_array,
                    nulls,
                    *sorted,
                )?))
            }
            other => exec_err!("cannot build {other} from elements"),
        }
    }
}

fn transform(
    elements: &Elements<'_>,
    lambdas: &[&LambdaArgument],
    return_type: &DataType,
) -> Result<ArrayRef> {
    let columns = lambdas
        .iter()
        .map(|lambda| elements.evaluate(lambda))
        .collect::<Result<Vec<_>>>()?;
    if let DataType::Map(..) = return_type
        && let Some(keys) = columns.first()
        && keys.null_count() > 0
    {
        return exec_err!("TRANSFORM gave a map a null key");
    }
    elements.rebuild(columns, &elements.lengths, return_type)
}

/// Keeps the elements the predicate holds for; a null predicate drops the element.
fn filter_elements(elements: &Elements<'_>, lambda: &LambdaArgument) -> Result<ArrayRef> {
    let verdicts = elements.evaluate(lambda)?;
    let Some(verdicts) = verdicts.as_any().downcast_ref::<BooleanArray>() else {
        return exec_err!("the FILTER lambda must return a BOOLEAN");
    };
    let keep: BooleanArray = verdicts.iter().map(|v| Some(v == Some(true))).collect();
    let mut lengths = vec![0usize; elements.lengths.len()];
    for (i, row) in elements.rows.values().iter().enumerate() {
        if keep.value(i) {
            lengths[*row as usize] += 1;
        }
    }
    let columns = elements
        .columns
        .iter()
        .map(|c| filter(c.as_ref(), &keep))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    elements.rebuild(columns, &lengths, elements.collection.data_type())
}

/// Folds each row's elements into its state, one element position at a time.
fn reduce(
    elements: &Elements<'_>,
    initial: &ArrayRef,
    lambda: &LambdaArgument,
    state_type: &DataType,
) -> Result<ArrayRef> {
    let mut state = cast(initial, state_type)?;
    let mut starts = Vec::with_capacity(elements.lengths.len());
    let mut at = 0u32;
    for length in &elements.lengths {
        starts.push(at);
        at += *length as u32;
    }
    let longest = elements.lengths.iter().copied().max().unwrap_or(0);
    for position in 0..longest {
        let active: Vec<u32> = (0..elements.lengths.len() as u32)
            .filter(|&row| elements.lengths[row as usize] > position)
            .collect();
        let rows = UInt32Array::from(active.clone());
        let picks = UInt32Array::from(
            active
                .iter()
                .map(|&row| starts[row as usize] + position as u32)
                .collect::<Vec<_>>(),
        );
        let current = take(state.as_ref(), &rows, None)?;
        let items = elements
            .columns
            .iter()
            .map(|c| take(c.as_ref(), &picks, None))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let mut params: Vec<Box<dyn Fn() -> Result<ArrayRef> + '_>> =
            vec![Box::new(|| Ok(current.clone()))];
        for item in &items {
            params.push(Box::new(move || Ok(item.clone())));
        }
        let params: Vec<&dyn Fn() -> Result<ArrayRef>> =
            params.iter().map(|p| p.as_ref()).collect();
        let next = lambda
            .evaluate(&params, |captured| Ok(take_arrays(captured, &rows, None)?))?
            .into_array(active.len())?;
        let next = cast(&next, state_type)?;
        let mut from: Vec<(usize, usize)> = (0..state.len()).map(|i| (0, i)).collect();
        for (j, &row) in active.iter().enumerate() {
            from[row as usize] = (1, j);
        }
        state = interleave(&[state.as_ref(), next.as_ref()], &from)?;
    }
    Ok(state)
}
