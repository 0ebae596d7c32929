"""No module reads another module's private attributes (``ctx._unit`` from outside
``context.py``): modules talk through named, typed attributes and functions.

A *private read* is ``expr._name`` (not a dunder) in one module of the package where ``_name``
is defined by no class or assignment of that same module, and ``expr`` is not ``self``/``cls``.
(A name the module stores on some object counts as its own: the test is a tripwire, not a
proof.)  The reads that exist today are listed in :data:`KNOWN`; a new one fails this test, and
so does an entry of :data:`KNOWN` that no longer occurs (the list only shrinks).
"""

from __future__ import annotations

import ast
import os

import flask_reqctx

PACKAGE = os.path.dirname(os.path.abspath(flask_reqctx.__file__))

#: (module, attribute) pairs read across modules today: all of them other libraries' names.
KNOWN = {
    ("context.py", "_cv_app"),  # Flask's app context variable (flask.globals)
    ("extension.py", "_callbacks"),  # werkzeug's ClosingIterator, to find the Response
    ("extension.py", "_on_close"),  # werkzeug's Response
    ("unitinfo.py", "_getframe"),  # sys._getframe
    ("unitinfo.py", "_exception"),  # asyncio.Future._exception (checked once through patches.internals)
}


def _defined(tree: ast.Module) -> set[str]:
    """Private names a module defines: functions, classes, slots, assigned attributes and names."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            names.add(node.attr)
        elif isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "__slots__" for t in node.targets
        ):
            strings = (elt for elt in ast.walk(node.value) if isinstance(elt, ast.Constant))
            names.update(elt.value for elt in strings if isinstance(elt.value, str))
    return {name for name in names if name.startswith("_")}


def private_reads() -> set[tuple[str, str]]:
    found = set()
    for folder, _dirs, files in os.walk(PACKAGE):
        for file in files:
            if not file.endswith(".py"):
                continue
            path = os.path.join(folder, file)
            with open(path) as source:
                tree = ast.parse(source.read())
            own = _defined(tree)
            module = os.path.relpath(path, PACKAGE)
            for node in ast.walk(tree):
                if not isinstance(node, ast.Attribute) or not isinstance(node.ctx, ast.Load):
                    continue
                name = node.attr
                if not name.startswith("_") or name.startswith("__") or name in own:
                    continue
                if isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"):
                    continue
                found.add((module, name))
    return found


def test_no_new_cross_module_private_reads():
    found = private_reads()
    assert found - KNOWN == set(), "new reads of another module's private attributes"
    assert KNOWN - found == set(), "gone: take them off KNOWN"
