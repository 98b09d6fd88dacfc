//! `nexmark`: the field's standard benchmark. Events from Nexmark's generator (the `nexmark`
//! crate, RisingWave's port of the Beam/Flink generator) are loaded as JSON into three topics,
//! `nexmark-person`, `nexmark-auction` and `nexmark-bid`; each query (its SQL in
//! `tests/nexmark/qN.sql`) runs as a persistent query until it has read every event. Its output
//! is checked against the same query computed as a batch by DataFusion over the same events: a
//! wrong answer fails the run.

use std::collections::BTreeMap;
use std::sync::Arc;

use anyhow::Context;
use datafusion::arrow::json::{ArrayWriter, ReaderBuilder};
use datafusion::datasource::MemTable;
use datafusion::prelude::SessionContext;
use eddy_storage::Record;
use nexmark::EventGenerator;
use nexmark::config::NexmarkConfig;
use nexmark::event::Event;
use serde_json::{Value, json};

use crate::bench::{BenchEngine, PeakRss, Throughput};
use crate::qtt_avro::{self, Writer};

/// The sources, as `tests/nexmark/ddl.sql` declares them.
const DDL: &str = include_str!("../../nexmark/ddl.sql");

/// A Nexmark query: its Eddy SQL, the stream it writes, and the same query as a batch for
/// DataFusion over tables `person`, `auction` and `bid`.
#[derive(Debug, Clone, Copy)]
pub struct Query {
    /// `q0`, `q1`, ...
    pub name: &'static str,
    sql: &'static str,
    sink: &'static str,
    /// How the sink's records are keyed.
    key: SinkKey,
    batch: &'static str,
    /// The fewest events whose time closes one of its windows, for a result to check (the
    /// generator makes 10,000 events a second of event time).
    pub min_events: u64,
}

