"""Sphinx configuration of rpccompat's documentation (``make docs``)."""

import sys
import warnings
from pathlib import Path

# autodoc imports oslo.messaging, whose import prints eventlet's notice.
warnings.filterwarnings("ignore", message=r"\s*Eventlet is deprecated")
# The CLI reference's parser (_ext/manage_parser.py).
sys.path.insert(0, str(Path(__file__).parent / "_ext"))

project = "rpccompat"
copyright = "2026, the rpccompat authors"
extensions = [
    "sphinx.ext.autodoc",
    "oslo_config.sphinxext",
    "sphinxarg.ext",
    "reno.sphinxext",
]
exclude_patterns: list[str] = []
html_theme = "alabaster"
# Signatures as written: the annotations name the types a reader imports.
autodoc_typehints = "none"
autodoc_member_order = "bysource"
