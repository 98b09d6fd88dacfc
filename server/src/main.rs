//! The `eddy` binary: the server on an embedded store and, on a terminal, the REPL.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use eddy_storage::{ClusterOptions, Store, StoreOptions, SyncPolicy};
use tracing::{info, warn};
use tracing_subscriber::EnvFilter;

// glibc malloc hands large buffers back to the kernel and pays page faults to get them back;
// mimalloc keeps them, which made the query benchmark ~20% faster.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use eddy_server::{http, kafka};

/// The stack of each runtime thread. Evaluating an expression walks it recursively, as
/// DataFusion's physical expressions do, one frame per level; the parser admits 1,000 levels,
/// and 16 MiB holds them with room to spare even in a debug build (2 MiB, the default, held
/// about 150). Only the pages a thread touches are committed.
const THREAD_STACK_BYTES: usize = 16 * 1024 * 1024;

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
    /// Open the interactive SQL shell against a running server.
    Repl(ReplArgs),
    /// Manage the users Kafka SASL and HTTP Basic authenticate against (the server must be
    /// stopped; while it runs, Kafka's AlterUserScramCredentials changes users).
    #[command(subcommand)]
    Users(UsersCommand),
}

#[derive(Debug, Subcommand)]
enum UsersCommand {
    /// Add a user, or set an existing user's password. The password is asked for on a
    /// terminal, or read as the first line of standard input.
    Add {
        /// The user name (the principal is `User:<name>`).
        name: String,
    },
    /// Remove a user.
    Remove {
        /// The user name.
        name: String,
    },
    /// List the users and their SCRAM mechanisms.
    List,
}

#[derive(Debug, Args)]
struct ReplArgs {
    /// The server's URL.
    #[arg(long, env = "EDDY_URL", default_value = "http://127.0.0.1:8088")]
    url: String,

    /// Run these statements and exit, without prompting; the exit code is non-zero when one
    /// fails.
    #[arg(short = 'e', long, conflicts_with = "file")]
    execute: Option<String>,

    /// Run the statements in this file and exit, without prompting.
    #[arg(short = 'f', long)]
    file: Option<PathBuf>,

    /// Define a variable for `${name}` substitution, as `DEFINE` does; repeatable.
    #[arg(short = 'd', long = "define", value_name = "NAME=VALUE", value_parser = parse_define)]
    defines: Vec<(String, String)>,

    /// How results print: TABULAR or JSON.
    #[arg(long, default_value = "TABULAR", value_parser = parse_output)]
    output: eddy_repl::OutputFormat,

    /// Where the prompt keeps its history.
    #[arg(long, env = "EDDY_HISTORY_FILE")]
    history_file: Option<PathBuf>,

    /// The user to authenticate as (HTTP Basic), as the ksql CLI's `-u`.
    #[arg(short = 'u', long, env = "EDDY_USER")]
    user: Option<String>,

    /// The password; asked for on the terminal when a user is given without one, as the ksql
    /// CLI's `-p`.
    #[arg(short = 'p', long, env = "EDDY_PASSWORD", hide_env_values = true)]
    password: Option<String>,

    /// A PEM file of CA certificates to trust for an https:// server, besides the system's.
    #[arg(long, env = "EDDY_CA_FILE")]
    ca_file: Option<PathBuf>,
}

fn parse_define(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((name, value)) if !name.trim().is_empty() => {
            Ok((name.trim().to_string(), value.to_string()))
        }
        _ => Err(format!("expected NAME=VALUE, got '{text}'")),
    }
}

/// The nodes of a replicated log, by id.
#[derive(Debug, Clone)]
struct Peers(std::collections::BTreeMap<u64, String>);

fn parse_peers(text: &str) -> Result<Peers, String> {
    let mut peers = std::collections::BTreeMap::new();
    for entry in text.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let (id, address) = entry
            .split_once('=')
            .ok_or_else(|| format!("expected id=host:port, got {entry:?}"))?;
        let id: u64 = id
            .trim()
            .parse()
            .ok()
            .filter(|id| *id <= i32::MAX as u64)
            .ok_or_else(|| format!("a node id is a number from 0 to {}, got {id:?}", i32::MAX))?;
        let address = address.trim();
        if address
            .rsplit_once(':')
            .is_none_or(|(host, port)| host.is_empty() || port.parse::<u16>().is_err())
        {
            return Err(format!("node {id}'s address is not host:port: {address:?}"));
        }
        if peers.insert(id, address.to_string()).is_some() {
            return Err(format!("node {id} is named twice"));
        }
    }
    if peers.is_empty() {
        return Err("no nodes given".to_string());
    }
    Ok(Peers(peers))
}

fn parse_output(text: &str) -> Result<eddy_repl::OutputFormat, String> {
    eddy_repl::OutputFormat::parse(text)
        .ok_or_else(|| format!("expected TABULAR or JSON, got '{text}'"))
}