/// How a query's sink is keyed, for the check to read its rows back.
#[derive(Debug, Clone, Copy)]
enum SinkKey {
    /// A stream whose rows are their values.
    Unkeyed,
    /// A stream keyed by this column (a KAFKA BIGINT), put back among each row's columns.
    Stream(&'static str),
    /// A table keyed by this column: the result is the latest row of each key.
    Table(&'static str),
}

/// The queries Eddy runs so far.
pub const QUERIES: &[Query] = &[
    Query {
        name: "q0",
        sql: include_str!("../../nexmark/q0.sql"),
        sink: "NEXMARK_Q0",
        key: SinkKey::Unkeyed,
        batch: "SELECT auction, bidder, price, date_time, extra FROM bid",
        min_events: 0,
    },
    Query {
        name: "q1",
        sql: include_str!("../../nexmark/q1.sql"),
        sink: "NEXMARK_Q1",
        key: SinkKey::Unkeyed,
        batch: "SELECT auction, bidder, 0.908 * price AS price, date_time, extra FROM bid",
        min_events: 0,
    },
    Query {
        name: "q2",
        sql: include_str!("../../nexmark/q2.sql"),
        sink: "NEXMARK_Q2",
        key: SinkKey::Unkeyed,
        batch: "SELECT auction, price FROM bid WHERE auction % 123 = 0",
        min_events: 0,
    },
    Query {
        name: "q3",
        sql: include_str!("../../nexmark/q3.sql"),
        sink: "NEXMARK_Q3",
        key: SinkKey::Table("ID"),
        batch: "SELECT p.name, p.city, p.state, a.id FROM auction a JOIN person p ON a.seller = p.id \
            WHERE a.category = 10 AND (p.state = 'OR' OR p.state = 'ID' OR p.state = 'CA')",
        min_events: 0,
    },
    Query {
        name: "q4",
        sql: include_str!("../../nexmark/q4.sql"),
        sink: "NEXMARK_Q4",
        key: SinkKey::Table("CATEGORY"),
        batch: "SELECT q.category, AVG(q.final) AS avg_final FROM ( \
                SELECT MAX(b.price) AS final, a.category FROM auction a, bid b \
                WHERE a.id = b.auction AND b.date_time BETWEEN a.date_time AND a.expires \
                GROUP BY a.id, a.category) q \
            GROUP BY q.category",
        min_events: 0,
    },
    Query {
        name: "q5",
        sql: include_str!("../../nexmark/q5.sql"),
        sink: "NEXMARK_Q5",
        key: SinkKey::Table("AUCTION"),
        // The windows the events closed: a streaming query has no end of input, so a window
        // is final once event time reaches its end.
        batch: "WITH hops AS ( \
                SELECT auction, date_time - date_time % 2000 - k * 2000 AS starttime FROM bid \
                CROSS JOIN (VALUES (0), (1), (2), (3), (4)) AS h(k)), \
            counts AS ( \
                SELECT auction, starttime, COUNT(*) AS num FROM hops \
                WHERE starttime + 10000 <= (SELECT MAX(date_time) FROM bid) \
                GROUP BY auction, starttime), \
            maxes AS (SELECT starttime, MAX(num) AS maxn FROM counts GROUP BY starttime) \
            SELECT c.auction, c.num, c.starttime FROM counts c \
            JOIN maxes m ON c.starttime = m.starttime WHERE c.num >= m.maxn",
        min_events: 0,
    },
    Query {
        name: "q7",
        sql: include_str!("../../nexmark/q7.sql"),
        sink: "NEXMARK_Q7",
        key: SinkKey::Stream("PRICE"),
        // The windows the events closed, as for q5.
        batch: "WITH maxes AS ( \
                SELECT date_time - date_time % 10000 AS starttime, MAX(price) AS maxprice \
                FROM bid GROUP BY date_time - date_time % 10000) \
            SELECT b.auction, b.price, b.bidder, b.date_time, b.extra FROM bid b \
            JOIN maxes m ON b.date_time - b.date_time % 10000 = m.starttime \
                AND b.price = m.maxprice \
            WHERE m.starttime + 10000 <= (SELECT MAX(date_time) FROM bid)",
        min_events: 110_000,
    },
    Query {
        name: "q8",
        sql: include_str!("../../nexmark/q8.sql"),
        sink: "NEXMARK_Q8",
        key: SinkKey::Table("ID"),
        batch: "SELECT p.id, p.name, p.starttime FROM ( \
                SELECT id, name, date_time - date_time % 10000 AS starttime FROM person \
                GROUP BY id, name, date_time - date_time % 10000) p \
            JOIN ( \
                SELECT seller, date_time - date_time % 10000 AS starttime FROM auction \
                GROUP BY seller, date_time - date_time % 10000) a \
            ON p.id = a.seller AND p.starttime = a.starttime",
        min_events: 0,
    },
];

/// The events of one run, as JSON lines per kind.
pub struct Events {
    person: Vec<String>,
    auction: Vec<String>,
    bid: Vec<String>,
}

impl Events {
    /// The first `count` events of Nexmark's default generator.
    pub fn generate(count: u64) -> Events {
        let mut events = Events {
            person: Vec::new(),
            auction: Vec::new(),
            bid: Vec::new(),
        };
        // `EventGenerator::default()` derives an empty configuration; Nexmark's defaults
        // (proportions 1:3:46, 10,000 events/s, ...) come from `NexmarkConfig`.
        let generator = EventGenerator::new(NexmarkConfig::default());
        for event in generator.take(count as usize) {
            match event {
                // The crate writes states in lower case; Nexmark's generator (Beam's, which
                // Flink's suite runs) writes them as US postal codes, which q3 selects by.
                Event::Person(p) => events.person.push(
                    json!({"id": p.id, "name": p.name, "email_address": p.email_address,
                        "credit_card": p.credit_card, "city": p.city,
                        "state": p.state.to_uppercase(),
                        "date_time": p.date_time, "extra": p.extra})
                    .to_string(),
                ),
                Event::Auction(a) => events.auction.push(
                    json!({"id": a.id, "item_name": a.item_name, "description": a.description,
                        "initial_bid": a.initial_bid, "reserve": a.reserve,
                        "date_time": a.date_time, "expires": a.expires, "seller": a.seller,
                        "category": a.category, "extra": a.extra})
                    .to_string(),
                ),
                Event::Bid(b) => events.bid.push(
                    json!({"auction": b.auction, "bidder": b.bidder, "price": b.price,
                        "channel": b.channel, "url": b.url, "date_time": b.date_time,
                        "extra": b.extra})
                    .to_string(),
                ),
            }
        }
        events
    }

    /// How many events in all, and their bytes.
    pub fn size(&self) -> (u64, u64) {
        let all = || self.person.iter().chain(&self.auction).chain(&self.bid);
        (all().count() as u64, all().map(|e| e.len() as u64).sum())
    }

    /// Each kind's table name, topic and JSON lines.
    pub fn kinds(&self) -> [(&'static str, &'static str, &[String]); 3] {
        [
            ("person", "nexmark-person", &self.person),
            ("auction", "nexmark-auction", &self.auction),
            ("bid", "nexmark-bid", &self.bid),
        ]
    }
}

/// One query's run: its throughput over every event loaded, and its peak memory.
#[derive(Debug)]
pub struct QueryRun {
    /// Events per second (and per CPU-second) from the query's start until it read them all.
    pub throughput: Throughput,
    /// Rows it wrote.
    pub rows: usize,
    /// Peak memory of the process.
    pub peak_rss: PeakRss,
    /// What the query itself took: the peak anonymous memory while it ran, less that when it
    /// began (the generated events the harness holds excluded).
    pub query_memory: Option<u64>,
}

/// How the events' values are serialized in their topics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// JSON objects.
    Json,
    /// Confluent-framed Avro, written with the schemas the sources registered, as a producer
    /// using the subject's latest schema writes them.
    Avro,
}

/// Loads the events in `format`, runs `query` over them, and checks its output against
/// DataFusion's.
pub fn run(query: &Query, events: &Events, format: Format) -> anyhow::Result<QueryRun> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    // Sources declared over the topics of the queries' own tables (q5's) follow the format too.
    let in_format = |sql: &str| match format {
        Format::Json => sql.to_string(),
        Format::Avro => sql.replace("value_format='JSON'", "value_format='AVRO'"),
    };
    let (ddl, sql) = (in_format(DDL), in_format(query.sql));
    let (timed, output, (peak_rss, before), registry, bytes) = runtime.block_on(async {
        let setup = format!("SET 'auto.offset.reset' = 'earliest';\n{ddl}");
        let bench = BenchEngine::open(&setup).await?;
        let registry = bench.schema_registry().clone();
        let mut bytes = 0;
        for (_, topic, lines) in events.kinds() {
            let writer = match format {
                Format::Json => None,
                Format::Avro => Some(
                    Writer::latest(&registry, &format!("{topic}-value"))
                        .await
                        .with_context(|| format!("no schema registered for {topic}"))?,
                ),
            };
            for chunk in lines.chunks(10_000) {
                let records = chunk
                    .iter()
                    .map(|line| record(topic, line, writer.as_ref()))
                    .collect::<anyhow::Result<Vec<_>>>()?;
                bytes += records
                    .iter()
                    .map(|r| r.value.as_ref().map_or(0, |v| v.len() as u64))
                    .sum::<u64>();
                bench.append(topic, records.into_iter()).await?;
            }
        }
        let before = super::status_bytes("RssAnon:");
        let (timed, output, peak) = bench.time_query_reading(&sql, query.sink).await?;
        anyhow::Ok((timed, output, (peak, before), registry, bytes))
    })?;
    let decode = |value: &[u8]| -> anyhow::Result<Value> {
        match format {
            Format::Json => serde_json::from_slice(value).context("a row Eddy wrote is not JSON"),
            Format::Avro => qtt_avro::read(&registry, value).map_err(anyhow::Error::msg),
        }
    };
    let got = match query.key {
        SinkKey::Unkeyed => canonical_rows(
            output.iter().filter_map(|(_, value)| value.as_deref()),
            &decode,
        )?,
        SinkKey::Stream(key) => keyed_rows(
            key,
            output.iter().map(|(k, v)| (k.as_slice(), v.as_deref())),
            &decode,
        )?,
        SinkKey::Table(key) => {
            let mut latest = BTreeMap::new();
            for (k, value) in &output {
                latest.insert(k.as_slice(), value.as_deref());
            }
            keyed_rows(key, latest.into_iter(), &decode)?
        }
    };
    let expected = runtime.block_on(batch_answer(query, events))?;
    if got != expected {
        let missing = expected.iter().find(|(row, n)| got.get(*row) != Some(n));
        let extra = got.iter().find(|(row, n)| expected.get(*row) != Some(n));
        anyhow::bail!(
            "Eddy's {} rows differ from DataFusion's {}; first expected row not matched: {missing:?}; first row Eddy wrote that DataFusion did not: {extra:?}",
            got.values().sum::<usize>(),
            expected.values().sum::<usize>(),
        );
    }
    Ok(QueryRun {
        throughput: Throughput::of(events.size().0, bytes, timed),
        rows: got.values().sum(),
        peak_rss,
        query_memory: peak_rss
            .anonymous
            .zip(before)
            .map(|(p, b)| p.saturating_sub(b)),
    })
}

