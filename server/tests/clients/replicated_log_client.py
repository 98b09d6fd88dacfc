# confluent-kafka (librdkafka) against a replicated eddy log whose leaders are killed and
# paused meanwhile (server/tests/replication.rs): an idempotent acks=all producer writes
# numbers in order, and a consumer reads the topic from the start as it grows. Every
# acknowledgement and every read is printed, so the test can check them against the final log.
# Arguments: the bootstrap list, the topic, and the first number to write (0 by default), so
# several producers write numbers of their own. Writing stops when stdin closes; then the
# producer flushes and the script prints "done".
import sys, threading, time
from confluent_kafka import Producer, Consumer, TopicPartition, KafkaError

bootstrap, topic = sys.argv[1], sys.argv[2]
first = int(sys.argv[3]) if len(sys.argv) > 3 else 0
out = threading.Lock()

def say(line):
    with out:
        print(line, flush=True)

producer = Producer({
    'bootstrap.servers': bootstrap,
    'enable.idempotence': True,
    'acks': 'all',
    'linger.ms': 5,
    'message.timeout.ms': 120000,
    'topic.metadata.refresh.interval.ms': 1000,
    'reconnect.backoff.max.ms': 500,
})

def delivered(err, msg):
    if err is None:
        say('ack %d %d %s' % (msg.partition(), msg.offset(), msg.value().decode()))
    else:
        say('failed %s %s' % (msg.value().decode(), err))

stop = threading.Event()

def read():
    consumer = Consumer({
        'bootstrap.servers': bootstrap,
        'group.id': 'jepsen-reader',
        'enable.auto.commit': False,
        'auto.offset.reset': 'earliest',
        'topic.metadata.refresh.interval.ms': 1000,
        'reconnect.backoff.max.ms': 500,
    })
    consumer.assign([TopicPartition(topic, p, 0) for p in range(2)])
    while not stop.is_set():
        msg = consumer.poll(0.2)
        if msg is None or msg.error() is not None:
            continue
        say('read %d %d %s' % (msg.partition(), msg.offset(), msg.value().decode()))
    consumer.close()

reader = threading.Thread(target=read)
reader.start()

writing = threading.Event()
writing.set()

def wait_for_stdin():
    sys.stdin.read()
    writing.clear()

threading.Thread(target=wait_for_stdin, daemon=True).start()
i = first
while writing.is_set():
    try:
        producer.produce(topic, key=b'k%d' % (i % 8), value=b'%d' % i, on_delivery=delivered)
        i += 1
    except BufferError:
        pass
    producer.poll(0)
    time.sleep(0.002)
left = producer.flush(180)
say('flushed %d left, %d written' % (left, i - first))
stop.set()
reader.join()
say('done')
