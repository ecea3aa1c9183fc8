"""Structured logs: one configuration, one JSON line per record, context attached, secrets out.

The platform logs through the standard library (``logging.getLogger(__name__)``); this
module decides where those records go and what a line carries. ``configure_logging``
installs one handler on the root logger (stderr, looked up at each record so a test's or
a Dagster step's captured stderr is the one written to) and is idempotent: a second call
replaces the handler it installed and the levels it set, and leaves anybody else's alone.

A JSON line holds ``timestamp`` (UTC, ISO 8601, ms), ``level``, ``logger``, ``message``,
then the context: ``trace_id``/``span_id`` of the current OpenTelemetry span (API only, so
whatever tracer provider the deployment configures is the one read), the fields of
``log_context(...)`` (pipeline, partition, source, ... set by the runner and the streams
layer), those of registered context providers (the Dagster run id, job and step, added by
``defs/`` so that this module stays free of Dagster), the record's ``extra`` fields (e.g.
``dropped`` counts) and ``exception``. Every text field goes through the redaction:
known secret values (``DATAFLARE_SECRET_*`` variables and every value ``SecretRef.read``
handed out) in their plain, URL-encoded and base64 forms, and any URL password.

Settings (environment, read by ``LogSettings.from_env``):

- ``DATAFLARE_LOG_FORMAT``: ``json`` or ``text``; default ``text`` when stderr is a
  terminal (a person at the CLI), else ``json`` (a service, a Dagster run worker, a pipe).
- ``DATAFLARE_LOG_LEVEL``: level of the platform's loggers (default ``INFO``).
- ``DATAFLARE_LOG_LEVELS``: per-logger levels, ``name=LEVEL,name=LEVEL``.

Data that is dropped, truncated, quarantined or skipped is reported with
``report_dropped`` (or ``DropTally`` for running totals): one WARNING line with the count
and the same count added to ``dataflare_data_dropped_total{component,reason}``.
"""

from __future__ import annotations

import base64
import contextvars
import json
import logging
import os
import re
import sys
import threading
import time
import traceback
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any, Literal
from urllib.parse import quote, quote_plus

from pydantic import BaseModel, ConfigDict, ValidationError

from dataflare_platform import secrets
from dataflare_platform.errors import ConfigError

FORMAT_ENV = "DATAFLARE_LOG_FORMAT"
LEVEL_ENV = "DATAFLARE_LOG_LEVEL"
LEVELS_ENV = "DATAFLARE_LOG_LEVELS"
# The loggers the platform owns: ``DATAFLARE_LOG_LEVEL`` applies to these, while other
# libraries keep the root logger's level (WARNING) unless named in DATAFLARE_LOG_LEVELS.
PLATFORM_LOGGERS = ("dataflare_platform", "dataflare")
DROPPED_METRIC = "dataflare_data_dropped_total"
# Secrets shorter than this are not searched for (replacing, say, "ab" everywhere would
# garble every line and hide nothing); the platform's own secrets are far longer.
MIN_SECRET_LEN = 6

Format = Literal["json", "text"]
_LEVELS = ("CRITICAL", "ERROR", "WARNING", "INFO", "DEBUG", "NOTSET")


