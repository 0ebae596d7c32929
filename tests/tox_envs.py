"""The tox envs CI runs (tox.ini's ``env_list``, its ``py3{11,12}-x`` forms expanded); not a test module."""

from __future__ import annotations

import configparser
import os
import re

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tox_config() -> configparser.ConfigParser:
    config = configparser.ConfigParser(interpolation=None)
    config.read(os.path.join(REPO, "tox.ini"))
    return config


def tox_envs() -> set[str]:
    envs = set()
    for entry in tox_config()["tox"]["env_list"].split():
        match = re.fullmatch(r"py3\{([\d,]+)\}(.*)", entry)
        envs |= {f"py3{minor}{match[2]}" for minor in match[1].split(",")} if match else {entry}
    return envs