/// An event's record, timestamped with the event's time as a producer of events would: a
/// person or an auction keyed by its id (a KAFKA BIGINT, big-endian), so their topics are also
/// tables by id; bids unkeyed. Its value is the JSON line, or written with `avro`.
pub(crate) fn record(topic: &str, line: &str, avro: Option<&Writer>) -> anyhow::Result<Record> {
    let parsed: Value = serde_json::from_str(line)?;
    let value = match avro {
        None => line.as_bytes().to_vec(),
        Some(writer) => writer.write(&parsed).map_err(anyhow::Error::msg)?,
    };
    let time = parsed["date_time"].as_i64().unwrap_or_default();
    if topic == "nexmark-bid" {
        return Ok(Record::unkeyed(value, time));
    }
    let id = parsed["id"].as_i64().unwrap_or_default();
    Ok(Record::keyed(id.to_be_bytes().to_vec(), value, time))
}

/// The query computed as a batch by DataFusion over the same events.
async fn batch_answer(query: &Query, events: &Events) -> anyhow::Result<BTreeMap<String, usize>> {
    let ctx = SessionContext::new();
    for (table, _, lines) in events.kinds() {
        let schema = Arc::new(table_schema(table));
        let ndjson = lines.join("\n");
        let reader = ReaderBuilder::new(schema.clone())
            .with_batch_size(8192)
            .build(ndjson.as_bytes())?;
        let batches = reader.collect::<Result<Vec<_>, _>>()?;
        ctx.register_table(table, Arc::new(MemTable::try_new(schema, vec![batches])?))?;
    }
    let batches = ctx.sql(query.batch).await?.collect().await?;
    let mut writer = ArrayWriter::new(Vec::new());
    for batch in &batches {
        writer.write(batch)?;
    }
    writer.finish()?;
    let json = writer.into_inner();
    let rows: Vec<Value> = if json.is_empty() {
        Vec::new()
    } else {
        serde_json::from_slice(&json)?
    };
    Ok(multiset(rows.iter()))
}

