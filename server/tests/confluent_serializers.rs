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

const PRODUCE: &str = r#"
import sys
from confluent_kafka import Producer
from confluent_kafka.schema_registry import SchemaRegistryClient, Schema
from confluent_kafka.schema_registry.avro import AvroSerializer
from confluent_kafka.serialization import SerializationContext, MessageField

bootstrap, registry_url = sys.argv[1], 'http://' + sys.argv[2]
registry = SchemaRegistryClient({'url': registry_url})
PAYMENT = '{"type":"record","name":"Payment","namespace":"bank","fields":[{"name":"id","type":"long"},{"name":"amount","type":"double"},{"name":"currency","type":["null","string"],"default":null}]}'
serialize = AvroSerializer(registry, PAYMENT)
producer = Producer({'bootstrap.servers': bootstrap})
for v in [{'id': 1, 'amount': 12.5, 'currency': 'EUR'}, {'id': 2, 'amount': 3.0, 'currency': None},
          {'id': 3, 'amount': 7.25, 'currency': None}]:
    producer.produce('payments', value=serialize(v, SerializationContext('payments', MessageField.VALUE)))
producer.flush()
RECEIPT = '{"type":"record","name":"Receipt","namespace":"bank","fields":[{"name":"paymentId","type":"long"},{"name":"cents","type":"double"},{"name":"issuer","type":"string","default":"eddy"}]}'
print(registry.register_schema('receipts-value', Schema(RECEIPT, 'AVRO')))
"#;

const CONSUME: &str = r#"
import sys
from confluent_kafka import Consumer
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer
from confluent_kafka.serialization import SerializationContext, MessageField

bootstrap, registry_url, topic, count = sys.argv[1], 'http://' + sys.argv[2], sys.argv[3], int(sys.argv[4])
deserialize = AvroDeserializer(SchemaRegistryClient({'url': registry_url}))
consumer = Consumer({'bootstrap.servers': bootstrap, 'group.id': 'read-' + topic,
                     'auto.offset.reset': 'earliest'})
consumer.subscribe([topic])
seen = []
while len(seen) < count:
    m = consumer.poll(15)
    if m is None:
        break
    if m.error():
        raise Exception(m.error())
    v = deserialize(m.value(), SerializationContext(topic, MessageField.VALUE))
    seen.append(str(sorted(v.items())))
consumer.close()
print('\n'.join(seen))
"#;

