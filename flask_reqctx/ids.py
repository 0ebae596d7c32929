"""Request ids: generating fresh ones cheaply, and deciding whether an incoming one is safe.

An incoming id ends up in logs, in response headers and in calls to other services, so
only a short run of ``A-Za-z0-9._:-`` is adopted; anything else (CR/LF, spaces, control
or non-ASCII characters, empty, longer than 128) is replaced, and the raw value is never
logged or echoed.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from .pooled import pooled
from .tracecontext import parse_traceparent

__all__ = ["is_valid_request_id", "new_request_id"]

log = logging.getLogger("flask_reqctx")

_is_valid = re.compile(r"[A-Za-z0-9._:\-]{1,128}").fullmatch

#: Ready-made ids, made 512 at a time with C-level bulk operations: random hex digits (one
#: ``os.urandom``, ``bytes.hex``), one contiguous run per digit position (so each is read by
#: a plain slice), copied into the ``8-4-4-4-12`` records by 31 strided slice assignments;
#: the version digit and the dashes are in the record already, the variant digit is mapped
#: onto ``89ab``.  About a twentieth of ``str(uuid4())`` per id.
_BATCH = 512
_RECORD = b"00000000-0000-4000-0000-000000000000 "
_VARIANT_AT = 19
#: Where each random digit goes in a record (its "0"s), the variant digit first.
_DIGITS_AT = [_VARIANT_AT] + [at for at, char in enumerate(_RECORD) if char == ord("0") and at != _VARIANT_AT]
_VARIANT_RFC4122 = bytes.maketrans(b"0123456789abcdef", b"89ab89ab89ab89ab")


def _uuid4_batch() -> list[str]:
    digits = bytearray(os.urandom(len(_DIGITS_AT) * _BATCH // 2).hex().encode())
    digits[:_BATCH] = digits[:_BATCH].translate(_VARIANT_RFC4122)
    text = bytearray(_RECORD * _BATCH)
    for column, at in enumerate(_DIGITS_AT):
        text[at :: len(_RECORD)] = digits[column * _BATCH : (column + 1) * _BATCH]
    ids = text.decode().split(" ")
    ids.pop()  # the empty string after the last record's space
    return ids


#: The pool of fresh ids: ``next(request_ids)`` takes one without a Python frame.
request_ids: Iterator[str] = pooled(_uuid4_batch)
#: A random (version 4) UUID string, as ``str(uuid.uuid4())`` but ~20x cheaper.
new_request_id: Callable[[], str] = request_ids.__next__


def is_valid_request_id(value: object) -> bool:
    """True for 1-128 characters of ``A-Za-z0-9._:-``: safe in a log line and a header."""
    return isinstance(value, str) and _is_valid(value) is not None


def check_request_id(value: object) -> None:
    """Raise ``ValueError`` (naming the rule) unless ``value`` is a valid request id."""
    if not is_valid_request_id(value):
        raise ValueError(
            "a request id must be 1-128 characters of A-Za-z0-9._:- (got "
            f"{type(value).__name__} of length {len(value) if isinstance(value, str) else '-'})"
        )


def environ_key(header: str) -> str:
    """The WSGI environ key of an HTTP header name (``X-Request-ID`` -> ``HTTP_X_REQUEST_ID``)."""
    return "HTTP_" + header.upper().replace("-", "_")


def header_name(key: str) -> str:
    """The header name of a WSGI environ key, as Werkzeug spells it (``HTTP_X_API_KEY`` ->
    ``X-Api-Key``, ``CONTENT_TYPE`` -> ``Content-Type``)."""
    return key.removeprefix("HTTP_").replace("_", "-").title()


def _amzn_trace_id(value: str) -> str:
    """``X-Amzn-Trace-Id: Root=1-...;Self=1-...``: the ``Self`` part, else ``Root``."""
    parts = dict(p.partition("=")[::2] for p in value.split(";"))
    return parts.get("Self") or parts.get("Root") or value


def _traceparent_trace_id(value: str) -> str:
    """``traceparent`` in the header list: its trace id when valid (else "", never adopted)."""
    parsed = parse_traceparent(value)
    return parsed[0] if parsed is not None else ""


_PARSERS: Mapping[str, Callable[[str], str]] = {
    "HTTP_X_AMZN_TRACE_ID": _amzn_trace_id,
    "HTTP_TRACEPARENT": _traceparent_trace_id,
}
#: Header names that carry an id inside a larger value: never used to echo or forward ours.
COMPOSITE_HEADERS = frozenset({"traceparent", "x-amzn-trace-id"})


def incoming_request_id(
    environ: Mapping[str, Any],
    keys: Iterable[str],
    validator: Callable[[str], bool] = is_valid_request_id,
    rejected: list[tuple[str, int]] | None = None,
) -> str | None:
    """The first valid id among the headers ``keys`` (environ keys, in order), or None.

    A value must pass the built-in check first (so a custom ``validator`` only ever sees
    safe strings, and can tighten the rule but not loosen it).  Each rejected header is
    reported as ``(header name, length)``, never its value: appended to ``rejected`` when
    given (the extension logs them once the request's context is bound), else logged here.
    """
    for key in keys:
        raw = environ.get(key)
        if raw is None:
            continue
        try:
            value = accepted_id(key, raw, validator)
        except Exception as exc:  # no traceback: its message may quote the value
            log.error("request-id validator raised %s; id treated as invalid", type(exc).__name__)
            value = None
        if value is not None:
            return value
        name = header_name(key)
        if rejected is not None:
            rejected.append((name, len(raw)))
        else:
            log_rejected(name, len(raw))
    return None


def accepted_id(key: str, raw: str, validator: Callable[[str], bool] = is_valid_request_id) -> str | None:
    """The id that header ``key`` (an environ key) carries in ``raw``, if it passes the
    built-in check and then ``validator`` (which only ever sees safe strings); else None.
    Whatever ``validator`` raises propagates."""
    parse = _PARSERS.get(key)
    value = parse(raw) if parse is not None else raw
    if not is_valid_request_id(value):
        return None
    if validator is not is_valid_request_id and not validator(value):
        return None
    return value


def log_rejected(name: str, length: int) -> None:
    """The warning for an invalid incoming id: its header and its length, never its value."""
    log.warning("ignored an invalid incoming %s (%d chars); a fresh id is used", name, length)
