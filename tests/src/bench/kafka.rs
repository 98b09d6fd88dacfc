//! `kafka`: records produced through Kafka's wire protocol to Eddy's listener, then consumed
//! back, by a minimal client built on `kafka-protocol` (Produce v7 with `acks=1`, Fetch v11),
//! one connection and one request in flight per partition, as a producer with
//! `max.in.flight.requests.per.connection=1` does. The baseline, in the same run, is the
//! `log` scenario: the same records appended to the store directly. With `tls`, the same
//! produce and consume run again through a TLS listener, so the cost of encryption is the
//! ratio of the two in one run.

use std::time::Instant;

use anyhow::Context;
use bytes::{BufMut, Bytes, BytesMut};
use eddy_storage::{EncodedBatch, Record, Store, StoreOptions, TopicConfig};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    ApiKey, FetchRequest, FetchResponse, ProduceRequest, ProduceResponse, RequestHeader,
    ResponseHeader, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, StrBytes};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::bench::Throughput;

pub(crate) const TOPIC: &str = "bench";
const PRODUCE_VERSION: i16 = 7;
const FETCH_VERSION: i16 = 11;

/// What the scenario runs.
#[derive(Debug, Clone)]
pub struct KafkaBenchConfig {
    /// Records in all.
    pub records: u64,
    /// Value bytes per record.
    pub record_size: usize,
    /// Partitions, each with its own connection.
    pub partitions: u32,
    /// Records per produced batch.
    pub batch_size: usize,
    /// Also produce and consume through a TLS listener.
    pub tls: bool,
    /// Also produce in transactions of `transaction_size` records.
    pub transactional: bool,
    /// Records per transaction, spread evenly over the partitions.
    pub transaction_size: usize,
}

/// The figures of one run.
#[derive(Debug, Clone, Copy)]
pub struct KafkaBenchResult {
    /// Producing over the wire protocol.
    pub produce: Throughput,
    /// Consuming it back over the wire protocol.
    pub consume: Throughput,
    /// Appending the same records to the store directly.
    pub append: Throughput,
    /// Producing and consuming through TLS, when asked for.
    pub tls: Option<(Throughput, Throughput)>,
    /// Producing in rounds of one batch per partition, without and with a transaction per
    /// round, when asked for.
    pub transactional: Option<(Throughput, Throughput)>,
}

/// Runs the scenario once.
pub fn run(config: &KafkaBenchConfig) -> anyhow::Result<KafkaBenchResult> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run_async(config))
}

fn value(size: usize) -> Bytes {
    Bytes::from(vec![b'x'; size])
}

pub(crate) fn batch(config: &KafkaBenchConfig, first: u64, n: usize) -> Vec<Record> {
    let value = value(config.record_size);
    (0..n as u64)
        .map(|i| Record {
            key: Some(Bytes::from((first + i).to_string())),
            value: Some(value.clone()),
            timestamp: 1_700_000_000_000,
            headers: Vec::new(),
        })
        .collect()
}

async fn run_async(config: &KafkaBenchConfig) -> anyhow::Result<KafkaBenchResult> {
    let per_partition = config.records / u64::from(config.partitions);
    let total = per_partition * u64::from(config.partitions);
    let bytes = total * config.record_size as u64;

    // The baseline: the store, appended to directly from one task per partition.
    let append = {
        let dir = tempfile::tempdir()?;
        let store = Store::open(dir.path(), StoreOptions::default())?;
        store.create_topic(TOPIC, TopicConfig::with_partitions(config.partitions))?;
        let started = Instant::now();
        let tasks: Vec<_> = (0..config.partitions)
            .map(|p| {
                let (store, config) = (store.clone(), config.clone());
                tokio::spawn(async move {
                    let mut sent = 0;
                    while sent < per_partition {
                        let n = (per_partition - sent).min(config.batch_size as u64) as usize;
                        let mut commit = eddy_storage::Commit::new();
                        commit.append(TOPIC, Some(p), batch(&config, sent, n));
                        store.commit(commit).await?;
                        sent += n as u64;
                    }
                    anyhow::Ok(())
                })
            })
            .collect();
        for task in tasks {
            task.await??;
        }
        Throughput {
            records: total,
            bytes,
            elapsed: started.elapsed(),
            cpu: None,
            cluster_cpu: None,
        }
    };

    let (produce, consume) = wire_pass(config, None).await?;
    let tls = if config.tls {
        Some(wire_pass(config, Some(TlsPair::generate()?)).await?)
    } else {
        None
    };
    let transactional = if config.transactional {
        Some(super::kafka_transactions::run(config).await?)
    } else {
        None
    };
    Ok(KafkaBenchResult {
        produce,
        consume,
        append,
        tls,
        transactional,
    })
}

