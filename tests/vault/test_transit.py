"""What only the Transit provider does, against a real OpenBao server.

The KeyProvider contract itself is proven for every backend in ``test_providers.py``.
"""

from __future__ import annotations

import base64
import dataclasses
import itertools
import logging
import socket
import time
from collections.abc import Callable, Iterator

import pytest

from tests.vault._openbao import OpenBao, openbao_fixture  # noqa: F401  (the `openbao` fixture)
from vault import (
    DataKeyDestroyed,
    KekVersionRetired,
    ProviderMisconfigured,
    ProviderPermissionDenied,
    ProviderUnavailable,
    Secret,
    TamperedBlob,
    TransitConfig,
    VaultError,
    WrappedKey,
)
from vault.transit import KEY_TYPE, TransitProvider

pytestmark = pytest.mark.transit

Factory = Callable[[TransitConfig], TransitProvider]
_names = itertools.count()


@pytest.fixture
def key_name(request: pytest.FixtureRequest) -> str:
    return f"t{next(_names)}-{request.node.name[:30].replace('[', '-').strip(']')}"


@pytest.fixture
def make() -> Iterator[Factory]:
    made: list[TransitProvider] = []

    def build(config: TransitConfig) -> TransitProvider:
        made.append(TransitProvider(config))
        return made[-1]

    yield build
    for provider in made:
        provider.close()


def _chain(exc: BaseException) -> str:
    """Every message in the exception chain, as a traceback would show them."""
    parts = []
    seen: BaseException | None = exc
    while seen is not None:
        parts.append(f"{type(seen).__name__}: {seen}")
        seen = seen.__cause__ or seen.__context__
    return "\n".join(parts)


def _corrupt(wrapped: WrappedKey) -> WrappedKey:
    ct = bytearray(wrapped.ciphertext)
    ct[20] = ord("B") if ct[20] != ord("B") else ord("C")  # still valid base64
    return dataclasses.replace(wrapped, ciphertext=bytes(ct))


def test_ensure_kek_creates_a_non_exportable_key_without_plaintext_backup(
    openbao: OpenBao, make: Factory, key_name: str
) -> None:
    provider = make(openbao.config(key_name))
    provider.ensure_kek()
    provider.ensure_kek()
    data = openbao.admin.secrets.transit.read_key(name=key_name)["data"]
    assert data["type"] == KEY_TYPE
    assert data["exportable"] is False
    assert data["allow_plaintext_backup"] is False
    assert data["derived"] is False
    assert data["latest_version"] == 1


@pytest.mark.parametrize(
    ("settings", "complaint"),
    [
        ({"exportable": True}, "exportable"),
        ({"allow_plaintext_backup": True}, "plaintext backups"),
        ({"key_type": "chacha20-poly1305"}, "chacha20-poly1305"),
    ],
)
def test_ensure_kek_refuses_an_unsafe_existing_key(
    openbao: OpenBao, make: Factory, key_name: str, settings: dict[str, object], complaint: str
) -> None:
    openbao.admin.secrets.transit.create_key(name=key_name, **settings)
    with pytest.raises(ProviderMisconfigured, match=complaint) as caught:
        make(openbao.config(key_name)).ensure_kek()
    assert key_name in str(caught.value)


def test_kek_version_comes_from_the_vault_prefix(
    openbao: OpenBao, make: Factory, key_name: str
) -> None:
    provider = make(openbao.config(key_name))
    provider.ensure_kek()
    provider.rotate()
    dk = provider.generate_data_key("dek_a")
    assert dk.wrapped.ciphertext.startswith(b"vault:v2:")
    assert dk.wrapped.kek_version == 2
    with pytest.raises(TamperedBlob, match="claims KEK version 1"):
        provider.unwrap(dataclasses.replace(dk.wrapped, kek_version=1))


