//! How Eddy writes a scalar function: a plain description (its name, its signature, how its
//! return type follows from its argument types, its volatility, and a batch implementation over
//! Arrow arrays) turned into a DataFusion `ScalarUDF`. A row the implementation fails on is null,
//! and the failure is reported to the caller's processing log. Also the conversions and
//! signatures the functions share.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, Int64Array, StringArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field};
use datafusion::common::{DataFusionError, Result as DfResult};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, TypeSignature,
    Volatility,
};

/// The longest string (in characters), byte string or array a function builds beyond what
/// its arguments already hold: Kafka's largest record by default is about 1 MB, so a longer
/// value could not be written anyway, and a length taken from the data must not be able to
/// ask for terabytes.
pub const MAX_BUILT_LEN: usize = 1 << 20;

/// Refuses a value of `len` units (characters, bytes or elements) that `function` would build.
pub(super) fn check_built_len(function: &str, len: u128, unit: &str) -> Result<(), String> {
    if len > MAX_BUILT_LEN as u128 {
        return Err(format!(
            "{function} would build a value of {len} {unit}; the most a function may build is {MAX_BUILT_LEN}"
        ));
    }
    Ok(())
}

/// How a function's result type follows from its argument types.
pub(super) type ReturnType = fn(&[DataType]) -> Result<DataType, String>;

/// A function's implementation over a batch of rows: the argument arrays and the row count.
pub(super) type Invoke = fn(&[ArrayRef], usize) -> Result<ArrayRef, String>;

/// A ksqlDB scalar function implemented over Arrow arrays.
#[derive(Debug)]
struct KsqlFunction {
    name: &'static str,
    signature: Signature,
    return_type: ReturnType,
    invoke: Invoke,
}

// Names are unique in the catalogue, so a function is known by its name.
impl PartialEq for KsqlFunction {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}

impl Eq for KsqlFunction {}

impl std::hash::Hash for KsqlFunction {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.name.hash(state);
    }
}

impl ScalarUDFImpl for KsqlFunction {
    fn name(&self) -> &str {
        self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, args: &[DataType]) -> DfResult<DataType> {
        (self.return_type)(args).map_err(DataFusionError::Plan)
    }

    /// A row the function fails on is null, as a ksqlDB function that throws: the rest of the
    /// expression, and the record, go on.
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let rows = args.number_rows;
        match (self.invoke)(&arrays, rows) {
            Ok(array) => return Ok(ColumnarValue::Array(array)),
            Err(e) => tracing::debug!(function = self.name, error = %e, "evaluating row by row"),
        }
        let return_type = args.return_field.data_type();
        let mut pieces: Vec<ArrayRef> = Vec::with_capacity(rows);
        for i in 0..rows {
            let row: Vec<ArrayRef> = arrays
                .iter()
                .map(|a| {
                    if a.len() == 1 {
                        a.clone()
                    } else {
                        a.slice(i, 1)
                    }
                })
                .collect();
            match (self.invoke)(&row, 1) {
                Ok(a) => pieces.push(a),
                Err(e) => {
                    crate::functions::report_function_error(crate::functions::FunctionError {
                        function: self.name,
                        row: i,
                        rows,
                        message: e,
                    });
                    pieces.push(datafusion::arrow::array::new_null_array(return_type, 1));
                }
            }
        }
        let refs: Vec<&dyn Array> = pieces.iter().map(|a| a.as_ref()).collect();
        datafusion::arrow::compute::concat(&refs)
            .map(ColumnarValue::Array)
            .map_err(|e| DataFusionError::Execution(e.to_string()))
    }
}

/// A scalar function of the catalogue, as its file describes it.
pub(super) struct Scalar {
    name: &'static str,
    signature: TypeSignature,
    return_type: ReturnType,
    invoke: Invoke,
    /// Whether it gives the same result for the same arguments (so a constant call is folded
    /// once), or not (`UNIX_TIMESTAMP`).
    volatility: Volatility,
}

/// A function that always gives the same result for the same arguments.
pub(super) fn function(
    name: &'static str,
    signature: TypeSignature,
    return_type: ReturnType,
    invoke: Invoke,
) -> Scalar {
    Scalar {
        name,
        signature,
        return_type,
        invoke,
        volatility: Volatility::Immutable,
    }
}

impl Scalar {
    /// The same function, whose result may change between calls with the same arguments.
    pub(super) fn volatile(self) -> Self {
        Scalar {
            volatility: Volatility::Volatile,
            ..self
        }
    }

    /// Its ksqlDB name.
    pub(super) fn name(&self) -> &'static str {
        self.name
    }

    /// Its volatility.
    pub(super) fn volatility(&self) -> Volatility {
        self.volatility
    }

    /// The DataFusion function.
    pub(super) fn udf(&self) -> Arc<ScalarUDF> {
        Arc::new(ScalarUDF::from(KsqlFunction {
            name: self.name,
            signature: Signature::new(self.signature.clone(), self.volatility),
            return_type: self.return_type,
            invoke: self.invoke,
        }))
    }
}