#[derive(Debug, Clone, Args)]
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

    /// Address of the HTTP listener (the ksqlDB REST API and the console): `ip:port`, or
    /// `https://ip:port` for TLS with --tls-cert and --tls-key.
    #[arg(
        long,
        global = true,
        env = "EDDY_LISTEN",
        default_value = "127.0.0.1:8088"
    )]
    listen: String,

    /// The largest HTTP request body accepted, in bytes; larger ones are refused with 413.
    #[arg(
        long,
        global = true,
        env = "EDDY_MAX_REQUEST_BYTES",
        default_value_t = 10 * 1024 * 1024
    )]
    max_request_bytes: usize,

    /// The most bytes of request bodies held in memory at once, across every connection (at
    /// least four bodies of --max-request-bytes); a request waits up to 5 s for room, then gets
    /// 503.
    #[arg(long, global = true, env = "EDDY_REQUEST_MEMORY_BYTES", default_value_t = http::DEFAULT_REQUEST_MEMORY_BYTES)]
    request_memory_bytes: usize,

    /// Host names the HTTP listener answers to besides loopback names and IP addresses, comma
    /// separated; `*` for any. Checked when it listens on a loopback address or when names are
    /// given, so a web page cannot reach it under a re-pointed name (DNS rebinding).
    #[arg(
        long,
        global = true,
        env = "EDDY_HTTP_ALLOWED_HOSTS",
        value_delimiter = ','
    )]
    http_allowed_hosts: Vec<String>,

    /// Web origins (such as `https://dash.example.com`) whose pages may use the HTTP API from a
    /// browser, with CORS, comma separated; `*` for any. Eddy's own console is always allowed.
    #[arg(
        long,
        global = true,
        env = "EDDY_HTTP_ALLOWED_ORIGINS",
        value_delimiter = ','
    )]
    http_allowed_origins: Vec<String>,

    /// Kafka protocol listeners, comma separated, as Kafka writes them:
    /// `[PROTOCOL://]ip:port` with PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL (PLAINTEXT when
    /// none is given), such as `127.0.0.1:9092,SASL_SSL://0.0.0.0:9093`.
    #[arg(
        long,
        global = true,
        env = "EDDY_KAFKA_LISTEN",
        default_value = "127.0.0.1:9092",
        value_delimiter = ','
    )]
    kafka_listen: Vec<String>,

    /// Addresses given to Kafka clients in metadata, comma separated, `PROTOCOL://host:port`
    /// per listener (a bare `host:port` is the first listener's); each listener's own address
    /// by default.
    #[arg(
        long,
        global = true,
        env = "EDDY_KAFKA_ADVERTISED",
        value_delimiter = ','
    )]
    kafka_advertised: Vec<String>,

    /// The PEM certificate chain of TLS listeners (https://, SSL://, SASL_SSL://).
    #[arg(long, global = true, env = "EDDY_TLS_CERT")]
    tls_cert: Option<PathBuf>,

    /// The PEM private key of --tls-cert.
    #[arg(long, global = true, env = "EDDY_TLS_KEY")]
    tls_key: Option<PathBuf>,

    /// PEM CA certificates that client certificates must chain to.
    #[arg(long, global = true, env = "EDDY_TLS_CLIENT_CA")]
    tls_client_ca: Option<PathBuf>,

    /// Whether TLS clients present certificates: none, requested or required (Kafka's
    /// `ssl.client.auth`).
    #[arg(
        long,
        global = true,
        env = "EDDY_TLS_CLIENT_AUTH",
        default_value = "none"
    )]
    tls_client_auth: eddy_security::tls::ClientAuth,

    /// HTTP authentication on the REST API, console, /metrics and the schema registry: `none`
    /// or `basic` (HTTP Basic against Eddy's users, as ksqlDB's `authentication.method`).
    #[arg(long, global = true, env = "EDDY_HTTP_AUTH", default_value = "none", value_parser = ["none", "basic"])]
    http_auth: String,

    /// SASL mechanisms SASL listeners offer, comma separated (Kafka's
    /// `sasl.enabled.mechanisms`).
    #[arg(
        long,
        global = true,
        env = "EDDY_SASL_MECHANISMS",
        default_value = "SCRAM-SHA-256,SCRAM-SHA-512,PLAIN",
        value_delimiter = ','
    )]
    sasl_mechanisms: Vec<String>,

    /// Principals that may do anything, as Kafka's `super.users` (`User:alice;User:bob`, or
    /// comma separated).
    #[arg(long, global = true, env = "EDDY_SUPER_USERS", default_value = "")]
    super_users: String,

    /// A first user to create at start-up if it does not exist, with the password in the
    /// EDDY_ADMIN_PASSWORD environment variable; it is a super user.
    #[arg(long, global = true, env = "EDDY_ADMIN_USER")]
    admin_user: Option<String>,

    /// Whether ACLs are checked: `acl`, `none`, or `auto` (checked whenever a listener
    /// authenticates: a SASL listener or --http-auth basic), as Kafka's `authorizer.class.name`.
    #[arg(long, global = true, env = "EDDY_AUTHORIZER", default_value = "auto", value_parser = ["auto", "acl", "none"])]
    authorizer: String,

    /// Let everyone do anything on a resource no ACL names (Kafka's
    /// `allow.everyone.if.no.acl.found`); by default such a resource is denied to all but super
    /// users.
    #[arg(long, global = true, env = "EDDY_ALLOW_EVERYONE_IF_NO_ACL_FOUND")]
    allow_everyone_if_no_acl_found: bool,

    /// Serve listeners beyond loopback without authentication. Without it, such a listener is
    /// refused at start-up.
    #[arg(long, global = true, env = "EDDY_ALLOW_ANONYMOUS")]
    allow_anonymous: bool,

    /// Address of the schema registry listener (Confluent's REST API, whose clients default to
    /// port 8081): `ip:port`, `https://ip:port`, or `off` for none.
    #[arg(
        long,
        global = true,
        env = "EDDY_SCHEMA_REGISTRY_LISTEN",
        default_value = "127.0.0.1:8081"
    )]
    schema_registry_listen: String,

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

    /// This node's id among the nodes of a replicated log (see --peers).
    #[arg(long, global = true, env = "EDDY_NODE_ID", requires = "peers")]
    node_id: Option<u64>,

    /// The nodes of a replicated log, this one too, as `1=host:port,2=host:port,3=host:port`:
    /// each node's id and the address its replication listener is reached at. Every node is
    /// started with the same list; the leader serves clients, the others keep copies and take
    /// over when it goes (docs/replication.md).
    #[arg(
        long,
        global = true,
        env = "EDDY_PEERS",
        value_parser = parse_peers,
        requires = "node_id",
        conflicts_with = "bootstrap_servers"
    )]
    peers: Option<Peers>,

    /// Where this node's replication listener binds, when not at its own address in --peers
    /// (such as `0.0.0.0:9191` behind a published port).
    #[arg(long, global = true, env = "EDDY_REPLICATION_LISTEN")]
    replication_listen: Option<String>,

    /// The PEM certificate chain this node presents to the other nodes of a replicated log,
    /// as a server and as a client; with --replication-tls-key and --replication-tls-ca the
    /// nodes speak mutual TLS, and refuse a peer whose certificate the CA did not sign.
    #[arg(
        long,
        global = true,
        env = "EDDY_REPLICATION_TLS_CERT",
        requires_all = ["replication_tls_key", "replication_tls_ca"]
    )]
    replication_tls_cert: Option<PathBuf>,

    /// The private key of --replication-tls-cert.
    #[arg(
        long,
        global = true,
        env = "EDDY_REPLICATION_TLS_KEY",
        requires = "replication_tls_cert"
    )]
    replication_tls_key: Option<PathBuf>,

    /// The PEM CA certificates the other nodes' certificates must chain to.
    #[arg(
        long,
        global = true,
        env = "EDDY_REPLICATION_TLS_CA",
        requires = "replication_tls_cert"
    )]
    replication_tls_ca: Option<PathBuf>,

    /// How long a follower of the replicated log may go without catching up with the leader
    /// before it leaves the in-sync replicas, in milliseconds (Kafka's
    /// `replica.lag.time.max.ms`).
    #[arg(
        long,
        global = true,
        env = "EDDY_REPLICA_LAG_TIME_MAX_MS",
        default_value_t = 30_000
    )]
    replica_lag_time_max_ms: u64,

    /// How many entries the replicated log's Raft log grows by between snapshots of the
    /// store; the log is purged up to each snapshot but its last 1,000 entries, and a node
    /// that missed purged entries catches up from the snapshot.
    #[arg(
        long,
        global = true,
        env = "EDDY_REPLICA_SNAPSHOT_ENTRIES",
        default_value_t = eddy_storage::DEFAULT_SNAPSHOT_ENTRIES
    )]
    replica_snapshot_entries: u64,

    /// How many bytes of entries the replicated log's Raft log grows by between snapshots at
    /// most (a snapshot comes after this many bytes or `--replica-snapshot-entries` entries,
    /// whichever is first).
    #[arg(
        long,
        global = true,
        env = "EDDY_REPLICA_SNAPSHOT_BYTES",
        default_value_t = eddy_storage::DEFAULT_SNAPSHOT_BYTES
    )]
    replica_snapshot_bytes: u64,

    /// The Kafka cluster the log runs on, as `host:port[,host:port...]`: topics, records and
    /// offsets then live on the cluster (Eddy's own Kafka listener stays off), while operator
    /// state and query positions stay in --data-dir. Without it the log is embedded.
    #[arg(long, global = true, env = "EDDY_BOOTSTRAP_SERVERS")]
    bootstrap_servers: Option<String>,

    /// A librdkafka property for every client of the cluster, such as
    /// `security.protocol=SASL_SSL` or `sasl.username=eddy`; repeat for more.
    #[arg(long = "cluster-property", global = true, value_name = "KEY=VALUE", value_parser = parse_define)]
    cluster_properties: Vec<(String, String)>,

    /// The service id on the cluster (ksqlDB's `ksql.service.id`): nodes with the same one
    /// share the catalog, kept in the command topic `_confluent-ksql-<id>_command_topic`, and
    /// the state changelog `_confluent-ksql-<id>_state_changelog`.
    #[arg(long, global = true, env = "EDDY_SERVICE_ID", default_value = eddy_storage::DEFAULT_SERVICE_ID)]
    service_id: String,

    /// On a cluster, ksqlDB's `processing.guarantee`: `exactly_once_v2` (each commit is one
    /// Kafka transaction) or `at_least_once` (a crash may repeat the output in flight).
    #[arg(
        long,
        global = true,
        env = "EDDY_PROCESSING_GUARANTEE",
        default_value = "exactly_once_v2"
    )]
    processing_guarantee: eddy_storage::Guarantee,

    /// How long one request to the cluster may take, in milliseconds, before it fails (and
    /// how long the server waits for the cluster to answer when it starts).
    #[arg(
        long,
        global = true,
        env = "EDDY_CLUSTER_TIMEOUT_MS",
        default_value_t = 30_000
    )]
    cluster_timeout_ms: u64,

    /// On a cluster, the URL the service's other nodes reach this node's REST API at
    /// (ksqlDB's `ksql.advertised.listener`), to forward it statements; by default the HTTP
    /// listener's address, with this machine's host name when it listens on every interface.
    #[arg(long, global = true, env = "EDDY_ADVERTISED_LISTENER")]
    advertised_listener: Option<String>,

    /// On a cluster, the URL the service's other nodes reach this node's schema registry at,
    /// to forward it the registry's changes while this node is active; by default the
    /// registry listener's address, named as --advertised-listener's default is.
    #[arg(long, global = true, env = "EDDY_SCHEMA_REGISTRY_ADVERTISED_LISTENER")]
    schema_registry_advertised_listener: Option<String>,

    /// The most partitions a topic may have; larger requests are refused
    /// (`INVALID_PARTITIONS` for Kafka clients, an error for `PARTITIONS=` in SQL).
    #[arg(long, global = true, env = "EDDY_MAX_PARTITIONS", default_value_t = eddy_storage::DEFAULT_MAX_PARTITIONS)]
    max_partitions: u32,

    /// Bytes of the store's disk kept free: below it, writes are refused with a retriable error
    /// until space returns. By default 5% of the filesystem, between 256 MiB and 1 GiB.
    #[arg(long, global = true, env = "EDDY_DISK_RESERVE_BYTES")]
    disk_reserve_bytes: Option<u64>,

    /// Read the store's files through mmap: a little less CPU per read, but the file pages it
    /// touches count in the server's resident memory (RSS).
    #[arg(long, global = true, env = "EDDY_STORE_MMAP_READS")]
    store_mmap_reads: bool,

    /// Milliseconds a failed persistent query waits before it is started again, doubling up to
    /// --query-retry-backoff-max-ms (ksqlDB's `ksql.query.retry.backoff.initial.ms`).
    #[arg(
        long,
        global = true,
        env = "EDDY_QUERY_RETRY_BACKOFF_INITIAL_MS",
        default_value_t = 15_000
    )]
    query_retry_backoff_initial_ms: u64,

    /// The longest wait before a failed query is started again, in milliseconds (ksqlDB's
    /// `ksql.query.retry.backoff.max.ms`).
    #[arg(
        long,
        global = true,
        env = "EDDY_QUERY_RETRY_BACKOFF_MAX_MS",
        default_value_t = 900_000
    )]
    query_retry_backoff_max_ms: u64,

    /// The most entries of stored state (aggregation groups and windows, join and table rows)
    /// each persistent query keeps in memory; the rest is read through from the store.
    #[arg(long, global = true, env = "EDDY_STATE_CACHE_ENTRIES", default_value_t = eddy_engine::DEFAULT_STATE_CACHE_ENTRIES)]
    state_cache_entries: usize,

    /// The most bytes of rows a pull query may hold back to sort them (`ORDER BY`) or to keep
    /// a table's latest row per key; past it, the query fails with an error saying so.
    #[arg(long, global = true, env = "EDDY_PULL_QUERY_MAX_BYTES", default_value_t = eddy_engine::DEFAULT_PULL_QUERY_MAX_BYTES)]
    pull_query_max_bytes: usize,

    /// The most push queries clients may run at once (ksqlDB's `ksql.max.push.queries`).
    #[arg(long, global = true, env = "EDDY_MAX_PUSH_QUERIES", default_value_t = eddy_engine::DEFAULT_MAX_PUSH_QUERIES)]
    max_push_queries: usize,

    /// The most connections each listener (HTTP, Kafka) holds open; more are closed at once.
    /// By default a quarter of the open-files limit left after 1,024 for the store, between 64
    /// and 10,000.
    #[arg(long, global = true, env = "EDDY_MAX_CONNECTIONS")]
    max_connections: Option<usize>,

    /// The most bytes one Kafka Fetch answer carries, whatever the client asks (Kafka's
    /// `fetch.max.bytes`).
    #[arg(long, global = true, env = "EDDY_KAFKA_FETCH_MAX_BYTES", default_value_t = kafka::DEFAULT_FETCH_MAX_BYTES)]
    kafka_fetch_max_bytes: usize,

    /// Milliseconds a Kafka connection may go without a request before it is closed (Kafka's
    /// `connections.max.idle.ms`).
    #[arg(
        long,
        global = true,
        env = "EDDY_KAFKA_CONNECTIONS_MAX_IDLE_MS",
        default_value_t = 600_000
    )]
    kafka_connections_max_idle_ms: u64,

    /// The shortest session timeout a consumer group member may ask for, in milliseconds
    /// (Kafka's `group.min.session.timeout.ms`).
    #[arg(
        long,
        global = true,
        env = "EDDY_GROUP_MIN_SESSION_TIMEOUT_MS",
        default_value_t = 6_000
    )]
    group_min_session_timeout_ms: u64,

    /// The longest session timeout a consumer group member may ask for, in milliseconds
    /// (Kafka's `group.max.session.timeout.ms`).
    #[arg(
        long,
        global = true,
        env = "EDDY_GROUP_MAX_SESSION_TIMEOUT_MS",
        default_value_t = 1_800_000
    )]
    group_max_session_timeout_ms: u64,

    /// The longest transaction timeout a transactional producer may ask for, in milliseconds
    /// (Kafka's `transaction.max.timeout.ms`).
    #[arg(
        long,
        global = true,
        env = "EDDY_TRANSACTION_MAX_TIMEOUT_MS",
        default_value_t = 900_000
    )]
    transaction_max_timeout_ms: u64,
}