/// The two ends of TLS for one run: the server's acceptor, from PEM files as the server reads
/// them, and a client trusting the certificate made for the run.
struct TlsPair {
    acceptor: tokio_rustls::TlsAcceptor,
    connector: tokio_rustls::TlsConnector,
    _files: tempfile::TempDir,
}

impl TlsPair {
    fn generate() -> anyhow::Result<Self> {
        let key = rcgen::KeyPair::generate()?;
        let cert =
            rcgen::CertificateParams::new(vec!["localhost".to_string()])?.self_signed(&key)?;
        let files = tempfile::tempdir()?;
        let (cert_path, key_path) = (files.path().join("cert.pem"), files.path().join("key.pem"));
        std::fs::write(&cert_path, cert.pem())?;
        std::fs::write(&key_path, key.serialize_pem())?;
        let acceptor = eddy_security::tls::TlsFiles {
            certificate: cert_path,
            key: key_path,
            ..Default::default()
        }
        .acceptor()?;
        let mut roots = rustls::RootCertStore::empty();
        roots.add(cert.der().clone())?;
        let client = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
        Ok(TlsPair {
            acceptor,
            connector: tokio_rustls::TlsConnector::from(std::sync::Arc::new(client)),
            _files: files,
        })
    }
}

/// Produces every record through the Kafka listener (a TLS one with `tls`), then consumes
/// them back.
async fn wire_pass(
    config: &KafkaBenchConfig,
    tls: Option<TlsPair>,
) -> anyhow::Result<(Throughput, Throughput)> {
    let per_partition = config.records / u64::from(config.partitions);
    let total = per_partition * u64::from(config.partitions);
    let bytes = total * config.record_size as u64;
    let dir = tempfile::tempdir()?;
    let store = Store::open(dir.path(), StoreOptions::default())?;
    store.create_topic(TOPIC, TopicConfig::with_partitions(config.partitions))?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    let mut listener_config = eddy_server::kafka::KafkaConfig {
        auto_create_topics: false,
        ..eddy_server::kafka::KafkaConfig::new(address)
    };
    if let Some(pair) = &tls {
        listener_config.security.protocol = eddy_security::SecurityProtocol::Ssl;
        listener_config.security.tls = Some(pair.acceptor.clone());
    }
    let connector = tls.as_ref().map(|pair| pair.connector.clone());
    let server = tokio::spawn(eddy_server::kafka::serve(
        listener,
        store.clone(),
        listener_config,
    ));

    let started = Instant::now();
    let tasks: Vec<_> = (0..config.partitions)
        .map(|p| {
            let (config, connector) = (config.clone(), connector.clone());
            tokio::spawn(async move {
                let mut connection = Connection::open(address, connector.as_ref()).await?;
                let mut sent = 0;
                while sent < per_partition {
                    let n = (per_partition - sent).min(config.batch_size as u64) as usize;
                    let encoded = EncodedBatch::encode(&batch(&config, sent, n))
                        .map_err(|e| anyhow::anyhow!("encoding a batch: {e}"))?;
                    connection.produce(p as i32, encoded.as_bytes()).await?;
                    sent += n as u64;
                }
                anyhow::Ok(())
            })
        })
        .collect();
    for task in tasks {
        task.await??;
    }
    let produce = Throughput {
        records: total,
        bytes,
        elapsed: started.elapsed(),
        cpu: None,
        cluster_cpu: None,
    };

    let started = Instant::now();
    let tasks: Vec<_> = (0..config.partitions)
        .map(|p| {
            let connector = connector.clone();
            tokio::spawn(async move {
                let mut connection = Connection::open(address, connector.as_ref()).await?;
                let (mut offset, mut records) = (0i64, 0u64);
                while records < per_partition {
                    let (count, next) = connection.fetch(p as i32, offset).await?;
                    anyhow::ensure!(
                        next > offset,
                        "no progress consuming partition {p} at {offset}"
                    );
                    records += count;
                    offset = next;
                }
                anyhow::Ok(records)
            })
        })
        .collect();
    let mut consumed = 0;
    for task in tasks {
        consumed += task.await??;
    }
    anyhow::ensure!(consumed == total, "consumed {consumed} of {total} records");
    let consume = Throughput {
        records: total,
        bytes,
        elapsed: started.elapsed(),
        cpu: None,
        cluster_cpu: None,
    };
    server.abort();
    Ok((produce, consume))
}

/// A client's byte stream: TCP, or TLS over it.
trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}

impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// One client connection: a request, then its response.
pub(crate) struct Connection {
    socket: Box<dyn Stream>,
    correlation: i32,
}

