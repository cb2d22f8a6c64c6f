"""What only the HSM provider promises: the KEK stays in the token, mechanisms are chosen
by trying them, state lives in the token, and processes (forks included) each get their
own session. The generic KeyProvider contract is proven in test_providers.py."""

from __future__ import annotations

import dataclasses
import os
import signal
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Protocol

import pkcs11
import pytest
from cryptography.hazmat.primitives.keywrap import aes_key_wrap_with_padding
from pkcs11 import Attribute, KeyType, Mechanism, MechanismFlag, ObjectClass

from tests.vault._softhsm import SoftHsm, softhsm_fixture  # noqa: F401  (fixture `softhsm`)
from vault import (
    DataKeyDestroyed,
    KekVersionRetired,
    ProviderMisconfigured,
    ProviderPermissionDenied,
    Secret,
    TamperedBlob,
    UnknownFormatVersion,
    WrappedKey,
)
from vault import pkcs11_token as hsm
from vault.pkcs11 import Pkcs11Provider, WrapScheme, _binding

pytestmark = pytest.mark.hsm


class MakeProvider(Protocol):
    def __call__(
        self, kek_label: str | None = None, *, scheme: WrapScheme | None = None,
        pin: str | None = None,
    ) -> Pkcs11Provider: ...


@pytest.fixture
def make_provider(softhsm: SoftHsm) -> Iterator[MakeProvider]:
    made: list[Pkcs11Provider] = []

    def make(
        kek_label: str | None = None, *, scheme: WrapScheme | None = None,
        pin: str | None = None,
    ) -> Pkcs11Provider:
        config = softhsm.config(kek_label or f"t-{uuid.uuid4().hex[:12]}")
        if pin is not None:
            config = dataclasses.replace(config, pin=Secret(pin))
        provider = Pkcs11Provider(config, _force_scheme=scheme)
        made.append(provider)
        return provider

    yield make
    for provider in made:
        provider.close()


@contextmanager
def raw_session(softhsm: SoftHsm) -> Iterator[pkcs11.Session]:
    """A session of our own, without C_Login: it shares the provider's login state."""
    token = pkcs11.lib(str(softhsm.module)).get_token(token_label=softhsm.token_label)
    with token.open(rw=True) as session:
        yield session


def kek_object(session: pkcs11.Session, label: str) -> pkcs11.SecretKey:
    key = session.get_key(ObjectClass.SECRET_KEY, KeyType.AES, label=label)
    assert isinstance(key, pkcs11.SecretKey)
    return key


def in_child(body: Callable[[], int], timeout: float = 20.0) -> int:
    """Run ``body`` in a forked child and return its exit status, waiting at most ``timeout``."""
    pid = os.fork()
    if pid == 0:
        status = 70
        try:
            status = body()
        except BaseException:
            traceback.print_exc()
        finally:
            os._exit(status)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.02)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    pytest.fail(f"forked child did not finish within {timeout} s")


