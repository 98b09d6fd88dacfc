//! Running a stateless persistent query: read a batch of records from a partition, decode it,
//! filter and project it, encode the result, and commit the output records together with the
//! next input offset in one atomic commit. A crash between commits repeats nothing and loses
//! nothing: the offset and the output it produced land together or not at all.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use datafusion::arrow::array::{
    Array, ArrayRef, BooleanArray, Int64Array, ListArray, RecordBatch, UInt32Array,
};
use datafusion::arrow::compute::{cast, filter_record_batch, take};
use datafusion::arrow::datatypes::DataType;
use eddy_storage::{Commit, LogRecord, OffsetAndMetadata, Record, StorageError, Store};
use futures::future::select_all;
use tokio::sync::watch;
use tracing::{debug, warn};

use crate::catalog::{DataSource, WindowInfo};
use crate::codec::RowCodec;
use crate::error::{EngineError, Result};
use crate::format::Format;
use crate::query::aggregate::{AggregateState, Changes, aggregate_changes, process_aggregate};
use crate::query::join::{JoinState, join_rows, process_join};
use crate::query::plan::{OutputColumn, StatelessPlan};
use crate::query::source::{RecordError, RecordErrorKind, WINDOWEND, WINDOWSTART, append_window};
use crate::query::{QueryPlan, QueryShared, consumer_group, processing_log};
use crate::schema::Column;

/// How much to read from a partition per step.
const READ_BYTES: usize = 1 << 20;
/// The most record bytes per appended batch, well under a topic's default `max.message.bytes`.
const APPEND_BYTES: usize = 512 << 10;

/// Splits records into runs of at most about `limit` bytes, so no stored batch is too large.
fn batches_under(records: Vec<Record>, limit: usize) -> Vec<Vec<Record>> {
    let mut out = Vec::new();
    let mut current = Vec::new();
    let mut size = 0;
    for record in records {
        let len = record.key.as_ref().map_or(0, |k| k.len())
            + record.value.as_ref().map_or(0, |v| v.len())
            + record
                .headers
                .iter()
                .map(|h| h.key.len() + h.value.as_ref().map_or(0, |v| v.len()))
                .sum::<usize>()
            + 24;
        if size + len > limit && !current.is_empty() {
            out.push(std::mem::take(&mut current));
            size = 0;
        }
        size += len;
        current.push(record);
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

/// A column of the sink, by its index among the key or among the value columns.
#[derive(Debug, Clone, Copy)]
enum SinkColumn {
    Key(usize),
    Value(usize),
}

/// Encodes result rows as records of the sink.
#[derive(Debug, Clone)]
pub struct SinkEncoder {
    key_codec: Option<RowCodec>,
    value_codec: RowCodec,
    /// The sink's `TIMESTAMP` column.
    timestamp_column: Option<SinkColumn>,
    /// A delimited key of only nulls is written as no key, not as empty fields.
    null_key_when_all_null: bool,
    /// The sink's window, appended to each key.
    window: Option<WindowInfo>,
}

impl SinkEncoder {
    /// An encoder for `sink`'s formats and columns.
    pub fn new(sink: &DataSource) -> Result<Self> {
        let keys: Vec<&Column> = sink.key_columns().collect();
        let values: Vec<&Column> = sink.value_columns().collect();
        let key_codec = if keys.is_empty() || sink.key_format.format == Format::None {
            None
        } else {
            Some(RowCodec::new(sink.key_format, &keys, false)?)
        };
        let value_codec = RowCodec::new(
            sink.value_format,
            &values,
            sink.wrap_single_value.unwrap_or(true),
        )?;
        let timestamp_column = sink.timestamp_column.as_ref().and_then(|name| {
            keys.iter()
                .position(|c| &c.name == name)
                .map(SinkColumn::Key)
                .or_else(|| {
                    values
                        .iter()
                        .position(|c| &c.name == name)
                        .map(SinkColumn::Value)
                })
        });
        Ok(SinkEncoder {
            window: sink.window,
            null_key_when_all_null: sink.key_format.format == Format::Delimited,
            key_codec,
            value_codec,
            timestamp_column,
        })
    }

    /// The sink keys of `batch`'s rows, without windows: what the partitioner hashes.
    pub(crate) fn encode_keys(
        &self,
        key_outputs: &[OutputColumn],
        sink_columns: &[Column],
        batch: &RecordBatch,
    ) -> Result<Vec<Option<Vec<u8>>>> {
        let rows = batch.num_rows();
        let mut failed = vec![None; rows];
        let (keys, _) = evaluate_outputs((key_outputs, &[]), sink_columns, batch, &mut failed)?;
        match &self.key_codec {
            Some(codec) => codec.encode(&keys, rows),
            None => Ok(vec![None; rows]),
        }
    }
}

/// The outcome of one step over a batch of input records.
pub struct StepOutput {
    /// Records for the sink, in input order.
    pub records: Vec<Record>,
    /// Records that could not be processed.
    pub errors: Vec<RecordError>,
}

/// Evaluates an expression over a batch, turning a panic inside a function (a library's, on
/// input it did not expect) into an error for those rows instead of the end of the query.
fn evaluate_guarded(
    expr: &Arc<dyn datafusion::physical_expr::PhysicalExpr>,
    batch: &RecordBatch,
) -> datafusion::error::Result<ArrayRef> {
    let rows = batch.num_rows();
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        expr.evaluate(batch).and_then(|v| v.into_array(rows))
    }))
    .unwrap_or_else(|panic| {
        let why = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown cause".into());
        Err(datafusion::error::DataFusionError::Execution(format!(
            "the function failed on this input ({why})"
        )))
    })
}

