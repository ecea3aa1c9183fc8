"""The event log: a directory of topics, shared by processes without a server."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import pyarrow as pa

from dataflare_platform.errors import ConfigError, user_path
from dataflare_platform.events.log.config import TOPIC_FILE, TOPIC_NAME, TopicConfig
from dataflare_platform.events.log.topic import Topic, TopicNotFoundError


class EventLog:
    """A directory of topics. Opening a topic recovers it (checks unverified segments)."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)
        with user_path("event log directory", self.root):
            self.root.mkdir(parents=True, exist_ok=True)
        self._open: dict[str, Topic] = {}

    def topics(self) -> list[str]:
        return sorted(
            p.name for p in self.root.iterdir() if p.is_dir() and (p / TOPIC_FILE).exists()
        )

    def exists(self, name: str) -> bool:
        return (self.root / name / TOPIC_FILE).exists()

    def create_topic(
        self,
        name: str,
        schema: pa.Schema,
        time_column: str = "date_time",
        partitions: int = 1,
        exist_ok: bool = False,
        **settings: object,
    ) -> Topic:
        if time_column not in schema.names:
            raise ConfigError(
                f"topic {name!r}", [("time_column", f"{time_column!r} is not a column")]
            )
        key = settings.get("key")
        if key is not None and key not in schema.names:
            raise ConfigError(f"topic {name!r}", [("key", f"{key!r} is not a column")])
        config = TopicConfig.validated(
            {
                "name": name,
                "partitions": partitions,
                "time_column": time_column,
                "schema_ipc": TopicConfig.encode_schema(schema),
                **settings,
            },
            f"topic {name!r}",
        )
        if self.exists(name):
            existing = self.topic(name)
            if exist_ok and existing.schema.equals(schema):
                return existing
            raise ConfigError(f"topic {name!r}", [("name", "a topic of that name exists")])
        directory = self.root / name
        directory.mkdir(parents=True, exist_ok=True)
        tmp = directory / f".{TOPIC_FILE}.tmp-{os.getpid()}"
        tmp.write_text(config.model_dump_json(indent=2))
        tmp.replace(directory / TOPIC_FILE)
        return self.topic(name)

    def topic(self, name: str) -> Topic:
        if name in self._open:
            return self._open[name]
        if not re.match(TOPIC_NAME, name) or not self.exists(name):
            raise TopicNotFoundError(name)
        path = self.root / name / TOPIC_FILE
        try:
            data = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, ValueError, RecursionError) as err:
            # An empty, torn or edited topic.json: name it instead of a parser traceback.
            reason = f"{path}: not readable JSON ({type(err).__name__}: {err})"
            raise ConfigError(f"topic {name!r}", [("<file>", reason)]) from None
        config = TopicConfig.validated(data, str(path))
        topic = Topic(self.root, config)
        topic.recover()
        self._open[name] = topic
        return topic

    def delete_topic(self, name: str) -> None:
        topic = self.topic(name)
        shutil.rmtree(topic.dir)
        self._open.pop(name, None)