def test_kek_value_can_neither_be_read_nor_wrapped_out_of_the_token(
    make_provider: MakeProvider, softhsm: SoftHsm
) -> None:
    provider = make_provider()
    provider.ensure_kek()
    with raw_session(softhsm) as session:
        kek = kek_object(session, f"{provider.kek_id}.v1")
        held = kek.get_attributes([
            Attribute.TOKEN, Attribute.PRIVATE, Attribute.SENSITIVE, Attribute.ALWAYS_SENSITIVE,
            Attribute.EXTRACTABLE, Attribute.NEVER_EXTRACTABLE, Attribute.LOCAL,
            Attribute.WRAP, Attribute.UNWRAP, Attribute.ENCRYPT, Attribute.DECRYPT,
        ])
        assert held == {
            Attribute.TOKEN: True, Attribute.PRIVATE: True, Attribute.SENSITIVE: True,
            Attribute.ALWAYS_SENSITIVE: True, Attribute.EXTRACTABLE: False,
            Attribute.NEVER_EXTRACTABLE: True,
            Attribute.LOCAL: True,  # generated inside the token, never imported
            Attribute.WRAP: True, Attribute.UNWRAP: True,
            Attribute.ENCRYPT: False, Attribute.DECRYPT: False,  # KWP needs no encryption
        }
        with pytest.raises(pkcs11.AttributeSensitive):
            kek[Attribute.VALUE]
        with pytest.raises(pkcs11.PKCS11Error):  # CKA_MODIFIABLE false: CKR_ACTION_PROHIBITED
            kek[Attribute.EXTRACTABLE] = True
        assert not kek[Attribute.EXTRACTABLE]
        thief = session.generate_key(
            KeyType.AES, 256, capabilities=MechanismFlag.WRAP | MechanismFlag.UNWRAP,
            mechanism=Mechanism.AES_KEY_GEN,
        )
        assert isinstance(thief, pkcs11.WrapMixin)
        for mechanism in (Mechanism.AES_KEY_WRAP_PAD, Mechanism.AES_KEY_WRAP):
            with pytest.raises(pkcs11.KeyUnextractable):
                thief.wrap_key(kek, mechanism=mechanism)
        thief.destroy()


def test_softhsm_key_wrap_pad_is_rfc_5649_and_is_the_scheme_chosen(
    make_provider: MakeProvider, softhsm: SoftHsm
) -> None:
    provider = make_provider()
    provider.ensure_kek()
    dk = provider.generate_data_key("dek_a")
    assert dk.wrapped.ciphertext[0] == WrapScheme.KWP
    assert len(dk.wrapped.ciphertext) == 1 + 56  # RFC 5649 of 32-byte key + 16-byte binding
    assert provider.status().details["mechanism"].startswith("CKM_AES_KEY_WRAP_PAD")
    with raw_session(softhsm) as session:  # the probe's check, done by hand
        value, data = os.urandom(32), os.urandom(48)
        kek = session.create_object({Attribute.CLASS: ObjectClass.SECRET_KEY,
                                     Attribute.KEY_TYPE: KeyType.AES, Attribute.VALUE: value,
                                     Attribute.WRAP: True})
        key = session.create_object({Attribute.CLASS: ObjectClass.SECRET_KEY,
                                     Attribute.KEY_TYPE: KeyType.GENERIC_SECRET,
                                     Attribute.VALUE: data, Attribute.EXTRACTABLE: True})
        assert isinstance(kek, pkcs11.WrapMixin)
        assert isinstance(key, pkcs11.SecretKey)
        wrapped = kek.wrap_key(key, mechanism=Mechanism.AES_KEY_WRAP_PAD)
        assert wrapped == aes_key_wrap_with_padding(value, data)
        with pytest.raises(pkcs11.MechanismInvalid):
            kek.wrap_key(key, mechanism=Mechanism.AES_KEY_WRAP_KWP)


def test_kwp_wrapped_key_is_bound_to_its_data_key_id(make_provider: MakeProvider) -> None:
    provider = make_provider()
    provider.ensure_kek()
    wrapped = provider.generate_data_key("dek_usr_eu_1").wrapped
    with pytest.raises(TamperedBlob):
        provider.unwrap(dataclasses.replace(wrapped, dek_id="dek_usr_eu_2"))
    with pytest.raises(TamperedBlob):
        provider.unwrap(dataclasses.replace(wrapped, ciphertext=wrapped.ciphertext[:-8]))
    with pytest.raises(UnknownFormatVersion):
        provider.unwrap(dataclasses.replace(wrapped, ciphertext=b"\x7f" + wrapped.ciphertext[1:]))
    with pytest.raises(DataKeyDestroyed):
        provider.unwrap(dataclasses.replace(wrapped, kek_version=9))