/// Evaluates one expression over a batch; on failure, row by row, so one bad row fails alone.
fn evaluate(
    expr: &OutputColumn,
    batch: &RecordBatch,
    failed: &mut [Option<String>],
) -> Result<ArrayRef> {
    let rows = batch.num_rows();
    match evaluate_guarded(&expr.expr, batch) {
        Ok(array) => Ok(array),
        Err(_) if rows > 1 => {
            let mut pieces: Vec<ArrayRef> = Vec::with_capacity(rows);
            let ty = expr
                .expr
                .data_type(&batch.schema())
                .map_err(|e| EngineError::statement(e.to_string()))?;
            for (i, failure) in failed.iter_mut().enumerate() {
                let row = batch.slice(i, 1);
                match evaluate_guarded(&expr.expr, &row) {
                    Ok(a) => pieces.push(a),
                    Err(e) => {
                        failure.get_or_insert_with(|| {
                            format!("Error computing expression {}: {e}", expr.column.name)
                        });
                        pieces.push(datafusion::arrow::array::new_null_array(&ty, 1));
                    }
                }
            }
            let refs: Vec<&dyn Array> = pieces.iter().map(|a| a.as_ref()).collect();
            datafusion::arrow::compute::concat(&refs)
                .map_err(|e| EngineError::statement(e.to_string()))
        }
        Err(e) => {
            if let Some(f) = failed.first_mut() {
                f.get_or_insert_with(|| {
                    format!("Error computing expression {}: {e}", expr.column.name)
                });
            }
            Ok(datafusion::arrow::array::new_null_array(
                &expr
                    .expr
                    .data_type(&batch.schema())
                    .map_err(|e| EngineError::statement(e.to_string()))?,
                rows,
            ))
        }
    }
}

/// Applies the table functions: each input row becomes as many rows as its longest array,
/// with shorter arrays padded with nulls (as ksqlDB zips several `EXPLODE`s). Returns the
/// exploded batch and, for each of its rows, the input row it came from.
fn explode(batch: &RecordBatch, plan: &StatelessPlan) -> Result<(RecordBatch, Vec<usize>)> {
    let rows = batch.num_rows();
    let lists = plan
        .table_functions
        .iter()
        .map(|f| {
            let array = f
                .evaluate(batch)
                .and_then(|v| v.into_array(rows))
                .map_err(|e| EngineError::statement(format!("Error evaluating EXPLODE: {e}")))?;
            array
                .as_any()
                .downcast_ref::<ListArray>()
                .cloned()
                .ok_or_else(|| EngineError::statement("EXPLODE takes an array"))
        })
        .collect::<Result<Vec<_>>>()?;
    let length = |list: &ListArray, row: usize| {
        if list.is_null(row) {
            0
        } else {
            list.value_length(row) as usize
        }
    };
    let mut parents = Vec::new();
    let mut elements: Vec<Vec<Option<u32>>> = vec![Vec::new(); lists.len()];
    for row in 0..rows {
        let count = lists.iter().map(|l| length(l, row)).max().unwrap_or(0);
        for j in 0..count {
            parents.push(row);
            for (list, picks) in lists.iter().zip(&mut elements) {
                let start = list.value_offsets()[row] as usize;
                picks.push((j < length(list, row)).then(|| (start + j) as u32));
            }
        }
    }
    let parent_indices = UInt32Array::from_iter_values(parents.iter().map(|&p| p as u32));
    let mut columns = batch
        .columns()
        .iter()
        .map(|c| take(c.as_ref(), &parent_indices, None))
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| EngineError::statement(e.to_string()))?;
    for (list, picks) in lists.iter().zip(elements) {
        let indices = UInt32Array::from(picks);
        columns.push(
            take(list.values().as_ref(), &indices, None)
                .map_err(|e| EngineError::statement(e.to_string()))?,
        );
    }
    let exploded = RecordBatch::try_new_with_options(
        plan.exploded_schema.clone(),
        columns,
        &datafusion::arrow::array::RecordBatchOptions::new().with_row_count(Some(parents.len())),
    )
    .map_err(|e| EngineError::statement(format!("cannot explode a batch: {e}")))?;
    Ok((exploded, parents))
}

/// Evaluates the key and value columns of the result, cast to the sink's types.
fn evaluate_outputs(
    (key_outputs, value_outputs): (&[OutputColumn], &[OutputColumn]),
    sink_columns: &[Column],
    batch: &RecordBatch,
    failed: &mut [Option<String>],
) -> Result<(Vec<ArrayRef>, Vec<ArrayRef>)> {
    let key_arrays = key_outputs
        .iter()
        .zip(
            sink_columns
                .iter()
                .filter(|c| c.kind == crate::schema::ColumnKind::Key),
        )
        .map(|(k, c)| to_sink_type(evaluate(k, batch, failed)?, c))
        .collect::<Result<Vec<_>>>()?;
    let value_arrays = value_outputs
        .iter()
        .zip(
            sink_columns
                .iter()
                .filter(|c| c.kind == crate::schema::ColumnKind::Value),
        )
        .map(|(v, c)| to_sink_type(evaluate(v, batch, failed)?, c))
        .collect::<Result<Vec<_>>>()?;
    Ok((key_arrays, value_arrays))
}

/// Casts a computed column to the type the sink declares, when they differ.
fn to_sink_type(array: ArrayRef, column: &Column) -> Result<ArrayRef> {
    let target =
        eddy_sql::types::to_arrow(&column.ty).map_err(|e| EngineError::statement(e.to_string()))?;
    if array.data_type() == &target {
        return Ok(array);
    }
    crate::insert::coerce(array, &target)
}

