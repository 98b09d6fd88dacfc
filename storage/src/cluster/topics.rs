//! Topics on the cluster: creating, deleting and describing them, partition counts (cached,
//! since every append by key needs one) and watermarks.

use std::collections::HashMap;
use std::time::Duration;

use parking_lot::RwLock;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::metadata::Metadata;
use rdkafka::types::RDKafkaErrorCode;
use tracing::info;

use super::client::{self, Logs};
use super::{ClusterOptions, cluster_error};
use crate::config::{TopicConfig, validate_topic_name};
use crate::error::{Result, StorageError};
use crate::store::{PartitionDescription, TopicDescription};

/// The cluster's topics, as the admin and metadata clients see them.
pub(crate) struct Topics {
    admin: AdminClient<DefaultClientContext>,
    /// Reads metadata and the high watermark (read_uncommitted).
    uncommitted: BaseConsumer<Logs>,
    /// Reads the last stable offset (read_committed).
    committed: BaseConsumer<Logs>,
    /// Partition counts of the topics seen, so appends by key need no request each.
    partitions: RwLock<HashMap<String, u32>>,
    timeout: Duration,
}

impl Topics {
    /// The admin and metadata clients of the cluster.
    pub(crate) fn connect(options: &ClusterOptions) -> Result<Topics> {
        let consumer = |role: &str, isolation: &str| -> Result<BaseConsumer<Logs>> {
            client::config(
                options,
                role,
                &[
                    ("isolation.level", isolation),
                    ("enable.auto.commit", "false"),
                    ("allow.auto.create.topics", "false"),
                ],
            )
            .create_with_context(Logs)
            .map_err(|e| cluster_error("connecting", e))
        };
        let admin = client::config(options, "admin", &[])
            .create()
            .map_err(|e| cluster_error("connecting", e))?;
        Ok(Topics {
            admin,
            uncommitted: consumer("metadata", "read_uncommitted")?,
            committed: consumer("metadata-committed", "read_committed")?,
            partitions: RwLock::new(HashMap::new()),
            timeout: options.timeout,
        })
    }

    fn metadata(&self, topic: Option<&str>) -> Result<Metadata> {
        self.uncommitted
            .fetch_metadata(topic, self.timeout)
            .map_err(|e| cluster_error("reading metadata", e))
    }

    /// The names of every topic, sorted.
    pub(crate) fn list(&self) -> Result<Vec<String>> {
        let metadata = self.metadata(None)?;
        let mut counts = self.partitions.write();
        let mut names = Vec::with_capacity(metadata.topics().len());
        for topic in metadata.topics() {
            if topic.error().is_none() {
                counts.insert(topic.name().to_string(), topic.partitions().len() as u32);
                names.push(topic.name().to_string());
            }
        }
        names.sort();
        Ok(names)
    }

    /// A topic's partitions as the cluster describes them: (id, replicas) per partition.
    fn partitions_of(&self, name: &str) -> Result<Vec<(u32, usize)>> {
        let metadata = self.metadata(Some(name))?;
        let Some(topic) = metadata.topics().iter().find(|t| t.name() == name) else {
            return Err(StorageError::UnknownTopic(name.to_string()));
        };
        if let Some(error) = topic.error() {
            let code = RDKafkaErrorCode::from(error);
            if code == RDKafkaErrorCode::UnknownTopicOrPartition {
                self.partitions.write().remove(name);
                return Err(StorageError::UnknownTopic(name.to_string()));
            }
            return Err(cluster_error(
                format!("describing topic {name:?}"),
                KafkaError::MetadataFetch(code),
            ));
        }
        let mut partitions: Vec<(u32, usize)> = topic
            .partitions()
            .iter()
            .map(|p| (p.id() as u32, p.replicas().len()))
            .collect();
        partitions.sort_unstable();
        self.partitions
            .write()
            .insert(name.to_string(), partitions.len() as u32);
        Ok(partitions)
    }

    /// How many partitions a topic has.
    pub(crate) fn partition_count(&self, name: &str) -> Result<u32> {
        if let Some(&count) = self.partitions.read().get(name) {
            return Ok(count);
        }
        Ok(self.partitions_of(name)?.len() as u32)
    }

    /// Whether the topic exists; a cluster that cannot be asked says no.
    pub(crate) fn exists(&self, name: &str) -> bool {
        self.partition_count(name).is_ok()
    }