def test_gcm_fallback_round_trips_rotates_and_rewraps(
    make_provider: MakeProvider, softhsm: SoftHsm
) -> None:
    provider = make_provider(scheme=WrapScheme.GCM)
    provider.ensure_kek()
    dk = provider.generate_data_key("dek_a")
    assert dk.wrapped.ciphertext[0] == WrapScheme.GCM
    assert len(dk.wrapped.ciphertext) == 1 + 12 + 32 + 16
    assert provider.unwrap(dk.wrapped) == dk.plaintext
    assert provider.rotate() == 2
    rewrapped = provider.rewrap(dk.wrapped)
    assert rewrapped.kek_version == 2
    assert rewrapped.ciphertext[1:13] != dk.wrapped.ciphertext[1:13]  # a fresh IV
    assert provider.unwrap(rewrapped) == dk.plaintext
    assert provider.status().details["mechanism"] == "CKM_AES_GCM"
    with raw_session(softhsm) as session:
        kek = kek_object(session, f"{provider.kek_id}.v2")
        assert kek[Attribute.ENCRYPT]
        assert not kek[Attribute.EXTRACTABLE]


@pytest.mark.parametrize(
    ("what", "index"), [("iv", 1), ("ciphertext", 13), ("tag", -1)]
)
def test_gcm_fallback_rejects_a_tampered_iv_ciphertext_or_tag(
    make_provider: MakeProvider, what: str, index: int
) -> None:
    provider = make_provider(scheme=WrapScheme.GCM)
    provider.ensure_kek()
    wrapped = provider.generate_data_key("dek_a").wrapped
    ct = bytearray(wrapped.ciphertext)
    ct[index] ^= 0x01
    with pytest.raises(TamperedBlob, match="altered or moved"):
        provider.unwrap(dataclasses.replace(wrapped, ciphertext=bytes(ct)))


def test_gcm_fallback_binds_the_data_key_id(make_provider: MakeProvider) -> None:
    provider = make_provider(scheme=WrapScheme.GCM)
    provider.ensure_kek()
    wrapped = provider.generate_data_key("dek_a").wrapped
    with pytest.raises(TamperedBlob):
        provider.unwrap(dataclasses.replace(wrapped, dek_id="dek_b"))


def test_gcm_wrapped_keys_still_open_once_the_token_offers_kwp(
    make_provider: MakeProvider,
) -> None:
    old_token = make_provider(scheme=WrapScheme.GCM)
    old_token.ensure_kek()
    dk = old_token.generate_data_key("dek_a")
    upgraded = make_provider(old_token.kek_id)  # probes: KWP
    assert upgraded.unwrap(dk.wrapped) == dk.plaintext
    upgraded.rotate()
    rewrapped = upgraded.rewrap(dk.wrapped)
    assert rewrapped.ciphertext[0] == WrapScheme.KWP
    assert rewrapped.kek_version == 2
    assert upgraded.unwrap(rewrapped) == dk.plaintext


def test_probe_falls_back_to_gcm_on_a_token_without_kwp(
    make_provider: MakeProvider, softhsm: SoftHsm
) -> None:
    parent = make_provider()
    parent.ensure_kek()
    kwp = parent.generate_data_key("dek_kwp")
    read, write = os.pipe()

    def child() -> int:  # re-initialising the library re-reads SOFTHSM2_CONF
        os.environ["SOFTHSM2_CONF"] = str(softhsm.conf_without("CKM_AES_KEY_WRAP_PAD"))
        provider = make_provider(parent.kek_id)
        provider.rotate()  # v2: made while the token offers GCM only, so it may encrypt
        if provider.status().details["mechanism"] != "CKM_AES_GCM":
            return 3
        made = provider.generate_data_key("dek_gcm")
        try:
            provider.unwrap(kwp.wrapped)
        except ProviderMisconfigured:  # the token no longer does KWP: no way to open it
            os.write(write, made.plaintext + made.wrapped.ciphertext)
            return 0
        return 4

    assert in_child(child) == 0
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        sent = pipe.read()
    assert sent[32] == WrapScheme.GCM
    from_child = WrappedKey("dek_gcm", "pkcs11", parent.kek_id, 2, sent[32:])
    assert parent.unwrap(from_child) == sent[:32]
    assert parent.unwrap(kwp.wrapped) == kwp.plaintext