/// Runs the plan over records of one partition.
pub fn process(
    plan: &StatelessPlan,
    sink_columns: &[Column],
    encoder: &SinkEncoder,
    partition: u32,
    records: &[LogRecord],
) -> Result<StepOutput> {
    let decoded = plan.decoder.decode(partition, records)?;
    let errors = decoded.errors;
    // Which input record each row came from: the decoder leaves out records it could not read.
    let rows_from: Vec<usize> = if errors.is_empty() {
        (0..records.len()).collect()
    } else {
        let bad: std::collections::HashSet<i64> = errors.iter().map(|e| e.offset).collect();
        (0..records.len())
            .filter(|i| !bad.contains(&records[*i].offset))
            .collect()
    };
    let rows = decoded.batch.num_rows();
    let mut batch = decoded.batch;
    let mut rows_from = rows_from;
    let mut has_value = decoded.has_value;
    let mut tombstone = vec![false; rows];
    // A table's row is its key's latest value: a record without a key is no row of it. A push
    // or pull query takes a stream's record whose value object is missing for no event.
    let table = plan.source.kind == eddy_sql::ast::SourceKind::Table;
    let objects = plan.skips_missing_values;
    let dropped = |(i, r): (usize, &usize)| {
        if table {
            records.get(*r).is_some_and(|rec| rec.record.key.is_none())
        } else {
            objects && !has_value.get(i).copied().unwrap_or(true)
        }
    };
    if rows_from.iter().enumerate().any(dropped) {
        let keep: BooleanArray = rows_from
            .iter()
            .enumerate()
            .map(|row| Some(!dropped(row)))
            .collect();
        retain_rows(
            &keep,
            &mut batch,
            (&mut has_value, &mut tombstone, &mut rows_from),
        )?;
    }
    project(
        plan,
        (sink_columns, encoder),
        partition,
        records,
        Projectable {
            batch,
            rows_from,
            has_value,
            tombstone,
        },
        errors,
    )
}

/// Filters, explodes and projects rows into sink records.
pub(crate) fn project(
    plan: &StatelessPlan,
    (sink_columns, encoder): (&[Column], &SinkEncoder),
    partition: u32,
    records: &[LogRecord],
    rows: Projectable,
    errors: Vec<RecordError>,
) -> Result<StepOutput> {
    let Projectable {
        mut batch,
        mut rows_from,
        mut has_value,
        mut tombstone,
    } = rows;
    let table_source = plan.source.kind == eddy_sql::ast::SourceKind::Table;
    // Rows that fail the filter: dropped from a stream; a table forgets the key (a tombstone).
    if let Some(filter) = &plan.filter {
        let mask = filter
            .evaluate(&batch)
            .and_then(|v| v.into_array(batch.num_rows()))
            .map_err(|e| EngineError::statement(format!("Error evaluating WHERE: {e}")))?;
        let mask = mask
            .as_any()
            .downcast_ref::<BooleanArray>()
            .cloned()
            .unwrap_or_else(|| BooleanArray::from(vec![false; batch.num_rows()]));
        // A stream record without a value has no row for the filter to accept.
        let keep: BooleanArray = (0..batch.num_rows())
            .map(|i| {
                let passes = has_value[i] && mask.is_valid(i) && mask.value(i);
                Some(passes || table_source)
            })
            .collect();
        for (i, t) in tombstone.iter_mut().enumerate() {
            *t = *t || (table_source && has_value[i] && !(mask.is_valid(i) && mask.value(i)));
        }
        retain_rows(
            &keep,
            &mut batch,
            (&mut has_value, &mut tombstone, &mut rows_from),
        )?;
    }
    if !plan.table_functions.is_empty() {
        let (exploded, parents) = explode(&batch, plan)?;
        batch = exploded;
        let pick = |v: &[bool]| parents.iter().map(|&p| v[p]).collect::<Vec<_>>();
        has_value = pick(&has_value);
        tombstone = pick(&tombstone);
        rows_from = parents.iter().map(|&p| rows_from[p]).collect();
    }
    emit(
        (&plan.keys, &plan.values),
        (sink_columns, encoder),
        partition,
        records,
        Projectable {
            batch,
            rows_from,
            has_value,
            tombstone,
        },
        errors,
    )
}

/// Keeps the rows `keep` marks, in the batch and in each per-row vector.
fn retain_rows(
    keep: &BooleanArray,
    batch: &mut RecordBatch,
    (has_value, tombstone, rows_from): (&mut Vec<bool>, &mut Vec<bool>, &mut Vec<usize>),
) -> Result<()> {
    *batch = filter_record_batch(batch, keep).map_err(|e| EngineError::statement(e.to_string()))?;
    let kept = |i: usize| keep.is_valid(i) && keep.value(i);
    retain_marked(has_value, kept);
    retain_marked(tombstone, kept);
    retain_marked(rows_from, kept);
    Ok(())
}

/// Keeps the items whose index `kept` accepts.
pub(crate) fn retain_marked<T>(items: &mut Vec<T>, kept: impl Fn(usize) -> bool) {
    let mut index = 0;
    items.retain(|_| {
        let keep = kept(index);
        index += 1;
        keep
    });
}

/// Rows ready to be projected into the sink, and for each the input record it came from,
/// whether it has a value, and whether it is a tombstone.
pub(crate) struct Projectable {
    /// The rows.
    pub batch: RecordBatch,
    /// Index into the input records of each row.
    pub rows_from: Vec<usize>,
    /// Whether each row has a value (a record without one passes through without one).
    pub has_value: Vec<bool>,
    /// Whether each row deletes its key.
    pub tombstone: Vec<bool>,
}

