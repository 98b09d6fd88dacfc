"""Runs one Nexmark query on Apache Flink (PyFlink's local mini-cluster, parallelism 1, streaming
mode) over the JSON lines Eddy's harness wrote, and prints one JSON line: the query's wall
seconds, the CPU seconds of Flink's JVM while it ran, and the JVM's peak resident memory.

    python3 run.py --dir EVENTS_DIR --query q3.sql

The sources are tests/nexmark/flink/ddl.sql over EVENTS_DIR/{person,auction,bid}.json; the query
file creates its blackhole sink and inserts into it, as Nexmark's Flink suite does.
"""

import argparse
import json
import os
import pathlib
import time

from pyflink.table import EnvironmentSettings, TableEnvironment

HERE = pathlib.Path(__file__).resolve().parent
TICKS = os.sysconf("SC_CLK_TCK")


def statements(text):
    lines = [line for line in text.splitlines() if not line.strip().startswith("--")]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]


def descendants(pid):
    """The processes under `pid`: the JVM PyFlink starts is a child of this one."""
    children = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = pathlib.Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def cpu_seconds(pids):
    total = 0
    for pid in pids:
        try:
            fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / TICKS


def peak_rss(pids):
    peak = 0
    for pid in pids:
        try:
            for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peak = max(peak, int(line.split()[1]) * 1024)
        except OSError:
            continue
    return peak


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--dir", required=True)
    parser.add_argument("--query", required=True)
    args = parser.parse_args()

    env = TableEnvironment.create(EnvironmentSettings.in_streaming_mode())
    config = env.get_config()
    config.set("parallelism.default", "1")
    config.set("table.local-time-zone", "UTC")
    ddl = (HERE / "ddl.sql").read_text().replace("{dir}", str(pathlib.Path(args.dir).resolve()))
    for statement in statements(ddl):
        env.execute_sql(statement)
    *setup, insert = statements(pathlib.Path(args.query).read_text())
    for statement in setup:
        env.execute_sql(statement)

    jvm = descendants(os.getpid())
    cpu_before = cpu_seconds(jvm)
    started = time.monotonic()
    env.execute_sql(insert).wait()
    seconds = time.monotonic() - started
    cpu = cpu_seconds(jvm) - cpu_before
    print(json.dumps({"seconds": seconds, "cpu_seconds": cpu, "peak_rss": peak_rss(jvm)}))


if __name__ == "__main__":
    main()