impl ServerArgs {
    /// What Kafka clients may ask, from the flags.
    fn kafka_limits(&self) -> kafka::KafkaLimits {
        kafka::KafkaLimits {
            fetch_max_bytes: self.kafka_fetch_max_bytes,
            connections_max_idle: Duration::from_millis(self.kafka_connections_max_idle_ms.max(1)),
            groups: kafka::GroupLimits {
                min_session_timeout: Duration::from_millis(self.group_min_session_timeout_ms),
                max_session_timeout: Duration::from_millis(self.group_max_session_timeout_ms),
                ..kafka::GroupLimits::default()
            },
            transactions: kafka::TransactionLimits {
                max_timeout: Duration::from_millis(self.transaction_max_timeout_ms.max(1)),
                ..kafka::TransactionLimits::default()
            },
        }
    }

    /// The store's options, from the flags.
    fn store_options(&self) -> StoreOptions {
        StoreOptions {
            sync: self.sync,
            max_partitions: self.max_partitions,
            disk_reserve_bytes: self.disk_reserve_bytes,
            mmap_reads: self.store_mmap_reads,
            cluster: self
                .bootstrap_servers
                .as_ref()
                .map(|servers| ClusterOptions {
                    properties: self.cluster_properties.clone(),
                    timeout: Duration::from_millis(self.cluster_timeout_ms.max(1)),
                    service_id: self.service_id.clone(),
                    guarantee: self.processing_guarantee,
                    ..ClusterOptions::new(servers.clone())
                }),
            ..StoreOptions::default()
        }
    }
}

