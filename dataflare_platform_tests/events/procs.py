"""Producer and consumer processes for the multi-process log tests (``python -m``)."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

from dataflare_platform.events.groups import ConsumerGroup
from dataflare_platform.events.log import EventLog

SCHEMA = pa.schema(
    [
        pa.field("producer", pa.int64(), nullable=False),
        pa.field("seq", pa.int64(), nullable=False),
        pa.field("row", pa.int64(), nullable=False),
        pa.field("value", pa.int64(), nullable=False),
        pa.field("date_time", pa.timestamp("ms"), nullable=False),
    ]
)


def batch(producer: int, seq: int, rows: int) -> pa.Table:
    row = np.arange(rows, dtype=np.int64)
    return pa.table(
        {
            "producer": np.full(rows, producer, dtype=np.int64),
            "seq": np.full(rows, seq, dtype=np.int64),
            "row": row,
            "value": producer * 1_000_003 + seq * 1_009 + row,
            "date_time": pa.array(1_700_000_000_000 + seq * 10 + row, pa.int64()).cast(
                pa.timestamp("ms")
            ),
        },
        schema=SCHEMA,
    )


def produce(root: str, topic: str, producer: int, first: int, batches: int, rows: int) -> None:
    """Append batches; a line on stdout acknowledges each one once it is published."""
    t = EventLog(Path(root)).topic(topic)
    for seq in range(first, first + batches):
        placed = t.append(batch(producer, seq, rows), partition=seq % len(t.parts))
        ((partition, (start, end)),) = placed.items()
        print(json.dumps({"seq": seq, "partition": partition, "start": start, "end": end}))
        sys.stdout.flush()


def consume(root: str, topic: str, group: str, expected: int, timeout_s: float) -> None:
    """Poll and commit until ``expected`` rows arrived; print their checksum."""
    t = EventLog(Path(root)).topic(topic)
    consumer = ConsumerGroup(t, group).consumer()
    rows, total, keys = 0, 0, set()
    deadline = time.monotonic() + timeout_s
    while rows < expected and time.monotonic() < deadline:
        fetched = consumer.poll(max_rows=5_000)
        if not fetched:
            time.sleep(0.005)
            continue
        for f in fetched:
            rows += f.table.num_rows
            total += int(np.asarray(f.table.column("value")).sum())
            for p, s in zip(
                f.table.column("producer").to_pylist(),
                f.table.column("seq").to_pylist(),
                strict=True,
            ):
                keys.add((p, s))
        consumer.commit()
    print(json.dumps({"rows": rows, "checksum": total, "batches": len(keys)}))


if __name__ == "__main__":
    command, *args = sys.argv[1:]
    if command == "produce":
        produce(args[0], args[1], *(int(a) for a in args[2:]))
    elif command == "consume":
        consume(args[0], args[1], args[2], int(args[3]), float(args[4]))
    else:
        raise SystemExit(f"unknown command {command}")