/// Computes the sink's key and value columns over `rows` and encodes them as records.
pub(crate) fn emit(
    (key_outputs, value_outputs): (&[OutputColumn], &[OutputColumn]),
    (sink_columns, encoder): (&[Column], &SinkEncoder),
    partition: u32,
    records: &[LogRecord],
    rows: Projectable,
    mut errors: Vec<RecordError>,
) -> Result<StepOutput> {
    let Projectable {
        batch,
        rows_from,
        has_value,
        tombstone,
    } = rows;
    let rows = batch.num_rows();
    if rows == 0 {
        return Ok(StepOutput {
            records: Vec::new(),
            errors,
        });
    }
    let mut failed: Vec<Option<String>> = vec![None; rows];
    let (arrays, function_errors) = eddy_sql::functions::collect_function_errors(|| {
        evaluate_outputs(
            (key_outputs, value_outputs),
            sink_columns,
            &batch,
            &mut failed,
        )
    });
    let (key_arrays, value_arrays) = arrays?;
    for error in function_errors {
        let reason = format!(
            "Error computing expression with {}: {}",
            error.function, error.message
        );
        if error.rows == rows {
            failed[error.row].get_or_insert(reason);
        } else if let Some(first) = failed.first_mut() {
            // Called on a subset of the rows (inside a CASE): the row is not known exactly.
            first.get_or_insert(format!("{reason} (in a batch starting here)"));
        }
    }
    let mut keys = match &encoder.key_codec {
        Some(codec) => codec.encode(&key_arrays, rows)?,
        None => vec![None; rows],
    };
    if encoder.null_key_when_all_null {
        for (i, key) in keys.iter_mut().enumerate() {
            if key_arrays.iter().all(|a| a.is_null(i)) {
                *key = None;
            }
        }
    }
    if let Some(window) = &encoder.window {
        let bound = |name: &str| {
            batch
                .column_by_name(name)
                .and_then(|c| c.as_any().downcast_ref::<Int64Array>().cloned())
        };
        if let (Some(starts), Some(ends)) = (bound(WINDOWSTART), bound(WINDOWEND)) {
            for (i, key) in keys.iter_mut().enumerate() {
                if let Some(key) = key
                    && starts.is_valid(i)
                {
                    append_window(key, window, starts.value(i), ends.value(i));
                }
            }
        }
    }
    let values = encoder.value_codec.encode(&value_arrays, rows)?;
    let rowtimes = batch
        .column_by_name(crate::query::source::ROWTIME)
        .and_then(|c| c.as_any().downcast_ref::<Int64Array>().cloned());
    let sink_times = match encoder.timestamp_column {
        Some(SinkColumn::Key(i)) => key_arrays.get(i),
        Some(SinkColumn::Value(i)) => value_arrays.get(i),
        None => None,
    }
    .map(|a| cast(a, &DataType::Int64))
    .and_then(|a| a.ok())
    .and_then(|a| a.as_any().downcast_ref::<Int64Array>().cloned());
    let mut out = Vec::with_capacity(rows);
    for (i, (key, value)) in keys.into_iter().zip(values).enumerate() {
        let input = &records[rows_from[i]];
        // A failed expression is null in the output, and the record still goes on, as in ksqlDB.
        if let Some(reason) = failed[i].take() {
            errors.push(RecordError {
                kind: RecordErrorKind::Expression,
                partition,
                offset: input.offset,
                reason,
            });
        }
        let timestamp = sink_times
            .as_ref()
            .filter(|t| t.is_valid(i))
            .map(|t| t.value(i))
            .or_else(|| {
                rowtimes
                    .as_ref()
                    .filter(|t| t.is_valid(i))
                    .map(|t| t.value(i))
            })
            .unwrap_or(input.record.timestamp);
        if timestamp < 0 {
            errors.push(RecordError {
                kind: RecordErrorKind::Timestamp,
                partition,
                offset: input.offset,
                reason: format!("The output timestamp {timestamp} is negative"),
            });
            continue;
        }
        let value = if has_value[i] && !tombstone[i] {
            value
        } else {
            None
        };
        out.push(Record {
            key: key.map(Into::into),
            value: value.map(Into::into),
            timestamp,
            headers: input.record.headers.clone(),
        });
    }
    Ok(StepOutput {
        records: out,
        errors,
    })
}

/// Where the query starts reading each partition: its committed offset, else `initial`.
fn start_positions(store: &Store, group: &str, topic: &str, partitions: u32) -> Result<Vec<i64>> {
    (0..partitions)
        .map(|p| {
            Ok(match store.fetch_offset(group, topic, p)? {
                Some(committed) => committed.offset,
                None => store.log_start_offset(topic, p)?,
            })
        })
        .collect()
}

/// The task of one persistent query. Returns when stopped or when the store fails.
pub async fn run_query(
    store: Store,
    query_id: String,
    (plan, buffering): (QueryPlan, Buffering),
    sink: DataSource,
    shared: Arc<QueryShared>,
    mut stop: watch::Receiver<bool>,
) {
    if let Err(e) = run_query_inner(
        &store,
        &query_id,
        (&plan, buffering),
        &sink,
        &shared,
        &mut stop,
    )
    .await
    {
        warn!(query = %query_id, error = %e, "query stopped with an error");
        *shared.error.lock() = Some(e.to_string());
    }
    shared.finished.store(true, Ordering::SeqCst);
    shared.progress.notify_waiters();
}

