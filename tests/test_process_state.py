"""Process state lives in registered holders: ``state.reset_all()`` returns it to import time."""

from __future__ import annotations

from flask_reqctx import create_hook, create_request_context, hooks, state, stats


def test_reset_all_disables_every_enabled_hook():
    seen: list[int] = []
    hook = create_hook(destroy=seen.append).enable()
    assert hook.enabled and hooks.enabled.lifecycle
    state.reset_all()
    assert not hook.enabled and not hooks.enabled.lifecycle
    with create_request_context():
        pass
    assert seen == []  # nothing dispatched once reset


def test_reading_stats_changes_no_count():
    before = stats()
    assert stats() == before  # reading twice changes nothing
    with create_request_context():
        during = stats()
    after = stats()
    assert during["live"] == before["live"] + 1 and during["created"] == before["created"] + 1
    assert after["destroyed"] == before["destroyed"] + 1 and after["live"] == before["live"]