fn init_logging(filter: &str, file: Option<&std::path::Path>) -> anyhow::Result<()> {
    let filter = EnvFilter::try_new(filter)
        .with_context(|| format!("--log-level {filter:?} is not a valid level or directive"))?;
    match file {
        // With the shell on the terminal, the server's log goes to a file instead.
        Some(path) => {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("cannot create {}", dir.display()))?;
            }
            let log = std::fs::File::options()
                .create(true)
                .append(true)
                .open(path)
                .with_context(|| format!("cannot open the log file {}", path.display()))?;
            tracing_subscriber::fmt()
                .with_env_filter(filter)
                .with_writer(std::sync::Mutex::new(log))
                .with_ansi(false)
                .init();
        }
        None => tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .with_ansi(std::io::stderr().is_terminal())
            .init(),
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let shell = match &cli.command {
        None => std::io::stdin().is_terminal() && std::io::stdout().is_terminal(),
        Some(_) => false,
    };
    let log_file = shell.then(|| cli.server.data_dir.join("eddy.log"));
    if !matches!(cli.command, Some(Command::Repl(_) | Command::Users(_))) {
        init_logging(&cli.server.log_level, log_file.as_deref())?;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("eddy")
        .thread_stack_size(THREAD_STACK_BYTES)
        .build()
        .context("cannot start the async runtime")?;
    match cli.command {
        Some(Command::Repl(args)) => {
            let password = match (&args.user, args.password) {
                (Some(user), None) => Some(read_password(&format!("Password for {user}: "))?),
                (_, password) => password,
            };
            let succeeded = eddy_repl::run(eddy_repl::Options {
                credentials: eddy_repl::Credentials {
                    user: args.user,
                    password,
                    ca_file: args.ca_file,
                },
                url: args.url,
                execute: args.execute,
                file: args.file,
                defines: args.defines,
                output: args.output,
                history: args.history_file.or_else(eddy_repl::default_history_file),
            })?;
            if !succeeded {
                std::process::exit(1);
            }
            Ok(())
        }
        Some(Command::Users(command)) => runtime.block_on(users(&cli.server, command)),
        None if shell => serve_with_shell(&runtime, &cli.server, log_file.as_deref()),
        Some(Command::Server) | None => runtime.block_on(async {
            let signal = ShutdownSignal::install(true)?;
            serve(&cli.server, signal.wait(), None).await
        }),
    }
}

/// What the shell started with the server sends: the bootstrap admin's credentials, or a user
/// and password asked for, when HTTP needs them; the server's own certificate as a CA.
fn shell_credentials(args: &ServerArgs) -> anyhow::Result<eddy_repl::Credentials> {
    let mut credentials = eddy_repl::Credentials {
        ca_file: args.tls_cert.clone(),
        ..eddy_repl::Credentials::default()
    };
    if args.http_auth == "basic" {
        let user = match &args.admin_user {
            Some(admin) => admin.clone(),
            None => {
                print!("User: ");
                std::io::Write::flush(&mut std::io::stdout())?;
                let mut line = String::new();
                std::io::stdin().read_line(&mut line)?;
                line.trim().to_string()
            }
        };
        credentials.password = Some(match std::env::var("EDDY_ADMIN_PASSWORD") {
            Ok(password) if args.admin_user.as_deref() == Some(user.as_str()) => password,
            _ => read_password(&format!("Password for {user}: "))?,
        });
        credentials.user = Some(user);
    }
    Ok(credentials)
}

/// `eddy users ...`: changes the users in the data directory's store.
async fn users(args: &ServerArgs, command: UsersCommand) -> anyhow::Result<()> {
    let store = Store::open(&args.data_dir, StoreOptions::default()).with_context(|| {
        format!(
            "cannot open the store in {} (while the server runs, change users with a Kafka \
             admin client's AlterUserScramCredentials, or stop the server first)",
            args.data_dir.display()
        )
    })?;
    let users = eddy_security::UserStore::open(&store)?;
    match command {
        UsersCommand::Add { name } => {
            eddy_security::users::validate_name(&name)?;
            let password = read_password(&format!("Password for {name}: "))?;
            users.set_password(&name, &password).await?;
            println!("User {name} saved (SCRAM-SHA-256 and SCRAM-SHA-512).");
        }
        UsersCommand::Remove { name } => {
            if users.remove(&name).await? {
                println!("User {name} removed.");
            } else {
                anyhow::bail!("there is no user {name:?}");
            }
        }
        UsersCommand::List => {
            for (name, mechanisms) in users.list() {
                let mechanisms: Vec<String> = mechanisms
                    .iter()
                    .map(|(m, iterations)| format!("{}({iterations})", m.name()))
                    .collect();
                println!("{name}\t{}", mechanisms.join(" "));
            }
        }
    }
    tokio::task::spawn_blocking(move || store.close()).await??;
    Ok(())
}

/// A password: asked for without echo on a terminal, else the first line of standard input.
fn read_password(prompt: &str) -> anyhow::Result<String> {
    let password = if std::io::stdin().is_terminal() {
        rpassword::prompt_password(prompt).context("cannot read the password")?
    } else {
        let mut line = String::new();
        std::io::stdin()
            .read_line(&mut line)
            .context("cannot read the password from standard input")?;
        line.trim_end_matches(['\r', '\n']).to_string()
    };
    if password.is_empty() {
        anyhow::bail!("the password is empty");
    }
    Ok(password)
}

/// The users, super users and bootstrap admin, from the flags.
async fn access(args: &ServerArgs, store: &Store) -> anyhow::Result<eddy_security::Access> {
    let users = eddy_security::UserStore::open(store)?;
    let mut super_users = super_users(args);
    if let Some(admin) = &args.admin_user {
        if users.list().iter().all(|(name, _)| name != admin) {
            let password = std::env::var("EDDY_ADMIN_PASSWORD").map_err(|_| {
                anyhow::anyhow!(
                    "--admin-user {admin} does not exist yet; set EDDY_ADMIN_PASSWORD to create it"
                )
            })?;
            users.set_password(admin, &password).await?;
            info!(user = %admin, "created the admin user");
        }
        super_users.push(admin.clone());
    }
    let acls = eddy_security::acl::Acls::open(store)?;
    let policy = acl_policy(args);
    if policy.enforce {
        info!(
            super_users = super_users.len(),
            "ACLs are enforced (--authorizer {})", args.authorizer
        );
    }
    Ok(eddy_security::Access::new(users, acls, super_users, policy))
}

/// The super users `--super-users` names, without `User:`.
fn super_users(args: &ServerArgs) -> Vec<String> {
    args.super_users
        .split([';', ','])
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.strip_prefix("User:").unwrap_or(s).to_string())
        .collect()
}

