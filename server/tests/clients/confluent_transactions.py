# confluent-kafka (librdkafka) transactions against eddy. Run by server/tests/transactions.rs as
# `confluent_transactions.py <bootstrap> <scenario>`; each scenario prints what it saw, one
# fact per line, and the test compares the lines.
import sys, time
from confluent_kafka import Producer, Consumer, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

bootstrap, scenario = sys.argv[1], sys.argv[2]
admin = AdminClient({'bootstrap.servers': bootstrap})


def create(topic, partitions):
    admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)])[topic].result(10)


def producer(txn_id, **extra):
    config = {'bootstrap.servers': bootstrap, 'transactional.id': txn_id, 'linger.ms': 5}
    config.update(extra)
    p = Producer(config)
    p.init_transactions(10)
    return p


def read_all(topic, isolation, expect=None, idle=3.0, group=None):
    """Every value in `topic` as a consumer with `isolation` sees it, reading until `expect`
    values arrived or nothing came for `idle` seconds."""
    c = Consumer({'bootstrap.servers': bootstrap, 'group.id': group or ('r-%s-%f' % (isolation, time.time())),
                  'auto.offset.reset': 'earliest', 'enable.auto.commit': False,
                  'isolation.level': isolation})
    c.subscribe([topic])
    seen, last = [], time.time()
    deadline = time.time() + 30
    while time.time() - last < idle and time.time() < deadline:
        m = c.poll(0.2)
        if m is None or m.error() is not None:
            continue
        seen.append(m.value().decode())
        last = time.time()
        if expect is not None and len(seen) >= expect:
            break
    c.close()
    return sorted(seen, key=lambda v: (len(v), v))


def send(p, topic, values):
    for v in values:
        p.produce(topic, key=v.encode(), value=v.encode())


def commit_and_abort():
    create('tx', 2)
    p = producer('t-commit')
    p.begin_transaction(); send(p, 'tx', ['a1', 'a2', 'a3']); p.commit_transaction(10)
    p.begin_transaction(); send(p, 'tx', ['x1', 'x2']); p.flush(10); p.abort_transaction(10)
    p.begin_transaction(); send(p, 'tx', ['b1', 'b2']); p.commit_transaction(10)
    print('committed', read_all('tx', 'read_committed', expect=5))
    print('uncommitted', read_all('tx', 'read_uncommitted', expect=7))


def copy_exactly_once():
    create('src', 2)
    create('dst', 2)
    plain = Producer({'bootstrap.servers': bootstrap, 'enable.idempotence': True})
    for i in range(30):
        plain.produce('src', key=b'k%d' % (i % 7), value=b'v%d' % i)
    assert plain.flush(10) == 0
    c = Consumer({'bootstrap.servers': bootstrap, 'group.id': 'copier', 'auto.offset.reset': 'earliest',
                  'enable.auto.commit': False, 'isolation.level': 'read_committed'})
    c.subscribe(['src'])
    p = producer('t-copy')
    copied, aborted_once, deadline = 0, False, time.time() + 60
    while copied < 30 and time.time() < deadline:
        batch = c.consume(num_messages=10, timeout=0.5)
        batch = [m for m in batch if m.error() is None]
        if not batch:
            continue
        p.begin_transaction()
        for m in batch:
            p.produce('dst', key=m.key(), value=m.value().upper())
        p.send_offsets_to_transaction(c.position(c.assignment()), c.consumer_group_metadata(), 10)
        if not aborted_once:
            # A forced failure: the copy and its offsets go back, and the batch is read again.
            aborted_once = True
            p.abort_transaction(10)
            committed = c.committed(c.assignment(), 10)
            for tp in committed:
                c.seek(TopicPartition(tp.topic, tp.partition, tp.offset if tp.offset >= 0 else 0))
            continue
        p.commit_transaction(10)
        copied += len(batch)
    c.close()
    out = read_all('dst', 'read_committed', expect=30)
    print('copied', len(out), 'distinct', len(set(out)))
    print('values', out == sorted(['V%d' % i for i in range(30)], key=lambda v: (len(v), v)))
    g = Consumer({'bootstrap.servers': bootstrap, 'group.id': 'copier'})
    committed = g.committed([TopicPartition('src', 0), TopicPartition('src', 1)], 10)
    total = sum(tp.offset for tp in committed)
    print('group offsets', total)
    g.close()


def fencing():
    create('fence', 1)
    old = producer('t-fence')
    old.begin_transaction(); send(old, 'fence', ['zombie']); old.flush(10)
    new = producer('t-fence')
    new.begin_transaction(); send(new, 'fence', ['fresh']); new.commit_transaction(10)
    try:
        send(old, 'fence', ['zombie2'])
        old.commit_transaction(10)
        print('old committed')
    except KafkaException as e:
        print('old fenced', e.args[0].fatal())
    print('committed', read_all('fence', 'read_committed', expect=1))


def timeout():
    create('slow', 1)
    p = producer('t-slow', **{'transaction.timeout.ms': 2000})
    p.begin_transaction(); send(p, 'slow', ['late']); p.flush(10)
    time.sleep(4)
    try:
        p.commit_transaction(10)
        print('late committed')
    except KafkaException as e:
        print('late refused', e.args[0].fatal() or e.args[0].txn_requires_abort())
    other = producer('t-quick')
    other.begin_transaction(); send(other, 'slow', ['quick']); other.commit_transaction(10)
    print('committed', read_all('slow', 'read_committed', expect=1))


def open_then_wait():
    """For the crash test: one committed transaction, then one left open; prints `open` and
    waits to be killed."""
    create('crash', 1)
    p = producer('t-crash', **{'transaction.timeout.ms': 3000})
    p.begin_transaction(); send(p, 'crash', ['c%d' % i for i in range(5)]); p.commit_transaction(10)
    p.begin_transaction(); send(p, 'crash', ['open%d' % i for i in range(4)]); p.flush(10)
    print('open', flush=True)
    time.sleep(60)


def hold_open():
    """Two committed records, then a transaction held open until a line arrives on stdin;
    prints `open`, then `done` once it commits."""
    create('held', 1)
    p = producer('t-held')
    p.begin_transaction(); send(p, 'held', ['k1', 'k2']); p.commit_transaction(10)
    p.begin_transaction(); send(p, 'held', ['k3']); p.flush(10)
    print('open', flush=True)
    sys.stdin.readline()
    p.commit_transaction(10)
    print('done', flush=True)


def after_restart():
    """For the crash test, after the restart: a new committed transaction, then what a
    read_committed consumer sees."""
    p = producer('t-after')
    p.begin_transaction(); send(p, 'crash', ['d1', 'd2']); p.commit_transaction(10)
    print('committed', read_all('crash', 'read_committed', expect=7))


{'commit_and_abort': commit_and_abort, 'copy_exactly_once': copy_exactly_once, 'fencing': fencing,
 'timeout': timeout, 'open_then_wait': open_then_wait, 'after_restart': after_restart,
 'hold_open': hold_open}[scenario]()