def test_versions_are_found_by_label_by_another_provider_instance(
    make_provider: MakeProvider, softhsm: SoftHsm
) -> None:
    first = make_provider()
    first.ensure_kek()
    first.rotate()
    on_v2 = first.generate_data_key("dek_a")
    first.rotate()
    second = make_provider(first.kek_id)
    status = second.status()
    assert (status.versions, status.latest_version) == ((1, 2, 3), 3)
    assert second.unwrap(on_v2.wrapped) == on_v2.plaintext
    assert second.generate_data_key("dek_b").wrapped.kek_version == 3
    second.ensure_kek()  # idempotent: no v4
    assert first.generate_data_key("dek_c").wrapped.kek_version == 3
    assert second.rotate() == 4
    assert first.generate_data_key("dek_d").wrapped.kek_version == 4  # sees the rotation
    with raw_session(softhsm) as session:
        labels = {str(o[Attribute.LABEL]) for o in session.get_objects(
            {Attribute.CLASS: ObjectClass.SECRET_KEY, Attribute.TOKEN: True})}
    assert {f"{first.kek_id}.v{n}" for n in (1, 2, 3, 4)} <= labels


def test_minimum_version_is_kept_in_the_token_for_every_instance(
    make_provider: MakeProvider, softhsm: SoftHsm
) -> None:
    first = make_provider()
    first.ensure_kek()
    old = first.generate_data_key("dek_a")
    first.rotate()
    first.set_min_decryption_version(2)
    second = make_provider(first.kek_id)
    assert second.status().min_decryption_version == 2
    with pytest.raises(KekVersionRetired, match="minimum decryption version"):
        second.unwrap(old.wrapped)
    with pytest.raises(KekVersionRetired):
        second.rewrap(old.wrapped)
    second.set_min_decryption_version(1)
    assert first.unwrap(old.wrapped) == old.plaintext
    query = {Attribute.CLASS: ObjectClass.DATA, Attribute.LABEL: f"{first.kek_id}.min"}
    with raw_session(softhsm) as session:
        values = [o[Attribute.VALUE] for o in session.get_objects(query)]
    assert values == [b"1"]
    with pytest.raises(ValueError, match=r"1\.\.2"):
        first.set_min_decryption_version(3)


def test_wrong_pin_is_refused_by_the_token_and_never_echoed(
    make_provider: MakeProvider, softhsm: SoftHsm
) -> None:
    wrong = "wrong-pin-48151623"
    make_provider().ensure_kek()  # the parent is logged in; the child starts afresh

    def child() -> int:  # a fresh process: the token itself checks this PIN
        try:
            make_provider(pin=wrong).ensure_kek()
        except ProviderPermissionDenied as exc:
            text = "".join(traceback.format_exception(exc))
            return 0 if wrong not in text and "`pin`" in str(exc) else 3
        return 4

    assert in_child(child) == 0


def test_second_provider_with_another_pin_is_refused_in_process(
    make_provider: MakeProvider,
) -> None:
    make_provider().ensure_kek()
    wrong = "another-pin-2718"
    with pytest.raises(ProviderPermissionDenied, match="another PIN") as caught:
        make_provider(pin=wrong).ensure_kek()
    assert wrong not in "".join(traceback.format_exception(caught.value))


def test_forked_child_opens_its_own_session_and_unwraps(make_provider: MakeProvider) -> None:
    provider = make_provider()
    provider.ensure_kek()
    dk = provider.generate_data_key("dek_a")
    read, write = os.pipe()

    def child() -> int:
        if provider.unwrap(dk.wrapped) != dk.plaintext:
            return 3
        made = provider.generate_data_key("dek_child")
        os.write(write, made.plaintext + made.wrapped.ciphertext)
        return 0

    assert in_child(child) == 0
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        sent = pipe.read()
    from_child = WrappedKey("dek_child", "pkcs11", provider.kek_id, 1, sent[32:])
    assert provider.unwrap(from_child) == sent[:32]  # the parent's session survived
    assert provider.unwrap(dk.wrapped) == dk.plaintext