fn table_schema(table: &str) -> datafusion::arrow::datatypes::Schema {
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    let field = |name: &str, t: DataType| Field::new(name, t, true);
    let (int, text) = (DataType::Int64, DataType::Utf8);
    match table {
        "person" => Schema::new(vec![
            field("id", int.clone()),
            field("name", text.clone()),
            field("email_address", text.clone()),
            field("credit_card", text.clone()),
            field("city", text.clone()),
            field("state", text.clone()),
            field("date_time", int),
            field("extra", text),
        ]),
        "auction" => Schema::new(vec![
            field("id", int.clone()),
            field("item_name", text.clone()),
            field("description", text.clone()),
            field("initial_bid", int.clone()),
            field("reserve", int.clone()),
            field("date_time", int.clone()),
            field("expires", int.clone()),
            field("seller", int.clone()),
            field("category", int),
            field("extra", text),
        ]),
        _ => Schema::new(vec![
            field("auction", int.clone()),
            field("bidder", int.clone()),
            field("price", int.clone()),
            field("channel", text.clone()),
            field("url", text.clone()),
            field("date_time", int),
            field("extra", text),
        ]),
    }
}

/// The rows of records keyed by a KAFKA BIGINT, each with its key among its columns as
/// `key`; a record without a value holds no row.
fn keyed_rows<'a>(
    key: &str,
    records: impl Iterator<Item = (&'a [u8], Option<&'a [u8]>)>,
    decode: &dyn Fn(&[u8]) -> anyhow::Result<Value>,
) -> anyhow::Result<BTreeMap<String, usize>> {
    let mut rows = Vec::new();
    for (k, value) in records {
        let Some(value) = value else { continue };
        let id: [u8; 8] = k
            .get(..8)
            .and_then(|k| k.try_into().ok())
            .context("a sink key is not a BIGINT")?;
        let mut row = decode(value)?;
        if let Value::Object(fields) = &mut row {
            fields.insert(key.to_string(), json!(i64::from_be_bytes(id)));
        }
        rows.push(row);
    }
    Ok(multiset(rows.iter()))
}

/// Rows as a multiset of canonical JSON texts.
fn canonical_rows<'a>(
    values: impl Iterator<Item = &'a [u8]>,
    decode: &dyn Fn(&[u8]) -> anyhow::Result<Value>,
) -> anyhow::Result<BTreeMap<String, usize>> {
    let rows = values.map(decode).collect::<anyhow::Result<Vec<_>>>()?;
    Ok(multiset(rows.iter()))
}

/// How many times each row occurs, by its canonical text.
fn multiset<'a>(rows: impl Iterator<Item = &'a Value>) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for row in rows {
        *out.entry(canonical(row)).or_default() += 1;
    }
    out
}

/// A row with its column names in upper case (as ksqlDB names them) and its numbers to six
/// decimals, so a DECIMAL and a DOUBLE of the same value compare equal.
fn canonical(row: &Value) -> String {
    let Value::Object(fields) = row else {
        return row.to_string();
    };
    let fields: BTreeMap<String, String> = fields
        .iter()
        .map(|(name, value)| {
            let value = match value {
                Value::Number(n) => format!("{:.6}", n.as_f64().unwrap_or(f64::NAN)),
                other => other.to_string(),
            };
            (name.to_uppercase(), value)
        })
        .collect();
    format!("{fields:?}")
}
