"""A consumer-group member killed without leaving: the member that joins after it gets every
partition once the dead one's session times out, not at the end of the rebalance timeout
(max.poll.interval.ms, five minutes by default)."""
import subprocess
import sys
import time

from confluent_kafka import Consumer
from confluent_kafka.admin import AdminClient, NewTopic

brokers = sys.argv[1]
admin = AdminClient({"bootstrap.servers": brokers})
admin.create_topics([NewTopic("dead", 2, 1)])["dead"].result()

MEMBER = """
import sys, time
from confluent_kafka import Consumer
c = Consumer({'bootstrap.servers': sys.argv[1], 'group.id': 'g', 'session.timeout.ms': 6000})
c.subscribe(['dead'], on_assign=lambda c, ps: print('assigned', flush=True))
while True:
    c.poll(0.1)
"""
first = subprocess.Popen([sys.executable, "-c", MEMBER, brokers], stdout=subprocess.PIPE, text=True)
assert first.stdout.readline().strip() == "assigned"
first.kill()
first.wait()

second = Consumer({"bootstrap.servers": brokers, "group.id": "g", "session.timeout.ms": 6000})
got = []
second.subscribe(["dead"], on_assign=lambda c, ps: got.extend(p.partition for p in ps))
started = time.time()
while not got and time.time() - started < 60:
    second.poll(0.2)
waited = time.time() - started
print("assigned", sorted(got), "within the session timeout" if waited < 15 else f"after {waited:.0f} s")
second.close()