async fn run_query_inner(
    store: &Store,
    query_id: &str,
    (plan, buffering): (&QueryPlan, Buffering),
    sink: &DataSource,
    shared: &QueryShared,
    stop: &mut watch::Receiver<bool>,
) -> Result<()> {
    let group = consumer_group(query_id);
    let (inputs, positions) = query_inputs(store, &group, plan)?;
    let mut reader = PartitionReader::over(store, query_id, inputs, positions);
    let mut operator = Operator::new(store, query_id, plan, sink, buffering.enabled())?;
    let log_topic_exists = store.topic_exists(processing_log::PROCESSING_LOG_TOPIC);
    let context = CommitContext {
        query_id,
        group: &group,
        sink_topic: &sink.topic,
        key_suffix: sink
            .window
            .as_ref()
            .map_or(0, crate::query::source::window_bytes),
        error_topic: &plan.source().topic,
        log_errors: log_topic_exists,
    };
    // Commits stay in flight while the next records are processed: they apply in order, each
    // whole, so a crash loses only work whose offsets were not committed either.
    let mut in_flight: std::collections::VecDeque<InFlight> = std::collections::VecDeque::new();
    let mut uncommitted = Uncommitted::default();
    loop {
        if *stop.borrow() {
            break;
        }
        let next = match reader.try_next()? {
            Some(next) => Some(next),
            None => {
                // Caught up: what the record cache holds goes out now, and every commit lands
                // before waiting for input.
                if !uncommitted.is_empty() {
                    in_flight.push_back(uncommitted.submit(store, &mut operator, &context)?);
                }
                while let Some(done) = in_flight.pop_front() {
                    done.finish(shared).await?;
                }
                reader.next(stop).await?
            }
        };
        let Some((index, fetched)) = next else {
            break;
        };
        let input = reader.input(index).clone();
        let (step, state_writes) = operator.step(store, &input, &fetched.records)?;
        uncommitted.add(
            &context,
            operator.state_namespace(),
            (&input, &fetched),
            step,
            state_writes,
        );
        reader.advance(index, fetched.next_offset);
        // A query with a backlog would otherwise run step after step without giving its
        // worker thread back: tasks woken meanwhile (an HTTP answer, a scrape) would wait.
        tokio::task::consume_budget().await;
        // Without a record cache every step commits; with one, the cache flushes (and the
        // step's work commits) once it is full or the commit interval has passed.
        let due = !operator.coalesces()
            || operator.cached_bytes() >= buffering.max_bytes
            || uncommitted.age() >= buffering.interval;
        if due {
            in_flight.push_back(uncommitted.submit(store, &mut operator, &context)?);
            if in_flight.len() > MAX_IN_FLIGHT
                && let Some(done) = in_flight.pop_front()
            {
                done.finish(shared).await?;
            }
        }
    }
    if !uncommitted.is_empty() {
        in_flight.push_back(uncommitted.submit(store, &mut operator, &context)?);
    }
    while let Some(done) = in_flight.pop_front() {
        done.finish(shared).await?;
    }
    Ok(())
}

/// How a query's record cache coalesces updates, from `cache.max.bytes.buffering` and
/// `commit.interval.ms` as ksqlDB reads them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Buffering {
    /// The most bytes of updates the cache holds before it flushes; 0 turns it off, so every
    /// update goes out.
    pub max_bytes: usize,
    /// The longest the cache holds updates before it flushes and the query commits.
    pub interval: Duration,
}

impl Default for Buffering {
    fn default() -> Self {
        Buffering {
            max_bytes: 10 << 20,
            interval: Duration::from_millis(2_000),
        }
    }
}

impl Buffering {
    /// The buffering `properties` ask for, with ksqlDB's defaults for what they leave out.
    pub fn from_properties(properties: &std::collections::HashMap<String, String>) -> Self {
        let get = |name: &str| {
            properties
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .and_then(|(_, v)| v.trim().parse::<u64>().ok())
        };
        let default = Buffering::default();
        Buffering {
            max_bytes: get("cache.max.bytes.buffering")
                .map_or(default.max_bytes, |b| b.min(usize::MAX as u64) as usize),
            interval: get("commit.interval.ms").map_or(default.interval, Duration::from_millis),
        }
    }

    /// Whether updates are coalesced at all.
    pub fn enabled(&self) -> bool {
        self.max_bytes > 0
    }
}

/// What a query's commits name: its group, its sink, and where failed records are logged.
struct CommitContext<'a> {
    query_id: &'a str,
    group: &'a str,
    sink_topic: &'a str,
    /// The bytes of window at the end of each sink key, which the partitioner ignores so that
    /// a key's windows share its partition.
    key_suffix: usize,
    /// The topic named in processing-log entries for records the cache's flush failed on.
    error_topic: &'a str,
    log_errors: bool,
}

/// Work processed since the last commit: one commit being assembled, and what to count once
/// it is written.
#[derive(Default)]
struct Uncommitted {
    commit: Option<Commit>,
    /// Where reading stands in each input advanced since the last commit.
    offsets: std::collections::BTreeMap<(String, u32), i64>,
    processed: u64,
    emitted: u64,
    timestamps: Vec<i64>,
    errors: Vec<RecordError>,
    since: Option<std::time::Instant>,
}

impl Uncommitted {
    fn is_empty(&self) -> bool {
        self.commit.is_none()
    }

    /// How long the oldest uncommitted work has waited.
    fn age(&self) -> Duration {
        self.since.map_or(Duration::ZERO, |t| t.elapsed())
    }

    fn commit(&mut self) -> &mut Commit {
        self.since.get_or_insert_with(std::time::Instant::now);
        self.commit.get_or_insert_with(Commit::new)
    }

