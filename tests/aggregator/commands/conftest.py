"""Fixtures shared by the command tests."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.aggregator.conftest import Backend


@pytest.fixture
def config(backend: Backend, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A config file naming the test backend's database per region (and nothing from the
    environment), for ``--config``."""
    for var in [v for v in os.environ if v.startswith("AGGREGATOR_")]:
        monkeypatch.delenv(var)
    path = tmp_path / "aggregator.toml"
    path.write_text(f'data_dir = "{tmp_path}"\n' + "".join(
        f'[regions.{region}]\ndatabase_url = "{url}"\n' for region, url in backend.urls.items()
    ))
    return str(path)
