"""Sphinx configuration for lucid's documentation."""
import os
import sys

sys.path.insert(0, os.path.abspath(".."))

project = "lucid"
author = "the lucid developers"
copyright = "2026, the lucid developers"
extensions = ["myst_parser", "sphinx.ext.autodoc", "sphinx.ext.napoleon"]
source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
exclude_patterns = ["_build"]
html_theme = "furo"
html_title = "lucid"
autodoc_member_order = "bysource"
autodoc_typehints = "description"
napoleon_numpy_docstring = True
napoleon_google_docstring = False
myst_heading_anchors = 3
