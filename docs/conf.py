"""Sphinx configuration: the API reference from the numpydoc docstrings, and the design notes.

Build (CI does this, and fails on any warning)::

    pip install -e ".[docs]"
    python -m sphinx -W --keep-going -b html docs docs/_build/html
"""
import os
import sys

sys.path.insert(0, os.path.abspath(".."))

import fastbptt  # noqa: E402

project = "fastbptt"
author = "the fastbptt maintainers"
copyright = "the fastbptt maintainers"
release = fastbptt.__version__
version = release

extensions = ["sphinx.ext.autodoc", "sphinx.ext.intersphinx", "numpydoc"]
exclude_patterns = ["_build", "figures"]
root_doc = "index"
html_theme = "alabaster"
html_static_path = []

autodoc_default_options = {"members": False}
autodoc_typehints = "none"              # the numpydoc Parameters section says it, once
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
numpydoc_xref_param_type = False
nitpicky = False
# intersphinx needs the network; the build works offline without resolving those links
intersphinx_mapping = {}