class LogSettings(BaseModel):
    """What the deployment chose; ``format=None`` means: text on a terminal, else JSON."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    format: Format | None = None
    level: Literal["CRITICAL", "ERROR", "WARNING", "INFO", "DEBUG"] = "INFO"
    levels: dict[str, Literal["CRITICAL", "ERROR", "WARNING", "INFO", "DEBUG", "NOTSET"]] = {}

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> LogSettings:
        env = os.environ if environ is None else environ
        fmt = env.get(FORMAT_ENV, "").strip().lower() or None
        if fmt not in (None, "json", "text"):
            raise ConfigError("logging", [(FORMAT_ENV, f"not json or text: {fmt!r}")])
        level = env.get(LEVEL_ENV, "").strip().upper() or "INFO"
        if level not in _LEVELS[:-1]:
            raise ConfigError("logging", [(LEVEL_ENV, f"not a level: {level!r}")])
        levels: dict[str, str] = {}
        for pair in env.get(LEVELS_ENV, "").split(","):
            if not pair.strip():
                continue
            name, sep, value = pair.partition("=")
            value = value.strip().upper()
            if not sep or not name.strip() or value not in _LEVELS:
                raise ConfigError("logging", [(LEVELS_ENV, f"not logger=LEVEL: {pair!r}")])
            levels[name.strip()] = value
        try:
            return cls(format=fmt, level=level, levels=levels)  # type: ignore[arg-type]
        except ValidationError as err:
            raise ConfigError.from_validation("logging", err) from None

    def resolved_format(self, stream: Any | None = None) -> Format:
        """The format to use: the chosen one, else text for a terminal and JSON otherwise."""
        if self.format is not None:
            return self.format
        stream = sys.stderr if stream is None else stream
        try:
            return "text" if stream.isatty() else "json"
        except (AttributeError, ValueError):  # a closed or odd stream: not a person
            return "json"


# --- context ---------------------------------------------------------------------------

_EMPTY: Mapping[str, Any] = MappingProxyType({})
_context: contextvars.ContextVar[Mapping[str, Any]] = contextvars.ContextVar(
    "dataflare_log_context", default=_EMPTY
)
ContextProvider = Callable[[], Mapping[str, Any]]
_providers: list[ContextProvider] = []


class log_context:  # noqa: N801  (used like the function it is: ``with log_context(...)``)
    """Attach ``fields`` (pipeline, partition, source, ...) to every record logged in this
    block, in this thread and in threads started with a copy of the context. ``None``
    values are left out. A small class rather than ``@contextmanager``: the runner
    enters one around each source read, and a generator costs several times more."""

    __slots__ = ("_fields", "_token")

    def __init__(self, **fields: Any) -> None:
        self._fields = {k: v for k, v in fields.items() if v is not None}
        self._token: contextvars.Token[Mapping[str, Any]] | None = None

    def __enter__(self) -> None:
        self._token = _context.set({**_context.get(), **self._fields})

    def __exit__(self, *_exc: object) -> None:
        if self._token is not None:
            _context.reset(self._token)
            self._token = None


def context_with(**fields: Any) -> Mapping[str, Any]:
    """The current fields plus ``fields``, prepared once for ``set_context``."""
    return MappingProxyType(
        {**_context.get(), **{k: v for k, v in fields.items() if v is not None}}
    )


def set_context(fields: Mapping[str, Any]) -> None:
    """Make ``fields`` (from ``context_with``) the fields of this context, without undo:
    for a thread started in a context of its own (``contextvars.copy_context().run``),
    such as the runner's source thread switching partitions, where one variable set per
    read costs far less than entering a ``log_context``."""
    _context.set(fields)


def current_context() -> dict[str, Any]:
    """The fields a record logged here would carry (providers first, then log_context)."""
    fields: dict[str, Any] = {}
    for provider in _providers:
        try:
            fields.update(provider())
        except Exception:  # a provider must never cost a log line
            continue
    fields.update(_context.get())
    return fields


def add_context_provider(provider: ContextProvider) -> None:
    """Register a function whose fields every record gets (once per function): how the
    Dagster layer adds the run id without this module importing Dagster."""
    if provider not in _providers:
        _providers.append(provider)


def _trace_fields() -> dict[str, str]:
    """Ids of the current span, through the OpenTelemetry API only. A valid span context
    is enough (also a propagated, unsampled one): the ids still join the line to the
    trace of a sampled parent or a collector that samples at the tail."""
    try:
        from opentelemetry import trace
    except ImportError:  # pragma: no cover - a dependency of the platform
        return {}
    ctx = trace.get_current_span().get_span_context()
    if not ctx.is_valid:
        return {}
    return {"trace_id": format(ctx.trace_id, "032x"), "span_id": format(ctx.span_id, "016x")}


# --- redaction -------------------------------------------------------------------------

_URL_PASSWORD = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://[^/\s:@]*:)[^@\s/]+@")


def _forms(value: str) -> set[str]:
    raw = value.encode()
    return {
        value,
        quote(value, safe=""),
        quote_plus(value),
        base64.b64encode(raw).decode(),
        base64.urlsafe_b64encode(raw).decode(),
        base64.b64encode(raw).decode().rstrip("="),
    }


class Redactor:
    """Replaces known secret values (and their encoded forms) and URL passwords by ``***``.
    The values are the ``DATAFLARE_SECRET_*`` variables of the environment and every value
    ``SecretRef.read`` handed out so far (``secrets.revealed_values``); the set is
    rebuilt when either changed."""

    def __init__(self) -> None:
        self._key: tuple[int, frozenset[str]] = (-1, frozenset())
        self._forms: list[str] = []
        self._lock = threading.Lock()

    def _current(self) -> list[str]:
        env = frozenset(
            v.strip()
            for k, v in os.environ.items()
            if k.startswith(secrets.SECRET_ENV_PREFIX) and v.strip()
        )
        key = (secrets.revealed_count(), env)
        if key != self._key:
            values = set(env) | set(secrets.revealed_values())
            forms: set[str] = set()
            for value in values:
                if len(value) >= MIN_SECRET_LEN:
                    forms |= {f for f in _forms(value) if len(f) >= MIN_SECRET_LEN}
            with self._lock:
                self._forms = sorted(forms, key=len, reverse=True)
                self._key = key
        return self._forms

    def __call__(self, text: str) -> str:
        for form in self._current():
            if form in text:
                text = text.replace(form, secrets.REDACTED)
        if "://" in text:
            text = _URL_PASSWORD.sub(rf"\1{secrets.REDACTED}@", text)
        return text


redact = Redactor()

# Attributes every LogRecord has; anything else on a record came from ``extra=``.
# ``dagster_meta`` is what Dagster's handler (on a managed logger, so before ours on the
# root) attaches to the record: the same run id, job and step the context already gives.
_STANDARD = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {
    "message",
    "asctime",
    "taskName",
    "dagster_meta",
}


_BASE = frozenset({"timestamp", "level", "logger", "message", "exception", "stack"})


def _clean(value: Any) -> Any:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, bool | int | float) or value is None:
        return value
    if isinstance(value, Mapping):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_clean(v) for v in value]
    return redact(str(value))


def record_fields(record: logging.LogRecord) -> dict[str, Any]:
    """Everything a line shows for ``record``, redacted, in a stable order."""
    # A record of a logger Dagster manages was rewritten by Dagster's handler (which runs
    # first, on that logger) into "job - run id - step - message"; its own message and
    # ids are kept in ``dagster_meta``.
    meta = getattr(record, "dagster_meta", None)
    meta = meta if isinstance(meta, Mapping) else {}
    message = meta.get("orig_message")
    if not isinstance(message, str):
        message = record.getMessage()
    fields: dict[str, Any] = {
        "timestamp": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
        "level": record.levelname,
        "logger": record.name,
        "message": redact(message.rstrip("\n")),
    }
    fields.update(_trace_fields())
    for key, value in current_context().items():
        fields.setdefault(key, _clean(value))
    for key, name in (("run_id", "run_id"), ("job", "job_name"), ("step", "step_key")):
        if meta.get(name) is not None:  # a record outside the step's context variable
            fields.setdefault(key, _clean(meta[name]))
    # The record's own ``extra`` fields are more specific than the ambient context (an
    # event-log partition index over the Dagster partition), never than the base fields.
    for key, value in record.__dict__.items():
        if key not in _STANDARD and not key.startswith("_") and key not in _BASE:
            fields[key] = _clean(value)
    if record.exc_info and record.exc_info[0] is not None:
        fields["exception"] = redact("".join(traceback.format_exception(*record.exc_info)))
    elif record.exc_text:
        fields["exception"] = redact(record.exc_text)
    if record.stack_info:
        fields["stack"] = redact(record.stack_info)
    return fields


class JsonFormatter(logging.Formatter):
    """One JSON object per line (newlines inside a message or traceback are escaped)."""

    def format(self, record: logging.LogRecord) -> str:
        return json.dumps(record_fields(record), ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    """For a person at a terminal: ``time LEVEL logger: message  key=value ...``."""

    def format(self, record: logging.LogRecord) -> str:
        fields = record_fields(record)
        head = (
            f"{fields.pop('timestamp')} {fields.pop('level'):<7} {fields.pop('logger')}:"
            f" {fields.pop('message')}"
        )
        exception = fields.pop("exception", None)
        stack = fields.pop("stack", None)
        tail = " ".join(f"{k}={v}" for k, v in fields.items())
        text = f"{head}  {tail}" if tail else head
        for block in (exception, stack):
            if block:
                text += "\n" + block.rstrip("\n")
        return text


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at each record (pytest's and Dagster's captures
    swap it), like ``logging.lastResort``."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property  # type: ignore[override]
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, _value: Any) -> None:
        pass


_configure_lock = threading.Lock()
_installed: dict[str, Any] = {"handler": None, "levels": []}


def configure_logging(
    settings: LogSettings | None = None, stream: Any | None = None
) -> logging.Handler:
    """Install (or replace) the platform's one log handler on the root logger and set the
    levels; safe to call again (the CLI, the code location and tests all call it)."""
    settings = LogSettings.from_env() if settings is None else settings
    with _configure_lock:
        root = logging.getLogger()
        old = _installed["handler"]
        if old is not None:
            root.removeHandler(old)
        for name in _installed["levels"]:
            logging.getLogger(name).setLevel(logging.NOTSET)
        handler: logging.Handler = (
            _StderrHandler() if stream is None else logging.StreamHandler(stream)
        )
        fmt = settings.resolved_format(stream)
        handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
        root.addHandler(handler)
        levels = dict.fromkeys(PLATFORM_LOGGERS, settings.level) | dict(settings.levels)
        for name, level in levels.items():
            (logging.getLogger() if name == "root" else logging.getLogger(name)).setLevel(level)
        _installed["handler"] = handler
        _installed["levels"] = list(levels)
        # warnings.warn (e.g. a home tightened to 0700) becomes a WARNING record of
        # ``py.warnings``, so it reaches the same stream in the same format.
        logging.captureWarnings(True)
        return handler


def unconfigure_logging() -> None:
    """Remove what ``configure_logging`` installed (tests)."""
    with _configure_lock:
        old = _installed["handler"]
        if old is not None:
            logging.getLogger().removeHandler(old)
        for name in _installed["levels"]:
            logging.getLogger(name).setLevel(logging.NOTSET)
        _installed["handler"], _installed["levels"] = None, []
        logging.captureWarnings(False)


# --- data dropped ----------------------------------------------------------------------


def report_dropped(
    logger: logging.Logger,
    component: str,
    reason: str,
    count: int,
    message: str,
    *args: Any,
    **fields: Any,
) -> None:
    """Log ``message % args`` at WARNING with ``dropped=count`` (and ``component``,
    ``reason``, ``fields``) and add ``count`` to ``dataflare_data_dropped_total``.
    ``component`` and ``reason`` are short fixed words (metric labels), never data."""
    if count <= 0:
        return
    extra = {"dropped": count, "component": component, "reason": reason, **fields}
    logger.warning(message, *args, extra=extra, stacklevel=2)
    from dataflare_platform.observability import instruments

    exported = instruments()
    if exported is not None:
        exported[DROPPED_METRIC].record(count, (component, reason))


class DropTally:
    """Running totals (e.g. a run's dead letters) reported as increases: ``observe`` logs
    and counts what grew since the last report, at most once per ``every_s`` unless
    ``force`` (the end of a run), so a continuous run with a bad producer writes one line
    per interval with the count, not one per batch. The sum of the reported counts is the
    increase of the totals since ``start``."""

    def __init__(
        self,
        logger: logging.Logger,
        component: str,
        describe: Callable[[str, int], str],
        every_s: float = 10.0,
    ) -> None:
        self.logger = logger
        self.component = component
        self.describe = describe
        self.every_s = every_s
        self._base: dict[str, int] = {}
        self._next = 0.0

    def start(self, totals: Mapping[str, int]) -> None:
        self._base = dict(totals)

    def observe(self, totals: Mapping[str, int], force: bool = False) -> None:
        now = time.monotonic()
        if not force and now < self._next:
            return
        for reason, total in totals.items():
            grown = total - self._base.get(reason, 0)
            if grown > 0:
                self._base[reason] = total
                report_dropped(
                    self.logger, self.component, reason, grown, self.describe(reason, grown)
                )
        self._next = now + self.every_s
