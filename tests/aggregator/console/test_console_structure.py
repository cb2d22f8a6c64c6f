"""Composition is one-directional: the HTTP app builder includes the console, and the
console never imports the HTTP layer (or the Link flow) back."""

from __future__ import annotations

import subprocess
import sys


def test_the_console_imports_neither_the_http_layer_nor_the_link_flow() -> None:
    probe = ("import sys, aggregator.console; "
             "print(sorted(m for m in sys.modules "
             "if m.startswith(('aggregator.http', 'aggregator.link'))))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         check=True, timeout=60).stdout.strip()
    assert out == "[]"
