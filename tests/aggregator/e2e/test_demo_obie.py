"""``aggregator demo --headless --bank sandbox-obie``: a UK Open Banking link, end to end."""

from __future__ import annotations

import argparse
import os
import re
from pathlib import Path

import pytest

from aggregator.commands import demo


def test_the_headless_demo_links_through_an_obie_consent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)
    for name in [n for n in os.environ if n.startswith("AGGREGATOR_")]:
        monkeypatch.delenv(name)
    parser = argparse.ArgumentParser()
    parser.add_argument("--config")
    demo.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["demo", "--headless", "--bank", "sandbox-obie"])

    assert args.handler(args) == 0

    out = capsys.readouterr().out
    assert re.search(r"GET  gateway /demo/done\?connection_id=con_eu_\w+&outcome=success", out)
    assert "Everyday" in out
    assert "Rainy day" in out
    assert "MATCH" in out
    assert "MISMATCH" not in out
    assert "request=" not in out
    assert "BEGIN PRIVATE KEY" not in out
