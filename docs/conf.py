"""Sphinx configuration for the sipct specification."""

project = "sipct"
author = "the sipct developers"
copyright = "2026, the sipct developers"

extensions = ["sphinx.ext.graphviz", "sipct.docs.sphinxext"]
graphviz_output_format = "svg"
exclude_patterns = ["_build", "__pycache__"]
html_theme = "furo"
html_title = "sipct — the Linux SIP conntrack helper, specified"
nitpicky = False