    /// Adds one step: its state changes, sink records and failures, and the input's position.
    fn add(
        &mut self,
        context: &CommitContext,
        namespace: Option<&str>,
        (input, fetched): (&Input, &eddy_storage::FetchedRecords),
        step: StepOutput,
        state_writes: crate::query::aggregate::StateWrites,
    ) {
        self.add_output(
            context,
            namespace,
            (step, state_writes),
            (&input.topic, Some(&fetched.records)),
        );
        self.processed += fetched.records.len() as u64;
        self.timestamps
            .extend(fetched.records.iter().map(|r| r.record.timestamp));
        self.offsets
            .insert((input.topic.clone(), input.partition), fetched.next_offset);
    }

    fn add_output(
        &mut self,
        context: &CommitContext,
        namespace: Option<&str>,
        (step, state_writes): (StepOutput, crate::query::aggregate::StateWrites),
        (topic, records): (&str, Option<&[LogRecord]>),
    ) {
        let commit = self.commit();
        if let Some(namespace) = namespace {
            for (key, value) in state_writes {
                match value {
                    Some(value) => commit.put_state(namespace.to_string(), key, value),
                    None => commit.delete_state(namespace.to_string(), key),
                };
            }
        }
        let mut log_entries = Vec::with_capacity(step.errors.len());
        for error in &step.errors {
            warn!(query = %context.query_id, partition = error.partition, offset = error.offset, reason = %error.reason, "record failed");
            let record = records.and_then(|r| r.iter().find(|r| r.offset == error.offset));
            log_entries.push(processing_log::entry(
                context.query_id,
                topic,
                error,
                record,
            ));
        }
        if !log_entries.is_empty() && context.log_errors {
            commit.append(processing_log::PROCESSING_LOG_TOPIC, Some(0), log_entries);
        }
        self.emitted += step.records.len() as u64;
        for chunk in batches_under(step.records, APPEND_BYTES) {
            self.commit().append_by_key_prefix(
                context.sink_topic.to_string(),
                context.key_suffix,
                chunk,
            );
        }
        self.errors.extend(step.errors);
    }

    /// Flushes the operator's record cache into the commit, adds the inputs' positions, and
    /// submits it.
    fn submit(
        &mut self,
        store: &Store,
        operator: &mut Operator,
        context: &CommitContext,
    ) -> Result<InFlight> {
        let (step, state_writes) = operator.flush(store)?;
        self.add_output(
            context,
            operator.state_namespace(),
            (step, state_writes),
            (context.error_topic, None),
        );
        let mut done = std::mem::take(self);
        let mut commit = done.commit.take().unwrap_or_default();
        for ((topic, partition), next_offset) in done.offsets {
            commit.commit_offset(
                context.group.to_string(),
                topic,
                partition,
                OffsetAndMetadata::new(next_offset),
            );
        }
        Ok(InFlight {
            commit: store.commit_pending(commit)?,
            processed: done.processed,
            emitted: done.emitted,
            timestamps: done.timestamps,
            errors: done.errors,
        })
    }
}

/// Commits a query may have submitted and not yet seen written.
const MAX_IN_FLIGHT: usize = 2;

/// A submitted commit, and what to count once it is written.
struct InFlight {
    commit: eddy_storage::PendingCommit,
    processed: u64,
    /// Records written to the sink.
    emitted: u64,
    /// The input records' timestamps, for the end-to-end latency.
    timestamps: Vec<i64>,
    errors: Vec<RecordError>,
}

impl InFlight {
    async fn finish(self, shared: &QueryShared) -> Result<()> {
        self.commit.wait().await?;
        shared
            .processed
            .fetch_add(self.processed, Ordering::Relaxed);
        shared
            .failed
            .fetch_add(self.errors.len() as u64, Ordering::Relaxed);
        shared.emitted.fetch_add(self.emitted, Ordering::Relaxed);
        let now_ms = eddy_storage::now_ms();
        shared.last_message_ms.store(now_ms, Ordering::Relaxed);
        shared
            .throughput
            .lock()
            .record((now_ms / 1000) as u64, self.processed);
        if let Some(histogram) = &shared.e2e_latency {
            let local = histogram.local();
            for t in self.timestamps {
                local.observe((now_ms - t).max(0) as f64 / 1000.0);
            }
            local.flush();
        }
        shared.record_errors(self.errors);
        shared.progress.notify_waiters();
        Ok(())
    }
}

/// One partition a query reads, and which of its sources it belongs to.
#[derive(Debug, Clone)]
pub(crate) struct Input {
    /// The source's index among the query's sources (a join's left is 0, right 1).
    pub side: usize,
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: u32,
}

/// Reads partitions in turn from given positions, waiting for input when all are read to
/// their end.
pub(crate) struct PartitionReader {
    store: Store,
    query_id: String,
    inputs: Vec<Input>,
    positions: Vec<i64>,
    /// Records read from an input but not yet handed out.
    pending: Vec<Option<eddy_storage::FetchedRecords>>,
    /// Whether inputs are merged in timestamp order (see [`PartitionReader::try_next`]).
    ordered: bool,
    /// The next read of the input last handed out, started while the caller processes it.
    prefetch: Option<Prefetch>,
}

/// A read of one input begun ahead on a blocking thread: reading and decoding the log takes
/// a query with a backlog about a third of its time, which then overlaps processing.
struct Prefetch {
    index: usize,
    position: i64,
    result: std::sync::mpsc::Receiver<eddy_storage::Result<eddy_storage::FetchedRecords>>,
}