fn python(script: &str, args: &[&str]) -> String {
    let out = Command::new(common::tools::python())
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .expect("python3 runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "confluent-kafka failed: {stderr}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Records a Confluent client wrote with its own schema are read by a stream that infers its
/// columns; the queries' output is read back by Confluent's deserializer: once with the schema
/// Eddy generates, once with a schema the client registered and the query names by its id.
#[test]
fn confluent_clients_and_sql_share_avro_records() {
    let server = common::start();
    let receipt_id = python(PRODUCE, &[&server.kafka, &server.registry]);
    let receipt_id = receipt_id.trim();
    let (status, body) = common::ksql(
        &server,
        &format!(
            "SET 'auto.offset.reset'='earliest'; \
             CREATE STREAM PAYMENTS WITH (KAFKA_TOPIC='payments', VALUE_FORMAT='AVRO'); \
             CREATE STREAM BIG WITH (KAFKA_TOPIC='big', VALUE_FORMAT='AVRO') AS \
               SELECT ID, AMOUNT * 100 AS CENTS, CURRENCY FROM PAYMENTS WHERE AMOUNT > 5; \
             CREATE STREAM RECEIPTS WITH (KAFKA_TOPIC='receipts', VALUE_FORMAT='AVRO', \
               VALUE_SCHEMA_ID={receipt_id}) AS \
               SELECT ID AS `paymentId`, AMOUNT * 100 AS `cents` FROM PAYMENTS;"
        ),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        python(CONSUME, &[&server.kafka, &server.registry, "big", "2"]),
        "[('CENTS', 1250.0), ('CURRENCY', 'EUR'), ('ID', 1)]\n\
         [('CENTS', 725.0), ('CURRENCY', None), ('ID', 3)]\n"
    );
    assert_eq!(
        python(CONSUME, &[&server.kafka, &server.registry, "receipts", "3"]),
        "[('cents', 1250.0), ('issuer', 'eddy'), ('paymentId', 1)]\n\
         [('cents', 300.0), ('issuer', 'eddy'), ('paymentId', 2)]\n\
         [('cents', 725.0), ('issuer', 'eddy'), ('paymentId', 3)]\n"
    );
}

/// Builds a message class at run time from field specs, as a client without generated code
/// would: `message(name, [(field, number, type)])`.
const PROTO_CLASSES: &str = r#"
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
F = descriptor_pb2.FieldDescriptorProto
def message(file, package, name, fields):
    proto = descriptor_pb2.FileDescriptorProto(name=file, package=package, syntax='proto3')
    m = proto.message_type.add(name=name)
    for field, number, kind in fields:
        m.field.add(name=field, number=number, type=kind, label=F.LABEL_OPTIONAL)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    full = (package + '.' if package else '') + name
    return message_factory.GetMessageClass(pool.FindMessageTypeByName(full))
"#;

const PROTO_PRODUCE: &str = r#"
import sys
from confluent_kafka import Producer
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.protobuf import ProtobufSerializer
from confluent_kafka.serialization import SerializationContext, MessageField
bootstrap, registry_url = sys.argv[1], 'http://' + sys.argv[2]
registry = SchemaRegistryClient({'url': registry_url})
Payment = message('payment.proto', 'bank', 'Payment',
                  [('id', 1, F.TYPE_INT64), ('amount', 2, F.TYPE_DOUBLE), ('currency', 3, F.TYPE_STRING)])
serialize = ProtobufSerializer(Payment, registry, {'use.deprecated.format': False})
producer = Producer({'bootstrap.servers': bootstrap})
for i, amount, currency in [(1, 12.5, 'EUR'), (2, 3.0, ''), (3, 7.25, 'USD')]:
    value = serialize(Payment(id=i, amount=amount, currency=currency),
                      SerializationContext('payments', MessageField.VALUE))
    producer.produce('payments', value=value)
producer.flush()
print(registry.get_latest_version('payments-value').schema.schema_type)
"#;

const PROTO_CONSUME: &str = r#"
import sys
from confluent_kafka import Consumer
from confluent_kafka.schema_registry.protobuf import ProtobufDeserializer
from confluent_kafka.serialization import SerializationContext, MessageField
bootstrap = sys.argv[1]
# The sink's schema, as Eddy registers it: message ConnectDefault1 { int64 ID = 1; double CENTS = 2; }
Row = message('row.proto', '', 'ConnectDefault1', [('ID', 1, F.TYPE_INT64), ('CENTS', 2, F.TYPE_DOUBLE)])
deserialize = ProtobufDeserializer(Row, {'use.deprecated.format': False})
consumer = Consumer({'bootstrap.servers': bootstrap, 'group.id': 'read-big',
                     'auto.offset.reset': 'earliest'})
consumer.subscribe(['BIG_PAYMENTS'])
seen = []
while len(seen) < 2:
    m = consumer.poll(15)
    if m is None:
        break
    if m.error():
        raise Exception(m.error())
    row = deserialize(m.value(), SerializationContext('BIG_PAYMENTS', MessageField.VALUE))
    seen.append('%d %s' % (row.ID, row.CENTS))
consumer.close()
print('\n'.join(seen))
"#;

/// Confluent's Protobuf serializer registers its schema with Eddy (as a base64 descriptor, as
/// the Python client sends it) and frames records with it; a stream infers its columns from
/// that schema; the query's PROTOBUF output is read by Confluent's Protobuf deserializer.
#[test]
fn confluents_protobuf_serializers_and_sql_share_records() {
    let server = common::start();
    let produced = python(
        &format!("{PROTO_CLASSES}{PROTO_PRODUCE}"),
        &[&server.kafka, &server.registry],
    );
    assert_eq!(produced, "PROTOBUF\n");
    let (status, body) = common::ksql(
        &server,
        "SET 'auto.offset.reset'='earliest'; \
         CREATE STREAM PAYMENTS WITH (KAFKA_TOPIC='payments', VALUE_FORMAT='PROTOBUF'); \
         CREATE STREAM BIG_PAYMENTS AS SELECT ID, AMOUNT * 100 AS CENTS FROM PAYMENTS \
           WHERE AMOUNT > 5;",
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        python(&format!("{PROTO_CLASSES}{PROTO_CONSUME}"), &[&server.kafka]),
        "1 1250.0\n3 725.0\n"
    );
}

const JSON_PRODUCE: &str = r#"
import sys
from confluent_kafka import Producer
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.json_schema import JSONSerializer
from confluent_kafka.serialization import SerializationContext, MessageField
bootstrap, registry_url = sys.argv[1], 'http://' + sys.argv[2]
registry = SchemaRegistryClient({'url': registry_url})
SCHEMA = '{"type": "object", "title": "Shipment", "properties": {"id": {"type": "integer"}, "city": {"type": "string"}, "weight": {"type": "number"}}}'
serialize = JSONSerializer(SCHEMA, registry)
producer = Producer({'bootstrap.servers': bootstrap})
for v in [{'id': 1, 'city': 'Lyon', 'weight': 2.5}, {'id': 2, 'city': 'Oslo', 'weight': 0.5}]:
    producer.produce('shipments', value=serialize(v, SerializationContext('shipments', MessageField.VALUE)))
producer.flush()
"#;

const JSON_CONSUME: &str = r#"
import sys
from confluent_kafka import Consumer
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.json_schema import JSONDeserializer
from confluent_kafka.serialization import SerializationContext, MessageField
bootstrap, registry_url = sys.argv[1], 'http://' + sys.argv[2]
# The reader's own schema; the writer's is fetched by the id each record names.
deserialize = JSONDeserializer(None, schema_registry_client=SchemaRegistryClient({'url': registry_url}))
consumer = Consumer({'bootstrap.servers': bootstrap, 'group.id': 'read-heavy',
                     'auto.offset.reset': 'earliest'})
consumer.subscribe(['HEAVY'])
m = consumer.poll(15)
if m is None or m.error():
    raise Exception(m and m.error())
print(sorted(deserialize(m.value(), SerializationContext('HEAVY', MessageField.VALUE)).items()))
consumer.close()
"#;

/// Confluent's JSON Schema serializer registers its schema with Eddy and frames records with
/// it; a JSON_SR stream infers its columns from the schema; the query's output, registered by
/// Eddy, is read back by Confluent's JSON Schema deserializer, which validates it.
#[test]
fn confluents_json_schema_serializers_and_sql_share_records() {
    let server = common::start();
    python(JSON_PRODUCE, &[&server.kafka, &server.registry]);
    let (status, body) = common::ksql(
        &server,
        "SET 'auto.offset.reset'='earliest'; \
         CREATE STREAM SHIPMENTS WITH (KAFKA_TOPIC='shipments', VALUE_FORMAT='JSON_SR'); \
         CREATE STREAM HEAVY AS SELECT ID, CITY, WEIGHT * 1000 AS GRAMS FROM SHIPMENTS \
           WHERE WEIGHT > 1;",
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        python(JSON_CONSUME, &[&server.kafka, &server.registry]),
        "[('CITY', 'Lyon'), ('GRAMS', 2500.0), ('ID', 1)]\n"
    );
}
