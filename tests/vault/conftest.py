"""Key providers as a factory fixture, parametrised over the three real backends.

``provider_factory(kek_id)`` builds a fresh provider with its own KEK, so one test can
hold two regions. The HSM and Vault variants use the real SoftHSM2 token and the real
OpenBao server started by the session fixtures ``softhsm`` and ``openbao``.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.vault._openbao import openbao_fixture  # noqa: F401  (session fixture `openbao`)
from tests.vault._softhsm import softhsm_fixture  # noqa: F401  (session fixture `softhsm`)
from vault import KeyProvider, LocalKeyringConfig, ProviderConfig, open_provider

ProviderFactory = Callable[[str], KeyProvider]

_counter = itertools.count()


@pytest.fixture(
    params=[
        "local",
        pytest.param("pkcs11", marks=pytest.mark.hsm),
        pytest.param("transit", marks=pytest.mark.transit),
    ]
)
def provider_factory(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ProviderFactory]:
    made: list[KeyProvider] = []

    def config(kek_id: str) -> ProviderConfig:
        unique = f"{kek_id}-{next(_counter)}"
        if request.param == "local":
            return LocalKeyringConfig(directory=tmp_path / "keys", kek_id=unique)
        if request.param == "pkcs11":
            return request.getfixturevalue("softhsm").config(unique)  # type: ignore[no-any-return]
        return request.getfixturevalue("openbao").config(unique)  # type: ignore[no-any-return]

    def make(kek_id: str) -> KeyProvider:
        provider = open_provider(config(kek_id))
        provider.ensure_kek()
        made.append(provider)
        return provider

    yield make
    for provider in made:
        provider.close()
