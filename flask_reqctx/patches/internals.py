"""Other libraries' private names, looked up once, where a patch is installed.

A few patches need names that are not their library's public API (``threading.Thread``'s
``_bootstrap_inner``, ``gevent.pool``'s module globals, asyncio's ``Future._exception``).
A release may move any of them: then the one feature that needs it is switched off, with
one warning naming the library, its version and what no longer works, instead of
``import flask_reqctx`` failing with an ``AttributeError`` (requests, ids and logging need
none of these names and keep working).
"""

from __future__ import annotations

import warnings
from typing import Any

__all__: list[str] = []  # internal: the patches and unitinfo look up names through it


def private_name(owner: object, name: str, *, library: str, lost: str) -> Any:
    """``owner.name``; ``None`` when this version of ``library`` ("Python" for the standard
    library) has no such name, after one ``RuntimeWarning`` saying that ``lost`` no longer
    works: the caller then leaves that feature out."""
    try:
        return getattr(owner, name)
    except AttributeError:
        pass
    owner_name = getattr(owner, "__qualname__", None) or getattr(owner, "__name__", repr(owner))
    warnings.warn(
        f"flask_reqctx: {library} {_version(library)} has no {owner_name}.{name}: {lost}",
        RuntimeWarning,
        stacklevel=2,
    )
    return None


def _version(library: str) -> str:
    """The version of ``library`` for the warning (imported here: only a warning needs them)."""
    import importlib.metadata
    import platform

    if library == "Python":
        return platform.python_version()
    try:
        return importlib.metadata.version(library)
    except importlib.metadata.PackageNotFoundError:
        return "(version unknown)"