impl PartitionReader {
    /// A reader of `inputs`, each starting at its position.
    pub(crate) fn over(
        store: &Store,
        query_id: &str,
        inputs: Vec<Input>,
        positions: Vec<i64>,
    ) -> Self {
        PartitionReader {
            store: store.clone(),
            query_id: query_id.to_string(),
            pending: (0..inputs.len()).map(|_| None).collect(),
            inputs,
            positions,
            ordered: true,
            prefetch: None,
        }
    }

    /// Reads input `i` from `position`, taking the read begun ahead if it is that one.
    fn read(
        &mut self,
        i: usize,
        position: i64,
    ) -> eddy_storage::Result<eddy_storage::FetchedRecords> {
        if let Some(ahead) = self.prefetch.take_if(|p| p.index == i)
            && ahead.position == position
            && let Ok(result) = ahead.result.recv()
        {
            return result;
        }
        let input = &self.inputs[i];
        self.store
            .read_records(&input.topic, input.partition, position, READ_BYTES)
    }

    /// Begins reading input `i` from `position` on a blocking thread, when the log is known
    /// to hold more there and a runtime is at hand.
    fn read_ahead(&mut self, i: usize, fetched: &eddy_storage::FetchedRecords) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if fetched.next_offset >= fetched.high_watermark {
            return;
        }
        let (tx, rx) = std::sync::mpsc::channel();
        let store = self.store.clone();
        let (topic, partition) = (self.inputs[i].topic.clone(), self.inputs[i].partition);
        let position = fetched.next_offset;
        runtime.spawn_blocking(move || {
            let _ = tx.send(store.read_records(&topic, partition, position, READ_BYTES));
        });
        self.prefetch = Some(Prefetch {
            index: i,
            position,
            result: rx,
        });
    }

    /// Hands out each input's records as they come, in whole reads, without merging inputs
    /// by time: for readers (such as a table's materializer) to whom order across partitions
    /// means nothing, and for whom many small steps would cost a commit each.
    pub(crate) fn unordered(mut self) -> Self {
        self.ordered = false;
        self
    }

    /// Where reading stands in each input.
    pub(crate) fn positions(&self) -> &[i64] {
        &self.positions
    }

    /// The input at `index`.
    pub(crate) fn input(&self, index: usize) -> &Input {
        &self.inputs[index]
    }

    /// Records that the caller has consumed input `index` up to `next_offset`.
    pub(crate) fn advance(&mut self, index: usize, next_offset: i64) {
        if let Some(p) = self.positions.get_mut(index) {
            *p = next_offset;
            self.pending[index] = None;
        }
    }

    /// The next records of some input if any are there now, without waiting or advancing.
    /// Inputs are merged in timestamp order, as Kafka Streams picks the partition with the
    /// oldest record: of the inputs with records, the one whose first record is oldest goes
    /// first, and only up to where another input's first record is older still. So a table
    /// a stream is joined with is read up to the stream's time before the stream goes on.
    pub(crate) fn try_next(&mut self) -> Result<Option<(usize, eddy_storage::FetchedRecords)>> {
        for i in 0..self.inputs.len() {
            if self.pending[i].is_some() {
                continue;
            }
            let position = self.positions[i];
            match self.read(i, position) {
                Ok(fetched) if fetched.next_offset > position => self.pending[i] = Some(fetched),
                Ok(_) => {}
                Err(StorageError::OffsetOutOfRange { log_start, .. }) => {
                    let input = &self.inputs[i];
                    warn!(query = %self.query_id, topic = %input.topic, partition = input.partition, from = position, to = log_start, "input offset out of range; skipping to the log start");
                    self.positions[i] = log_start;
                }
                Err(e) => return Err(e.into()),
            }
        }
        let head = |f: &eddy_storage::FetchedRecords| {
            f.records.first().map_or(i64::MIN, |r| r.record.timestamp)
        };
        let Some(chosen) = (0..self.inputs.len())
            .filter(|&i| self.pending[i].is_some())
            .min_by_key(|&i| self.pending[i].as_ref().map_or(i64::MAX, head))
        else {
            return Ok(None);
        };
        let bound = (0..self.inputs.len())
            .filter(|_| self.ordered)
            .filter(|&i| i != chosen)
            .filter_map(|i| self.pending[i].as_ref().map(head))
            .min();
        let Some(mut fetched) = self.pending[chosen].take() else {
            return Ok(None);
        };
        if let Some(bound) = bound
            && let Some(cut) = fetched
                .records
                .iter()
                .skip(1)
                .position(|r| r.record.timestamp > bound)
        {
            let cut = cut + 1;
            fetched.next_offset = fetched.records[cut].offset;
            fetched.records.truncate(cut);
        }
        self.read_ahead(chosen, &fetched);
        Ok(Some((chosen, fetched)))
    }

    /// The next records of some input, without advancing (see [`PartitionReader::advance`]),
    /// or `None` once `stop` is set. Waits without polling while everything is read.
    pub(crate) async fn next(
        &mut self,
        stop: &mut watch::Receiver<bool>,
    ) -> Result<Option<(usize, eddy_storage::FetchedRecords)>> {
        loop {
            if *stop.borrow() || self.inputs.is_empty() {
                return Ok(None);
            }
            if let Some(next) = self.try_next()? {
                return Ok(Some(next));
            }
            debug!(query = %self.query_id, "caught up; waiting for input");
            let waits = self
                .inputs
                .iter()
                .zip(&self.positions)
                .map(|(input, &at)| {
                    let store = self.store.clone();
                    let topic = input.topic.clone();
                    let partition = input.partition;
                    Box::pin(async move {
                        store
                            .wait_for_data(&topic, partition, at, Duration::from_secs(1))
                            .await
                    })
                })
                .collect::<Vec<_>>();
            tokio::select! {
                _ = stop.changed() => {}
                _ = select_all(waits) => {}
            }
        }
    }
}

