"""CI runs what the README tells a newcomer to run, on every Python the package names.

``.ci/run`` must run the README's test command verbatim; tox must have, for each Python in
the classifiers, the suite under threads and under gevent and the two own-suite envs; and a
missing Python is skipped for a newcomer but fails CI.
"""

from __future__ import annotations

import configparser
import os
import re

from tox_envs import REPO, tox_config, tox_envs


def _read(name: str) -> str:
    with open(os.path.join(REPO, name), encoding="utf-8") as f:
        return f.read()


def test_ci_runs_the_readmes_test_command_verbatim() -> None:
    commands = re.findall(r"^    (python3 -m pip install tox && python3 -m tox.*)$", _read("README.md"), re.M)
    assert len(commands) == 1, commands
    ci = [line.strip() for line in _read(".ci/run").splitlines() if "tox" in line and "pip install" in line]
    assert ci == commands


def test_every_classified_python_has_each_env() -> None:
    setup = configparser.ConfigParser()
    setup.read_string(_read("setup.cfg"))
    pythons = re.findall(r":: 3\.(\d+)$", setup["metadata"]["classifiers"], re.M)
    assert pythons, "no Python classifiers"
    expanded = tox_envs()
    for minor in pythons:
        for suffix in ("", "-gevent", "-gevent-suite", "-asyncio-suite"):
            assert f"py3{minor}{suffix}" in expanded, (minor, suffix, sorted(expanded))
    assert "lint" in expanded


def test_a_missing_python_is_skipped_for_a_newcomer_and_fails_ci() -> None:
    assert tox_config()["tox"]["skip_missing_interpreters"] == "true"
    assert re.search(r"^export TOX_SKIP_MISSING_INTERPRETERS=false$", _read(".ci/run"), re.M)