def test_batch_unwrap_returns_keys_in_order_and_names_the_corrupted_item(
    openbao: OpenBao, make: Factory, key_name: str
) -> None:
    provider = make(openbao.config(key_name))
    provider.ensure_kek()
    keys = [provider.generate_data_key(f"dek_batch_{i}") for i in range(4)]
    wrapped = [k.wrapped for k in keys]
    assert provider.unwrap_many(wrapped) == [k.plaintext for k in keys]
    assert provider.unwrap_many([]) == []

    wrapped[2] = _corrupt(wrapped[2])
    with pytest.raises(TamperedBlob, match="'dek_batch_2'") as caught:
        provider.unwrap_many(wrapped)
    text = _chain(caught.value)
    for i in (0, 1, 3):
        assert f"dek_batch_{i}" not in text
        # OpenBao answers a partly failed batch with a 400 holding the good plaintexts.
        assert base64.b64encode(keys[i].plaintext).decode() not in text
    assert wrapped[2].ciphertext.decode() not in text


def test_batch_rewrap_names_every_failing_item(
    openbao: OpenBao, make: Factory, key_name: str
) -> None:
    provider = make(openbao.config(key_name))
    provider.ensure_kek()
    wrapped = [provider.generate_data_key(f"dek_rw_{i}").wrapped for i in range(3)]
    wrapped[0], wrapped[2] = _corrupt(wrapped[0]), _corrupt(wrapped[2])
    with pytest.raises(TamperedBlob, match="2 of 3") as caught:
        provider.rewrap_many(wrapped)
    assert "'dek_rw_0'" in str(caught.value)
    assert "'dek_rw_2'" in str(caught.value)
    assert "'dek_rw_1'" not in str(caught.value)


def test_rewrap_moves_keys_to_the_newest_version_inside_vault(
    openbao: OpenBao, make: Factory, key_name: str
) -> None:
    provider = make(openbao.config(key_name))
    provider.ensure_kek()
    keys = [provider.generate_data_key(f"dek_{i}") for i in range(3)]
    provider.rotate()
    assert provider.rotate() == 3
    single = provider.rewrap(keys[0].wrapped)
    batch = provider.rewrap_many([k.wrapped for k in keys[1:]])
    for new, old in zip([single, *batch], keys, strict=True):
        assert new.kek_version == 3
        assert new.ciphertext.startswith(b"vault:v3:")
        assert new.dek_id == old.wrapped.dek_id
    provider.set_min_decryption_version(3)
    assert provider.unwrap_many([single, *batch]) == [k.plaintext for k in keys]


def test_raised_minimum_retires_old_keys_checked_locally_and_by_vault(
    openbao: OpenBao, make: Factory, key_name: str
) -> None:
    provider = make(openbao.config(key_name))
    provider.ensure_kek()
    stale = make(openbao.config(key_name))
    stale.ensure_kek()  # caches minimum 1; Vault's own refusal must be mapped too
    dk = provider.generate_data_key("dek_old")
    provider.rotate()
    provider.set_min_decryption_version(2)

    with pytest.raises(KekVersionRetired, match=r"'dek_old'.*minimum decryption version 2"):
        provider.unwrap(dk.wrapped)
    with pytest.raises(KekVersionRetired, match="'dek_old'"):
        stale.unwrap(dk.wrapped)
    with pytest.raises(KekVersionRetired, match="minimum"):
        stale.rewrap(dk.wrapped)  # the stale provider learned the new floor
    status = provider.status()
    assert (status.latest_version, status.min_decryption_version) == (2, 2)
    assert status.versions == (1, 2)  # version 1 is archived, not gone
    with pytest.raises(ValueError, match=r"1\.\.2"):
        provider.set_min_decryption_version(3)


def test_approle_policy_limited_to_the_key_covers_every_operation(
    openbao: OpenBao, make: Factory, key_name: str
) -> None:
    provider = make(openbao.approle_config(key_name))
    provider.ensure_kek()
    dk = provider.generate_data_key("dek_a")
    assert provider.unwrap(dk.wrapped) == dk.plaintext
    assert provider.rotate() == 2
    rewrapped = provider.rewrap_many([dk.wrapped])[0]
    provider.set_min_decryption_version(2)
    assert provider.unwrap_many([rewrapped]) == [dk.plaintext]
    assert provider.status().min_decryption_version == 2


