"""Every exception class a user can meet derives from ``DataflareError`` (the CLI's one
error boundary catches it). Private classes (``_Name``) never leave their module."""

from __future__ import annotations

import ast
import importlib
import socket

import pytest

from dataflare_platform.errors import DataflareError
from dataflare_platform_tests.conftest import REPO_ROOT

PACKAGE = REPO_ROOT / "dataflare_platform"


def _modules_defining_classes() -> dict[str, list[str]]:
    """Module name -> public class names defined at its top level (from the source)."""
    found: dict[str, list[str]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name == "__main__.py":  # runs the command when imported
            continue
        tree = ast.parse(path.read_text())
        names = [
            node.name
            for node in tree.body
            if isinstance(node, ast.ClassDef) and not node.name.startswith("_")
        ]
        if names:
            module = ".".join(path.relative_to(REPO_ROOT).with_suffix("").parts)
            found[module.removesuffix(".__init__")] = names
    return found


def test_every_public_exception_class_derives_from_dataflare_error():
    exceptions = {}
    for module_name, names in _modules_defining_classes().items():
        module = importlib.import_module(module_name)
        for name in names:
            cls = getattr(module, name)
            if isinstance(cls, type) and issubclass(cls, BaseException):
                exceptions[f"{module_name}.{name}"] = cls
    # The walk found the classes the rule is about (not an empty pass).
    assert {
        "dataflare_platform.errors.ConfigError",
        "dataflare_platform.client.errors.RunTimeoutError",
        "dataflare_platform.events.log.topic.TopicNotFoundError",
        "dataflare_platform.plugins.build.BuildError",
    } <= set(exceptions)
    assert len(exceptions) >= 25
    outside = sorted(
        name for name, cls in exceptions.items() if not issubclass(cls, DataflareError)
    )
    assert outside == []


def test_builtin_bases_are_kept_for_callers_that_catch_them():
    from dataflare_platform.client import RunTimeoutError
    from dataflare_platform.connectors.postgres import PostgresUnavailableError
    from dataflare_platform.events.deadletter import NoSuchDeadLetterError
    from dataflare_platform.events.log import OffsetOutOfRangeError, TopicNotFoundError

    assert issubclass(TopicNotFoundError, KeyError)
    assert str(TopicNotFoundError("bids")) == "no topic 'bids'"  # not KeyError's repr
    assert issubclass(OffsetOutOfRangeError, ValueError)
    assert issubclass(NoSuchDeadLetterError, LookupError)
    assert issubclass(PostgresUnavailableError, ConnectionError)
    assert issubclass(RunTimeoutError, TimeoutError)


# --- The CLI boundary: bad input anywhere is one ``error:`` line and exit 2 -------------
#
# Every command group is driven with input a user gets wrong: a topic, rule, alert, plugin
# or run that does not exist, a bad name, offset or partition, a file that is missing, not
# a file, garbage or under a regular file. Each must end in ``error: <one line>`` and exit 2
# with the exception turned into SystemExit (not left to show a traceback): the boundary
# now catches ``DataflareError`` only, so a builtin escaping from library code fails here.

# Command lines split on spaces; {L} is --log-dir, {R} replay with its DuckDB file and
# log, {N} nexmark run with its DuckDB file, {S} the alert state URL; '' an empty argument;
# --from/--to stand for replay's --from-offset/--to-offset.
_BAD_INPUTS: dict[str, str] = {
    "describe a missing topic": "topics describe nosuch {L}",
    "maintain a missing topic": "topics maintain nosuch {L}",
    "create a topic with a bad name": "topics create ../evil --nexmark bids {L}",
    "create a topic twice": "topics create bids --nexmark bids {L}",
    "create a topic with 0 partitions": "topics create zero --nexmark bids --partitions 0 {L}",
    "create a topic from an unknown Nexmark kind": "topics create k --nexmark nosuchkind {L}",
    "create a topic from a missing schema file": "topics create s --schema-from {tmp}/no.pq {L}",
    "create a topic from a garbage schema file": "topics create s --schema-from {garbage} {L}",
    "a log directory under a regular file": "topics list --log-dir {garbage}/log",
    "produce to a missing topic": "produce nosuch {garbage} {L}",
    "produce a missing file": "produce bids {tmp}/missing.parquet {L}",
    "produce a garbage Parquet file": "produce bids {garbage} {L}",
    "produce a directory": "produce bids {dir} {L}",
    "produce an unsupported file type": "produce bids {text} {L}",
    "consume a missing topic": "consume nosuch {L}",
    "consume with a too long group name": "consume bids --group {long_name} {L}",
    "route by a missing rule file": "route {tmp}/missing.yaml {L}",
    "route by a garbage rule file": "route {text} {L}",
    "replay a missing topic": "{R} --topic nosuch --query q0 --from 0 --to 1 --into t",
    "replay a bad offset": "{R} --topic bids --query q0 --from abc --to 1 --into t",
    "replay a missing partition": "{R} --topic bids --query q0 --from 7:0 --into t",
    "replay into a bad table name": "{R} --topic bids --query q0 --from 0 --to 1 --into ''",
    "replay an unknown query": "{R} --topic bids --query q99 --from 0 --to 1 --into t",
    "validate a missing pipeline file": "pipeline validate {tmp}/missing.yaml",
    "validate a garbage pipeline file": "pipeline validate {text}",
    "validate a directory": "pipeline validate {dir}",
    "run a pipeline with a bad field": "pipeline run {bad_pipeline}",
    "an unknown Nexmark query": "{N} --query q99",
    "a Nexmark query on a missing input": "{N} --query q0 --input {tmp}/none",
    "a Nexmark query on a garbage input": "{N} --query q0 --input {garbage}",
    "dead letters of a missing topic": "dlq list nosuch {L}",
    "a missing dead letter": "dlq show bids 999 {L}",
    "re-drive a missing topic": "dlq redrive nosuch {L}",
    "re-drive with a bad fix": "dlq redrive bids --fix no_such_module:fn {L}",
    "build a missing plugin directory": "plugin build {tmp}/missing",
    "inspect a missing plugin": "plugin inspect nosuch --dir {tmp}",
    "run a missing plugin": "plugin run nosuch --dir {tmp} --input {garbage} --output {tmp}/o.pq",
    "acknowledge a missing alert": "alerts ack 999 --by me {S}",
    "silence for a bad duration": "alerts silence --rule r --for soon --by me --reason x {S}",
    "alerts in a bad state URL": "alerts list --state-url nosuchdb://x",
    "verify a bad audit URL": "audit verify --url nosuchdb://x --home {tmp}/h",
    "tail an in-memory audit log": "audit tail --url sqlite://",
    "key pair into a regular file": "audit keygen --keys {garbage}",
    "a run on an unreachable server": "runs show abc --port {closed_port}",
    "a backfill on an unreachable server": "backfill status abc --port {closed_port}",
    "launch on an unreachable server": "launch some_job --port {closed_port}",
}


@pytest.fixture(scope="module")
def bad_input_world(tmp_path_factory) -> dict[str, str]:
    """A log with one topic ``bids`` (2 partitions), a garbage file, a text file, a
    directory and a pipeline file with a bad field; a port nothing listens on."""
    from typer.testing import CliRunner

    from dataflare_platform.cli import app

    tmp = tmp_path_factory.mktemp("bad_input")
    log = tmp / "log"
    made = CliRunner().invoke(
        app,
        [
            "topics",
            "create",
            "bids",
            "--nexmark",
            "bids",
            "--partitions",
            "2",
            "--log-dir",
            str(log),
        ],
    )
    assert made.exit_code == 0, made.output
    (tmp / "garbage.parquet").write_bytes(b"\x00not parquet at all\xff" * 10)
    (tmp / "notes.txt").write_text("key: [unclosed\n")
    (tmp / "a_dir.parquet").mkdir()
    (tmp / "bad_pipeline.yaml").write_text(
        "name: p\nsources: {bids: {topic: bids}}\nstreams: {}\noutput: nowhere\n"
        "sink: {duckdb: {path: x.db, table: t}}\nbatch_rows: -5\n"
    )
    with socket.socket() as sock:  # a port that was free a moment ago and nobody listens on
        sock.bind(("127.0.0.1", 0))
        closed_port = sock.getsockname()[1]
    return {
        "tmp": str(tmp),
        "log": str(log),
        "garbage": str(tmp / "garbage.parquet"),
        "text": str(tmp / "notes.txt"),
        "dir": str(tmp / "a_dir.parquet"),
        "bad_pipeline": str(tmp / "bad_pipeline.yaml"),
        "closed_port": str(closed_port),
    }


@pytest.mark.parametrize("case", sorted(_BAD_INPUTS))
def test_bad_input_to_any_command_is_one_error_line_and_exit_2(case, bad_input_world):
    from typer.testing import CliRunner

    from dataflare_platform.cli import app

    w = bad_input_world
    shorthands = {
        "L": f"--log-dir {w['log']}",
        "R": f"replay --duckdb {w['tmp']}/r.duckdb --log {w['log']}",
        "N": f"nexmark run --duckdb {w['tmp']}/n.db",
        "S": f"--state-url sqlite:///{w['tmp']}/alerts.db",
        "long_name": "g" * 300,
    }
    text = _BAD_INPUTS[case].format(**w, **shorthands)
    options = {"--from": "--from-offset", "--to": "--to-offset"}  # short here, not in the CLI
    args = [options.get(a, "" if a == "''" else a) for a in text.split()]  # no spaces in paths
    result = CliRunner().invoke(app, args)
    assert isinstance(result.exception, SystemExit), (
        f"{case}: {type(result.exception).__name__}: {result.exception}\n{result.output}"
    )
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and result.stderr.startswith("error: "), result.stderr
    assert len(errors[0]) > len("error: ") + 5  # says something


# --- Library code raises DataflareError subclasses for bad input -----------------------
#
# A ``raise ValueError(...)`` (or KeyError, LookupError, IndexError, FileNotFoundError,
# OSError...) in library code would reach the CLI as a traceback, since the boundary
# catches only DataflareError. Raise ``InvalidInputError`` / ``NotFoundError`` /
# ``UserPathError`` / ``MissingPathError`` (errors.py) instead; they keep the builtin base.
#
# Exempt without listing: a pydantic validator (``@field_validator``/``@model_validator``
# method): pydantic turns its ValueError into a ValidationError, which the loaders turn
# into a ConfigError naming the field (and the CLI boundary prints on one line).

_BUILTIN_USER_ERRORS = {
    "ValueError",
    "KeyError",
    "LookupError",
    "IndexError",
    "OSError",
    "FileNotFoundError",
    "PermissionError",
    "NotADirectoryError",
    "IsADirectoryError",
    "FileExistsError",
}
_VALIDATOR_DECORATORS = {"field_validator", "model_validator", "validator", "root_validator"}

# "module:function" -> why a builtin is right there (never user input reaching a user).
BUILTIN_RAISES_ALLOWED = {
    "dataflare_platform.cli.plugin:_typed": (
        "control flow: its caller catches the ValueError and reports a ConfigError naming"
        " the --param"
    ),
    "dataflare_platform.connectors.parquet_dataset.sink:Manifest.decode": (
        "the sink's own state file; _recover turns it into a CorruptInputError naming the manifest"
    ),
    "dataflare_platform.datagen.nexmark:NexmarkGenerator.chunk": (
        "a caller's index past the chunks it was told exist: a bug, not input"
    ),
    "dataflare_platform.engine.checkpoint:Checkpoint.decode": (
        "the engine's own checkpoint bytes, written by Checkpoint.encode in the same commit:"
        " a bad magic is an invariant broken, not input"
    ),
    "dataflare_platform.events.log.commits:Commit.decode": (
        "the log's own commit record (written atomically); readers treat a torn one as absent"
    ),
    "dataflare_platform.events.codec:decode_arrow": (
        "a malformed record: the decoder catches it and dead-letters the record with this"
        " reason (in = out + rejected)"
    ),
    "dataflare_platform.events.codec:conform": (
        "a record batch that does not fit the schema: dead-lettered by the decoder, or"
        " re-raised as InvalidInputError naming the topic by Topic._conform"
    ),
    "dataflare_platform.events.codec:JsonDecoder._parse": (
        "a malformed chunk: decode() catches it and falls back to per-line dead letters"
    ),
    "dataflare_platform.events.codec:JsonDecoder.decode": (
        "a caller passing unequal offsets and payloads: a bug"
    ),
    "dataflare_platform.events.ingest:ingest_payloads": (
        "the offsets-per-payload invariant of the caller (the transactional-topic refusal"
        " above it is an InvalidInputError)"
    ),
    "dataflare_platform.events.log.partition:Partition.truncate": (
        "recovery truncating to an offset inside a segment: an invariant of the log"
    ),
    "dataflare_platform.warehouse.connection:open_duckdb": (
        "attempts < 1 is a caller's bug; no user option reaches it"
    ),
}


def _builtin_raises() -> dict[str, list[str]]:
    """``module:qualname`` -> builtin exception names raised there, outside validators."""
    found: dict[str, list[str]] = {}

    def decorators(node: ast.AST) -> set[str]:
        names = set()
        for deco in getattr(node, "decorator_list", []):
            target = deco.func if isinstance(deco, ast.Call) else deco
            names.add(getattr(target, "attr", getattr(target, "id", "")))
        return names

    for path in sorted(PACKAGE.rglob("*.py")):
        module = ".".join(path.relative_to(REPO_ROOT).with_suffix("").parts)
        module = module.removesuffix(".__init__")

        def walk(node: ast.AST, scope: list[ast.AST], module: str = module) -> None:
            for child in ast.iter_child_nodes(node):
                if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                    walk(child, [*scope, child])
                    continue
                if isinstance(child, ast.Raise) and child.exc is not None:
                    exc = child.exc.func if isinstance(child.exc, ast.Call) else child.exc
                    name = getattr(exc, "id", None)
                    in_validator = any(decorators(s) & _VALIDATOR_DECORATORS for s in scope)
                    if name in _BUILTIN_USER_ERRORS and not in_validator:
                        where = f"{module}:{'.'.join(s.name for s in scope)}"  # type: ignore[attr-defined]
                        found.setdefault(where, []).append(f"{name} (line {child.lineno})")
                walk(child, scope)

        walk(ast.parse(path.read_text()), [])
    return found


def test_library_code_raises_dataflare_errors_for_bad_input():
    raised = _builtin_raises()
    unexplained = {
        where: names for where, names in raised.items() if where not in BUILTIN_RAISES_ALLOWED
    }
    assert unexplained == {}, (
        "raise InvalidInputError / NotFoundError / UserPathError (dataflare_platform.errors)"
        " for bad input, or add the site to BUILTIN_RAISES_ALLOWED with the reason"
    )
    # Every allowance still names a builtin raise (a stale one would hide a new site).
    stale = sorted(set(BUILTIN_RAISES_ALLOWED) - set(raised))
    assert stale == []


def test_the_scan_sees_a_builtin_raise_and_exempts_validators(tmp_path):
    """The scan is not blind: the allowances it finds are real raises, and a validator's
    ValueError is what pydantic turns into a ValidationError (the exemption's premise)."""
    from pydantic import BaseModel, ValidationError, field_validator

    assert "dataflare_platform.events.codec:decode_arrow" in _builtin_raises()

    class Probe(BaseModel):
        name: str

        @field_validator("name")
        @classmethod
        def _check(cls, value: str) -> str:
            raise ValueError("bad name")

    with pytest.raises(ValidationError, match="bad name"):
        Probe(name="x")


def _probe_app():
    """A command group like every ``dataflare`` group, with commands raising what the
    boundary must tell apart."""
    from pydantic import BaseModel, Field

    from dataflare_platform.cli._common import command_group

    class Settings(BaseModel):
        batch_rows: int = Field(gt=0)

    probe = command_group(help="probe")

    @probe.command("model")
    def model() -> None:
        Settings(batch_rows=0)

    @probe.command("builtin")
    def builtin() -> None:
        raise ValueError("a bug's ValueError")

    @probe.command("os")
    def os_error() -> None:
        (PACKAGE / "no-such-file").read_text()  # the OSError is the point

    return probe


def test_a_validation_error_reaching_the_boundary_is_one_line_naming_the_field():
    from typer.testing import CliRunner

    result = CliRunner().invoke(_probe_app(), ["model"])
    assert result.exit_code == 2
    assert result.stderr.strip() == (
        "error: invalid Settings: batch_rows: Input should be greater than 0"
    )


@pytest.mark.parametrize("command", ["builtin", "os"])
def test_a_builtin_error_is_a_bug_and_keeps_its_traceback(command):
    """Library code turns bad input into DataflareError; a builtin that still escapes is
    not swallowed as if it were the user's fault."""
    from typer.testing import CliRunner

    result = CliRunner().invoke(_probe_app(), [command])
    assert isinstance(result.exception, ValueError | OSError)
    assert not isinstance(result.exception, DataflareError)
    assert "error:" not in result.stderr
