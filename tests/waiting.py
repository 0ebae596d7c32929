"""Wait for something a test can observe, by polling it (not a test module).

A fixed ``sleep`` waits too long on an idle machine and not long enough on a loaded one;
polling returns as soon as the condition holds, and fails with a message when it never does.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

try:
    # gevent's sleep yields to the hub, so greenlets (and their links) run while a test waits
    # in the threads env too; under gevent.monkey it is ``time.sleep`` itself.
    from gevent import sleep as _pause
except ImportError:  # pragma: no cover - gevent is a test dependency
    from time import sleep as _pause

T = TypeVar("T")


def wait_until(
    condition: Callable[[], T],
    timeout: float = 10.0,
    interval: float = 0.01,
    message: str | Callable[[], str] = "",
) -> T:
    """Call ``condition`` until it returns a truthy value, and return that value.

    After ``timeout`` seconds raise ``AssertionError`` with ``message`` (a string, or a
    function called then, e.g. to include a server's log) and the condition's last value.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            what = message() if callable(message) else message
            name = what or getattr(condition, "__qualname__", repr(condition))
            raise AssertionError(f"{name} (not so after {timeout:g} s; last value: {value!r})")
        _pause(interval)