/// Whether ACLs are enforced (`--authorizer`; by default, when clients authenticate).
fn acl_policy(args: &ServerArgs) -> eddy_security::Policy {
    let certified = args.tls_client_auth == eddy_security::tls::ClientAuth::Required;
    let authenticating = args.http_auth == "basic"
        || args.kafka_listen.iter().any(|l| {
            let l = l.trim().to_ascii_uppercase();
            l.starts_with("SASL_") || (certified && l.starts_with("SSL://"))
        });
    eddy_security::Policy {
        enforce: match args.authorizer.as_str() {
            "acl" => true,
            "none" => false,
            _ => authenticating,
        },
        allow_if_no_acl: args.allow_everyone_if_no_acl_found,
    }
}

/// The Kafka listeners a follower answers on ([`kafka::following`]): every one when it could
/// read its users and ACLs (`access`); without them, only those that need neither (not SASL,
/// and ACLs not enforced).
fn follower_kafka_listeners(
    args: &ServerArgs,
    plan: &ListenerPlan,
    tls: Option<&tokio_rustls::TlsAcceptor>,
    (max_connections, access): (usize, Option<&eddy_security::Access>),
) -> Vec<(SocketAddr, kafka::following::FollowerListener)> {
    let enforce = acl_policy(args).enforce;
    plan.kafka
        .iter()
        .filter(|l| access.is_some() || !(enforce || l.protocol.uses_sasl()))
        .map(|l| {
            let advertised = l
                .advertised
                .clone()
                .unwrap_or_else(|| (l.bind.ip().to_string(), l.bind.port()));
            let listener = kafka::following::FollowerListener {
                security: l.protocol,
                access: access.cloned(),
                sasl_mechanisms: args.sasl_mechanisms.clone(),
                advertised,
                tls: l.protocol.uses_tls().then(|| tls.cloned()).flatten(),
                idle: Duration::from_millis(args.kafka_connections_max_idle_ms.max(1)),
                connections: eddy_server::connections::ConnectionLimit::new(
                    "kafka",
                    max_connections,
                ),
            };
            (l.bind, listener)
        })
        .collect()
}

/// The TLS acceptor, when a listener needs one.
fn tls_acceptor(args: &ServerArgs) -> anyhow::Result<tokio_rustls::TlsAcceptor> {
    let (Some(certificate), Some(key)) = (&args.tls_cert, &args.tls_key) else {
        anyhow::bail!(
            "a TLS listener (https://, SSL:// or SASL_SSL://) needs --tls-cert and --tls-key"
        );
    };
    let files = eddy_security::tls::TlsFiles {
        certificate: certificate.clone(),
        key: key.clone(),
        client_ca: args.tls_client_ca.clone(),
        client_auth: args.tls_client_auth,
    };
    Ok(files.acceptor()?)
}

/// Serves, and runs the shell on this terminal against the server; leaving the shell stops the
/// server. Ctrl-C belongs to the shell here (it stops a push query), so only SIGTERM or
/// leaving the shell stops the server.
fn serve_with_shell(
    runtime: &tokio::runtime::Runtime,
    args: &ServerArgs,
    log_file: Option<&std::path::Path>,
) -> anyhow::Result<()> {
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = runtime.spawn({
        let args = args.clone();
        async move {
            let signal = ShutdownSignal::install(false)?;
            let stop = async move {
                tokio::select! {
                    _ = stop_rx => Ok(()),
                    waited = signal.wait() => waited,
                }
            };
            serve(&args, stop, Some(ready_tx)).await
        }
    });
    let Ok(listening) = ready_rx.blocking_recv() else {
        // The server stopped before listening; its error says why.
        runtime
            .block_on(server)
            .context("the server task failed")??;
        anyhow::bail!("the server stopped before it listened");
    };
    println!(
        "Eddy is serving HTTP on {} and Kafka on {}, with its data in {}{}.",
        listening.http,
        listening
            .kafka
            .map_or_else(|| "no address".to_string(), |a| a.to_string()),
        args.data_dir.display(),
        log_file
            .map(|f| format!(", log in {}", f.display()))
            .unwrap_or_default()
    );
    let shell = eddy_repl::run(eddy_repl::Options {
        credentials: shell_credentials(args)?,
        url: listening.http.clone(),
        history: eddy_repl::default_history_file(),
        ..eddy_repl::Options::default()
    });
    let _ = stop_tx.send(());
    let served = runtime.block_on(server).context("the server task failed")?;
    shell?;
    served
}

/// Serves the schema registry on its own listener, unless `--schema-registry-listen off`;
/// returns where it listens and its task.
async fn serve_registry(
    args: &ServerArgs,
    listener: Option<(
        eddy_server::listeners::HttpListener,
        Option<tokio_rustls::TlsAcceptor>,
    )>,
    (registry, service, bodies, memory): (
        std::sync::Arc<eddy_registry::SchemaRegistry>,
        std::sync::Arc<eddy_server::service::Service>,
        http::BodyLimits,
        eddy_server::request_memory::RequestMemory,
    ),
    (metrics, auth): (
        &eddy_server::metrics::ServerMetrics,
        eddy_server::auth::HttpAuth,
    ),
    max_connections: usize,
) -> anyhow::Result<Option<(SocketAddr, tokio::task::JoinHandle<()>)>> {
    let Some((listener, tls)) = listener else {
        return Ok(None);
    };
    let address = listener.bind;
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .with_context(|| {
            format!(
                "cannot listen for schema registry clients on {address} (if another registry \
                 serves there, give --schema-registry-listen another address, or off)"
            )
        })?;
    let address = listener.local_addr()?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    let explicit = args.schema_registry_advertised_listener.as_deref();
    service.advertise_registry(&advertised_url(explicit, scheme, address));
    // Browsers get what the REST API's listener lets them have: nothing from other sites.
    let browser = http::BrowserPolicy::new(
        address,
        &args.http_allowed_hosts,
        &args.http_allowed_origins,
    );
    let router = eddy_server::registry::router(registry, service, bodies, memory).layer(
        axum::middleware::from_fn_with_state(
            std::sync::Arc::new(browser),
            eddy_server::browser::guard,
        ),
    );
    let router = with_auth(router, auth);
    let connections = metrics.connection_limit("schema_registry", max_connections);
    let task = tokio::spawn(async move {
        if let Err(e) = http::serve(listener, router, connections, tls).await {
            tracing::error!(error = %e, "the schema registry listener stopped");
        }
    });
    Ok(Some((address, task)))
}

/// Where a started server listens.
struct Listening {
    /// The REST API's URL.
    http: String,
    kafka: Option<SocketAddr>,
}

/// Every listener the flags ask for.
struct ListenerPlan {
    kafka: Vec<eddy_server::listeners::KafkaListener>,
    http: eddy_server::listeners::HttpListener,
    registry: Option<eddy_server::listeners::HttpListener>,
}

impl ListenerPlan {
    fn from_args(args: &ServerArgs) -> anyhow::Result<Self> {
        use eddy_server::listeners;
        // On a cluster, Kafka clients talk to the cluster's brokers, not to Eddy.
        let kafka = if args.bootstrap_servers.is_some() {
            Vec::new()
        } else {
            listeners::kafka_listeners(&args.kafka_listen, &args.kafka_advertised)
                .map_err(anyhow::Error::msg)?
        };
        let http =
            listeners::http_listener("--listen", &args.listen).map_err(anyhow::Error::msg)?;
        let registry = if args.schema_registry_listen.eq_ignore_ascii_case("off") {
            None
        } else {
            Some(
                listeners::http_listener("--schema-registry-listen", &args.schema_registry_listen)
                    .map_err(anyhow::Error::msg)?,
            )
        };
        Ok(ListenerPlan {
            kafka,
            http,
            registry,
        })
    }

