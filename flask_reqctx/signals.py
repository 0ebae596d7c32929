"""Blinker signals for request contexts (not for the child units that share them).

``context_created`` and ``context_destroyed`` are sent with the Flask app as sender (``None``
for contexts made by :func:`~flask_reqctx.create_request_context`) and ``context=`` the
:class:`~flask_reqctx.RequestContext`.  A receiver that raises is logged, never propagated.
"""

from __future__ import annotations

import logging
from typing import Any

from blinker import Namespace

__all__ = ["context_created", "context_destroyed"]

_signals = Namespace()
context_created = _signals.signal("reqctx-context-created")
context_destroyed = _signals.signal("reqctx-context-destroyed")

log = logging.getLogger("flask_reqctx")


def _send(signal: Any, sender: Any, context: Any) -> None:
    if signal.receivers:
        try:
            signal.send(sender, context=context)
        except Exception:
            log.exception("a %s receiver raised; ignored", signal.name)


def send_created(sender: Any, context: Any) -> None:
    _send(context_created, sender, context)


def send_destroyed(sender: Any, context: Any) -> None:
    _send(context_destroyed, sender, context)
