"""A throw-away SoftHSM2 token for the tests that need a real PKCS#11 module.

``softhsm`` (session)
    Initialises one token with ``softhsm2-util --init-token --free`` under a temporary
    directory with its own ``SOFTHSM2_CONF``, points the process at it for the session
    and restores the environment afterwards. Skips, with the reason, when
    ``softhsm2-util`` or ``libsofthsm2.so`` is missing; tests using it carry
    ``@pytest.mark.hsm`` so that CI fails instead of skipping.

Wire it into a conftest with ``from tests.vault._softhsm import softhsm_fixture``: the
fixture is named ``softhsm``, the function is not, so test parameters do not shadow the
import. Importing it in several places is harmless: they share one token.

Example::

    @pytest.mark.hsm
    def test_round_trip(softhsm: SoftHsm) -> None:
        provider = Pkcs11Provider(softhsm.config("eu-1"))  # a fresh label is a fresh KEK
        provider.ensure_kek()
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from vault import Pkcs11Config, Secret

MODULE_PATHS = (
    Path("/usr/lib/softhsm/libsofthsm2.so"),
    Path("/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so"),
    Path("/usr/local/lib/softhsm/libsofthsm2.so"),
)
TOKEN_LABEL = "aggregator-tests"


@dataclass(frozen=True)
class SoftHsm:
    """One initialised token; ``config(label)`` addresses a KEK in it."""

    module: Path
    conf: Path
    token_label: str
    pin: Secret = field(repr=False)
    so_pin: Secret = field(repr=False)

    def config(self, kek_label: str) -> Pkcs11Config:
        return Pkcs11Config(self.module, self.token_label, self.pin, kek_label)

    def conf_without(self, mechanism: str) -> Path:
        """A configuration for the same tokens with ``mechanism`` switched off.

        libsofthsm2 reads it at C_Initialize, so only a fresh (or forked and re-initialised)
        process sees it. SoftHSM2 2.6.1 ignores the first name of a ``-`` list, hence twice.
        """
        conf = self.conf.with_name(f"softhsm2-without-{mechanism}.conf")
        conf.write_text(f"{self.conf.read_text()}slots.mechanisms = -{mechanism},{mechanism}\n")
        return conf


def find_module() -> Path | None:
    for path in MODULE_PATHS:
        if path.is_file():
            return path
    return None


def init_token(directory: Path, module: Path, util: str) -> SoftHsm:
    """Write a SoftHSM2 configuration whose tokens live in ``directory`` and init one."""
    tokens = directory / "tokens"
    tokens.mkdir(mode=0o700)
    conf = directory / "softhsm2.conf"
    conf.write_text(
        f"directories.tokendir = {tokens}\nobjectstore.backend = file\nlog.level = ERROR\n"
        "slots.removable = false\n"
    )
    pin, so_pin = Secret(secrets.token_hex(8)), Secret(secrets.token_hex(8))
    hsm = SoftHsm(module, conf, TOKEN_LABEL, pin, so_pin)
    subprocess.run(
        [util, "--init-token", "--free", "--label", hsm.token_label,
         "--pin", pin.reveal(), "--so-pin", so_pin.reveal()],
        env={**os.environ, "SOFTHSM2_CONF": str(conf)},
        check=True, capture_output=True, timeout=60,
    )
    return hsm


# libsofthsm2 reads SOFTHSM2_CONF once, when the process first initialises it: however
# many places import the fixture, the process must see a single token directory.
_active: list[SoftHsm] = []


@pytest.fixture(scope="session", name="softhsm")
def softhsm_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SoftHsm]:
    """The session's token (shared if this fixture is registered twice)."""
    if _active:
        yield _active[0]
        return
    util, module = shutil.which("softhsm2-util"), find_module()
    if util is None or module is None:
        pytest.skip(
            "SoftHSM2 is not installed (need `softhsm2-util` on PATH and libsofthsm2.so in "
            f"one of {', '.join(map(str, MODULE_PATHS))}): apt-get install softhsm2"
        )
    with pytest.MonkeyPatch.context() as env:
        hsm = init_token(tmp_path_factory.mktemp("softhsm"), module, util)
        env.setenv("SOFTHSM2_CONF", str(hsm.conf))
        _active.append(hsm)
        try:
            yield hsm
        finally:
            _active.clear()