    /// The flags' listeners, refused if exposed without authentication, and the TLS acceptor
    /// they need.
    fn checked(
        args: &ServerArgs,
    ) -> anyhow::Result<(ListenerPlan, Option<tokio_rustls::TlsAcceptor>)> {
        let plan = ListenerPlan::from_args(args)?;
        plan.check_exposure(args)?;
        let tls = if plan.needs_tls() {
            Some(tls_acceptor(args)?)
        } else {
            None
        };
        Ok((plan, tls))
    }

    /// Where this node serves clients, as the plan says: what it tells the other nodes of the
    /// replicated log.
    fn addresses(&self, args: &ServerArgs) -> eddy_server::addresses::NodeAddresses {
        let scheme = if self.http.tls { "https" } else { "http" };
        let kafka = self
            .kafka
            .iter()
            .map(|l| {
                let (host, port) = l
                    .advertised
                    .clone()
                    .unwrap_or_else(|| (l.bind.ip().to_string(), l.bind.port()));
                eddy_server::addresses::KafkaAddress {
                    protocol: l.protocol.name().to_string(),
                    host,
                    port,
                }
            })
            .collect();
        eddy_server::addresses::NodeAddresses {
            http: Some(advertised_url(
                args.advertised_listener.as_deref(),
                scheme,
                self.http.bind,
            )),
            kafka,
        }
    }

    fn needs_tls(&self) -> bool {
        self.http.tls
            || self.registry.is_some_and(|r| r.tls)
            || self.kafka.iter().any(|l| l.protocol.uses_tls())
    }

    /// Refuses listeners beyond loopback that let anyone in, unless --allow-anonymous.
    fn check_exposure(&self, args: &ServerArgs) -> anyhow::Result<()> {
        use eddy_server::listeners::{is_loopback, refuse_anonymous};
        let certified = args.tls_client_auth == eddy_security::tls::ClientAuth::Required;
        let http_open = args.http_auth != "basic";
        if !args.allow_anonymous {
            for listener in &self.kafka {
                let authenticates = listener.protocol.uses_sasl()
                    || (listener.protocol == eddy_security::SecurityProtocol::Ssl && certified);
                if !authenticates && !is_loopback(listener.bind.ip()) {
                    anyhow::bail!(refuse_anonymous(
                        &format!("Kafka ({})", listener.protocol),
                        listener.bind,
                        "Use a SASL_SSL:// (or SASL_PLAINTEXT://) listener and create users with \
                         `eddy users add NAME`."
                    ));
                }
            }
            for (what, listener) in [
                ("HTTP", Some(self.http)),
                ("the schema registry", self.registry),
            ] {
                if let Some(listener) = listener
                    && http_open
                    && !is_loopback(listener.bind.ip())
                {
                    anyhow::bail!(refuse_anonymous(
                        what,
                        listener.bind,
                        "Pass --http-auth basic and create users with `eddy users add NAME`."
                    ));
                }
            }
        }
        Ok(())
    }

    /// Warns when authentication is on and no user exists yet.
    fn warn_without_users(&self, args: &ServerArgs, access: &eddy_security::Access) {
        let authenticating =
            args.http_auth == "basic" || self.kafka.iter().any(|l| l.protocol.uses_sasl());
        if authenticating && access.users.is_empty() {
            tracing::warn!(
                "authentication is on but there are no users yet: create one with `eddy users add \
                 NAME` (server stopped), or EDDY_ADMIN_USER and EDDY_ADMIN_PASSWORD"
            );
        }
    }
}

/// `router` behind HTTP Basic, when `auth` has users to check; OPTIONS preflights pass, as
/// browsers send them without credentials.
fn with_auth(router: axum::Router, auth: eddy_server::auth::HttpAuth) -> axum::Router {
    router.layer(axum::middleware::from_fn_with_state(
        std::sync::Arc::new(auth),
        eddy_server::auth::basic,
    ))
}

/// Starts every Kafka listener over one broker; their tasks, and where each listens.
async fn serve_kafka(
    args: &ServerArgs,
    plan: &ListenerPlan,
    (store, access, tls): (
        &Store,
        &eddy_security::Access,
        Option<&tokio_rustls::TlsAcceptor>,
    ),
    (metrics, max_connections): (&eddy_server::metrics::ServerMetrics, usize),
) -> anyhow::Result<(
    Vec<tokio::task::JoinHandle<()>>,
    Vec<(SocketAddr, eddy_security::SecurityProtocol)>,
)> {
    if plan.kafka.is_empty() {
        return Ok((Vec::new(), Vec::new()));
    }
    let broker = kafka::Broker::new(store.clone(), &args.kafka_limits());
    metrics.watch_transactions(broker.transactions().clone());
    let mut tasks = Vec::new();
    let mut kafka_addresses = Vec::new();
    for listener in &plan.kafka {
        let bound = tokio::net::TcpListener::bind(listener.bind)
            .await
            .with_context(|| {
                format!(
                    "cannot listen for Kafka clients ({}) on {}",
                    listener.protocol, listener.bind
                )
            })?;
        let address = bound.local_addr()?;
        let config = kafka::KafkaConfig {
            advertised: listener
                .advertised
                .clone()
                .unwrap_or_else(|| (address.ip().to_string(), address.port())),
            auto_create_topics: args.kafka_auto_create_topics,
            default_partitions: 1,
            fetched_records: Some(metrics.kafka_fetched_records.clone()),
            limits: args.kafka_limits(),
            connections: metrics.connection_limit("kafka", max_connections),
            security: kafka::ListenerSecurity {
                protocol: listener.protocol,
                tls: listener.protocol.uses_tls().then(|| tls.cloned()).flatten(),
                access: Some(access.clone()),
                sasl_mechanisms: args.sasl_mechanisms.clone(),
            },
        };
        tasks.push(tokio::spawn(broker.clone().serve(bound, config)));
        kafka_addresses.push((address, listener.protocol));
    }
    Ok((tasks, kafka_addresses))
}

/// Where the service's other nodes reach one of this node's listeners: `explicit` (a flag),
/// else the address it is bound to, naming this machine by its host name when it listens on
/// every interface (an unspecified address reaches nothing from elsewhere).
fn advertised_url(explicit: Option<&str>, scheme: &str, bound: SocketAddr) -> String {
    if let Some(url) = explicit {
        return if url.contains("://") {
            url.to_string()
        } else {
            format!("{scheme}://{url}")
        };
    }
    if !bound.ip().is_unspecified() {
        return format!("{scheme}://{bound}");
    }
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into());
    format!("{scheme}://{host}:{}", bound.port())
}

