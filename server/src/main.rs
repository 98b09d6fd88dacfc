//! The `eddy` binary: the server on an embedded store and, on a terminal, the REPL.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use eddy_storage::{Store, StoreOptions, SyncPolicy};
use tracing::info;
use tracing_subscriber::EnvFilter;

// glibc malloc hands large buffers back to the kernel and pays page faults to get them back;
// mimalloc keeps them, which made the query benchmark ~20% faster.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod http;
mod kafka;
mod streaming;

/// Eddy: a streaming SQL database in one binary.
///
/// With no subcommand, eddy serves and, when started from a terminal, also opens the REPL.
#[derive(Debug, Parser)]
#[command(name = "eddy", version)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    server: ServerArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve only, without the interactive shell.
    Server,
    /// Open the interactive SQL shell.
    Repl,
}

#[derive(Debug, Args)]
struct ServerArgs {
    /// Directory of the embedded store; created when missing.
    #[arg(
        long,
        global = true,
        env = "EDDY_DATA_DIR",
        default_value = "./eddy-data"
    )]
    data_dir: PathBuf,

    /// When appended data is fsynced: `always` (before each acknowledgement), `interval`
    /// (every 100 ms in the background; `interval:<ms>` sets the period) or `os` (never
    /// explicitly).
    #[arg(long, global = true, env = "EDDY_SYNC", default_value = "interval")]
    sync: SyncPolicy,

    /// Log filter: a level (error, warn, info, debug, trace) or a tracing directive such as
    /// `eddy_storage=debug,info`.
    #[arg(long, global = true, env = "EDDY_LOG", default_value = "info")]
    log_level: String,

    /// Address of the HTTP listener: the ksqlDB REST API.
    #[arg(
        long,
        global = true,
        env = "EDDY_LISTEN",
        default_value = "127.0.0.1:8088"
    )]
    listen: SocketAddr,

    /// The largest HTTP request body accepted, in bytes; larger ones are refused with 413.
    #[arg(
        long,
        global = true,
        env = "EDDY_MAX_REQUEST_BYTES",
        default_value_t = 10 * 1024 * 1024
    )]
    max_request_bytes: usize,

    /// Address of the Kafka protocol listener.
    #[arg(
        long,
        global = true,
        env = "EDDY_KAFKA_LISTEN",
        default_value = "127.0.0.1:9092"
    )]
    kafka_listen: SocketAddr,

    /// Address given to Kafka clients in metadata; defaults to the listen address.
    #[arg(long, global = true, env = "EDDY_KAFKA_ADVERTISED")]
    kafka_advertised: Option<SocketAddr>,

    /// Whether Kafka clients asking for unknown topics create them (with one partition).
    #[arg(long, global = true, env = "EDDY_KAFKA_AUTO_CREATE_TOPICS", default_value_t = true, action = clap::ArgAction::Set)]
    kafka_auto_create_topics: bool,

    /// How often retention and compaction run, in seconds.
    #[arg(
        long,
        global = true,
        env = "EDDY_MAINTENANCE_INTERVAL_SECS",
        default_value_t = 30
    )]
    maintenance_interval_secs: u64,
}

fn init_logging(filter: &str) -> anyhow::Result<()> {
    let filter = EnvFilter::try_new(filter)
        .with_context(|| format!("--log-level {filter:?} is not a valid level or directive"))?;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_logging(&cli.server.log_level)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("eddy")
        .build()
        .context("cannot start the async runtime")?;
    match cli.command {
        Some(Command::Server) => runtime.block_on(serve(&cli.server)),
        Some(Command::Repl) => {
            anyhow::bail!(
                "the interactive shell is not part of this build yet; run `eddy server` to serve"
            )
        }
        None => {
            if std::io::stdin().is_terminal() {
                info!("the interactive shell is not part of this build yet; serving only");
            }
            runtime.block_on(serve(&cli.server))
        }
    }
}

async fn serve(args: &ServerArgs) -> anyhow::Result<()> {
    let shutdown = ShutdownSignal::install()?;
    let options = StoreOptions {
        sync: args.sync,
        ..StoreOptions::default()
    };
    let store = Store::open(&args.data_dir, options)
        .with_context(|| format!("cannot open the store in {}", args.data_dir.display()))?;
    let engine = eddy_engine::Engine::open(store.clone())
        .await
        .context("cannot restore the catalog from the command log")?;
    let sources = engine.catalog().await.sources().count();
    let kafka_listener = tokio::net::TcpListener::bind(args.kafka_listen)
        .await
        .with_context(|| format!("cannot listen for Kafka clients on {}", args.kafka_listen))?;
    let kafka_address = kafka_listener.local_addr()?;
    let kafka = tokio::spawn(kafka::serve(
        kafka_listener,
        store.clone(),
        kafka::KafkaConfig {
            advertised: args.kafka_advertised.unwrap_or(kafka_address),
            auto_create_topics: args.kafka_auto_create_topics,
            default_partitions: 1,
        },
    ));
    let http_listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen for HTTP on {}", args.listen))?;
    let http_address = http_listener.local_addr()?;
    let engine = std::sync::Arc::new(engine);
    let queries = engine.clone();
    let max_request_bytes = args.max_request_bytes;
    let http = tokio::spawn(async move {
        if let Err(e) = axum::serve(http_listener, http::router(engine, max_request_bytes)).await {
            tracing::error!(error = %e, "the HTTP server stopped");
        }
    });
    info!(address = %kafka_address, "listening for Kafka clients");
    info!(address = %http_address, "listening for HTTP (ksqlDB REST API)");
    info!(
        data_dir = %args.data_dir.display(),
        topics = store.list_topics().len(),
        sources,
        sync = %args.sync,
        "eddy is running; press Ctrl-C to stop"
    );
    let maintenance =
        store.spawn_maintenance(Duration::from_secs(args.maintenance_interval_secs.max(1)));

    shutdown.wait().await?;
    info!("shutting down");
    kafka.abort();
    http.abort();
    maintenance.abort();
    // Queries stop between commits, so each resumes exactly where it stopped.
    queries.shutdown().await;
    let closing = store.clone();
    tokio::task::spawn_blocking(move || closing.close())
        .await
        .context("the shutdown task failed")??;
    info!("stopped cleanly");
    Ok(())
}

/// Listens for Ctrl-C and SIGTERM. Created before the server says it is running, so a signal
/// sent right after that line is never missed.
struct ShutdownSignal {
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
}

impl ShutdownSignal {
    fn install() -> anyhow::Result<Self> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Ok(ShutdownSignal {
                interrupt: signal(SignalKind::interrupt()).context("cannot listen for Ctrl-C")?,
                terminate: signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?,
            })
        }
        #[cfg(not(unix))]
        Ok(ShutdownSignal {})
    }

    async fn wait(mut self) -> anyhow::Result<()> {
        #[cfg(unix)]
        tokio::select! {
            _ = self.interrupt.recv() => {}
            _ = self.terminate.recv() => {}
        }
        #[cfg(not(unix))]
        tokio::signal::ctrl_c()
            .await
            .context("cannot listen for Ctrl-C")?;
        Ok(())
    }
}
