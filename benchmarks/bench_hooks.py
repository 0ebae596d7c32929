"""Goal 5: what an enabled hook with ``before``/``after`` callbacks costs per greenlet switch.

``create_hook(before=..., after=...).enable()`` installs a ``greenlet.settrace`` tracer, so
while it is enabled *every* switch in the thread pays for it.  Measured, interleaved
(no hook, hook, no hook, ...), best of the rounds:

* raw greenlet ping-pong between two greenlets that carry the request's context (both
  callbacks fire on every switch);
* the same ping-pong between two greenlets without a context (the tracer runs, the
  callbacks do not: the cost unrelated greenlets pay);
* two gevent greenlets spawned inside a context, each looping ``gevent.sleep(0)``
  (a switch to the hub and one back per sleep).
"""

from __future__ import annotations

import contextvars
import gc

import gevent
from _common import QUICK, clock, compared, emit, row
from greenlet import greenlet

from flask_reqctx import close_request_context, create_hook, create_request_context

N = 20_000 if QUICK else 100_000
ROUNDS = 5 if QUICK else 9

calls = [0]


def on_switch(eid: int) -> None:
    calls[0] += 1


def raw_pingpong(n: int, with_context: bool) -> float:
    """ns per switch over 2n switches between two raw greenlets."""

    def fa() -> None:
        switch = b.switch
        for _ in range(n):
            switch()

    def fb() -> None:
        switch = a.switch
        while True:
            switch()

    a, b = greenlet(fa), greenlet(fb)
    for gr in (a, b):
        gr.gr_context = contextvars.copy_context() if with_context else contextvars.Context()
    start = clock()
    a.switch()
    took = clock() - start
    b.throw(greenlet.GreenletExit)
    return took / (2 * n) * 1e9


def gevent_sleep0(n: int) -> float:
    """ns per ``gevent.sleep(0)`` (two switches) in two context-carrying gevent greenlets."""

    def loop() -> None:
        sleep = gevent.sleep
        for _ in range(n):
            sleep(0)

    start = clock()
    gevent.joinall([gevent.spawn(loop), gevent.spawn(loop)])
    return (clock() - start) / (2 * n) * 1e9


def main() -> None:
    hook = create_hook(before=on_switch, after=on_switch)
    context = create_request_context({"bench": True})
    cases = {
        "raw switch, greenlets in a context": lambda: raw_pingpong(N, True),
        "raw switch, greenlets without a context": lambda: raw_pingpong(N, False),
        "gevent.sleep(0), greenlets in a context": lambda: gevent_sleep0(N // 4),
    }
    best = {(case, enabled): float("inf") for case in cases for enabled in (False, True)}
    fired = {}
    try:
        for case, fn in cases.items():
            fn()  # warm-up
            for i in range(ROUNDS):
                for enabled in (False, True) if i % 2 == 0 else (True, False):
                    if enabled:
                        hook.enable()
                    gc.collect()
                    before = calls[0]
                    best[case, enabled] = min(best[case, enabled], fn())
                    fired[case, enabled] = calls[0] - before
                    hook.disable()
    finally:
        hook.disable()
        close_request_context(context)
    assert fired["raw switch, greenlets in a context", True] > 0, "the hook never fired"
    assert fired["raw switch, greenlets in a context", False] == 0
    # only the switches out of and back into the (context-holding) main greenlet fire
    assert fired["raw switch, greenlets without a context", True] <= 4, fired

    rows = []
    section = "5. hooks: cost per greenlet switch"
    for case in cases:
        off, on = best[case, False], best[case, True]
        unit = "ns/sleep(0)" if "sleep" in case else "ns/switch"
        rows.append(row(section, f"{case}, no hook", off, unit))
        rows.append(compared(section, f"{case}, before+after hook", on, unit, "no hook", off))
    notes = [
        "hook added per switch (per sleep(0) for gevent): "
        + ", ".join(f"{case}: {best[case, True] - best[case, False]:+.0f} ns" for case in cases)
        + f"; best of {ROUNDS} interleaved rounds; callbacks count calls"
    ]
    emit(rows, notes)


if __name__ == "__main__":
    main()