/// Serves until `shutdown` resolves, then stops cleanly; `ready` gets the HTTP address once
/// both listeners are up.
async fn serve(
    args: &ServerArgs,
    shutdown: impl std::future::Future<Output = anyhow::Result<()>> + Send + 'static,
    ready: Option<tokio::sync::oneshot::Sender<Listening>>,
) -> anyhow::Result<()> {
    let (Some(node_id), Some(peers)) = (args.node_id, &args.peers) else {
        return serve_on(args, None, shutdown, ready).await;
    };
    // Listeners are checked before anything is opened, so a refusal comes at once.
    let (plan, tls) = ListenerPlan::checked(args)?;
    let options = eddy_storage::ReplicaOptions {
        node_id,
        peers: peers.0.clone(),
        listen: args.replication_listen.clone(),
        tls: replication_tls(args)?,
        sync: args.sync,
        lag: Duration::from_millis(args.replica_lag_time_max_ms.max(1)),
        snapshot_entries: args.replica_snapshot_entries.max(1),
        snapshot_bytes: args.replica_snapshot_bytes.max(1),
    };
    let replica = eddy_storage::Replica::start(&args.data_dir, options)
        .await
        .with_context(|| format!("cannot start node {node_id} of the replicated log"))?;
    info!(node = node_id, address = %replica.address(), "listening for the replicated log's nodes");
    plan.addresses(args).advertise(replica.status());
    let mut ready = ready;
    let follow = || {
        let access = follower_access(args, &replica);
        if let Err(e) = &access {
            warn!(error = %format!("{e:#}"), "cannot read the users and ACLs on this follower; its SASL listeners, those where ACLs are enforced, and its HTTP port when it checks passwords stay closed");
        }
        let access = access.ok();
        let auth = follower_auth(args, access.as_ref());
        let http_tls = plan.http.tls.then(|| tls.clone()).flatten();
        let status = replica.status().clone();
        let bind = plan.http.bind;
        let max_connections = args.max_connections.unwrap_or_else(|| {
            let descriptors = eddy_server::connections::raise_file_descriptor_limit();
            eddy_server::connections::default_max_connections(descriptors)
        });
        let http_connections =
            eddy_server::connections::ConnectionLimit::new("http", max_connections);
        let kafka_listeners = follower_kafka_listeners(
            args,
            &plan,
            tls.as_ref(),
            (max_connections, access.as_ref()),
        );
        let forwarding = follower_forwarding(args);
        let refreshing = futures::future::OptionFuture::from(
            access.map(|a| refresh_access(a, replica.status().clone())),
        );
        async move {
            let kafka: Vec<_> = kafka_listeners
                .into_iter()
                .map(|(bind, listener)| kafka::following::follow(bind, status.clone(), listener))
                .collect();
            let http = async move {
                match auth {
                    Ok(auth) => {
                        let router = eddy_server::following::router(status, forwarding);
                        follow_http(bind, router, auth, (http_tls, http_connections)).await
                    }
                    // Without its users a follower cannot check credentials: it serves nothing.
                    Err(e) => {
                        warn!(error = %format!("{e:#}"), "cannot read the users on this follower; its HTTP port stays closed")
                    }
                }
            };
            futures::future::join3(http, futures::future::join_all(kafka), refreshing).await;
        }
    };
    eddy_server::leadership::serve_while_leading(&replica, shutdown, follow, |term, until| {
        let store = Store::open_replica(&replica, args.store_options(), Some(term));
        let ready = ready.take();
        async move {
            let store = store.context("cannot open the store as the leader")?;
            serve_on(args, Some(store), until, ready).await
        }
    })
    .await
}

/// The users and ACLs a follower checks clients against: those its store applied, read again
/// as they change ([`refresh_access`]), with the super users and ACL policy of the flags.
fn follower_access(
    args: &ServerArgs,
    replica: &eddy_storage::Replica,
) -> anyhow::Result<eddy_security::Access> {
    let store = Store::open_replica(replica, args.store_options(), None)?;
    let users = eddy_security::UserStore::open(&store)?;
    let acls = eddy_security::acl::Acls::open(&store)?;
    let mut super_users = super_users(args);
    super_users.extend(args.admin_user.clone());
    Ok(eddy_security::Access::new(
        users,
        acls,
        super_users,
        acl_policy(args),
    ))
}

/// Reads a follower's users and ACLs again whenever it applied more of the leader's log, at
/// most twice a second and never while a snapshot is being installed (the store is empty
/// then), until dropped.
async fn refresh_access(access: eddy_security::Access, status: eddy_storage::ReplicaStatus) {
    let mut read_at = status.leadership().applied;
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let applied = status.leadership().applied;
        if applied == read_at {
            continue;
        }
        let reread = status.unless_installing(|| {
            let users = access.users.reload()?;
            let acls = access.acls.reload()?;
            Ok::<_, eddy_security::SecurityError>(users || acls)
        });
        match reread {
            Some(Ok(changed)) => {
                read_at = applied;
                if changed {
                    info!("this follower read changed users or ACLs");
                }
            }
            Some(Err(e)) => warn!(error = %e, "cannot read this follower's users and ACLs again"),
            None => {}
        }
    }
}

/// Mutual TLS between the nodes, when the flags ask for it.
fn replication_tls(args: &ServerArgs) -> anyhow::Result<Option<eddy_storage::ReplicationTls>> {
    let (Some(cert), Some(key), Some(ca)) = (
        &args.replication_tls_cert,
        &args.replication_tls_key,
        &args.replication_tls_ca,
    ) else {
        return Ok(None);
    };
    let (acceptor, connector) = eddy_security::tls::mutual(cert, key, ca)
        .context("cannot set up TLS between the replicated log's nodes")?;
    info!("the replicated log's nodes speak mutual TLS");
    Ok(Some(eddy_storage::ReplicationTls {
        acceptor,
        connector,
    }))
}

/// How a follower checks HTTP credentials: against the users its store applied, when
/// `--http-auth basic`; without them it serves nothing then.
fn follower_auth(
    args: &ServerArgs,
    access: Option<&eddy_security::Access>,
) -> anyhow::Result<eddy_server::auth::HttpAuth> {
    let access = if args.http_auth == "basic" {
        Some(
            access
                .cloned()
                .ok_or_else(|| anyhow::anyhow!("the users could not be read"))?,
        )
    } else {
        None
    };
    Ok(eddy_server::auth::HttpAuth {
        access,
        authorizer: None,
        style: eddy_server::auth::ErrorStyle::Ksql,
    })
}

/// How a follower forwards REST requests to the leader: trusting the system's roots and this
/// node's own certificate (nodes of a group usually share one), with the REST API's body
/// limit. Without a client (the TLS roots could not be read) it names the leader instead.
fn follower_forwarding(args: &ServerArgs) -> Option<eddy_server::following::Forwarding> {
    let client = |http1_only: bool| {
        eddy_repl::client::tls_config(args.tls_cert.as_deref()).and_then(|tls| {
            let builder = reqwest::Client::builder()
                .use_preconfigured_tls(tls)
                .connect_timeout(Duration::from_secs(5));
            let builder = if http1_only {
                builder.http1_only()
            } else {
                builder
            };
            builder.build().map_err(|e| e.to_string())
        })
    };
    match client(false).and_then(|c| Ok((c, client(true)?))) {
        Ok((client, upgrades)) => Some(eddy_server::following::Forwarding {
            client,
            upgrades,
            max_request_bytes: args.max_request_bytes,
        }),
        Err(error) => {
            warn!(%error, "a follower cannot forward requests to the leader; it names it instead");
            None
        }
    }
}

