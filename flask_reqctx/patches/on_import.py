"""Patch a library when the application imports it, never by importing it ourselves.

``import flask_reqctx`` must not load asyncio, gevent or ``concurrent.futures`` (an app that
never uses them would pay their import, ~100 ms for asyncio alone).  :func:`when_imported`
runs a patch at once when its module is already imported, else right after the module's
first import finishes: a finder at the front of ``sys.meta_path`` answers only for the
watched names, asks the finders after it for the real spec and wraps its loader so that the
patch runs once the module's code has run, before the importing statement gets the module
(so ``from gevent import spawn`` binds the patched name).  The module's ``__loader__`` and
``__spec__.loader`` are the real loader again before its code runs: nothing of ours stays.

* Once per process and module name: a reload re-runs the module's code but not the patch
  (the classes patched live in submodules that a reload of the package keeps); a module
  whose import raised is watched until an import of it succeeds.
* Thread-safe: the patch runs in the importing thread while Python's per-module import lock
  is held, so another thread importing the same module waits for the patched module; a
  module another thread is importing when the patch is registered is waited for.
* A patch that raises is logged, and the import it followed still succeeds.
"""

from __future__ import annotations

import importlib
import logging
import sys
import threading
from collections.abc import Callable, Sequence
from importlib.machinery import ModuleSpec
from types import ModuleType
from typing import Any

__all__: list[str] = []  # internal: flask_reqctx.patches.install() applies it

log = logging.getLogger("flask_reqctx")

Patch = Callable[[ModuleType], None]


class _ImportWatcher:
    """The ``sys.meta_path`` finder: holds the patches waiting for their module's import."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        #: module name -> patches to run once it is imported
        self.pending: dict[str, list[Patch]] = {}
        #: names this thread is resolving (a finder after us that calls find_spec again)
        self.resolving = threading.local()
        self.on_meta_path = False

    def watch(self, name: str, patch: Patch) -> None:
        with self.lock:
            if sys.modules.get(name) is None:  # not imported (None: its import is blocked)
                self.pending.setdefault(name, []).append(patch)
                if not self.on_meta_path:
                    sys.meta_path.insert(0, self)
                    self.on_meta_path = True
                return
        # Imported, or being imported by another thread: import_module waits for it.
        module = importlib.import_module(name)
        spec = getattr(module, "__spec__", None)
        if getattr(spec, "_initializing", False):  # by this very thread, further up the stack
            log.warning("imported while %s was being imported: %s is not patched", name, name)
            return
        _run(patch, module)

    # -- the finder protocol (importlib.abc.MetaPathFinder) --------------------------------

    def find_spec(
        self, name: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        if name not in self.pending:  # every other import: one dict lookup
            return None
        busy: set[str] = self.resolving.__dict__.setdefault("names", set())
        if name in busy:
            return None
        busy.add(name)
        try:
            spec = _spec_from_other_finders(self, name, path, target)
        finally:
            busy.discard(name)
        if spec is not None and spec.loader is not None and hasattr(spec.loader, "exec_module"):
            spec.loader = _PatchingLoader(spec.loader, self)  # type: ignore[assignment]
        return spec

    def invalidate_caches(self) -> None:
        """Nothing cached here (``importlib.invalidate_caches`` calls every finder's)."""

    def imported(self, module: ModuleType) -> None:
        """``module``'s code has run: its patches, once."""
        with self.lock:
            patches = self.pending.pop(module.__name__, [])
        for patch in patches:
            _run(patch, module)


def _spec_from_other_finders(
    watcher: _ImportWatcher, name: str, path: Sequence[str] | None, target: ModuleType | None
) -> ModuleSpec | None:
    for finder in list(sys.meta_path):
        find_spec = getattr(finder, "find_spec", None)
        if finder is watcher or find_spec is None:
            continue
        spec: ModuleSpec | None = find_spec(name, path, target)
        if spec is not None:
            return spec
    return None


class _PatchingLoader:
    """The real loader, and the watcher told once the module's code has run."""

    def __init__(self, loader: Any, watcher: _ImportWatcher) -> None:
        self.loader, self.watcher = loader, watcher

    def create_module(self, spec: ModuleSpec) -> ModuleType | None:
        module: ModuleType | None = self.loader.create_module(spec)
        return module

    def exec_module(self, module: ModuleType) -> None:
        spec = module.__spec__
        if spec is not None:
            spec.loader = self.loader
        module.__loader__ = self.loader
        self.loader.exec_module(module)
        self.watcher.imported(module)

    def __getattr__(self, name: str) -> Any:  # get_source, is_package, resource readers...
        return getattr(self.loader, name)


def _run(patch: Patch, module: ModuleType) -> None:
    try:
        patch(module)
    except Exception:
        log.exception("patching %s failed: contexts do not follow into its units", module.__name__)


_watcher = _ImportWatcher()


def when_imported(name: str, patch: Patch) -> None:
    """Run ``patch(module)`` for module ``name``: now if it is imported, else after its import."""
    _watcher.watch(name, patch)
