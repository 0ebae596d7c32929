"""Every field of a context is set, however it was made.

The middleware builds its request's context without an ``__init__`` frame (it sets the
fields itself, see ``flask_reqctx.extension``), so a field added to
:class:`~flask_reqctx.context.RequestContext` must be set there too: this fails until it is.
"""

from __future__ import annotations

from typing import Any

from flask import Flask

from flask_reqctx import RequestContext, create_request_context, get_request_context


def _slots(cls: type) -> set[str]:
    names: set[str] = set()
    for klass in cls.__mro__:
        names.update(getattr(klass, "__slots__", ()))
    return names - {"__weakref__", "__dict__"}


def _unset(context: Any) -> list[str]:
    missing = []
    for name in sorted(_slots(type(context))):
        try:
            object.__getattribute__(context, name)
        except AttributeError:
            missing.append(name)
    return missing


def test_the_middlewares_context_has_every_field_set(app: Flask, client: Any) -> None:
    seen: list[tuple[Any, list[str]]] = []

    @app.get("/fields")
    def fields() -> str:
        context = get_request_context()
        seen.append((context, _unset(context)))  # in the view: before the response starts
        return "ok"

    assert client.get("/fields").status_code == 200
    ((context, unset),) = seen
    assert isinstance(context, RequestContext) and type(context) is not RequestContext
    assert _slots(type(context)) > _slots(RequestContext)  # the middleware's own fields too
    assert unset == []


def test_contexts_made_by_the_constructor_have_every_field_set() -> None:
    assert _unset(RequestContext("an-id")) == []
    with create_request_context(request_id="made-here") as made:
        assert _unset(made) == []