impl Connection {
    pub(crate) async fn open(
        address: std::net::SocketAddr,
        tls: Option<&tokio_rustls::TlsConnector>,
    ) -> anyhow::Result<Self> {
        let socket = TcpStream::connect(address).await?;
        socket.set_nodelay(true)?;
        let socket: Box<dyn Stream> = match tls {
            Some(connector) => {
                let name = rustls::pki_types::ServerName::try_from("localhost")?;
                Box::new(connector.connect(name, socket).await?)
            }
            None => Box::new(socket),
        };
        Ok(Connection {
            socket,
            correlation: 0,
        })
    }

    pub(crate) async fn call<Req: Encodable + HeaderVersion, Resp: Decodable + HeaderVersion>(
        &mut self,
        key: ApiKey,
        version: i16,
        request: &Req,
    ) -> anyhow::Result<Resp> {
        self.correlation += 1;
        let header = RequestHeader::default()
            .with_request_api_key(key as i16)
            .with_request_api_version(version)
            .with_correlation_id(self.correlation)
            .with_client_id(Some(StrBytes::from_static_str("eddy-bench")));
        let mut body = BytesMut::new();
        header.encode(&mut body, Req::header_version(version))?;
        request.encode(&mut body, version)?;
        let mut frame = BytesMut::with_capacity(body.len() + 4);
        frame.put_i32(body.len() as i32);
        frame.extend_from_slice(&body);
        self.socket.write_all(&frame).await?;
        let length = self.socket.read_i32().await?;
        let mut response = vec![0u8; length as usize];
        self.socket.read_exact(&mut response).await?;
        let mut response = Bytes::from(response);
        let header = ResponseHeader::decode(&mut response, Resp::header_version(version))?;
        anyhow::ensure!(
            header.correlation_id == self.correlation,
            "responses out of order"
        );
        Resp::decode(&mut response, version)
    }

    pub(crate) async fn produce(&mut self, partition: i32, records: &[u8]) -> anyhow::Result<()> {
        self.produce_to(TOPIC, partition, records).await
    }

    /// Produces an encoded batch to `partition` of `topic`, with `acks=1`.
    pub(crate) async fn produce_to(
        &mut self,
        topic: &str,
        partition: i32,
        records: &[u8],
    ) -> anyhow::Result<()> {
        let request = ProduceRequest::default()
            .with_acks(1)
            .with_timeout_ms(30_000)
            .with_topic_data(vec![
                TopicProduceData::default()
                    .with_name(TopicName(StrBytes::from_string(topic.to_string())))
                    .with_partition_data(vec![
                        PartitionProduceData::default()
                            .with_index(partition)
                            .with_records(Some(Bytes::copy_from_slice(records))),
                    ]),
            ]);
        let response: ProduceResponse = self
            .call(ApiKey::Produce, PRODUCE_VERSION, &request)
            .await
            .context("Produce")?;
        let code = response
            .responses
            .first()
            .and_then(|t| t.partition_responses.first())
            .map_or(-1, |p| p.error_code);
        anyhow::ensure!(code == 0, "Produce to {topic} answered error code {code}");
        Ok(())
    }

    /// Fetches from `offset`; the records received and the next offset to fetch.
    async fn fetch(&mut self, partition: i32, offset: i64) -> anyhow::Result<(u64, i64)> {
        let request = FetchRequest::default()
            .with_replica_id(kafka_protocol::messages::BrokerId(-1))
            .with_max_wait_ms(500)
            .with_min_bytes(1)
            .with_max_bytes(4 << 20)
            .with_topics(vec![
                FetchTopic::default()
                    .with_topic(TopicName(StrBytes::from_static_str(TOPIC)))
                    .with_partitions(vec![
                        FetchPartition::default()
                            .with_partition(partition)
                            .with_fetch_offset(offset)
                            .with_partition_max_bytes(1 << 20),
                    ]),
            ]);
        let response: FetchResponse = self
            .call(ApiKey::Fetch, FETCH_VERSION, &request)
            .await
            .context("Fetch")?;
        let data = response
            .responses
            .first()
            .and_then(|t| t.partitions.first())
            .context("an empty Fetch response")?;
        anyhow::ensure!(
            data.error_code == 0,
            "Fetch answered error code {}",
            data.error_code
        );
        let (mut count, mut next) = (0u64, offset);
        let records = data.records.clone().unwrap_or_default();
        for batch in eddy_storage::split_batches(&records) {
            let (header, _) = batch.map_err(|e| anyhow::anyhow!("a fetched batch: {e}"))?;
            let last = header.last_offset();
            // A batch may start before the offset asked for; count only what is new.
            if last >= next {
                count += (last - next.max(header.base_offset) + 1) as u64;
                next = last + 1;
            }
        }
        Ok((count, next))
    }
}
