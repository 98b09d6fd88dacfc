//! Topic administration over the Kafka protocol: CreateTopics, DeleteTopics and DescribeConfigs.

use super::code::{
    INVALID_CONFIG, INVALID_PARTITIONS, INVALID_REPLICATION_FACTOR, INVALID_TOPIC_EXCEPTION,
    TOPIC_ALREADY_EXISTS, UNKNOWN_SERVER_ERROR, UNKNOWN_TOPIC_OR_PARTITION,
};
use eddy_storage::{StorageError, Store, TopicConfig};
use kafka_protocol::messages::create_topics_response::CreatableTopicResult;
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult,
};
use kafka_protocol::messages::{
    CreateTopicsRequest, CreateTopicsResponse, DeleteTopicsRequest, DeleteTopicsResponse,
};
use kafka_protocol::messages::{DescribeConfigsRequest, DescribeConfigsResponse};
use kafka_protocol::protocol::StrBytes;
use tracing::info;

/// Creates the requested topics with their partition counts and configs (`validate_only` checks
/// without creating).
pub fn create_topics(
    store: &Store,
    request: &CreateTopicsRequest,
    version: i16,
) -> CreateTopicsResponse {
    let topics = request
        .topics
        .iter()
        .map(|topic| {
            let name = topic.name.to_string();
            let partitions = if topic.num_partitions == -1 {
                1
            } else {
                topic.num_partitions
            };
            let replication = if topic.replication_factor == -1 {
                1
            } else {
                topic.replication_factor
            };
            let outcome: Result<(), (i16, String)> = (|| {
                if partitions <= 0 {
                    return Err((
                        INVALID_PARTITIONS,
                        format!("Number of partitions must be larger than 0, got {partitions}"),
                    ));
                }
                if replication <= 0 {
                    return Err((
                        INVALID_REPLICATION_FACTOR,
                        format!("Replication factor must be larger than 0, got {replication}"),
                    ));
                }
                let mut config = TopicConfig::with_partitions(partitions as u32);
                config.replication_factor = replication as u16;
                let pairs: Vec<(String, String)> = topic
                    .configs
                    .iter()
                    .filter_map(|c| {
                        c.value
                            .as_ref()
                            .map(|v| (c.name.to_string(), v.to_string()))
                    })
                    .collect();
                let config = config
                    .apply(&name, pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())))
                    .map_err(|e| (INVALID_CONFIG, e.to_string()))?;
                eddy_storage::validate_topic_name(&name)
                    .map_err(|e| (INVALID_TOPIC_EXCEPTION, e.to_string()))?;
                if eddy_storage::is_internal_topic(&name) {
                    return Err((INVALID_TOPIC_EXCEPTION, reserved_topic_message(&name)));
                }
                store
                    .check_partition_count(&name, partitions as u32)
                    .map_err(|e| (INVALID_PARTITIONS, e.to_string()))?;
                if store.topic_exists(&name) {
                    return Err((
                        TOPIC_ALREADY_EXISTS,
                        format!("Topic '{name}' already exists."),
                    ));
                }
                if request.validate_only {
                    return Ok(());
                }
                store
                    .create_topic(&name, config)
                    .map(|_| ())
                    .map_err(|e| match e {
                        StorageError::TopicExists(_) => (TOPIC_ALREADY_EXISTS, e.to_string()),
                        StorageError::InvalidTopicName { .. } => {
                            (INVALID_TOPIC_EXCEPTION, e.to_string())
                        }
                        StorageError::InvalidConfig { .. } => (INVALID_CONFIG, e.to_string()),
                        StorageError::TooManyPartitions { .. } => {
                            (INVALID_PARTITIONS, e.to_string())
                        }
                        other => (UNKNOWN_SERVER_ERROR, other.to_string()),
                    })?;
                info!(topic = %name, partitions, "created topic for a Kafka admin client");
                Ok(())
            })();
            let result = CreatableTopicResult::default().with_name(topic.name.clone());
            let result = match outcome {
                Ok(()) => result,
                Err((code, message)) => result
                    .with_error_code(code)
                    .with_error_message(Some(StrBytes::from_string(message))),
            };
            if version >= 5 {
                result
                    .with_num_partitions(partitions)
                    .with_replication_factor(replication)
                    .with_configs(Some(Vec::new()))
            } else {
                result
            }
        })
        .collect();
    CreateTopicsResponse::default().with_topics(topics)
}

