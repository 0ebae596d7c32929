"""Sphinx configuration: the documentation site (``tox -e docs``; warnings are errors)."""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.abspath(".."))

project = "flask-reqctx"
author = "the flask-reqctx authors"
copyright = "flask-reqctx authors, MIT licence"
release = "0.1.0"

extensions = ["sphinx.ext.autodoc", "myst_parser"]

source_suffix = {".md": "markdown"}
exclude_patterns = ["_build"]
# README sections are included as they are; their links to other README sections and to
# repository files (RESULTS.md, LICENSE) are not pages of this site.
suppress_warnings = ["myst.xref_missing"]
myst_heading_anchors = 3

autodoc_member_order = "bysource"
autodoc_default_options = {"members": True, "show-inheritance": False}

html_theme = "alabaster"
html_title = "flask-reqctx"
