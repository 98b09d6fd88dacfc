# kafka-python against a replicated eddy log, bootstrapped from one node only (the leader):
# an idempotent acks=all producer writes records 0..99, prints "first", and waits for a line
# on stdin while the test kills that node; then it writes 100..199 and prints each
# acknowledgement. It can reach the next leader only through the brokers Metadata named.
# Arguments: the one bootstrap address and the topic.
import sys
from kafka import KafkaProducer

bootstrap, topic = sys.argv[1], sys.argv[2]
producer = KafkaProducer(
    bootstrap_servers=[bootstrap],
    acks='all',
    enable_idempotence=True,
    retries=1000,
    retry_backoff_ms=200,
    request_timeout_ms=5000,
    delivery_timeout_ms=120000,
    metadata_max_age_ms=1000,
    reconnect_backoff_max_ms=1000,
    max_block_ms=120000,
)

def send(values):
    futures = [producer.send(topic, key=b'%d' % i, value=b'%d' % i) for i in values]
    for future in futures:
        meta = future.get(timeout=150)
        print('ack %d %d' % (meta.partition, meta.offset), flush=True)

send(range(100))
print('first', flush=True)
sys.stdin.readline()
send(range(100, 200))
producer.flush()
producer.close()
print('done', flush=True)
