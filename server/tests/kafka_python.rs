//! kafka-python 3 against the `eddy` binary: an idempotent producer with `acks=all`, a consumer
//! that joins a group, reads from the beginning and commits, and one that reads by assignment.
//! `.ci/deps` installs kafka-python when it is missing.

use std::process::Command;

mod common;

/// Runs a Python script with the server's Kafka address as its argument; its stdout.
fn run(server: &common::Server, script: &str) -> String {
    let out = Command::new(common::tools::python())
        .args(["-c", script, &server.kafka])
        .output()
        .expect("python3 runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "kafka-python failed: {stderr}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

const SCRIPT: &str = r#"
import sys
from kafka import KafkaProducer, KafkaConsumer
bootstrap = sys.argv[1]
producer = KafkaProducer(bootstrap_servers=bootstrap, acks='all', enable_idempotence=True)
for i in range(5):
    producer.send('py', key=b'k%d' % i, value=b'v%d' % i)
producer.flush()
producer.close()
consumer = KafkaConsumer('py', bootstrap_servers=bootstrap, group_id='pyg',
                         auto_offset_reset='earliest', consumer_timeout_ms=5000)
for m in consumer:
    print('%s=%s@%d' % (m.key.decode(), m.value.decode(), m.offset))
consumer.commit()
consumer.close()
consumer = KafkaConsumer('py', bootstrap_servers=bootstrap, group_id='pyg',
                         auto_offset_reset='earliest', consumer_timeout_ms=3000)
print('after commit: %d' % len(list(consumer)))
consumer.close()
from kafka import TopicPartition
consumer = KafkaConsumer(bootstrap_servers=bootstrap, consumer_timeout_ms=3000)
consumer.assign([TopicPartition('py', 0)])
consumer.seek_to_beginning()
print('assigned: %s' % ' '.join(m.value.decode() for m in consumer))
consumer.close()
"#;

#[test]
fn kafka_python_produces_idempotently_and_consumes_in_a_group_and_by_assignment() {
    let server = common::start();
    assert_eq!(
        run(&server, SCRIPT),
        "k0=v0@0\nk1=v1@1\nk2=v2@2\nk3=v3@3\nk4=v4@4\nafter commit: 0\nassigned: v0 v1 v2 v3 v4\n"
    );
}

const ADMIN_SCRIPT: &str = r#"
import sys
from kafka.admin import KafkaAdminClient, NewTopic, ConfigResource, ConfigResourceType
from kafka.errors import TopicAlreadyExistsError, InvalidConfigurationError, InvalidPartitionsError
admin = KafkaAdminClient(bootstrap_servers=sys.argv[1])
admin.create_topics([NewTopic('made', num_partitions=3, replication_factor=1,
                              topic_configs={'cleanup.policy': 'compact'})])
print(sorted(admin.list_topics()))
configs = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, 'made')])
print(configs['topic']['made']['cleanup.policy']['value'])
try:
    admin.create_topics([NewTopic('made', num_partitions=1, replication_factor=1)])
    print('created twice')
except TopicAlreadyExistsError:
    print('already exists')
try:
    admin.create_topics([NewTopic('bad', num_partitions=1, replication_factor=1,
                                  topic_configs={'cleanup.policy': 'shred'})])
    print('bad config accepted')
except InvalidConfigurationError:
    print('invalid config')
try:
    admin.create_topics([NewTopic('huge', num_partitions=2000000000, replication_factor=1)])
    print('two billion partitions accepted')
except InvalidPartitionsError:
    print('invalid partitions')
admin.delete_topics(['made'])
print(sorted(admin.list_topics()))
admin.close()
"#;

#[test]
fn kafka_python_admin_creates_describes_and_deletes_topics() {
    let server = common::start();
    assert_eq!(
        run(&server, ADMIN_SCRIPT),
        // The processing log's topic is there from the start, as with ksqlDB on Kafka, and so
        // is the schema registry's, as `_schemas` is on Kafka with Confluent's registry.
        "['__eddy_schemas', 'default_ksql_processing_log', 'made']\ncompact\nalready exists\ninvalid config\ninvalid partitions\n['__eddy_schemas', 'default_ksql_processing_log']\n"
    );
}

const GROUPS_SCRIPT: &str = r#"
import sys
from kafka import KafkaProducer, KafkaConsumer
from kafka.admin import KafkaAdminClient
b = sys.argv[1]
producer = KafkaProducer(bootstrap_servers=b)
producer.send('gq', b'x')
producer.flush()
producer.close()
consumer = KafkaConsumer('gq', bootstrap_servers=b, group_id='live', client_id='reader-1',
                         auto_offset_reset='earliest')
consumer.poll(timeout_ms=5000)
admin = KafkaAdminClient(bootstrap_servers=b)
print([g['group_id'] for g in admin.list_groups()])
group = admin.describe_groups(['live'])['live']
member = group['members'][0]
print(group['group_state'], group['protocol_type'], member['client_id'],
      member['member_assignment']['assigned_partitions'])
consumer.close()
admin.close()
"#;

#[test]
fn kafka_python_lists_and_describes_groups() {
    let server = common::start();
    assert_eq!(
        run(&server, GROUPS_SCRIPT),
        "['live']\nStable consumer reader-1 [{'topic': 'gq', 'partitions': [0]}]\n"
    );
}

const TRANSACTIONS_SCRIPT: &str = r#"
import sys
from kafka import KafkaProducer, KafkaConsumer
bootstrap = sys.argv[1]
producer = KafkaProducer(bootstrap_servers=bootstrap, transactional_id='py-txn')
producer.init_transactions()
producer.begin_transaction()
for i in range(3):
    producer.send('pytx', value=b'kept%d' % i)
producer.commit_transaction()
producer.begin_transaction()
producer.send('pytx', value=b'dropped')
producer.flush()
producer.abort_transaction()
producer.begin_transaction()
producer.send('pytx', value=b'kept3')
producer.commit_transaction()
producer.close()
for isolation in ['read_committed', 'read_uncommitted']:
    consumer = KafkaConsumer('pytx', bootstrap_servers=bootstrap, isolation_level=isolation,
                             auto_offset_reset='earliest', consumer_timeout_ms=3000)
    print('%s: %s' % (isolation, ' '.join(m.value.decode() for m in consumer)))
    consumer.close()
"#;

#[test]
fn kafka_python_commits_and_aborts_transactions_and_reads_committed() {
    let server = common::start();
    assert_eq!(
        run(&server, TRANSACTIONS_SCRIPT),
        "read_committed: kept0 kept1 kept2 kept3\nread_uncommitted: kept0 kept1 kept2 dropped kept3\n",
        "{}",
        server.log_tail()
    );
}
