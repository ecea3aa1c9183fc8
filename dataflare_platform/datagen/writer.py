"""Writes generated chunks to files, one file per chunk and kind, each published atomically.

Layout: ``OUT/{persons,auctions,bids}/part-00000.parquet`` (or ``.arrow`` for Arrow IPC),
plus ``OUT/_manifest.json`` recording the config and counts. A reader never sees a half
written file: each is written under a temporary name and renamed into place.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from dataflare_platform.datagen.config import NexmarkConfig
from dataflare_platform.datagen.nexmark import NexmarkGenerator
from dataflare_platform.datagen.schemas import SCHEMAS

MANIFEST_NAME = "_manifest.json"
EXTENSIONS = {"parquet": ".parquet", "ipc": ".arrow"}

ProgressCallback = Callable[[int, int], None]
"""Called after each chunk with (events written so far, total events)."""


@dataclass
class GenerationSummary:
    out_dir: Path
    config: NexmarkConfig
    rows: dict[str, int] = field(default_factory=dict)
    files: int = 0
    seconds: float = 0.0

    @property
    def events(self) -> int:
        return sum(self.rows.values())

    def to_json(self) -> dict:
        data = asdict(self)
        data["out_dir"] = str(self.out_dir)
        data["config"] = self.config.model_dump(mode="json")
        return data


def write_table(table: pa.Table, schema: pa.Schema, path: Path, fmt: str) -> None:
    """Write ``table`` as ``schema`` to ``path`` atomically (temp file + rename).

    Parquet takes dictionary columns as they are (its pages are dictionary-encoded
    anyway) and, without the stored Arrow schema, reads back as plain strings; Arrow IPC
    keeps types verbatim, so it gets the decoded table.
    """
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    if fmt == "parquet":
        pq.write_table(table, tmp, compression="zstd", store_schema=False)
    else:
        table = table.cast(schema)
        with pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_file(sink, schema) as writer:
            writer.write_table(table)
    tmp.replace(path)


def read_manifest(out_dir: Path) -> dict | None:
    try:
        return json.loads((Path(out_dir) / MANIFEST_NAME).read_text())
    except (OSError, ValueError):
        return None


def is_up_to_date(out_dir: Path, config: NexmarkConfig) -> bool:
    """True when ``out_dir`` already holds the complete output of exactly this config."""
    manifest = read_manifest(out_dir)
    return bool(manifest) and manifest.get("config") == config.model_dump(mode="json")


def write_nexmark(
    config: NexmarkConfig,
    out_dir: Path,
    progress: ProgressCallback | None = None,
) -> GenerationSummary:
    """Generate all chunks of ``config`` into ``out_dir``, replacing earlier output there."""
    out_dir = Path(out_dir)
    ext = EXTENSIONS[config.format]
    (out_dir / MANIFEST_NAME).unlink(missing_ok=True)
    for kind in SCHEMAS:
        kind_dir = out_dir / kind
        kind_dir.mkdir(parents=True, exist_ok=True)
        for old in kind_dir.glob("part-*"):
            old.unlink()
    generator = NexmarkGenerator(config)
    summary = GenerationSummary(out_dir=out_dir, config=config, rows=dict.fromkeys(SCHEMAS, 0))
    started = time.perf_counter()
    done = 0
    for index in generator.chunks():
        chunk = generator.chunk(index)
        for kind, table in chunk.tables().items():
            if table.num_rows == 0:
                continue
            path = out_dir / kind / f"part-{index:05d}{ext}"
            write_table(table, SCHEMAS[kind], path, config.format)
            summary.rows[kind] += table.num_rows
            summary.files += 1
        done += chunk.events
        if progress:
            progress(done, config.events)
    summary.seconds = time.perf_counter() - started
    manifest = {"config": config.model_dump(mode="json"), "rows": summary.rows}
    (out_dir / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2))
    return summary