/// Serves a follower's HTTP routes ([`eddy_server::following`]) on the REST API's port until
/// dropped. The port is bound as soon as it is free: the leader's listener this node had may
/// still be closing.
async fn follow_http(
    bind: SocketAddr,
    router: axum::Router,
    auth: eddy_server::auth::HttpAuth,
    (tls, connections): (
        Option<tokio_rustls::TlsAcceptor>,
        eddy_server::connections::ConnectionLimit,
    ),
) {
    let router = with_auth(router, auth);
    let listener = eddy_server::listeners::bind_when_free(bind, "HTTP as a follower").await;
    info!(address = %bind, "listening for HTTP as a follower (health, metrics; the rest is the leader's)");
    if let Err(e) = http::serve(listener, router, connections, tls).await {
        tracing::error!(error = %e, "the follower's HTTP listener stopped");
    }
}

/// Serves clients over `store` (by default the store the flags name) until `shutdown`.
async fn serve_on(
    args: &ServerArgs,
    store: Option<Store>,
    shutdown: impl std::future::Future<Output = anyhow::Result<()>>,
    ready: Option<tokio::sync::oneshot::Sender<Listening>>,
) -> anyhow::Result<()> {
    // Listeners are checked before anything is opened, so a refusal comes at once.
    let (plan, tls) = ListenerPlan::checked(args)?;
    let store = match store {
        Some(store) => store,
        None => Store::open(&args.data_dir, args.store_options())
            .with_context(|| format!("cannot open the store in {}", args.data_dir.display()))?,
    };
    let engine_options = eddy_engine::EngineOptions {
        query_retry: eddy_engine::query::RetryBackoff {
            initial: Duration::from_millis(args.query_retry_backoff_initial_ms.max(1)),
            max: Duration::from_millis(
                args.query_retry_backoff_max_ms
                    .max(args.query_retry_backoff_initial_ms.max(1)),
            ),
        },
        max_push_queries: args.max_push_queries,
        state_cache_entries: args.state_cache_entries,
        pull_query_max_bytes: args.pull_query_max_bytes,
    };
    let engine = eddy_engine::Engine::open_with(store.clone(), engine_options)
        .await
        .context("cannot restore the catalog from the command log")?;
    let sources = engine.catalog().await.sources().count();
    // The engine's formats and the registry's listener share one registry over the store.
    let registry = engine.schema_registry().clone();
    let access = access(args, &store).await?;
    plan.warn_without_users(args, &access);
    let engine = std::sync::Arc::new(engine);
    let state = http::AppState::new(engine.clone())?;
    let file_descriptors = eddy_server::connections::raise_file_descriptor_limit();
    let max_connections = args
        .max_connections
        .unwrap_or_else(|| eddy_server::connections::default_max_connections(file_descriptors));
    let (mut tasks, kafka_addresses) = serve_kafka(
        args,
        &plan,
        (&store, &access, tls.as_ref()),
        (&state.metrics, max_connections),
    )
    .await?;
    if let Some(follow) = engine.follow_cluster() {
        tasks.push(tokio::spawn(follow));
    }
    let http_listener = tokio::net::TcpListener::bind(plan.http.bind)
        .await
        .with_context(|| format!("cannot listen for HTTP on {}", plan.http.bind))?;
    let http_address = http_listener.local_addr()?;
    let scheme = if plan.http.tls { "https" } else { "http" };
    let advertised = advertised_url(args.advertised_listener.as_deref(), scheme, http_address);
    state
        .service
        .advertise(&advertised, args.tls_cert.as_deref())
        .map_err(anyhow::Error::msg)?;
    if let Some(heartbeat) = state.service.heartbeat() {
        info!(url = %advertised, "this node's REST API, as the service's other nodes reach it");
        tasks.push(tokio::spawn(heartbeat));
    }
    let queries = engine.clone();
    let browser = http::BrowserPolicy::new(
        http_address,
        &args.http_allowed_hosts,
        &args.http_allowed_origins,
    );
    let http_connections = state.metrics.connection_limit("http", max_connections);
    let bodies = http::BodyLimits {
        max_request_bytes: args.max_request_bytes,
        in_memory_bytes: args.request_memory_bytes,
    };
    let server_metrics = state.metrics.clone();
    let service = state.service.clone();
    let memory = bodies.memory();
    let http_auth = |style| eddy_server::auth::HttpAuth {
        access: (args.http_auth == "basic").then(|| access.clone()),
        authorizer: access.enforces().then(|| access.clone()),
        style,
    };
    let router = with_auth(
        http::router_sharing(state, bodies, browser, memory.clone()),
        http_auth(eddy_server::auth::ErrorStyle::Ksql),
    );
    let http_tls = plan.http.tls.then(|| tls.clone()).flatten();
    tasks.push(tokio::spawn(async move {
        if let Err(e) = http::serve(http_listener, router, http_connections, http_tls).await {
            tracing::error!(error = %e, "the HTTP server stopped");
        }
    }));
    let schema_registry = serve_registry(
        args,
        plan.registry
            .map(|r| (r, r.tls.then(|| tls.clone()).flatten())),
        (registry, service, bodies, memory),
        (
            &server_metrics,
            http_auth(eddy_server::auth::ErrorStyle::Registry),
        ),
        max_connections,
    )
    .await?;
    for (address, protocol) in &kafka_addresses {
        info!(address = %address, protocol = %protocol, "listening for Kafka clients");
    }
    info!(address = %http_address, scheme, "listening for HTTP (ksqlDB REST API)");
    if let Some((address, _)) = &schema_registry {
        info!(address = %address, "listening for schema registry clients");
    }
    info!(
        data_dir = %args.data_dir.display(),
        topics = store.list_topics().len(),
        sources,
        sync = %args.sync,
        "eddy is running; press Ctrl-C to stop"
    );
    let maintenance =
        store.spawn_maintenance(Duration::from_secs(args.maintenance_interval_secs.max(1)));

    if let Some(ready) = ready {
        let _ = ready.send(Listening {
            http: format!("{scheme}://{http_address}"),
            kafka: kafka_addresses.first().map(|(a, _)| *a),
        });
    }
    shutdown.await?;
    info!("shutting down");
    for task in tasks {
        task.abort();
    }
    if let Some((_, task)) = schema_registry {
        task.abort();
    }
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

/// Listens for SIGTERM and, unless the shell owns it, Ctrl-C. Created before the server says it
/// is running, so a signal sent right after that line is never missed.
struct ShutdownSignal {
    #[cfg(unix)]
    interrupt: Option<tokio::signal::unix::Signal>,
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
    #[cfg(not(unix))]
    ctrl_c: bool,
}

impl ShutdownSignal {
    fn install(ctrl_c: bool) -> anyhow::Result<Self> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let interrupt = if ctrl_c {
                Some(signal(SignalKind::interrupt()).context("cannot listen for Ctrl-C")?)
            } else {
                None
            };
            Ok(ShutdownSignal {
                interrupt,
                terminate: signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?,
            })
        }
        #[cfg(not(unix))]
        Ok(ShutdownSignal { ctrl_c })
    }

    async fn wait(mut self) -> anyhow::Result<()> {
        #[cfg(unix)]
        {
            let interrupted = async {
                match &mut self.interrupt {
                    Some(interrupt) => {
                        interrupt.recv().await;
                    }
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = interrupted => {}
                _ = self.terminate.recv() => {}
            }
        }
        #[cfg(not(unix))]
        if self.ctrl_c {
            tokio::signal::ctrl_c()
                .await
                .context("cannot listen for Ctrl-C")?;
        } else {
            std::future::pending::<()>().await;
        }
        Ok(())
    }
}
