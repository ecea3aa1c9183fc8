"""A Nexmark query over Arrow files into any sink the connector registry opens (``--sink``
takes its ``kind:`` settings as JSON), run as a subprocess that the exactly-once tests
kill and restart (``python -m``). Prints the run's summary as one JSON line when it
finishes."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from pydantic import TypeAdapter

from dataflare_platform.connectors import registry
from dataflare_platform.connectors.settings import OpenContext
from dataflare_platform.engine import Runner, RunnerConfig
from dataflare_platform.events.log import EventLog
from dataflare_platform.queries.nexmark import BUILDERS, NexmarkSources


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--query", required=True)
    parser.add_argument("--input", required=True, type=Path, help="Nexmark output directory")
    parser.add_argument("--batch-rows", type=int, default=500)
    parser.add_argument("--checkpoint-every", type=int, default=3)
    parser.add_argument("--rate", type=float, default=None)
    parser.add_argument("--sink", required=True, help="sink settings as JSON, with kind")
    parser.add_argument("--log", type=Path, default=None, help="event log (topic sinks)")
    args = parser.parse_args()
    settings = TypeAdapter(registry.SinkSettings).validate_python(json.loads(args.sink))
    log = EventLog(args.log) if args.log else None
    sink = registry.open_sink(settings, OpenContext(args.query, log=log))
    src = NexmarkSources.from_paths(
        args.query,
        bids=args.input / "bids",
        persons=args.input / "persons",
        auctions=args.input / "auctions",
    )
    config = RunnerConfig(
        batch_rows=args.batch_rows, checkpoint_every=args.checkpoint_every, rate=args.rate
    )
    result = Runner(BUILDERS[args.query](src, sink), config).run()
    print(json.dumps(result.as_dict()), flush=True)


if __name__ == "__main__":
    main()
