"""The public names: ``flask_reqctx.__all__``, the README's API table and the API contract agree.

``../shared/api.md`` (the contract, kept beside the repository) is read when present: every
name it lists must exist.  Each submodule's ``__all__`` lists only what users may import, and
each name there exists.
"""

from __future__ import annotations

import importlib
import os
import pkgutil
import re

import pytest

import flask_reqctx

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONTRACT = os.path.join(os.path.dirname(REPO), "shared", "api.md")
#: Submodule -> the names the README documents for it (its ``__all__`` must be exactly these).
DOCUMENTED_SUBMODULES = {
    "flask_reqctx.logging": {
        "RequestIdFilter",
        "install_log_record_factory",
        "uninstall_log_record_factory",
        "add_request_id",
    },
    "flask_reqctx.tracing": {"execution_trace", "live", "finished", "to_chrome_trace", "enable"},
    "flask_reqctx.signals": {"context_created", "context_destroyed"},
    "flask_reqctx.celery": {"init_celery"},
    "flask_reqctx.integrations.requests": {"install", "installed", "uninstall"},
    "flask_reqctx.patches": {"install", "installed", "patched"},
    "flask_reqctx.data": {"REDACT_RULE", "DEFAULT_REDACT_HEADERS", "REDACTED", "default_data"},
    "flask_reqctx.state": {"reset_all"},
}


def _table_names(markdown: str, heading: str) -> set[str]:
    """The identifiers opening each backticked item of the first column of the table under ``heading``."""
    section = markdown.split(heading, 1)[1]
    names: set[str] = set()
    for line in section.splitlines()[1:]:
        if line.startswith("#"):
            break
        if not line.startswith("| `"):
            continue
        first_cell = line.split("|")[1]
        names |= {m for m in re.findall(r"`([A-Za-z_][A-Za-z0-9_]*)", first_cell)}
    return names


def _readme() -> str:
    with open(os.path.join(REPO, "README.md"), encoding="utf-8") as f:
        return f.read()


def test_readme_api_table_documents_exactly_the_exported_names():
    documented = _table_names(_readme(), "## API\n")
    assert documented == set(flask_reqctx.__all__), (
        sorted(documented - set(flask_reqctx.__all__)),
        sorted(set(flask_reqctx.__all__) - documented),
    )
    for name in flask_reqctx.__all__:
        assert getattr(flask_reqctx, name) is not None


@pytest.mark.skipif(not os.path.exists(CONTRACT), reason="the API contract lives beside the repository")
def test_every_name_the_contract_lists_exists_and_is_exported():
    with open(CONTRACT, encoding="utf-8") as f:
        contract = f.read()
    listed = _table_names(contract, "## Names exported by `flask_reqctx`")
    assert listed and listed <= set(flask_reqctx.__all__), sorted(listed - set(flask_reqctx.__all__))
    for module, names in {
        "flask_reqctx.logging": {"RequestIdFilter", "install_log_record_factory", "add_request_id"},
        "flask_reqctx.tracing": {"to_chrome_trace"},
        "flask_reqctx.signals": {"context_created", "context_destroyed"},
        "flask_reqctx.celery": {"init_celery"},
    }.items():
        assert names <= set(importlib.import_module(module).__all__), module
    ctx = flask_reqctx.create_request_context()
    try:
        assert callable(ctx.execution_trace) and isinstance(ctx.trace, flask_reqctx.TraceContext)
    finally:
        flask_reqctx.close_request_context()


def test_each_submodule_exports_only_what_the_readme_documents():
    readme = _readme()
    for info in pkgutil.walk_packages(flask_reqctx.__path__, "flask_reqctx."):
        module = importlib.import_module(info.name)
        exported = set(getattr(module, "__all__", ()))
        for name in exported:
            assert hasattr(module, name), (info.name, name)
        documented = DOCUMENTED_SUBMODULES.get(info.name)
        if documented is None and info.name.startswith("flask_reqctx.integrations."):
            # one module per library: the README names it and what it exports
            assert info.name in readme, info.name
            assert all(f"`{name}`" in readme or f"{name}(" in readme for name in exported), info.name
        elif documented is None:
            # flask_reqctx's own names, re-exported from where they are defined, or nothing
            assert exported <= set(flask_reqctx.__all__), (info.name, sorted(exported))
        else:
            assert exported == documented, (info.name, sorted(exported ^ documented))
            assert all(f"`{name}`" in readme or f"`{name}(" in readme for name in documented), info.name


def test_to_dict_has_a_stable_set_of_keys(app, client):
    @app.get("/")
    def view():
        return flask_reqctx.get_request_context().to_dict()

    keys = {"request_id", "trace_id", "data"}
    assert set(client.get("/").get_json()) == keys
    incoming = {"traceparent": "00-" + "1" * 32 + "-" + "2" * 16 + "-01"}
    assert set(client.get("/", headers=incoming).get_json()) == keys
    with flask_reqctx.create_request_context({"job": 1}) as ctx:
        assert set(ctx.to_dict()) == keys


def test_version_comes_from_the_package_metadata():
    version = flask_reqctx.__version__
    assert isinstance(version, str) and re.fullmatch(r"\d+\.\d+\.\d+.*", version), version
