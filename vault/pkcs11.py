"""The HSM provider: data keys wrapped by an AES-256 KEK that never leaves a PKCS#11 token.

Token objects, per KEK (one per region)::

    {kek_label}.v1, .v2, …   AES-256 keys generated in the token: token objects, private,
                             sensitive, never extractable, not modifiable
    {kek_label}.min          private data object; CKA_VALUE = minimum decryption version

A key found under a KEK label is used only if it is an AES-256 key that is sensitive,
not extractable, always sensitive and never extractable (as Transit refuses an exportable
key): one made by hand or imported could be read out, with every data key it wraps.

Data keys are 32 random bytes made in software. A key must be a key object to be wrapped,
so it is imported as a *session* object, wrapped, destroyed. ``WrappedKey.ciphertext``
starts with a :class:`WrapScheme` byte, so a token that gains or loses a mechanism still
opens what it wrapped before:

``0x01`` KWP: ``CKM_AES_KEY_WRAP_PAD(KEK, dek ‖ binding)``, RFC 5649, 1 + 56 bytes. KWP
    takes no associated data, so *binding* = SHA-256(kek label, dek id)[:16] rides inside
    the wrapped value: a wrapped key copied to another subject's row does not open. Rewrap
    unwraps into a sensitive session object and wraps that; no value leaves the token.
``0x02`` GCM: ``iv ‖ CKM_AES_GCM(KEK, dek, aad=(kek label, version, dek id)) ‖ tag``,
    1 + 12 + 32 + 16 bytes, random 96-bit IV, 128-bit tag: for tokens without KWP (found
    by :func:`~vault.pkcs11_token.probe`). Only these KEKs carry CKA_ENCRYPT/CKA_DECRYPT.

Every PKCS#11 call is made by :mod:`vault.pkcs11_token`, inside its ``map_pkcs11_errors``.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import re
from collections.abc import Iterator, Sequence

import pkcs11

from vault import pkcs11_token as hsm
from vault.config import Pkcs11Config
from vault.errors import (
    DataKeyDestroyed,
    KekVersionRetired,
    ProviderMisconfigured,
    ProviderUnavailable,
    TamperedBlob,
    UnknownFormatVersion,
)
from vault.interfaces import DataKey, KekStatus, WrappedKey
from vault.pkcs11_token import DEK_SIZE, IV_SIZE, TAG_SIZE, WrapScheme

__all__ = ["Pkcs11Provider", "WrapScheme"]

_MECHANISMS = {WrapScheme.KWP: "CKM_AES_KEY_WRAP_PAD (RFC 5649)", WrapScheme.GCM: "CKM_AES_GCM"}
_KEK_LABEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_BINDING_SIZE = 16


class Pkcs11Provider:
    """KeyProvider over an AES-256 KEK inside a PKCS#11 token (see the module docstring).

    Nothing touches the token before first use. ``_force_scheme`` overrides the probe's
    choice; only tests set it, to run the GCM fallback on a token that has KWP.

    Example::

        provider = Pkcs11Provider(Pkcs11Config(Path("/usr/lib/softhsm/libsofthsm2.so"),
                                               "gateway", Secret(pin), kek_label="eu"))
        provider.ensure_kek()
        dk = provider.generate_data_key("dek_usr_eu_123")
    """

    kind = "pkcs11"

    def __init__(self, config: Pkcs11Config, *, _force_scheme: WrapScheme | None = None) -> None:
        if not _KEK_LABEL.fullmatch(config.kek_label):
            raise ProviderMisconfigured(
                f"pkcs11: kek_label {config.kek_label!r} must be 1-64 of A-Z a-z 0-9 _ . -"
            )
        self.kek_id = config.kek_label
        self._config = config
        self._login = hsm.login_for(config)
        self._forced = _force_scheme
        self._newest: tuple[pkcs11.Session, int, list[pkcs11.Object]] | None = None
        #: KEK labels whose objects passed :func:`~vault.pkcs11_token.kek_weaknesses`.
        self._strong: set[str] = set()

    # -- KeyProvider --------------------------------------------------------

    def ensure_kek(self) -> None:
        with self._use() as session:
            if not self._versions(session):
                self._generate_kek(session, 1)

    def generate_data_key(self, dek_id: str) -> DataKey:
        plaintext = os.urandom(DEK_SIZE)
        with self._use() as session:
            return DataKey(plaintext, self._wrap(session, dek_id, plaintext))

    def unwrap(self, wrapped: WrappedKey) -> bytes:
        scheme, body = self._parse(wrapped)
        with self._use(opening=wrapped) as session:
            keks = self._keks_for(session, wrapped)
            if scheme is WrapScheme.GCM:
                iv, sealed = body[:IV_SIZE], body[IV_SIZE:]
                aad = _aad(self.kek_id, wrapped.kek_version, wrapped.dek_id)
                return hsm.gcm_decrypt(keks, iv, sealed, aad)
            value = hsm.kwp_unwrap(keks, body)
        dek, binding = value[:DEK_SIZE], value[DEK_SIZE:]
        if len(dek) != DEK_SIZE or not hmac.compare_digest(
            binding, _binding(self.kek_id, wrapped.dek_id)
        ):
            raise TamperedBlob(f"wrapped data key {wrapped.dek_id!r} belongs to another data key")
        return dek

    def rewrap(self, wrapped: WrappedKey) -> WrappedKey:
        scheme, body = self._parse(wrapped)
        if scheme is not WrapScheme.KWP or self._scheme() is not WrapScheme.KWP:
            plaintext = self.unwrap(wrapped)  # GCM is encryption: the value has to come out
            with self._use() as session:
                return self._wrap(session, wrapped.dek_id, plaintext)
        with self._use(opening=wrapped) as session:
            old = self._keks_for(session, wrapped)
            version, keks = self._latest(session)
            ciphertext = hsm.kwp_rewrap(old, body, keks[0])
        return self._wrapped(wrapped.dek_id, version, WrapScheme.KWP, ciphertext)

    def rewrap_many(self, wrapped: Sequence[WrappedKey]) -> list[WrappedKey]:
        """One :meth:`rewrap` per key: PKCS#11 has no batch wrap, and the logged-in
        session is reused, so a batch costs the token's work and no more."""
        return [self.rewrap(w) for w in wrapped]

    def rotate(self) -> int:
        with self._use() as session:
            version = max(self._versions(session), default=0) + 1
            self._generate_kek(session, version)
            return version

    def set_min_decryption_version(self, version: int) -> None:
        with self._use() as session:
            latest = max(self._versions(session), default=0)
            if not 1 <= version <= latest:
                raise ValueError(f"minimum decryption version must be within 1..{latest}")
            hsm.replace_data(session, f"{self.kek_id}.min", str(version).encode())

    def status(self) -> KekStatus:
        with self._use() as session:
            versions = self._versions(session)
            minimum = self._min_version(session)
        details = {
            "module": str(self._config.module),
            "token_label": self._config.token_label,
            "mechanism": _MECHANISMS[self._scheme()],
        }
        if doubled := [str(v) for v, keks in sorted(versions.items()) if len(keks) > 1]:
            details["duplicate_versions"] = ",".join(doubled)  # processes rotated at once
        latest = max(versions, default=0)
        return KekStatus(self.kind, self.kek_id, latest, minimum, tuple(sorted(versions)), details)

    def close(self) -> None:
        self._login.release(self)

    # -- token objects ------------------------------------------------------

    @contextlib.contextmanager
    def _use(self, *, opening: WrappedKey | None = None) -> Iterator[pkcs11.Session]:
        with self._login.lock:
            try:
                with hsm.map_pkcs11_errors(self._config, opening=opening):
                    yield self._login.session(self._config, self)
            except ProviderUnavailable:
                self._login.reset()  # the next call opens a fresh session
                raise

    def _scheme(self) -> WrapScheme:
        if self._forced is None and self._login.scheme is None:
            with self._use():
                pass  # opening the session probes the token
        scheme = self._forced or self._login.scheme
        assert scheme is not None
        return scheme

    def _versions(self, session: pkcs11.Session) -> dict[int, list[pkcs11.Object]]:
        pattern = re.compile(re.escape(self.kek_id) + r"\.v([1-9][0-9]{0,8})")
        found: dict[int, list[pkcs11.Object]] = {}
        for obj in hsm.secret_keys(session):
            if match := pattern.fullmatch(label := hsm.label_of(obj)):
                self._check_kek(label, obj)
                found.setdefault(int(match.group(1)), []).append(obj)
        return found

    def _check_kek(self, label: str, obj: pkcs11.Object) -> None:
        """Refuse a KEK under our label that could leave the token (once per label)."""
        if label in self._strong:
            return
        if weaknesses := hsm.kek_weaknesses(obj):
            raise ProviderMisconfigured(
                f"token object {label!r} in token {self._config.token_label!r} cannot be a "
                f"KEK: it is not {', '.join(weaknesses)}; delete it and run "
                "`aggregator keys init`, or choose another kek_label"
            )
        self._strong.add(label)

    def _latest(self, session: pkcs11.Session) -> tuple[int, list[pkcs11.Object]]:
        # Reading every key's label costs ~0.2 ms per object on SoftHSM2; one exact-label
        # search for the next version still notices another process's rotation.
        if self._newest is not None and self._newest[0] is session:
            _, version, keks = self._newest
            if not hsm.secret_keys(session, f"{self.kek_id}.v{version + 1}"):
                return version, keks
        if not (versions := self._versions(session)):
            raise ProviderMisconfigured(
                f"PKCS#11 token {self._config.token_label!r} has no KEK {self.kek_id!r} yet: "
                "run `aggregator keys init`"
            )
        version, keks = max(versions.items())
        self._newest = (session, version, keks)
        return version, keks

    def _keks_for(self, session: pkcs11.Session, wrapped: WrappedKey) -> list[pkcs11.Object]:
        if wrapped.kek_version < self._min_version(session):
            raise KekVersionRetired(
                f"data key {wrapped.dek_id!r} is wrapped under KEK {self.kek_id!r} version "
                f"{wrapped.kek_version}, below the minimum decryption version; rewrap it "
                "before raising the minimum, or lower the minimum again"
            )
        label = f"{self.kek_id}.v{wrapped.kek_version}"
        if not (keks := hsm.secret_keys(session, label)):
            raise DataKeyDestroyed(f"KEK {label!r} is not in token {self._config.token_label!r}")
        for kek in keks:
            self._check_kek(label, kek)
        return keks

    def _generate_kek(self, session: pkcs11.Session, version: int) -> None:
        encrypt = self._scheme() is WrapScheme.GCM
        hsm.generate_kek(session, f"{self.kek_id}.v{version}", encrypt=encrypt)

    def _min_version(self, session: pkcs11.Session) -> int:
        values = hsm.read_data(session, f"{self.kek_id}.min")
        try:  # two writers at once leave two objects: the higher minimum is the safe reading
            return max((int(v.decode("ascii")) for v in values), default=1)
        except ValueError:
            raise ProviderMisconfigured(
                f"token object {self.kek_id}.min does not hold a version number: delete it "
                "and set the minimum again"
            ) from None

    # -- wrapped keys -------------------------------------------------------

    def _wrap(self, session: pkcs11.Session, dek_id: str, plaintext: bytes) -> WrappedKey:
        version, keks = self._latest(session)
        if (scheme := self._scheme()) is WrapScheme.GCM:
            iv = os.urandom(IV_SIZE)
            sealed = hsm.gcm_encrypt(keks[0], plaintext, iv, _aad(self.kek_id, version, dek_id))
            return self._wrapped(dek_id, version, scheme, iv + sealed)
        value = plaintext + _binding(self.kek_id, dek_id)
        return self._wrapped(dek_id, version, scheme, hsm.kwp_wrap(session, keks[0], value))

    def _wrapped(self, dek_id: str, version: int, scheme: WrapScheme, body: bytes) -> WrappedKey:
        return WrappedKey(dek_id, self.kind, self.kek_id, version, bytes([scheme]) + body)

    def _parse(self, wrapped: WrappedKey) -> tuple[WrapScheme, bytes]:
        if wrapped.provider != self.kind or wrapped.kek_id != self.kek_id:
            raise DataKeyDestroyed(
                f"data key {wrapped.dek_id!r} is wrapped by {wrapped.provider}:"
                f"{wrapped.kek_id}, not by this token ({self.kind}:{self.kek_id})"
            )
        if not (ct := wrapped.ciphertext):
            raise TamperedBlob(f"wrapped data key {wrapped.dek_id!r} is empty")
        try:
            scheme = WrapScheme(ct[0])
        except ValueError:
            raise UnknownFormatVersion(
                f"wrapped data key {wrapped.dek_id!r} has scheme byte {ct[0]:#04x}, unknown "
                "to this version: upgrade the gateway"
            ) from None
        if scheme is WrapScheme.GCM and len(ct) != 1 + IV_SIZE + DEK_SIZE + TAG_SIZE:
            raise TamperedBlob(f"wrapped data key {wrapped.dek_id!r} has the wrong length")
        return scheme, ct[1:]


def _identity(*parts: str) -> bytes:
    return b"".join(len(p.encode()).to_bytes(2, "big") + p.encode() for p in parts)


def _binding(kek_label: str, dek_id: str) -> bytes:
    """Not the version: the binding must survive a rewrap that never sees the value."""
    text = _identity("aggregator/pkcs11-kwp/v1", kek_label, dek_id)
    return hashlib.sha256(text).digest()[:_BINDING_SIZE]


def _aad(kek_label: str, version: int, dek_id: str) -> bytes:
    return _identity("aggregator/pkcs11-gcm/v1", kek_label, str(version), dek_id)