/// An argument as text, cast if it is not.
pub(super) fn strings(array: &ArrayRef) -> Result<StringArray, String> {
    let cast = cast(array, &DataType::Utf8).map_err(|e| e.to_string())?;
    cast.as_any()
        .downcast_ref::<StringArray>()
        .cloned()
        .ok_or_else(|| "expected a string".to_string())
}

/// An argument as bytes, cast if it is not.
pub(super) fn binaries(array: &ArrayRef) -> Result<datafusion::arrow::array::BinaryArray, String> {
    let cast = cast(array, &DataType::Binary).map_err(|e| e.to_string())?;
    cast.as_any()
        .downcast_ref::<datafusion::arrow::array::BinaryArray>()
        .cloned()
        .ok_or_else(|| "expected bytes".to_string())
}

/// An argument as 64-bit integers, cast if it is not.
pub(super) fn longs(array: &ArrayRef) -> Result<Int64Array, String> {
    let cast = cast(array, &DataType::Int64).map_err(|e| e.to_string())?;
    cast.as_any()
        .downcast_ref::<Int64Array>()
        .cloned()
        .ok_or_else(|| "expected a number".to_string())
}

/// An argument as doubles, cast if it is not.
pub(super) fn doubles(array: &ArrayRef) -> Result<datafusion::arrow::array::Float64Array, String> {
    let cast = cast(array, &DataType::Float64).map_err(|e| e.to_string())?;
    cast.as_any()
        .downcast_ref::<datafusion::arrow::array::Float64Array>()
        .cloned()
        .ok_or_else(|| "expected a number".to_string())
}

/// The value at row `i` of an argument that may be a one-row constant.
pub(super) fn at(i: usize, len: usize) -> usize {
    if len == 1 { 0 } else { i }
}

/// Row `i` of a text argument that may be a one-row constant.
pub(super) fn string_at(a: &StringArray, i: usize) -> Option<&str> {
    let i = at(i, a.len());
    (!a.is_null(i)).then(|| a.value(i))
}

/// Row `i` of an integer argument that may be a one-row constant.
pub(super) fn long_at(a: &Int64Array, i: usize) -> Option<i64> {
    let i = at(i, a.len());
    (!a.is_null(i)).then(|| a.value(i))
}

/// The result type of a function that returns text.
pub(super) const STRING: fn(&[DataType]) -> Result<DataType, String> = |_| Ok(DataType::Utf8);

/// The result type of a function that returns a BIGINT.
pub(super) const BIGINT: fn(&[DataType]) -> Result<DataType, String> = |_| Ok(DataType::Int64);

/// The result type of a function that returns an INT.
pub(super) const INT: fn(&[DataType]) -> Result<DataType, String> = |_| Ok(DataType::Int32);

/// The result type of a function that returns an array of text.
pub(super) const STRING_LIST: fn(&[DataType]) -> Result<DataType, String> = |_| {
    Ok(DataType::List(Arc::new(Field::new_list_field(
        DataType::Utf8,
        true,
    ))))
};

/// Any one argument.
pub(super) fn any1() -> TypeSignature {
    TypeSignature::Any(1)
}

/// Two or three text arguments: a value, a pattern, and maybe a time zone.
pub(super) fn string_pairs() -> TypeSignature {
    TypeSignature::OneOf(vec![
        TypeSignature::Exact(vec![DataType::Utf8, DataType::Utf8]),
        TypeSignature::Exact(vec![DataType::Utf8, DataType::Utf8, DataType::Utf8]),
    ])
}

/// Whether an argument type is text, or an untyped null that can stand for text.
pub(super) fn is_text(t: &DataType) -> bool {
    matches!(t, DataType::Utf8 | DataType::LargeUtf8 | DataType::Null)
}

/// ksqlDB's refusal of a call whose argument types none of the function's signatures takes.
pub(super) fn refused(name: &str, args: &[DataType]) -> String {
    let types: Vec<String> = args.iter().map(crate::coercion::type_name).collect();
    format!(
        "Function '{name}' does not accept parameters ({}).",
        types.join(", ")
    )
}

/// Whether a type is bytes.
pub(super) fn is_bytes(t: &DataType) -> bool {
    matches!(
        t,
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView
    )
}

/// What `SUBSTRING`, `LPAD` and `RPAD` return: bytes for bytes, else text.
pub(super) fn text_or_bytes(args: &[DataType]) -> Result<DataType, String> {
    match args.first() {
        Some(t) if is_bytes(t) => Ok(DataType::Binary),
        _ => Ok(DataType::Utf8),
    }
}