def test_threads_share_the_session_safely(make_provider: MakeProvider) -> None:
    providers = [make_provider(), make_provider()]
    for p in providers:
        p.ensure_kek()
    failures: list[BaseException] = []

    def work(provider: Pkcs11Provider) -> None:
        try:
            for i in range(15):
                dk = provider.generate_data_key(f"dek_{i}")
                assert provider.unwrap(dk.wrapped) == dk.plaintext
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=work, args=(providers[i % 2],)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert not any(t.is_alive() for t in threads)
    assert not failures


def test_close_logs_out_only_when_the_last_provider_closes(make_provider: MakeProvider) -> None:
    a, b = make_provider(), make_provider()
    a.ensure_kek()
    b.ensure_kek()
    dk = b.generate_data_key("dek_a")
    a.close()
    assert b.unwrap(dk.wrapped) == dk.plaintext
    b.close()
    assert b.unwrap(dk.wrapped) == dk.plaintext  # opened again on use


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ("module", "missing"),  # no such file
        ("module", "garbage"),  # a file the dynamic loader rejects
        ("token_label", "no-such-token"),
    ],
)
def test_misconfiguration_names_the_setting(
    softhsm: SoftHsm, setting: str, value: str, tmp_path: Path
) -> None:
    config = softhsm.config("t-misconfigured")
    if setting == "module":
        module = tmp_path / "libpkcs11-stand-in.so"
        if value == "garbage":
            module.write_text("not an ELF file")
        config = dataclasses.replace(config, module=module)
    else:
        config = dataclasses.replace(config, token_label=value)
    provider = Pkcs11Provider(config)
    with pytest.raises(ProviderMisconfigured, match=f"`{setting}`") as caught:
        provider.ensure_kek()
    assert softhsm.pin.reveal() not in "".join(traceback.format_exception(caught.value))
    provider.close()


def test_a_version_created_twice_by_racing_processes_still_opens(
    make_provider: MakeProvider, softhsm: SoftHsm
) -> None:
    provider = make_provider()
    provider.ensure_kek()
    made: list[tuple[bytes, WrappedKey]] = []
    with raw_session(softhsm) as session:
        session.generate_key(  # what a second process's simultaneous ensure_kek leaves
            KeyType.AES, 256, label=f"{provider.kek_id}.v1", store=True,
            capabilities=MechanismFlag.WRAP | MechanismFlag.UNWRAP,
            mechanism=Mechanism.AES_KEY_GEN, template={Attribute.EXTRACTABLE: False},
        )
        keks = hsm.secret_keys(session, f"{provider.kek_id}.v1")
        assert len(keks) == 2
        for n, kek in enumerate(keks):  # either may be the one a process found first
            dek, dek_id = os.urandom(32), f"dek_{n}"
            value = dek + _binding(provider.kek_id, dek_id)
            ciphertext = bytes([WrapScheme.KWP]) + hsm.kwp_wrap(session, kek, value)
            made.append((dek, WrappedKey(dek_id, "pkcs11", provider.kek_id, 1, ciphertext)))
    for reader in (provider, make_provider(provider.kek_id)):
        for dek, wrapped in made:
            assert reader.unwrap(wrapped) == dek
    status = provider.status()
    assert status.versions == (1,)
    assert status.details["duplicate_versions"] == "1"


def test_status_names_token_module_and_mechanism_but_never_the_pin(
    make_provider: MakeProvider, softhsm: SoftHsm
) -> None:
    provider = make_provider()
    provider.ensure_kek()
    status = provider.status()
    assert status.details["token_label"] == softhsm.token_label
    assert status.details["module"] == str(softhsm.module)
    assert softhsm.pin.reveal() not in repr(status)


