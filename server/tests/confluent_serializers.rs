//! Confluent's own Avro serializer and deserializer (confluent-kafka's, over librdkafka) with
//! their schema registry client pointed at Eddy: the producer registers its schema and frames
//! each record with its id, the consumer fetches the schema by id and reads the values back,
//! an evolution with a default is accepted and an incompatible one refused with 409.
//! `.ci/deps` installs confluent-kafka with its registry extras when they are missing.

use std::process::Command;

mod common;

const SCRIPT: &str = r#"
import sys
from confluent_kafka import Producer, Consumer
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.error import SchemaRegistryError
from confluent_kafka.schema_registry.avro import AvroSerializer, AvroDeserializer
from confluent_kafka.serialization import SerializationContext, MessageField

bootstrap, registry_url = sys.argv[1], 'http://' + sys.argv[2]
registry = SchemaRegistryClient({'url': registry_url})
V1 = '{"type":"record","name":"Order","fields":[{"name":"id","type":"long"},{"name":"item","type":"string"}]}'
V2 = '{"type":"record","name":"Order","fields":[{"name":"id","type":"long"},{"name":"item","type":"string"},{"name":"qty","type":"int","default":1}]}'
BAD = '{"type":"record","name":"Order","fields":[{"name":"id","type":"string"}]}'

producer = Producer({'bootstrap.servers': bootstrap})
def produce(schema, values):
    serialize = AvroSerializer(registry, schema)
    for v in values:
        ctx = SerializationContext('orders', MessageField.VALUE)
        producer.produce('orders', value=serialize(v, ctx))
    producer.flush()
produce(V1, [{'id': 1, 'item': 'tea'}, {'id': 2, 'item': 'cake'}])
produce(V2, [{'id': 3, 'item': 'jam', 'qty': 4}])
try:
    produce(BAD, [{'id': 'x'}])
    print('incompatible schema accepted')
except SchemaRegistryError as e:
    print('refused %d' % e.error_code)

deserialize = AvroDeserializer(registry)
consumer = Consumer({'bootstrap.servers': bootstrap, 'group.id': 'avro',
                     'auto.offset.reset': 'earliest'})
consumer.subscribe(['orders'])
seen = []
while len(seen) < 3:
    m = consumer.poll(10)
    if m is None:
        break
    if m.error():
        raise Exception(m.error())
    v = deserialize(m.value(), SerializationContext('orders', MessageField.VALUE))
    seen.append('%d %s %s' % (v['id'], v['item'], v.get('qty')))
consumer.close()
print('\n'.join(seen))
print(registry.get_subjects())
print(registry.get_versions('orders-value'))
"#;

#[test]
fn confluents_avro_serializers_register_and_read_schemas_from_eddy() {
    let server = common::start();
    let out = Command::new(common::tools::python())
        .args(["-c", SCRIPT, &server.kafka, &server.registry])
        .output()
        .expect("python3 runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "confluent-kafka failed: {stderr}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "refused 409\n1 tea None\n2 cake None\n3 jam 4\n['orders-value']\n[1, 2]\n"
    );
}