def test_rewrap_needs_no_permission_that_reveals_a_data_key(
    openbao: OpenBao, make: Factory, key_name: str
) -> None:
    """The rotation job's token may rewrap but not decrypt: no data key leaves Vault."""
    owner = make(openbao.config(key_name))
    owner.ensure_kek()
    keys = [owner.generate_data_key(f"dek_{i}") for i in range(3)]
    owner.rotate()
    policy = "\n".join(
        f'path "transit/{path}" {{ capabilities = ["{cap}"] }}'
        for path, cap in ((f"keys/{key_name}", "read"), (f"rewrap/{key_name}", "update"))
    )
    openbao.admin.sys.create_or_update_policy(name=f"rewrap-only-{key_name}", policy=policy)
    token = openbao.admin.auth.token.create(policies=[f"rewrap-only-{key_name}"],
                                            ttl="5m")["auth"]["client_token"]
    rewrapper = make(dataclasses.replace(openbao.config(key_name), token=Secret(token)))

    rewrapped = rewrapper.rewrap_many([k.wrapped for k in keys])

    assert {w.kek_version for w in rewrapped} == {2}
    with pytest.raises(ProviderPermissionDenied):
        rewrapper.unwrap(rewrapped[0])
    assert owner.unwrap_many(rewrapped) == [k.plaintext for k in keys]


def test_approle_logs_in_again_once_when_its_token_is_revoked(
    openbao: OpenBao, make: Factory, key_name: str, caplog: pytest.LogCaptureFixture
) -> None:
    provider = make(openbao.approle_config(key_name))
    provider.ensure_kek()
    dk = provider.generate_data_key("dek_a")
    openbao.admin.sys.revoke_prefix(prefix="auth/approle/login")
    with caplog.at_level(logging.INFO, logger="vault.transit"):
        assert provider.unwrap(dk.wrapped) == dk.plaintext
    assert "logging in again" in caplog.text


def test_wrong_approle_secret_is_permission_denied_without_echoing_it(
    openbao: OpenBao, make: Factory, key_name: str
) -> None:
    config = dataclasses.replace(
        openbao.approle_config(key_name), approle_secret_id=Secret("not-the-secret-id-4711")
    )
    with pytest.raises(ProviderPermissionDenied, match="AppRole login failed") as caught:
        make(config).ensure_kek()
    assert "not-the-secret-id-4711" not in _chain(caught.value)


def test_token_without_policy_is_permission_denied(
    openbao: OpenBao, make: Factory, key_name: str
) -> None:
    weak = openbao.admin.auth.token.create(policies=["default"], ttl="5m")["auth"]["client_token"]
    config = dataclasses.replace(openbao.config(key_name), token=Secret(weak))
    with pytest.raises(ProviderPermissionDenied, match=key_name) as caught:
        make(config).ensure_kek()
    assert weak not in _chain(caught.value)


def test_unreachable_server_is_unavailable_and_fails_fast(make: Factory) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed again before the provider connects
    config = TransitConfig(
        url=f"http://127.0.0.1:{port}", key_name="eu", token=Secret("t0k3n-x"), timeout=0.5
    )
    started = time.monotonic()
    with pytest.raises(ProviderUnavailable):
        make(config).ensure_kek()
    assert time.monotonic() - started < 3


def test_server_that_never_answers_times_out_as_unavailable(make: Factory) -> None:
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()  # the kernel accepts the connection; nobody ever answers
        config = TransitConfig(
            url=f"http://127.0.0.1:{silent.getsockname()[1]}",
            key_name="eu",
            token=Secret("t0k3n-x"),
            timeout=0.3,
        )
        started = time.monotonic()
        with pytest.raises(ProviderUnavailable, match="Timeout"):
            make(config).status()
        assert time.monotonic() - started < 3


def test_missing_key_is_misconfigured_and_a_deleted_one_destroys_its_data_keys(
    openbao: OpenBao, make: Factory, key_name: str
) -> None:
    with pytest.raises(ProviderMisconfigured, match="does not exist"):
        make(openbao.config(key_name)).status()
    with pytest.raises(ProviderMisconfigured, match="check `mount`"):
        make(dataclasses.replace(openbao.config(key_name), mount="nowhere")).ensure_kek()

    provider = make(openbao.config(key_name))
    provider.ensure_kek()
    dk = provider.generate_data_key("dek_gone")
    transit = openbao.admin.secrets.transit
    transit.update_key_configuration(name=key_name, deletion_allowed=True)
    transit.delete_key(name=key_name)
    with pytest.raises(DataKeyDestroyed, match="'dek_gone'"):
        provider.unwrap(dk.wrapped)