def test_kwp_rewrap_keeps_the_data_key_sensitive_inside_the_token(
    make_provider: MakeProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rewrap unwraps into a sensitive session object and wraps that; its value is never
    read out (the token refuses to reveal it), unlike unwrap's readable object."""
    provider = make_provider(scheme=WrapScheme.KWP)
    provider.ensure_kek()
    keys = [provider.generate_data_key(f"dek_{i}") for i in range(3)]
    provider.rotate()
    seen: list[tuple[bool, bool]] = []
    reveal = hsm._read_and_destroy
    unwrap_into_token = hsm._kwp_unwrap

    def watched(kek: pkcs11.Object, wrapped: bytes, *, readable: bool) -> pkcs11.SecretKey:
        key = unwrap_into_token(kek, wrapped, readable=readable)
        seen.append((bool(key[Attribute.SENSITIVE]), key[Attribute.TOKEN]))
        with pytest.raises(pkcs11.exceptions.AttributeSensitive):
            key[Attribute.VALUE]
        return key

    def no_reveal(key: pkcs11.SecretKey) -> bytes:
        raise AssertionError("rewrap read a data key out of the token")

    monkeypatch.setattr(hsm, "_kwp_unwrap", watched)
    monkeypatch.setattr(hsm, "_read_and_destroy", no_reveal)
    rewrapped = provider.rewrap_many([k.wrapped for k in keys])
    monkeypatch.setattr(hsm, "_kwp_unwrap", unwrap_into_token)
    monkeypatch.setattr(hsm, "_read_and_destroy", reveal)

    assert seen == [(True, False)] * 3  # sensitive session objects, none kept in the token
    assert {w.kek_version for w in rewrapped} == {2}
    assert all(w.ciphertext[0] == WrapScheme.KWP for w in rewrapped)
    provider.set_min_decryption_version(2)
    assert [provider.unwrap(w) for w in rewrapped] == [k.plaintext for k in keys]


@pytest.mark.parametrize(("template", "why"), [
    ({Attribute.EXTRACTABLE: True}, "not CKA_EXTRACTABLE"),
    ({Attribute.SENSITIVE: False}, "CKA_SENSITIVE"),
    ({"imported": True}, "CKA_ALWAYS_SENSITIVE"),  # a value that was once outside
    ({"bits": 128}, "256 bits long"),
    ({"type": KeyType.GENERIC_SECRET}, "an AES key"),
])
def test_a_weak_existing_kek_is_refused(
    softhsm: SoftHsm, make_provider: MakeProvider, template: dict[object, object], why: str,
) -> None:
    make_provider().ensure_kek()  # logs this process in (raw sessions share the login)
    provider = make_provider()
    label = f"{provider.kek_id}.v1"
    base = {Attribute.TOKEN: True, Attribute.PRIVATE: True, Attribute.LABEL: label,
            Attribute.WRAP: True, Attribute.UNWRAP: True, Attribute.SENSITIVE: True,
            Attribute.EXTRACTABLE: False}
    attrs = {k: v for k, v in template.items() if isinstance(k, Attribute)}
    with raw_session(softhsm) as session:
        if template.get("imported"):
            session.create_object({**base, Attribute.CLASS: ObjectClass.SECRET_KEY,
                                   Attribute.KEY_TYPE: KeyType.AES,
                                   Attribute.VALUE: os.urandom(32)})
        elif template.get("type") is KeyType.GENERIC_SECRET:
            session.generate_key(KeyType.GENERIC_SECRET, 256, label=label, store=True,
                                 template={**base, **attrs})
        else:
            bits = int(str(template.get("bits", 256)))
            session.generate_key(KeyType.AES, bits, label=label, store=True,
                                 template={**base, **attrs})
    with pytest.raises(ProviderMisconfigured, match=why):
        provider.ensure_kek()
    with pytest.raises(ProviderMisconfigured, match=label.replace(".", r"\.")):
        provider.generate_data_key("dek-1")


def test_a_kek_the_provider_made_passes_its_own_check(make_provider: MakeProvider) -> None:
    provider = make_provider()
    provider.ensure_kek()
    wrapped = provider.generate_data_key("dek-ok").wrapped
    assert len(provider.unwrap(wrapped)) == 32