    /// Creates a topic with `config` unless it exists (or another node just created it).
    pub(crate) fn ensure(&self, name: &str, config: &TopicConfig) -> Result<()> {
        if self.exists(name) {
            return Ok(());
        }
        match self.create(name, config) {
            Ok(()) | Err(StorageError::TopicExists(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Creates a topic with `config`'s partitions, replication factor and every setting that
    /// differs from Kafka's defaults; the brokers' own defaults stand for the rest.
    pub(crate) fn create(&self, name: &str, config: &TopicConfig) -> Result<()> {
        validate_topic_name(name)?;
        config.validate(name)?;
        let defaults = TopicConfig::default().to_kafka_configs();
        let configs: Vec<(String, String)> = config
            .to_kafka_configs()
            .into_iter()
            .filter(|(key, value)| defaults.get(key) != Some(value))
            .collect();
        let mut topic = NewTopic::new(
            name,
            config.partitions as i32,
            // Unless a statement asked for a number, the brokers' default.
            TopicReplication::Fixed(match config.replication_factor {
                0 => -1,
                asked => i32::from(asked),
            }),
        );
        for (key, value) in &configs {
            topic = topic.set(key, value);
        }
        let options = AdminOptions::new().operation_timeout(Some(self.timeout));
        let results = futures_block_on(self.admin.create_topics([&topic], &options))
            .map_err(|e| cluster_error(format!("creating topic {name:?}"), e))?;
        for result in results {
            if let Err((_, code)) = result {
                return Err(match code {
                    RDKafkaErrorCode::TopicAlreadyExists => StorageError::TopicExists(name.into()),
                    code => cluster_error(
                        format!("creating topic {name:?}"),
                        KafkaError::AdminOp(code),
                    ),
                });
            }
        }
        self.partitions
            .write()
            .insert(name.to_string(), config.partitions);
        info!(
            topic = name,
            partitions = config.partitions,
            "created topic on the cluster"
        );
        Ok(())
    }

    /// Deletes a topic.
    pub(crate) fn delete(&self, name: &str) -> Result<()> {
        let options = AdminOptions::new().operation_timeout(Some(self.timeout));
        let results = futures_block_on(self.admin.delete_topics(&[name], &options))
            .map_err(|e| cluster_error(format!("deleting topic {name:?}"), e))?;
        self.partitions.write().remove(name);
        for result in results {
            if let Err((_, code)) = result {
                return Err(match code {
                    RDKafkaErrorCode::UnknownTopicOrPartition => {
                        StorageError::UnknownTopic(name.into())
                    }
                    code => cluster_error(
                        format!("deleting topic {name:?}"),
                        KafkaError::AdminOp(code),
                    ),
                });
            }
        }
        info!(topic = name, "deleted topic on the cluster");
        Ok(())
    }

    /// A topic's partitions with their offsets; the configuration holds the partition count and
    /// replication factor, the cluster's settings being the brokers' to report.
    pub(crate) fn describe(&self, name: &str) -> Result<TopicDescription> {
        let partitions = self.partitions_of(name)?;
        let mut config = TopicConfig::with_partitions(partitions.len().max(1) as u32);
        config.replication_factor = partitions.first().map_or(1, |&(_, replicas)| {
            replicas.clamp(1, usize::from(u16::MAX)) as u16
        });
        let mut described = Vec::with_capacity(partitions.len());
        for &(partition, _) in &partitions {
            let (start, end) = self.watermarks(name, partition, false)?;
            described.push(PartitionDescription {
                partition,
                log_start_offset: start,
                end_offset: end,
                size_bytes: 0,
                segments: 0,
            });
        }
        Ok(TopicDescription {
            name: name.to_string(),
            id: 0,
            config,
            created_ms: 0,
            partitions: described,
        })
    }

    /// A partition's log start offset and its high watermark, or with `committed` its last
    /// stable offset.
    pub(crate) fn watermarks(
        &self,
        topic: &str,
        partition: u32,
        committed: bool,
    ) -> Result<(i64, i64)> {
        let client = if committed {
            &self.committed
        } else {
            &self.uncommitted
        };
        // A topic created a moment ago may not be in the client's metadata yet: it is asked
        // again a few times before the topic counts as unknown.
        let mut attempts = 0;
        loop {
            match client.fetch_watermarks(topic, partition as i32, self.timeout) {
                Ok(marks) => return Ok(marks),
                Err(e) if unknown(&e) && attempts < 20 => {
                    attempts += 1;
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(e) if unknown(&e) => return Err(StorageError::UnknownTopic(topic.to_string())),
                Err(e) => {
                    return Err(cluster_error(
                        format!("reading the offsets of {topic}-{partition}"),
                        e,
                    ));
                }
            }
        }
    }
}

/// Whether an error says the client does not know the topic or partition (yet).
fn unknown(error: &KafkaError) -> bool {
    matches!(
        error,
        KafkaError::MetadataFetch(
            RDKafkaErrorCode::UnknownTopicOrPartition
                | RDKafkaErrorCode::UnknownPartition
                | RDKafkaErrorCode::UnknownTopic,
        ) | KafkaError::OffsetFetch(RDKafkaErrorCode::UnknownTopicOrPartition)
    )
}

/// Waits for an admin request's answer; the admin client's own thread resolves it, so any
/// thread may wait, inside a runtime or not.
fn futures_block_on<F: std::future::Future>(future: F) -> F::Output {
    futures::executor::block_on(future)
}