/// Every partition of every source of `plan`, with where the query's group stands in each.
pub(crate) fn query_inputs(
    store: &Store,
    group: &str,
    plan: &QueryPlan,
) -> Result<(Vec<Input>, Vec<i64>)> {
    let mut inputs = Vec::new();
    let mut positions = Vec::new();
    for (side, source) in plan.sources().into_iter().enumerate() {
        let partitions = store.partition_count(&source.topic)?;
        positions.extend(start_positions(store, group, &source.topic, partitions)?);
        inputs.extend((0..partitions).map(|partition| Input {
            side,
            topic: source.topic.clone(),
            partition,
        }));
    }
    Ok((inputs, positions))
}

/// A query's processing, whatever its kind: records in, sink records and state changes out.
pub(crate) struct Operator<'a> {
    plan: &'a QueryPlan,
    encoder: SinkEncoder,
    sink_columns: Vec<Column>,
    aggregate_state: Option<AggregateState>,
    join_states: Vec<JoinState>,
}

impl<'a> Operator<'a> {
    /// The operator of `plan` writing into `sink`; with `coalesce`, an aggregation's updates
    /// wait in its record cache for [`Operator::flush`].
    pub(crate) fn new(
        store: &Store,
        query_id: &str,
        plan: &'a QueryPlan,
        sink: &DataSource,
        coalesce: bool,
    ) -> Result<Self> {
        Ok(Operator {
            plan,
            encoder: SinkEncoder::new(sink)?,
            sink_columns: sink.columns.clone(),
            aggregate_state: match plan {
                QueryPlan::Aggregate(p) => Some(AggregateState::new(
                    query_id,
                    p,
                    (sink, store.partition_count(&p.source.topic).unwrap_or(1)),
                    coalesce,
                )?),
                _ => None,
            },
            join_states: match plan {
                QueryPlan::Join(p) => p.chain.load_states(store, query_id)?,
                QueryPlan::Aggregate(p) => match &p.join {
                    Some(chain) => chain.load_states(store, query_id)?,
                    None => Vec::new(),
                },
                QueryPlan::Stateless(_) => Vec::new(),
            },
        })
    }

    /// The state-store namespace of its state, if it keeps any.
    pub(crate) fn state_namespace(&self) -> Option<&str> {
        self.aggregate_state
            .as_ref()
            .map(AggregateState::namespace)
            .or_else(|| self.join_states.first().map(JoinState::namespace))
    }

    /// Whether its updates wait in a record cache until [`Operator::flush`].
    pub(crate) fn coalesces(&self) -> bool {
        self.aggregate_state
            .as_ref()
            .is_some_and(AggregateState::coalesces)
    }

    /// Estimated bytes its record cache holds.
    pub(crate) fn cached_bytes(&self) -> usize {
        self.aggregate_state
            .as_ref()
            .map_or(0, AggregateState::cached_bytes)
    }

    /// Empties its record cache: the records and state changes the cached updates amount to.
    pub(crate) fn flush(
        &mut self,
        store: &Store,
    ) -> Result<(StepOutput, crate::query::aggregate::StateWrites)> {
        match (self.plan, self.aggregate_state.as_mut()) {
            (QueryPlan::Aggregate(plan), Some(state)) if state.coalesces() => {
                state.flush(store, plan, (&self.sink_columns, &self.encoder))
            }
            _ => Ok((
                StepOutput {
                    records: Vec::new(),
                    errors: Vec::new(),
                },
                Vec::new(),
            )),
        }
    }

    /// Processes records of one partition.
    pub(crate) fn step(
        &mut self,
        store: &Store,
        input: &Input,
        records: &[LogRecord],
    ) -> Result<(StepOutput, crate::query::aggregate::StateWrites)> {
        let partition = input.partition;
        if let QueryPlan::Join(join) = self.plan {
            return process_join(
                join,
                &mut self.join_states,
                (&self.sink_columns, &self.encoder),
                input.side,
                partition,
                records,
            );
        }
        if let (QueryPlan::Aggregate(aggregate), Some(state)) =
            (self.plan, self.aggregate_state.as_mut())
            && let Some(chain) = &aggregate.join
        {
            let joined = join_rows(chain, &mut self.join_states, input.side, partition, records)?;
            let Some(batch) = joined.batch else {
                return Ok((
                    StepOutput {
                        records: Vec::new(),
                        errors: joined.errors,
                    },
                    joined.writes,
                ));
            };
            let rows = joined.results.len();
            return aggregate_changes(
                store,
                aggregate,
                state,
                (&self.sink_columns, &self.encoder),
                (partition, &joined.results),
                Changes {
                    batch,
                    rows_from: (0..rows).collect(),
                    retract: vec![false; rows],
                    has_value: joined.tombstone.iter().map(|t| !t).collect(),
                    errors: joined.errors,
                },
                joined.writes,
            );
        }
        match (self.plan, self.aggregate_state.as_mut()) {
            (QueryPlan::Aggregate(aggregate), Some(state)) => process_aggregate(
                store,
                aggregate,
                state,
                (&self.sink_columns, &self.encoder),
                partition,
                records,
            ),
            (QueryPlan::Stateless(stateless), _) => Ok((
                process(
                    stateless,
                    &self.sink_columns,
                    &self.encoder,
                    partition,
                    records,
                )?,
                Vec::new(),
            )),
            (QueryPlan::Aggregate(_), None) | (QueryPlan::Join(_), _) => {
                Err(EngineError::statement("a stateful query without its state"))
            }
        }
    }
}
