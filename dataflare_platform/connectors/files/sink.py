"""One Parquet file as a sink: streamed, at-least-once (it keeps no checkpoint), for
benchmarks and one-off exports.

Encoding is the expensive part (issue 21 §4: q1 writing its 2 M rows ran at a fifth of
the speed without output), so it happens off the runner's sink thread: ``write`` only
converts and buffers, and full row groups go through a short bounded queue to an
encoder thread (pyarrow encodes without the GIL, beside the operators). Row groups are
``ROW_GROUP_ROWS`` rows (or ``ROW_GROUP_BYTES``), not one per micro-batch: fewer, larger
row groups cost less to encode and read. Floating-point columns are written without
dictionary encoding: their values rarely repeat, so the dictionary is built and then
abandoned for each of them (a third of q1's encoding time, for the same file size).
"""

from __future__ import annotations

import queue
import threading
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from dataflare_platform.engine.io import Sink

ROW_GROUP_ROWS = 262_144
ROW_GROUP_BYTES = 64 << 20
# Row groups waiting for the encoder: bounds memory when the encoder is slower than
# the pipeline (the sink thread then waits, and the operators behind it).
ENCODE_QUEUE = 2


class ParquetSink(Sink):
    """Streams output to one Parquet file (at-least-once: no checkpoint is kept)."""

    def __init__(self, path: Path, row_group_rows: int = ROW_GROUP_ROWS) -> None:
        self.path = Path(path)
        self.row_group_rows = row_group_rows
        self.rows = 0
        self.side_rows = 0
        self._schema: pa.Schema | None = None
        self._buffer: list[pa.RecordBatch] = []
        self._buffered_rows = 0
        self._buffered_bytes = 0
        self._groups: queue.Queue = queue.Queue(ENCODE_QUEUE)
        self._encoder: threading.Thread | None = None
        self._errors: list[BaseException] = []
        self._reported = False

    def write(self, output: pl.DataFrame | None, side: pl.DataFrame | None) -> None:
        if side is not None:
            self.side_rows += side.height
        if output is None or output.height == 0:
            return
        self._raise_encoder_error()
        table = output.to_arrow()
        if self._schema is None:
            self._start(table.schema)
        assert self._schema is not None
        if table.schema != self._schema:
            table = table.cast(self._schema)
        self._buffer.extend(table.to_batches())
        self._buffered_rows += table.num_rows
        self._buffered_bytes += table.nbytes
        self.rows += output.height
        if self._buffered_rows >= self.row_group_rows or self._buffered_bytes >= ROW_GROUP_BYTES:
            self._flush()

    def _start(self, schema: pa.Schema) -> None:
        self._schema = schema
        self.path.parent.mkdir(parents=True, exist_ok=True)
        dictionary = [f.name for f in schema if not pa.types.is_floating(f.type)]
        writer = pq.ParquetWriter(self.path, schema, use_dictionary=dictionary or False)
        self._encoder = threading.Thread(
            target=_encode,
            args=(writer, self._groups, self._errors),
            name="df-parquet-encode",
            daemon=True,  # a sink dropped without close() must not hold the process
        )
        self._encoder.start()

    def _flush(self) -> None:
        if not self._buffer:
            return
        group = pa.Table.from_batches(self._buffer, self._schema)
        self._buffer, self._buffered_rows, self._buffered_bytes = [], 0, 0
        while True:  # wait for room, unless the encoder has failed (it takes no more)
            try:
                self._groups.put(group, timeout=0.1)
                return
            except queue.Full:
                self._raise_encoder_error()

    def _raise_encoder_error(self) -> None:
        """Raise the encoder's error, once (a runner closes the sink after an error)."""
        if self._errors and not self._reported:
            self._reported = True
            raise self._errors[0]

    def close(self) -> None:
        """Encode what is buffered and close the file; an encoding error surfaces here
        (or at the next ``write``)."""
        if self._encoder is None:
            return
        try:
            if not self._errors:
                self._flush()
        finally:
            self._groups.put(None)
            self._encoder.join()
            self._encoder = None
            self._schema = None
        self._raise_encoder_error()


def _encode(writer: pq.ParquetWriter, groups: queue.Queue, errors: list[BaseException]) -> None:
    """The encoder thread: writes each row group it is handed, closes the file at None.
    After an error it keeps taking (and dropping) row groups, so no writer waits."""
    try:
        while (group := groups.get()) is not None:
            if not errors:
                writer.write_table(group, row_group_size=group.num_rows)
    except BaseException as err:
        errors.append(err)
        while groups.get() is not None:
            pass
    finally:
        try:
            writer.close()
        except BaseException as err:
            errors.append(err)