def test_token_never_appears_in_errors_logs_or_status(
    openbao: OpenBao, make: Factory, key_name: str, caplog: pytest.LogCaptureFixture
) -> None:
    token = openbao.root_token.reveal()
    provider = make(openbao.config(key_name))
    failures: list[VaultError] = []
    with caplog.at_level(logging.DEBUG):
        provider.ensure_kek()
        dk = provider.generate_data_key("dek_a")
        for attempt in (
            lambda: provider.unwrap(_corrupt(dk.wrapped)),
            lambda: make(openbao.config(key_name + "-missing")).status(),
            lambda: make(dataclasses.replace(openbao.config(key_name), mount="nope")).rotate(),
            lambda: provider.rewrap_many([dk.wrapped, _corrupt(dk.wrapped)]),
        ):
            with pytest.raises(VaultError) as caught:
                attempt()
            failures.append(caught.value)
        status = provider.status()
    shown = [_chain(f) for f in failures] + [caplog.text, repr(status), repr(provider)]
    shown.append(repr(openbao.config(key_name)))
    for text in shown:
        assert token not in text
    assert status.details["key_name"] == key_name
    assert status.details["url"] == openbao.url


def test_rewrap_ignores_associated_data_so_the_provider_does_not_use_it(
    openbao: OpenBao, key_name: str
) -> None:
    """Pins the OpenBao behaviour behind the module's "no associated_data" decision.

    datakey and decrypt honour associated_data, rewrap does not: a bound data key could
    not be rotated inside Vault. If this starts failing, revisit vault/transit.py.
    """
    adapter = openbao.admin.adapter
    openbao.admin.secrets.transit.create_key(name=key_name)
    aad = base64.b64encode(b"dek_a").decode()
    made = adapter.post(f"/v1/transit/datakey/wrapped/{key_name}", json={"associated_data": aad})
    ciphertext = made["data"]["ciphertext"]
    opened = adapter.post(
        f"/v1/transit/decrypt/{key_name}", json={"ciphertext": ciphertext, "associated_data": aad}
    )
    assert len(base64.b64decode(opened["data"]["plaintext"])) == 32
    rewrapped = adapter.post(
        f"/v1/transit/rewrap/{key_name}",
        json={"batch_input": [{"ciphertext": ciphertext, "associated_data": aad}]},
    )
    assert "authentication failed" in rewrapped["data"]["batch_results"][0]["error"]


@pytest.mark.parametrize(
    ("changes", "setting"),
    [
        ({"token": None}, "no credentials"),
        ({"approle_role_id": "r", "approle_secret_id": Secret("s")}, "not both"),
        ({"token": None, "approle_role_id": "r"}, "approle_secret_id"),
        ({"key_name": "eu/../sys"}, "key_name"),
        ({"mount": "a b"}, "mount"),
        ({"url": "vault:8200"}, "url"),
        ({"timeout": 0}, "timeout"),
    ],
)
def test_bad_settings_are_refused_before_any_request(
    changes: dict[str, object], setting: str
) -> None:
    base = TransitConfig(url="http://127.0.0.1:1", key_name="eu", token=Secret("t"))
    with pytest.raises(ProviderMisconfigured, match=setting):
        TransitProvider(dataclasses.replace(base, **changes))  # type: ignore[arg-type]


@pytest.mark.parametrize("url", [
    "http://vault.internal:8200", "http://10.0.0.5:8200", "http://[2001:db8::1]:8200",
    "http://127.0.0.1.nip.io:8200",
])
def test_plain_http_to_anything_but_loopback_is_refused(url: str) -> None:
    with pytest.raises(ProviderMisconfigured, match="https"):
        TransitProvider(TransitConfig(url=url, key_name="eu", token=Secret("t")))


@pytest.mark.parametrize("url", [
    "http://127.0.0.1:8200", "http://localhost:8200", "http://[::1]:8200",
    "https://vault.internal:8200",
])
def test_https_anywhere_and_http_on_loopback_are_accepted(url: str) -> None:
    TransitProvider(TransitConfig(url=url, key_name="eu", token=Secret("t"))).close()