/// Deletes the named topics.
pub fn delete_topics(
    store: &Store,
    request: &DeleteTopicsRequest,
    version: i16,
) -> DeleteTopicsResponse {
    let responses = request
        .topic_names
        .iter()
        .map(|name| {
            let result = DeletableTopicResult::default().with_name(Some(name.clone()));
            let outcome = if eddy_storage::is_internal_topic(name) {
                Err((INVALID_TOPIC_EXCEPTION, reserved_topic_message(name)))
            } else {
                store.delete_topic(name.as_str()).map_err(|e| {
                    let code = match e {
                        StorageError::UnknownTopic(_) => UNKNOWN_TOPIC_OR_PARTITION,
                        _ => UNKNOWN_SERVER_ERROR,
                    };
                    (code, e.to_string())
                })
            };
            match outcome {
                Ok(()) => {
                    info!(topic = %name.as_str(), "deleted topic for a Kafka admin client");
                    result
                }
                Err((code, message)) => {
                    let result = result.with_error_code(code);
                    if version >= 5 {
                        result.with_error_message(Some(StrBytes::from_string(message)))
                    } else {
                        result
                    }
                }
            }
        })
        .collect();
    DeleteTopicsResponse::default().with_responses(responses)
}

/// Why a client may not create, delete or write `topic`.
pub fn reserved_topic_message(topic: &str) -> String {
    format!(
        "Topic '{topic}' is internal to Eddy: names starting '{}' are reserved, and clients may read them but not create, write or delete them.",
        eddy_storage::INTERNAL_TOPIC_PREFIX
    )
}

/// Resource type of topics in DescribeConfigs.
const TOPIC_RESOURCE: i8 = 2;
/// Config source of topic-level settings.
const TOPIC_CONFIG_SOURCE: i8 = 1;

/// DescribeConfigs for topics: every Kafka topic config Eddy keeps, or the requested keys.
pub fn describe_configs(
    store: &Store,
    request: &DescribeConfigsRequest,
) -> DescribeConfigsResponse {
    let results = request
        .resources
        .iter()
        .map(|resource| {
            let result = DescribeConfigsResult::default()
                .with_resource_type(resource.resource_type)
                .with_resource_name(resource.resource_name.clone());
            if resource.resource_type != TOPIC_RESOURCE {
                // Broker configs: Eddy has none to report through Kafka's names.
                return result;
            }
            match store.describe_topic(resource.resource_name.as_str()) {
                Err(e) => result
                    .with_error_code(UNKNOWN_TOPIC_OR_PARTITION)
                    .with_error_message(Some(StrBytes::from_string(e.to_string()))),
                Ok(description) => {
                    let wanted = resource.configuration_keys.as_ref();
                    result.with_configs(
                        description
                            .config
                            .to_kafka_configs()
                            .into_iter()
                            .filter(|(name, _)| {
                                wanted.is_none_or(|keys| keys.iter().any(|k| k.as_str() == name))
                            })
                            .map(|(name, value)| {
                                DescribeConfigsResourceResult::default()
                                    .with_name(StrBytes::from_string(name))
                                    .with_value(Some(StrBytes::from_string(value)))
                                    .with_config_source(TOPIC_CONFIG_SOURCE)
                            })
                            .collect(),
                    )
                }
            }
        })
        .collect();
    DescribeConfigsResponse::default().with_results(results)
}
