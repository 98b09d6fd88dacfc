//! `eddy-bench`: Eddy's benchmark harness. Each subcommand is a scenario.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use eddy_storage::SyncPolicy;
use eddy_tests::bench::{
    self,
    join::JoinBenchConfig,
    log::LogBenchConfig,
    median,
    stateless::{StatelessBenchConfig, ValueFormat},
};

// The same allocator as the `eddy` binary, so the figures are the server's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Eddy's benchmark harness. Run it in release mode:
/// `cargo run --release -p eddy-tests --bin eddy-bench -- <scenario>`.
#[derive(Debug, Parser)]
#[command(name = "eddy-bench", version, about)]
struct Cli {
    #[command(subcommand)]
    scenario: Scenario,
    /// The query scenarios' stores read their files through mmap (the server's
    /// --store-mmap-reads).
    #[arg(long, global = true)]
    store_mmap_reads: bool,
}

#[derive(Debug, Subcommand)]
enum Scenario {
    /// Append records in batches to several partitions, then read them all back.
    Log {
        /// Total records to append.
        #[arg(long, default_value_t = 1_000_000)]
        records: u64,
        /// Value size of each record, in bytes.
        #[arg(long, default_value_t = 100)]
        record_size: usize,
        /// Partitions, each with its own appender task.
        #[arg(long, default_value_t = 8)]
        partitions: u32,
        /// Records per appended batch.
        #[arg(long, default_value_t = 1_000)]
        batch_size: usize,
        /// Sync policy: always, interval, interval:<ms> or os.
        #[arg(long, default_value = "interval")]
        sync: SyncPolicy,
        /// Runs; the figures printed are medians.
        #[arg(long, default_value_t = 3)]
        runs: usize,
        /// Keep the store here instead of a temporary directory (emptied first).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Also append through the leader of a replicated log of this many nodes, in this
        /// process on loopback (3 or 5), and compare with one node.
        #[arg(long, default_value_t = 1)]
        replicas: u32,
        /// With --replicas: how many entries each node's Raft log grows by between snapshots
        /// of its store.
        #[arg(long, default_value_t = eddy_storage::DEFAULT_SNAPSHOT_ENTRIES)]
        snapshot_entries: u64,
    },
    /// A persistent query filters and projects JSON records (about 200 B, 5 fields) from one
    /// stream into another on one core; the baseline is DataFusion doing the same as a batch job.
    Stateless {
        /// Input records.
        #[arg(long, default_value_t = 1_000_000)]
        records: u64,
        /// The records' value format.
        #[arg(long, value_enum, default_value_t = ValueFormat::Json)]
        format: ValueFormat,
        /// Runs; the figures printed are medians.
        #[arg(long, default_value_t = 3)]
        runs: usize,
    },
    /// A persistent query enriches JSON events with a table (a stream-table join) on one core;
    /// the baseline is DataFusion's hash join over the same data as a batch job.
    Join {
        /// Events in the stream.
        #[arg(long, default_value_t = 1_000_000)]
        events: u64,
        /// Rows in the table.
        #[arg(long, default_value_t = 100_000)]
        rows: u64,
        /// The most entries of join state the query keeps in memory (the server's
        /// --state-cache-entries).
        #[arg(long, default_value_t = eddy_engine::DEFAULT_STATE_CACHE_ENTRIES)]
        state_cache_entries: usize,
        /// Runs; the figures printed are medians.
        #[arg(long, default_value_t = 3)]
        runs: usize,
        #[command(flatten)]
        cluster: ClusterArgs,
        /// Count and sum the joined events per region (the table's column, not the join
        /// key) instead of writing them out: on a cluster the joined rows go on to their
        /// region's task through a repartition topic.
        #[arg(long)]
        by_region: bool,
    },
    /// A persistent one-minute tumbling COUNT and SUM per key with the default record cache (updates
    /// coalesced per commit) on one core; the baseline is DataFusion's batch GROUP BY.
    Aggregate {
        /// Input records.
        #[arg(long, default_value_t = 1_000_000)]
        records: u64,
        /// Distinct keys.
        #[arg(long, default_value_t = 10_000)]
        keys: u64,
        /// Minutes of event time the records span.
        #[arg(long, default_value_t = 10)]
        minutes: u64,
        /// The most groups the query keeps in memory (the server's --state-cache-entries).
        #[arg(long, default_value_t = eddy_engine::DEFAULT_STATE_CACHE_ENTRIES)]
        state_cache_entries: usize,
        /// Runs; the figures printed are medians.
        #[arg(long, default_value_t = 3)]
        runs: usize,
        #[command(flatten)]
        cluster: ClusterArgs,
        /// Key the input by its `id` rather than its `user`, so grouping by user on a cluster
        /// goes through the query's repartition topic.
        #[arg(long)]
        keyed_by_id: bool,
    },
    /// Pull-query key lookups over HTTP on a table of many keys from concurrent clients; the
    /// baseline is `GET /healthcheck` from the same clients in the same run.
    Pull {
        /// Keys in the table.
        #[arg(long, default_value_t = 1_000_000)]
        keys: u64,
        /// Concurrent clients.
        #[arg(long, default_value_t = 16)]
        clients: usize,
        /// Seconds each phase runs.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
    },
    /// Rows inserted in PostgreSQL read into Eddy's log by the change-data-capture connector;
    /// the baseline is `pg_recvlogical` reading the same changes from its own slot, in the
    /// same run.
    Cdc {
        /// Rows inserted per run.
        #[arg(long, default_value_t = 200_000)]
        rows: u64,
        /// Rows per committed transaction.
        #[arg(long, default_value_t = 1_000)]
        transaction_rows: u64,
        /// Bytes of text per row.
        #[arg(long, default_value_t = 100)]
        row_size: usize,
        /// Runs; the figures printed are medians.
        #[arg(long, default_value_t = 3)]
        runs: usize,
    },
    /// Records produced through Kafka's wire protocol and consumed back, by a minimal client;
    /// the baseline is appending the same records to the store directly, in the same run.
    Kafka {
        /// Records in all.
        #[arg(long, default_value_t = 1_000_000)]
        records: u64,
        /// Value bytes per record.
        #[arg(long, default_value_t = 100)]
        record_size: usize,
        /// Partitions, each with its own connection.
        #[arg(long, default_value_t = 8)]
        partitions: u32,
        /// Records per produced batch.
        #[arg(long, default_value_t = 1_000)]
        batch_size: usize,
        /// Runs; the figures printed are medians.
        #[arg(long, default_value_t = 3)]
        runs: usize,
        /// Also produce and consume through a TLS listener, and report the ratio to plaintext.
        #[arg(long)]
        tls: bool,
        /// Also produce in transactions, and report the ratio to the same rounds without.
        #[arg(long)]
        transactional: bool,
        /// Records per transaction, spread evenly over the partitions.
        #[arg(long, default_value_t = 1_000)]
        transaction_size: usize,
    },
    /// Nexmark's queries over the same generated events, each checked against DataFusion's
    /// batch answer.
    Nexmark {
        /// Only this query (`q0` ... `q8`); all that Eddy runs when left out.
        #[arg(long)]
        query: Option<String>,
        /// Events generated (persons, auctions and bids, in Nexmark's proportions).
        #[arg(long, default_value_t = 1_000_000)]
        events: u64,
        /// Runs per query; the figures printed are medians.
        #[arg(long, default_value_t = 3)]
        runs: usize,
        /// Leave Apache Flink out (it runs beside Eddy by default, installed on first use).
        #[arg(long)]
        no_flink: bool,
        /// How the events' values are serialized in their topics: `json` or `avro`.
        #[arg(long, default_value = "json")]
        format: String,
        /// Instead of running the queries, produce the events as JSON to the Kafka listener at
        /// this `host:port` (a running Eddy's, by default 127.0.0.1:9092), into the topics
        /// `tests/nexmark/ddl.sql` declares.
        #[arg(long, value_name = "BOOTSTRAP")]
        load: Option<String>,
    },
    /// Rows appended at a steady rate, timed until each arrives at a push-query client over
    /// HTTP; the baseline is a reader of the log itself in the same run.
    PushLatency {
        /// Rows per second.
        #[arg(long, default_value_t = 10_000)]
        rate: u64,
        /// Seconds of appending.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    bench::STORE_MMAP_READS.store(cli.store_mmap_reads, std::sync::atomic::Ordering::Relaxed);
    match cli.scenario {
        Scenario::Log {
            records,
            record_size,
            partitions,
            batch_size,
            sync,
            runs,
            data_dir,
            replicas,
            snapshot_entries,
        } => {
            let config = LogBenchConfig {
                records,
                record_size,
                partitions,
                batch_size,
                sync,
                data_dir,
                replicas,
                snapshot_entries,
            };
            log_scenario(config, runs)?;
        }
        Scenario::Stateless {
            records,
            format,
            runs,
        } => {
            println!("eddy-bench stateless: {records} {format:?} records, {runs} run(s)");
            compare_runs(runs, || {
                bench::stateless::run(&StatelessBenchConfig { records, format })
            })?;
        }
        Scenario::Join {
            events,
            rows,
            state_cache_entries,
            runs,
            cluster,
            by_region,
        } => {
            let config = JoinBenchConfig {
                events,
                rows,
                state_cache_entries,
                cluster: None,
                by_region,
            };
            let what = if by_region {
                "counted per region"
            } else {
                "written out"
            };
            let title = format!(
                "eddy-bench join: {events} JSON events joined with a {rows}-row table and {what}"
            );
            match cluster.options() {
                Some(options) => on_cluster(&title, events, options, runs, |cluster| {
                    let config = JoinBenchConfig {
                        cluster,
                        ..config.clone()
                    };
                    Ok(bench::join::run(&config)?.eddy)
                })?,
                None => {
                    println!("{title}, {runs} run(s)");
                    compare_runs(runs, || bench::join::run(&config))?;
                }
            }
        }
        Scenario::Aggregate {
            records,
            keys,
            minutes,
            state_cache_entries,
            runs,
            cluster,
            keyed_by_id,
        } => {
            let config = bench::aggregate::AggregateBenchConfig {
                records,
                keys,
                minutes,
                state_cache_entries,
                cluster: None,
                keyed_by_id,
            };
            match cluster.options() {
                Some(options) => {
                    let title = format!(
                        "eddy-bench aggregate: {records} JSON records keyed by {}, {keys} keys, 1-minute tumbling windows over {minutes} minutes",
                        if keyed_by_id { "id" } else { "user" },
                    );
                    on_cluster(&title, records, options, runs, |cluster| {
                        let config = bench::aggregate::AggregateBenchConfig {
                            cluster,
                            ..config.clone()
                        };
                        Ok(bench::aggregate::run(&config)?.eddy)
                    })?;
                }
                None => aggregate_scenario(&config, runs)?,
            }
        }
        Scenario::Pull {
            keys,
            clients,
            seconds,
        } => {
            println!(
                "eddy-bench pull: key lookups on a {keys}-key table, {clients} clients, {seconds} s per phase"
            );
            let result = bench::pull::run(&bench::pull::PullBenchConfig {
                keys,
                clients,
                seconds,
            })?;
            println!(
                "first lookup (materializes the table): {:.2} s",
                result.materialize.as_secs_f64()
            );
            println!(
                "one lookup in process, no HTTP: {:.1} µs",
                result.in_process.as_secs_f64() * 1e6
            );
            println!("pull lookups         {}", result.pull);
            println!("GET /healthcheck     {}", result.baseline);
            println!(
                "ratio (pull / healthcheck throughput): {:.2}",
                result.pull.per_sec / result.baseline.per_sec.max(1e-9)
            );
            print_peak_rss();
        }
        Scenario::Cdc {
            rows,
            transaction_rows,
            row_size,
            runs,
        } => cdc_scenario(
            &bench::cdc::CdcBenchConfig {
                rows,
                transaction_rows: transaction_rows.max(1),
                row_size,
            },
            runs,
        )?,
        Scenario::Kafka {
            records,
            record_size,
            partitions,
            batch_size,
            runs,
            tls,
            transactional,
            transaction_size,
        } => kafka_scenario(
            bench::kafka::KafkaBenchConfig {
                records,
                record_size,
                partitions,
                batch_size,
                tls,
                transactional,
                transaction_size,
            },
            runs,
        )?,
        Scenario::Nexmark {
            events,
            load: Some(bootstrap),
            ..
        } => {
            let generated = bench::nexmark::Events::generate(events);
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            let produced = runtime.block_on(bench::nexmark_load::load(&generated, &bootstrap))?;
            println!(
                "produced {produced} Nexmark events to {bootstrap} (nexmark-person, nexmark-auction, nexmark-bid); declare them with tests/nexmark/ddl.sql"
            );
        }
        Scenario::Nexmark {
            query,
            events,
            runs,
            no_flink,
            format,
            load: None,
        } => nexmark_scenario(query.as_deref(), events, runs, !no_flink, &format)?,
        Scenario::PushLatency { rate, seconds } => {
            println!("eddy-bench push-latency: {rate} rows/s for {seconds} s");
            let result = bench::push::run(&bench::push::PushBenchConfig { rate, seconds })?;
            println!("push query client   {}", result.push);
            println!("log reader          {}", result.log);
            println!(
                "ratio (push p99 / log p99): {:.2}",
                result.push.p99.as_secs_f64() / result.log.p99.as_secs_f64().max(1e-9)
            );
        }
    }
    Ok(())
}

/// Produces and consumes through the Kafka listener `runs` times (and through TLS with
/// `config.tls`); the medians against appending to the store directly.
fn cdc_scenario(config: &bench::cdc::CdcBenchConfig, runs: usize) -> anyhow::Result<()> {
    println!(
        "eddy-bench cdc: {} rows of {} B inserted in transactions of {}, {runs} run(s)",
        config.rows, config.row_size, config.transaction_rows
    );
    let results = bench::cdc::run(config, runs.max(1))?;
    let mut ratios = Vec::new();
    let (mut eddy, mut recv, mut eddy_cpu) = (Vec::new(), Vec::new(), Vec::new());
    for (run, result) in results.iter().enumerate() {
        println!("run {}: eddy connector  {}", run + 1, result.eddy);
        println!("run {}: pg_recvlogical  {}", run + 1, result.recvlogical);
        eddy.push(result.eddy.records_per_sec());
        recv.push(result.recvlogical.records_per_sec());
        ratios.push(result.eddy.records_per_sec() / result.recvlogical.records_per_sec());
        if let Some(rate) = result.eddy.records_per_cpu_sec() {
            eddy_cpu.push(rate);
        }
    }
    println!(
        "median: eddy {:.0} rows/s ({:.0} per CPU-second of eddy), pg_recvlogical {:.0} rows/s, ratio {:.2}",
        median(eddy),
        median(eddy_cpu),
        median(recv),
        median(ratios)
    );
    Ok(())
}

fn kafka_scenario(config: bench::kafka::KafkaBenchConfig, runs: usize) -> anyhow::Result<()> {
    let bench::kafka::KafkaBenchConfig {
        records,
        record_size,
        partitions,
        batch_size,
        tls,
        transactional,
        transaction_size,
    } = config.clone();

    println!(
        "eddy-bench kafka: {records} records of {record_size} B, {partitions} partitions, batches of {batch_size}, {runs} run(s)"
    );
    let mut tls_ratios = (Vec::new(), Vec::new());
    let mut txn_ratios = Vec::new();
    let mut ratios = Vec::new();
    let mut produce = Vec::new();
    let mut consume = Vec::new();
    for run in 1..=runs.max(1) {
        let result = bench::kafka::run(&config)?;
        println!("run {run}: produce (Kafka protocol)  {}", result.produce);
        println!("run {run}: consume (Kafka protocol)  {}", result.consume);
        println!("run {run}: append (store, direct)    {}", result.append);
        produce.push(result.produce.records_per_sec());
        consume.push(result.consume.records_per_sec());
        ratios.push(result.produce.records_per_sec() / result.append.records_per_sec());
        if let Some((tls_produce, tls_consume)) = result.tls {
            println!("run {run}: produce (Kafka over TLS)  {tls_produce}");
            println!("run {run}: consume (Kafka over TLS)  {tls_consume}");
            tls_ratios
                .0
                .push(tls_produce.records_per_sec() / result.produce.records_per_sec());
            tls_ratios
                .1
                .push(tls_consume.records_per_sec() / result.consume.records_per_sec());
        }
        if let Some((plain, txn)) = result.transactional {
            println!("run {run}: rounds without transactions {plain}");
            println!("run {run}: rounds in transactions      {txn}");
            txn_ratios.push(txn.records_per_sec() / plain.records_per_sec());
        }
    }
    println!(
        "median: produce {:.0} records/s, consume {:.0} records/s, produce/append ratio {:.2}",
        median(produce),
        median(consume),
        median(ratios)
    );
    if tls {
        println!(
            "median TLS / plaintext: produce {:.2}, consume {:.2}",
            median(tls_ratios.0),
            median(tls_ratios.1)
        );
    }
    if transactional {
        println!(
            "median transactional / plain ({transaction_size} records per transaction): produce {:.2}",
            median(txn_ratios)
        );
    }
    print_peak_rss();
    Ok(())
}

/// Runs each Nexmark query (or the one named) `runs` times over the same events on Eddy and,
/// unless left out or unavailable, on Flink; medians side by side.
fn nexmark_scenario(
    only: Option<&str>,
    events: u64,
    runs: usize,
    with_flink: bool,
    format: &str,
) -> anyhow::Result<()> {
    use bench::flink::Flink;
    use bench::nexmark::{Events, Format, QUERIES};
    let format = match format.to_ascii_lowercase().as_str() {
        "json" => Format::Json,
        "avro" => Format::Avro,
        other => anyhow::bail!("no event format {other:?}: json or avro"),
    };
    let queries: Vec<_> = QUERIES
        .iter()
        .filter(|q| only.is_none_or(|name| name.eq_ignore_ascii_case(q.name)))
        .collect();
    anyhow::ensure!(
        !queries.is_empty(),
        "no Nexmark query {only:?}; Eddy runs {}",
        QUERIES
            .iter()
            .map(|q| q.name)
            .collect::<Vec<_>>()
            .join(", ")
    );
    let generated = Events::generate(events);
    println!(
        "eddy-bench nexmark: {events} events in {format:?}, {runs} run(s) per query, each checked against DataFusion"
    );
    let flink = match with_flink.then(|| Flink::prepare(&generated)) {
        Some(Ok(flink)) => Some(flink),
        Some(Err(e)) => {
            println!("Flink left out: {e:#}");
            None
        }
        None => None,
    };
    let mib = |bytes: u64| bytes >> 20;
    for query in queries {
        let (mut rates, mut per_cpu, mut memory) = (Vec::new(), Vec::new(), Vec::new());
        let (mut flink_rates, mut flink_per_cpu, mut flink_rss) = (Vec::new(), Vec::new(), 0);
        for run in 1..=runs.max(1) {
            let result = bench::nexmark::run(query, &generated, format)?;
            let used = result
                .query_memory
                .map_or("?".into(), |m| mib(m).to_string());
            println!(
                "{} run {run}: Eddy {} ({} rows, query memory {used} MiB)",
                query.name, result.throughput, result.rows
            );
            rates.push(result.throughput.records_per_sec());
            per_cpu.extend(result.throughput.records_per_cpu_sec());
            memory.extend(result.query_memory.map(|m| m as f64));
            let Some(flink) = flink.as_ref().filter(|_| Flink::has(query.name)) else {
                continue;
            };
            let peer = flink.run(query.name)?;
            println!(
                "{} run {run}: Flink {:.2}s, {:.2} CPU-s, JVM peak RSS {} MiB",
                query.name,
                peer.seconds,
                peer.cpu_seconds,
                mib(peer.peak_rss)
            );
            flink_rates.push(events as f64 / peer.seconds);
            flink_per_cpu.push(events as f64 / peer.cpu_seconds);
            flink_rss = flink_rss.max(peer.peak_rss);
        }
        let eddy_cpu = median(per_cpu);
        println!(
            "{} median: Eddy {:.0} events/s, {:.0} events per CPU-second, query memory {} MiB",
            query.name,
            median(rates),
            eddy_cpu,
            mib(median(memory) as u64)
        );
        if !flink_rates.is_empty() {
            let flink_cpu = median(flink_per_cpu);
            println!(
                "{} median: Flink {:.0} events/s, {:.0} events per CPU-second, JVM peak RSS {} MiB; Eddy/Flink per CPU-second {:.1}x",
                query.name,
                median(flink_rates),
                flink_cpu,
                mib(flink_rss),
                eddy_cpu / flink_cpu
            );
        }
    }
    Ok(())
}

/// Appends and reads back the log `runs` times; the medians against plain file I/O.
fn log_scenario(config: LogBenchConfig, runs: usize) -> anyhow::Result<()> {
    let LogBenchConfig {
        records,
        record_size,
        partitions,
        batch_size,
        ref sync,
        ..
    } = config;
    anyhow::ensure!(
        partitions > 0 && batch_size > 0 && record_size > 0,
        "sizes must be positive"
    );
    println!(
        "eddy-bench log: {records} records x {record_size} B, {partitions} partitions, \
         batches of {batch_size}, sync={sync}, {runs} run(s)"
    );
    let mut reports = Vec::new();
    for run in 1..=runs.max(1) {
        if let Some(dir) = &config.data_dir {
            let _ = std::fs::remove_dir_all(dir);
        }
        let report = bench::log::run(&config)?;
        println!("run {run}: append {}", report.append);
        println!("run {run}: read   {}", report.read);
        println!("run {run}: file write baseline {}", report.file_write);
        println!("run {run}: file read baseline  {}", report.file_read);
        if let Some(replicated) = &report.replicated_append {
            println!(
                "run {run}: append on {} replicas {replicated} ({:.2}x one node; {} snapshots taken)",
                config.replicas,
                replicated.records_per_sec() / report.append.records_per_sec(),
                report.replicated_snapshots
            );
        }
        reports.push(report);
    }
    let m =
        |f: &dyn Fn(&bench::log::LogBenchReport) -> f64| median(reports.iter().map(f).collect());
    let append_rps = m(&|r| r.append.records_per_sec());
    let append_mbs = m(&|r| r.append.mb_per_sec());
    let read_rps = m(&|r| r.read.records_per_sec());
    let read_mbs = m(&|r| r.read.mb_per_sec());
    let file_write_mbs = m(&|r| r.file_write.mb_per_sec());
    let file_read_mbs = m(&|r| r.file_read.mb_per_sec());
    println!(
        "median append: {append_rps:.0} records/s, {append_mbs:.1} MB/s ({:.2}x plain file write)",
        append_mbs / file_write_mbs
    );
    println!(
        "median read:   {read_rps:.0} records/s, {read_mbs:.1} MB/s ({:.2}x plain file read)",
        read_mbs / file_read_mbs
    );
    if config.replicas > 1 {
        let ratios: Vec<f64> = reports
            .iter()
            .filter_map(|r| {
                let replicated = r.replicated_append.as_ref()?;
                Some(replicated.records_per_sec() / r.append.records_per_sec())
            })
            .collect();
        let replicated_rps = median(
            reports
                .iter()
                .filter_map(|r| r.replicated_append.as_ref().map(|t| t.records_per_sec()))
                .collect(),
        );
        println!(
            "median append on {} replicas: {replicated_rps:.0} records/s, {:.2}x one node (median of the runs' ratios)",
            config.replicas,
            median(ratios)
        );
    }
    print_peak_rss();
    Ok(())
}

/// Runs the aggregation `runs` times; the medians, and the first run's peak memory.
fn aggregate_scenario(
    config: &bench::aggregate::AggregateBenchConfig,
    runs: usize,
) -> anyhow::Result<()> {
    println!(
        "eddy-bench aggregate: {} JSON records, {} keys, 1-minute tumbling windows over {} minutes, {runs} run(s)",
        config.records, config.keys, config.minutes
    );
    let mut reports = Vec::new();
    let mut rss = Vec::new();
    for run in 1..=runs.max(1) {
        let report = bench::aggregate::run(config)?;
        println!("run {run}: eddy query  {}", report.eddy);
        println!("run {run}: datafusion  {}", report.datafusion);
        println!(
            "run {run}: {} groups in the final table (the same in both), {} updates written by the query",
            report.groups, report.updates
        );
        let mib = |b: u64| b as f64 / (1 << 20) as f64;
        if let (Some(peak), Some(before)) = (report.peak_rss.resident, report.rss_before) {
            println!(
                "run {run}: RSS {:.0} MiB with the input appended, peak {:.0} MiB while the query ran",
                mib(before),
                mib(peak)
            );
            rss.push(mib(peak));
        }
        if let Some(anonymous) = report.peak_rss.anonymous {
            println!(
                "run {run}: peak anonymous RSS {:.0} MiB (without the store's mapped file pages)",
                mib(anonymous)
            );
        }
        reports.push(RunRates::of(&report.eddy, &report.datafusion));
    }
    print_medians(&reports);
    // Later runs inherit the allocator's heap from the runs (and DataFusion's batches)
    // before them, so the first run's peak is the one that stands for the query alone.
    if let Some(first) = rss.first() {
        println!("peak RSS while the query ran, first run (a fresh process): {first:.0} MiB");
    }
    Ok(())
}

/// Where a scenario's log may also run: a Kafka cluster, such as a separate `eddy server`'s
/// Kafka listener, to compare with the embedded log.
#[derive(clap::Args, Debug, Clone)]
struct ClusterArgs {
    /// Also run each time with the log on this Kafka cluster (`host:port`), such as a
    /// separate `eddy server`'s Kafka listener, and compare with the embedded log.
    #[arg(long)]
    bootstrap_servers: Option<String>,
    /// The cluster broker's process id, when it runs on this machine: its CPU time is
    /// counted beside the bench's.
    #[arg(long)]
    cluster_pid: Option<u32>,
    /// On the cluster, `exactly_once_v2` or `at_least_once`.
    #[arg(long, default_value = "exactly_once_v2")]
    processing_guarantee: eddy_storage::Guarantee,
}

impl ClusterArgs {
    /// The cluster's client options, if one is named; its broker's CPU is counted from now.
    fn options(&self) -> Option<eddy_storage::ClusterOptions> {
        let servers = self.bootstrap_servers.clone()?;
        if let Some(pid) = self.cluster_pid {
            bench::CLUSTER_PID.store(pid, std::sync::atomic::Ordering::Relaxed);
        }
        Some(eddy_storage::ClusterOptions {
            guarantee: self.processing_guarantee,
            ..eddy_storage::ClusterOptions::new(servers)
        })
    }
}

/// Runs a scenario of `records` input records `runs` times on the embedded log and on a
/// Kafka cluster, back to back in each run (`run_once` is given the cluster, or `None`): the
/// rates, their ratio, and what the cluster adds per record.
fn on_cluster(
    title: &str,
    records: u64,
    cluster: eddy_storage::ClusterOptions,
    runs: usize,
    run_once: impl Fn(Option<eddy_storage::ClusterOptions>) -> anyhow::Result<bench::Throughput>,
) -> anyhow::Result<()> {
    println!(
        "{title}, on the embedded log and on the cluster at {} ({:?}), {runs} run(s)",
        cluster.bootstrap_servers, cluster.guarantee
    );
    let per_record = |t: Option<std::time::Duration>| {
        t.map_or(f64::NAN, |t| t.as_secs_f64() * 1e6 / records as f64)
    };
    let (mut ratios, mut extra_wall, mut extra_cpu, mut broker) = (vec![], vec![], vec![], vec![]);
    for run in 1..=runs.max(1) {
        let embedded = run_once(None)?;
        let remote = run_once(Some(eddy_storage::ClusterOptions {
            service_id: format!("eddy-bench-{}-{run}", std::process::id()),
            ..cluster.clone()
        }))?;
        println!("run {run}: embedded log  {embedded}");
        println!("run {run}: on the cluster {remote}");
        let ratio = remote.records_per_sec() / embedded.records_per_sec();
        let wall = per_record(Some(remote.elapsed)) - per_record(Some(embedded.elapsed));
        let cpu = per_record(remote.cpu) - per_record(embedded.cpu);
        let broker_cpu = per_record(remote.cluster_cpu);
        println!(
            "run {run}: cluster/embedded {ratio:.2}; the cluster adds {wall:.2} µs wall and {cpu:.2} µs of Eddy's CPU per record, and the broker used {broker_cpu:.2} µs of CPU per record"
        );
        ratios.push(ratio);
        extra_wall.push(wall);
        extra_cpu.push(cpu);
        broker.push(broker_cpu);
    }
    println!(
        "median: cluster/embedded {:.2}; per record the cluster adds {:.2} µs wall, {:.2} µs of Eddy's CPU, {:.2} µs of the broker's CPU",
        median(ratios),
        median(extra_wall),
        median(extra_cpu),
        median(broker)
    );
    Ok(())
}

/// Runs a query scenario `runs` times, printing each run, then the medians and peak RSS.
fn compare_runs(
    runs: usize,
    run_once: impl Fn() -> anyhow::Result<bench::Comparison>,
) -> anyhow::Result<()> {
    let mut reports = Vec::new();
    for run in 1..=runs.max(1) {
        let report = run_once()?;
        println!("run {run}: eddy query  {}", report.eddy);
        println!("run {run}: datafusion  {}", report.datafusion);
        println!(
            "run {run}: {} records written by each",
            report.output_records
        );
        reports.push(RunRates::of(&report.eddy, &report.datafusion));
    }
    print_medians(&reports);
    print_peak_rss();
    Ok(())
}

/// Events per second of one run, by wall clock and per CPU-second of the whole process.
struct RunRates {
    eddy: f64,
    eddy_per_cpu: Option<f64>,
    datafusion: f64,
    datafusion_per_cpu: Option<f64>,
}

impl RunRates {
    fn of(eddy: &bench::Throughput, datafusion: &bench::Throughput) -> Self {
        RunRates {
            eddy: eddy.records_per_sec(),
            eddy_per_cpu: eddy.records_per_cpu_sec(),
            datafusion: datafusion.records_per_sec(),
            datafusion_per_cpu: datafusion.records_per_cpu_sec(),
        }
    }
}

/// Prints the medians of (Eddy, DataFusion) events/s, and of each run's ratio: each run times
/// both sides back to back, so its own ratio is the least noisy.
fn print_medians(runs: &[RunRates]) {
    let eddy = median(runs.iter().map(|r| r.eddy).collect());
    let datafusion = median(runs.iter().map(|r| r.datafusion).collect());
    let ratio = median(runs.iter().map(|r| r.eddy / r.datafusion).collect());
    println!(
        "median: eddy {eddy:.0} events/s; DataFusion batch {datafusion:.0} events/s on one core; ratio {ratio:.2} (median of the runs' ratios)"
    );
    let per_cpu: Vec<(f64, f64)> = runs
        .iter()
        .filter_map(|r| Some((r.eddy_per_cpu?, r.datafusion_per_cpu?)))
        .collect();
    if !per_cpu.is_empty() {
        println!(
            "median: eddy {:.0} events per CPU-second (its threads read, process and write the log in parallel); ratio per CPU-second {:.2}",
            median(per_cpu.iter().map(|r| r.0).collect()),
            median(per_cpu.iter().map(|r| r.0 / r.1).collect()),
        );
    }
}

fn print_peak_rss() {
    match bench::peak_rss_bytes() {
        Some(rss) => println!("peak RSS: {:.0} MiB", rss as f64 / (1 << 20) as f64),
        None => println!("peak RSS: unknown on this platform"),
    }
}
