"""The package as it is distributed: the sdist's contents, its metadata, its log messages."""

from __future__ import annotations

import ast
import configparser
import email.parser
import os
import re
import shutil
import tarfile

import pytest
from fresh_interpreter import run_in_fresh_interpreter
from tox_envs import tox_envs

import flask_reqctx

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.dirname(os.path.abspath(flask_reqctx.__file__))


#: The Pythons CI runs the suite on: ``3.X`` of tox's ``py3X`` envs (CI runs every env).
TESTED_PYTHONS = {f"3.{env[3:]}" for env in tox_envs() if re.fullmatch(r"py3\d+", env)}
_NOT_COPIED = shutil.ignore_patterns(
    ".git", ".tox", "dist", "build", "*.egg-info", "__pycache__", ".*_cache", ".hypothesis"
)


def _package_files() -> set[str]:
    return {
        os.path.relpath(os.path.join(root, name), os.path.dirname(PACKAGE))
        for root, _dirs, files in os.walk(PACKAGE)
        for name in files
        if name.endswith(".py") or name == "py.typed"
    }


@pytest.fixture(scope="module")
def sdist(tmp_path_factory: pytest.TempPathFactory) -> tarfile.TarFile:
    """The sdist built from a copy of the tree (setuptools' own backend, in a subprocess:
    no network, and the build's egg-info stays out of the working tree)."""
    source = tmp_path_factory.mktemp("sdist") / "src"
    shutil.copytree(REPO, source, ignore=_NOT_COPIED)
    build = "from setuptools import build_meta; print(build_meta.build_sdist('dist'))"
    out = run_in_fresh_interpreter(build, cwd=source, timeout=120, check=False)
    assert out.returncode == 0, out.stderr[-3000:]
    name = out.stdout.strip().splitlines()[-1]
    with tarfile.open(source / "dist" / name) as archive:
        yield archive


def test_sdist_ships_the_package_and_licence_and_no_tests(sdist: tarfile.TarFile):
    top = sdist.getnames()[0].split("/")[0]
    files = {member.name[len(top) + 1 :] for member in sdist.getmembers() if member.isfile()}
    assert _package_files() <= files, sorted(_package_files() - files)
    assert {"LICENSE", "README.md", "PKG-INFO", "setup.cfg", "pyproject.toml", "CHANGELOG.md"} <= files
    assert _readme_links() <= files, sorted(_readme_links() - files)  # what the README links to
    shipped_tests = [f for f in files if f.startswith("tests/") or "test_" in f]
    assert not shipped_tests, shipped_tests
    assert {f for f in files if f.startswith("benchmarks/")} == {"benchmarks/RESULTS.md"}
    licence = sdist.extractfile(f"{top}/LICENSE").read().decode()
    assert licence.startswith("MIT License") and "the flask-reqctx authors" in licence
    info = email.parser.Parser().parsestr(sdist.extractfile(f"{top}/PKG-INFO").read().decode())
    assert info["License"] == "MIT"
    versions = {c.rsplit(" :: ", 1)[1] for c in info.get_all("Classifier") if re.search(r":: 3\.\d+$", c)}
    assert versions == TESTED_PYTHONS
    urls = dict(url.split(", ", 1) for url in info.get_all("Project-URL"))
    assert {"Source", "Changelog", "Issues"} <= set(urls), urls
    assert info["Author"] == "the flask-reqctx authors"


def _readme_links() -> set[str]:
    """The repository files the README links to (``[text](path)``, ``![alt](path)``)."""
    with open(os.path.join(REPO, "README.md"), encoding="utf-8") as f:
        targets = re.findall(r"\]\(([^)#\s]+)\)", f.read())
    return {target for target in targets if "://" not in target}


def test_classifiers_name_exactly_the_pythons_ci_tests():
    config = configparser.ConfigParser()
    config.read(os.path.join(REPO, "setup.cfg"))
    classifiers = config["metadata"]["classifiers"].split("\n")
    versions = {c.rsplit(" :: ", 1)[1] for c in classifiers if re.search(r":: 3\.\d+$", c)}
    assert versions == TESTED_PYTHONS
    assert config["options"]["python_requires"] == f">={min(TESTED_PYTHONS)}"
    assert config["metadata"]["license"] == "MIT"


def _log_messages() -> list[tuple[str, int, str]]:
    """Every literal message of a ``log.<level>(...)`` call in the package."""
    levels = {"debug", "info", "warning", "error", "exception", "critical"}
    found = []
    for relative in sorted(_package_files()):
        if not relative.endswith(".py"):
            continue
        path = os.path.join(os.path.dirname(PACKAGE), relative)
        with open(path, encoding="utf-8") as source:
            tree = ast.parse(source.read(), path)
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in levels
                and node.args
                and isinstance(node.args[0], ast.Constant)
                and isinstance(node.args[0].value, str)
            ):
                found.append((relative, node.lineno, node.args[0].value))
    return found


def test_log_messages_do_not_repeat_the_logger_name():
    """The logger is named ``flask_reqctx``; formatters show the name, so messages don't."""
    messages = _log_messages()
    assert len(messages) >= 10, messages
    assert [m for m in messages if m[2].lower().startswith(("flask_reqctx", "flask-reqctx"))] == []
