"""The default request data: the incoming headers, with credentials redacted.

A header's value is replaced by ``[redacted]`` when its name (case-insensitive) matches
:data:`REDACT_RULE`, is in :data:`DEFAULT_REDACT_HEADERS` or in the app's
``REQCTX_REDACT_HEADERS``, unless the app lists it in ``REQCTX_KEEP_HEADERS``; and when it
is a request-id header (``REQCTX_HEADER``) whose value the id rule rejects.  Each header
name is decided once per app and remembered (a bounded cache), so building the data costs
a dict lookup per header.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from .context import current_context
from .ids import accepted_id, header_name, is_valid_request_id

__all__ = ["DEFAULT_REDACT_HEADERS", "REDACTED", "REDACT_RULE", "default_data"]

REDACTED = "[redacted]"

#: The name rule, searched in the lower-cased header name (``-`` between words):
#: words that name a credential anywhere in the name (``X-Auth-Token``, ``X-Csrftoken``,
#: ``X-Hub-Signature-256``, ``Cf-Access-Jwt-Assertion``, ``X-Amzn-Oidc-Accesstoken``);
#: ``key`` only where a word ends (``Api-Key``, ``X-Apikey``, ``Ocp-Apim-Subscription-Key``,
#: but not ``Keep-Alive``); ``otp`` only as a whole word (``X-Github-Otp``).
REDACT_RULE = re.compile(
    r"auth|token|secret|passw|passphrase|pwd|session|cookie|csrf|xsrf|signature|hmac|jwt|bearer"
    r"|assertion|credential|cert|principal|oidc|saml|userinfo|dpop"
    r"|keys?(?:-|$)"
    r"|(?:^|-)otp(?:-|$)"
)

#: Redacted although the rule cannot tell from the name: browsers cannot set
#: ``Authorization`` on a WebSocket, so bearer tokens travel as a subprotocol (Kubernetes).
DEFAULT_REDACT_HEADERS = ("Sec-WebSocket-Protocol",)

#: How many header names each app remembers its decision for (beyond it: decided each time).
_CACHE_SIZE = 1024

_CONTENT_KEYS = ("CONTENT_TYPE", "CONTENT_LENGTH")
# What a header's value becomes in the data: shown, redacted, or checked as a request id.
_SHOW, _HIDE, _CHECK_ID = 0, 1, 2


def _names(option: str, value: str | Iterable[str] | None) -> frozenset[str]:
    """Lower-cased header names from a config value (one name or an iterable of names)."""
    if value is None:
        return frozenset()
    names = [value] if isinstance(value, str) else list(value)
    for name in names:
        if not isinstance(name, str) or not name:
            raise TypeError(f"REQCTX_{option.upper()} must be header names (strings), got {name!r}")
    return frozenset(name.lower().replace("_", "-") for name in names)


class HeaderRedaction:
    """One app's decision, per header, of what its value becomes in the default data."""

    __slots__ = ("_cache", "_extra", "_id_keys", "_keep", "_validator")

    def __init__(
        self,
        redact: str | Iterable[str] | None = (),
        keep: str | Iterable[str] | None = (),
        id_keys: Iterable[str] = (),
        validator: Callable[[str], bool] = is_valid_request_id,
    ) -> None:
        """``redact``/``keep``: ``REQCTX_REDACT_HEADERS``/``REQCTX_KEEP_HEADERS``;
        ``id_keys``: the environ keys of the request-id headers (``REQCTX_HEADER``), whose
        values go through the id rule and ``validator`` as when the id is chosen: a rejected
        id is redacted whatever ``keep`` says."""
        extra = _names("redact_headers", redact)
        self._keep = _names("keep_headers", keep)
        if extra & self._keep:
            both = sorted(extra & self._keep)
            raise ValueError(f"REQCTX_REDACT_HEADERS and REQCTX_KEEP_HEADERS both list {both}")
        self._extra = extra | {name.lower() for name in DEFAULT_REDACT_HEADERS}
        self._id_keys = frozenset(id_keys)
        self._validator = validator
        self._cache: dict[str, tuple[str, int]] = {}

    def _decide(self, key: str) -> tuple[str, int]:
        """Kept names are shown, listed names hidden; then a request-id header is checked as
        an id (it is echoed and logged anyway), and any other name goes by the rule."""
        name = header_name(key)
        lowered = name.lower()
        if lowered in self._keep:
            what = _CHECK_ID if key in self._id_keys else _SHOW
        elif lowered in self._extra:
            what = _HIDE
        elif key in self._id_keys:
            what = _CHECK_ID
        else:
            what = _HIDE if REDACT_RULE.search(lowered) else _SHOW
        if len(self._cache) < _CACHE_SIZE:
            self._cache[key] = (name, what)
        return name, what

    def headers(self, environ: Mapping[str, Any]) -> dict[str, str]:
        """``{Name: value}`` of the headers in a WSGI environ, credentials redacted."""
        headers: dict[str, str] = {}
        cached = self._cache.get
        for key, value in environ.items():
            decision = cached(key)
            if decision is None:
                if not key.startswith("HTTP_") and key not in _CONTENT_KEYS:
                    continue
                decision = self._decide(key)
            name, what = decision
            if what == _SHOW:
                if value or key not in _CONTENT_KEYS:  # WSGI servers may set them empty
                    headers[name] = value
            elif what == _HIDE or not self._accepted(key, value):
                headers[name] = REDACTED
            else:
                headers[name] = value
        return headers

    def _accepted(self, key: str, raw: str) -> bool:
        try:
            return accepted_id(key, raw, self._validator) is not None
        except Exception:  # logged (without the value) when the request's id was chosen
            return False


def headers_data(environ: Mapping[str, Any], redaction: HeaderRedaction) -> dict[str, Any]:
    """``{"headers": {Name: value}}`` from a WSGI environ (names as Werkzeug spells them)."""
    return {"headers": redaction.headers(environ)}


def default_data(request: Any) -> dict[str, Any]:
    """The default data for a Flask ``request``, with the current app's redaction.

    For a data loader that extends rather than replaces it::

        ReqCtx(app, data=lambda request: {**default_data(request), "user": current_user_id()})
    """
    settings = getattr(current_context.get(), "origin", None)  # the app's settings, on its context
    if settings is None:
        raise RuntimeError("default_data() needs a request served by an app with ReqCtx")
    return headers_data(request.environ, settings.redact)
