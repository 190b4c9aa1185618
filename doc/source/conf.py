"""Sphinx configuration of rpccompat's documentation (``tox -e docs``)."""

project = "rpccompat"
copyright = "2026, the rpccompat authors"
extensions: list[str] = []
exclude_patterns: list[str] = []
html_theme = "alabaster"
