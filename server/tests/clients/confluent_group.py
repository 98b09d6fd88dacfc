# confluent-kafka (librdkafka) against eddy: a group of two consumers splits a 4-partition
# topic, one leaves and the other takes over, and a new member resumes from the committed
# offsets. Run by server/tests/confluent_kafka.rs with the Kafka address as its argument.
import sys, time
from confluent_kafka import Producer, Consumer
from confluent_kafka.admin import AdminClient, NewTopic
bootstrap = sys.argv[1]
topic = 'parts'
admin = AdminClient({'bootstrap.servers': bootstrap})
admin.create_topics([NewTopic(topic, num_partitions=4, replication_factor=1)])[topic].result(10)
producer = Producer({'bootstrap.servers': bootstrap, 'enable.idempotence': True, 'acks': 'all'})
def produce(start, end):
    for i in range(start, end):
        producer.produce(topic, key=b'k%d' % i, value=b'v%d' % i)
    assert producer.flush(10) == 0
produce(0, 40)

def consumer(name):
    return Consumer({'bootstrap.servers': bootstrap, 'group.id': 'split', 'client.id': name,
                     'auto.offset.reset': 'earliest', 'enable.auto.commit': False,
                     'session.timeout.ms': 6000, 'heartbeat.interval.ms': 300,
                     'partition.assignment.strategy': 'range'})

def poll_until(consumers, done, seen, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        for c in consumers:
            m = c.poll(0.1)
            if m is not None and m.error() is None:
                seen.setdefault(c, []).append(m.value().decode())
                c.commit(message=m, asynchronous=False)
        if done():
            return
    raise SystemExit('timed out: ' + repr({id(c): sorted(p.partition for p in c.assignment()) for c in consumers}))

c1, c2 = consumer('c1'), consumer('c2')
c1.subscribe([topic]); c2.subscribe([topic])
seen = {}
# Both members get two partitions each.
poll_until([c1, c2], lambda: len(c1.assignment()) == 2 and len(c2.assignment()) == 2, seen)
print('split', *sorted([sorted(p.partition for p in c.assignment()) for c in (c1, c2)]))
poll_until([c1, c2], lambda: sum(len(v) for v in seen.values()) >= 40, seen)
print('both read', len(seen.get(c1, [])) > 0, len(seen.get(c2, [])) > 0, sum(len(v) for v in seen.values()))
# One leaves; the other takes over all four partitions.
c2.close()
produce(40, 60)
poll_until([c1], lambda: len(c1.assignment()) == 4 and sum(len(v) for v in seen.values()) >= 60, seen)
print('took over', sorted(p.partition for p in c1.assignment()))
c1.close()
# A new member of the group resumes from the committed offsets: only new records.
produce(60, 70)
c3 = consumer('c3'); c3.subscribe([topic])
later = {}
poll_until([c3], lambda: sum(len(v) for v in later.values()) >= 10, later)
time.sleep(1)
m = c3.poll(1.0)
print('resumed', sorted(later[c3], key=lambda v: int(v[1:])) == ['v%d' % i for i in range(60, 70)], m is None)
c3.close()
