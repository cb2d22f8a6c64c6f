"""The PKCS#11 boundary: every python-pkcs11 call of :mod:`vault.pkcs11` goes through here.

It owns the one logged-in session a process keeps per token, the mechanism probe, the
few token operations the provider needs, and :func:`map_pkcs11_errors`, the one place a
python-pkcs11 exception becomes a :class:`~vault.errors.VaultError`.

Measured on SoftHSM2 2.6.1 (Debian) through python-pkcs11 0.10.1, AES-256 KEK:

- ``CKM_AES_KEY_WRAP_PAD`` (0x210A) wraps and unwraps with a template; its output is
  RFC 5649 only when the key length is a multiple of 8 (we wrap 48 bytes). ``CKM_AES_KEY_WRAP``
  (RFC 3394) works; ``CKM_AES_KEY_WRAP_KWP`` and ``_PKCS7`` are ``CKR_MECHANISM_INVALID``.
  ``CKM_AES_GCM`` encrypts and decrypts with AAD (output ciphertext ‖ tag).
- ``C_GetMechanismInfo`` flags for ``CKM_AES_GCM`` are garbage: :func:`probe` tries the
  mechanisms on a throw-away key instead and compares with ``cryptography``'s output.
- A failed unwrap or GCM tag check answers ``CKR_GENERAL_ERROR``.
- Login state belongs to the process, not the session: a second ``C_Login`` answers
  ``CKR_USER_ALREADY_LOGGED_IN`` without looking at the PIN. Hence one logged-in session
  per process and token, shared by every provider on it (:class:`TokenLogin`).
- A data object's ``CKA_VALUE`` is read-only: it is replaced, not updated.
- The KEK (sensitive, never extractable, not modifiable) refuses ``CKA_VALUE`` reads
  (``CKR_ATTRIBUTE_SENSITIVE``), wrapping by another key (``CKR_KEY_UNEXTRACTABLE``) and
  attribute changes (``CKR_ACTION_PROHIBITED``, which python-pkcs11 leaves unmapped).
"""

from __future__ import annotations

import contextlib
import enum
import os
import threading
from collections.abc import Callable, Iterator
from typing import TypeVar

import pkcs11
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.keywrap import aes_key_wrap_with_padding
from pkcs11 import Attribute, KeyType, Mechanism, MechanismFlag, ObjectClass
from pkcs11 import exceptions as p11

from vault.config import Pkcs11Config
from vault.errors import (
    ProviderMisconfigured,
    ProviderPermissionDenied,
    ProviderUnavailable,
    TamperedBlob,
)
from vault.interfaces import WrappedKey
from vault.secret import Secret

DEK_SIZE, IV_SIZE, TAG_SIZE, PROBE_SIZE = 32, 12, 16, 48


class WrapScheme(enum.IntEnum):
    """How a data key was wrapped; the value is the first byte of its stored ciphertext."""

    KWP = 0x01  # CKM_AES_KEY_WRAP_PAD of dek ‖ binding; rewrap never reads the value
    GCM = 0x02  # CKM_AES_GCM encryption in the token, for tokens without KWP


_T = TypeVar("_T")
_PIN = (p11.PinIncorrect, p11.PinInvalid, p11.PinLenRange, p11.PinLocked, p11.PinExpired)
_NO_TOKEN = (p11.NoSuchToken, p11.TokenNotRecognised, p11.UserPinNotInitialized)
_LOGGED_IN = (p11.UserAlreadyLoggedIn, p11.AnotherUserAlreadyLoggedIn)
_GONE = (p11.TokenNotPresent, p11.DeviceRemoved, p11.DeviceError, p11.DeviceMemory,
         p11.SessionClosed, p11.SessionHandleInvalid, p11.SessionCount, p11.HostMemory,
         p11.UserNotLoggedIn, p11.FunctionCancelled, p11.ObjectHandleInvalid,
         p11.KeyHandleInvalid)
_DOES_NOT_OPEN = (p11.GeneralError, p11.WrappedKeyInvalid, p11.WrappedKeyLenRange,
                  p11.EncryptedDataInvalid, p11.EncryptedDataLenRange)
_UNSUPPORTED = (p11.MechanismInvalid, p11.MechanismParamInvalid, p11.FunctionNotSupported,
                p11.ArgumentsBad, p11.KeyTypeInconsistent, p11.KeySizeRange,
                p11.KeyNotWrappable, p11.WrappingKeyTypeInconsistent, p11.TemplateInconsistent,
                p11.TemplateIncomplete, p11.AttributeValueInvalid, p11.DataLenRange,
                *_DOES_NOT_OPEN)


@contextlib.contextmanager
def map_pkcs11_errors(config: Pkcs11Config, *, opening: WrappedKey | None = None) -> Iterator[None]:
    """Turn python-pkcs11 exceptions into vault errors, once, at the boundary.

    ``opening`` is the wrapped key being opened: only then do the token's "cannot decrypt"
    answers mean :class:`TamperedBlob`. Messages never hold the PIN or a key value.
    """
    token = f"PKCS#11 token {config.token_label!r}"
    try:
        yield
    except _PIN as exc:
        raise ProviderPermissionDenied(
            f"{token} refused the PIN ({type(exc).__name__}): check setting `pin`; "
            "a locked PIN needs the token's security officer"
        ) from exc
    except _NO_TOKEN as exc:
        raise ProviderMisconfigured(
            f"module {str(config.module)!r} has no initialised {token}: check setting "
            "`token_label`"
        ) from exc
    except _LOGGED_IN as exc:
        raise ProviderMisconfigured(
            f"{token} is logged in by other code in this process; let Pkcs11Provider log in"
        ) from exc
    except _GONE as exc:
        raise ProviderUnavailable(f"{token} is unavailable ({type(exc).__name__}); retry") from exc
    except _DOES_NOT_OPEN as exc:
        if opening is None:
            raise ProviderUnavailable(f"{token} failed ({type(exc).__name__}); retry") from exc
        raise TamperedBlob(
            f"wrapped data key {opening.dek_id!r} does not open under KEK "
            f"{opening.kek_id!r} v{opening.kek_version}: it was altered or moved"
        ) from exc
    except p11.PKCS11Error as exc:
        if type(exc) is p11.PKCS11Error:  # the module did not load, or an unmapped CKR_*
            raise ProviderMisconfigured(
                f"{token}: {exc} (if the library did not load, check setting `module`)"
            ) from exc
        raise ProviderMisconfigured(
            f"{token} refused an operation on KEK {config.kek_label!r} ({type(exc).__name__}): "
            "check the token's policy and the KEK's attributes"
        ) from exc


class TokenLogin:
    """The one logged-in session this process holds on one token; its providers share it.

    ``lock`` serialises every call into the token: python-pkcs11 passes NULL to
    C_Initialize, which promises the library no concurrent calls, and SoftHSM2 2.6.1
    races when objects are created and looked up at once. The session is opened on first
    use and again in a forked child, which must not touch its parent's; each opening
    probes the mechanisms afresh.
    """

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.scheme: WrapScheme | None = None  # what the probe found when the session opened
        self._pid = 0
        self._session: pkcs11.Session | None = None
        self._pin: Secret | None = None
        self._users: set[int] = set()

    def session(self, config: Pkcs11Config, user: object) -> pkcs11.Session:
        """Call with ``lock`` held, inside :func:`map_pkcs11_errors`."""
        if self._pid != os.getpid():
            self._pid, self._session, self._pin, self._users = os.getpid(), None, None, set()
        if self._session is None:
            self._session = _token(config).open(rw=True, user_pin=config.pin.reveal())
            self._pin, self.scheme = config.pin, None
        elif self._pin != config.pin:  # C_Login would not even look at this PIN
            raise ProviderPermissionDenied(
                f"PKCS#11 token {config.token_label!r} is logged in in this process with "
                "another PIN: check setting `pin`"
            )
        self._users.add(id(user))
        if self.scheme is None:
            self.scheme = probe(self._session)
        return self._session

    def release(self, user: object) -> None:
        with self.lock:
            if self._pid == os.getpid():
                self._users.discard(id(user))
                if not self._users:
                    self.reset()

    def reset(self) -> None:
        session, self._session, self._pin = self._session, None, None
        if session is not None and self._pid == os.getpid():
            with contextlib.suppress(p11.PKCS11Error):
                session.close()  # logs out too, or the next login meets "already logged in"


_LOGINS: dict[tuple[str, str], TokenLogin] = {}
_LIB_PIDS: dict[str, int] = {}
_REGISTRY = threading.Lock()


def login_for(config: Pkcs11Config) -> TokenLogin:
    with _REGISTRY:
        return _LOGINS.setdefault((str(config.module), config.token_label), TokenLogin())


def _token(config: Pkcs11Config) -> pkcs11.Token:
    if not config.module.is_file():
        raise ProviderMisconfigured(
            f"PKCS#11 module {str(config.module)!r} is not a file: check setting `module`"
        )
    so, pid = str(config.module), os.getpid()
    with _REGISTRY:
        lib = pkcs11.lib(so)
        if _LIB_PIDS.setdefault(so, pid) != pid:
            # A forked child inherits its parent's library state; PKCS#11 wants the child
            # to initialise its own (SoftHSM2 answers "already initialised" otherwise).
            with contextlib.suppress(p11.PKCS11Error):
                lib.finalize()
            lib.initialize()
            _LIB_PIDS[so] = pid
    return lib.get_token(token_label=config.token_label)


_HELD_OVER_FORK: list[TokenLogin] = []


def _hold_locks_over_fork() -> None:
    # No token call may be in flight when the process forks: the child would inherit a
    # lock, or a mutex inside the library, that nobody is left to release.
    _HELD_OVER_FORK[:] = list(_LOGINS.values())
    for login in _HELD_OVER_FORK:
        login.lock.acquire()
    _REGISTRY.acquire()


def _release_locks_after_fork() -> None:
    _REGISTRY.release()
    for login in _HELD_OVER_FORK:
        login.lock.release()
    _HELD_OVER_FORK.clear()


os.register_at_fork(
    before=_hold_locks_over_fork,
    after_in_parent=_release_locks_after_fork,
    after_in_child=_release_locks_after_fork,
)


# -- token objects -------------------------------------------------------------


def secret_keys(session: pkcs11.Session, label: str | None = None) -> list[pkcs11.Object]:
    query: dict[Attribute, object] = {Attribute.CLASS: ObjectClass.SECRET_KEY}
    query[Attribute.TOKEN] = True
    if label is not None:
        query[Attribute.LABEL] = label
    return list(session.get_objects(query))


def label_of(obj: pkcs11.Object) -> str:
    return str(obj[Attribute.LABEL])


def generate_kek(session: pkcs11.Session, label: str, *, encrypt: bool) -> None:
    capabilities = MechanismFlag.WRAP | MechanismFlag.UNWRAP
    if encrypt:
        capabilities |= MechanismFlag.ENCRYPT | MechanismFlag.DECRYPT
    session.generate_key(
        KeyType.AES, 256, label=label, store=True, capabilities=capabilities,
        mechanism=Mechanism.AES_KEY_GEN,
        template={Attribute.TOKEN: True, Attribute.PRIVATE: True, Attribute.SENSITIVE: True,
                  Attribute.EXTRACTABLE: False, Attribute.MODIFIABLE: False},
    )


#: What a KEK must be, attribute by attribute (PKCS#11 v2.40 §4.7, §10.10): an AES-256
#: key whose value has never been readable or exportable, in or out of the token.
_STRONG_KEK: tuple[tuple[Attribute, object, str], ...] = (
    (Attribute.KEY_TYPE, KeyType.AES, "an AES key"),
    (Attribute.VALUE_LEN, 32, "256 bits long"),
    (Attribute.SENSITIVE, True, "CKA_SENSITIVE"),
    (Attribute.EXTRACTABLE, False, "not CKA_EXTRACTABLE"),
    (Attribute.ALWAYS_SENSITIVE, True, "CKA_ALWAYS_SENSITIVE"),
    (Attribute.NEVER_EXTRACTABLE, True, "CKA_NEVER_EXTRACTABLE"),
)


def kek_weaknesses(obj: pkcs11.Object) -> list[str]:
    """What an existing KEK object lacks of :data:`_STRONG_KEK`; empty if nothing.

    A key someone created by hand, imported from outside (so not ALWAYS_SENSITIVE) or left
    extractable could be read or wrapped out of the token, and every data key with it.
    """
    missing = []
    for attribute, wanted, name in _STRONG_KEK:
        try:
            value = obj[attribute]
        except pkcs11.exceptions.AttributeTypeInvalid:
            value = None
        if value != wanted:
            missing.append(name)
    return missing


def read_data(session: pkcs11.Session, label: str) -> list[bytes]:
    query = {Attribute.CLASS: ObjectClass.DATA, Attribute.TOKEN: True, Attribute.LABEL: label}
    return [bytes(obj[Attribute.VALUE]) for obj in session.get_objects(query)]


def replace_data(session: pkcs11.Session, label: str, value: bytes) -> None:
    """Create the new object before destroying the old, so a reader never sees none."""
    query = {Attribute.CLASS: ObjectClass.DATA, Attribute.TOKEN: True, Attribute.LABEL: label}
    old = list(session.get_objects(query))
    session.create_object({**query, Attribute.PRIVATE: True, Attribute.VALUE: value,
                           Attribute.APPLICATION: "aggregator"})
    for obj in old:
        obj.destroy()


# -- wrapping --------------------------------------------------------------------
# Several KEKs may share a version label (processes that created it at once): wrapping
# uses the first, opening tries each.


def kwp_wrap(session: pkcs11.Session, kek: pkcs11.Object, value: bytes) -> bytes:
    """Import ``value`` as a session object, wrap it, destroy it."""
    key = _session_key(session, value)
    try:
        return _kwp_wrap(kek, key)
    finally:
        key.destroy()


def kwp_unwrap(keks: list[pkcs11.Object], wrapped: bytes) -> bytes:
    def attempt(kek: pkcs11.Object) -> bytes:
        return _read_and_destroy(_kwp_unwrap(kek, wrapped, readable=True))

    return _first_that_opens(keks, attempt)


def kwp_rewrap(old: list[pkcs11.Object], wrapped: bytes, new: pkcs11.Object) -> bytes:
    """Unwrap into a sensitive session object and wrap that: the value never leaves."""
    key = _first_that_opens(old, lambda kek: _kwp_unwrap(kek, wrapped, readable=False))
    try:
        return _kwp_wrap(new, key)
    finally:
        key.destroy()


def gcm_encrypt(kek: pkcs11.Object, plaintext: bytes, iv: bytes, aad: bytes) -> bytes:
    encrypter = _capable(kek, pkcs11.EncryptMixin, "CKA_ENCRYPT")
    param = pkcs11.GCMParams(iv, aad, TAG_SIZE * 8)
    out = encrypter.encrypt(plaintext, mechanism=Mechanism.AES_GCM, mechanism_param=param)
    assert isinstance(out, bytes)
    return out


def gcm_decrypt(keks: list[pkcs11.Object], iv: bytes, sealed: bytes, aad: bytes) -> bytes:
    return _first_that_opens(keks, lambda k: _gcm_decrypt(k, iv, sealed, aad))


def _first_that_opens(keks: list[pkcs11.Object], attempt: Callable[[pkcs11.Object], _T]) -> _T:
    for kek in keks[:-1]:
        with contextlib.suppress(*_DOES_NOT_OPEN):
            return attempt(kek)
    return attempt(keks[-1])


def _session_key(session: pkcs11.Session, value: bytes, *, kek: bool = False) -> pkcs11.SecretKey:
    """A data key to wrap (extractable, usable for nothing), or the probe's stand-in KEK."""
    key = session.create_object({
        Attribute.CLASS: ObjectClass.SECRET_KEY, Attribute.TOKEN: False,
        Attribute.KEY_TYPE: KeyType.AES if kek else KeyType.GENERIC_SECRET,
        Attribute.PRIVATE: True, Attribute.SENSITIVE: True, Attribute.EXTRACTABLE: not kek,
        Attribute.VALUE: value, Attribute.WRAP: kek, Attribute.UNWRAP: kek,
        Attribute.ENCRYPT: kek, Attribute.DECRYPT: kek,
    })
    assert isinstance(key, pkcs11.SecretKey)
    return key


def _kwp_wrap(kek: pkcs11.Object, key: pkcs11.SecretKey) -> bytes:
    wrapper = _capable(kek, pkcs11.WrapMixin, "CKA_WRAP")
    return wrapper.wrap_key(key, mechanism=Mechanism.AES_KEY_WRAP_PAD)


def _kwp_unwrap(kek: pkcs11.Object, wrapped: bytes, *, readable: bool) -> pkcs11.SecretKey:
    """A session object: readable (to return the value) or sensitive (to wrap it again)."""
    key = _capable(kek, pkcs11.UnwrapMixin, "CKA_UNWRAP").unwrap_key(
        ObjectClass.SECRET_KEY, KeyType.GENERIC_SECRET, wrapped,
        mechanism=Mechanism.AES_KEY_WRAP_PAD, store=False, capabilities=MechanismFlag(0),
        template={Attribute.TOKEN: False, Attribute.PRIVATE: True,
                  Attribute.SENSITIVE: not readable, Attribute.EXTRACTABLE: True},
    )
    assert isinstance(key, pkcs11.SecretKey)
    return key


def _read_and_destroy(key: pkcs11.SecretKey) -> bytes:
    try:
        value = key[Attribute.VALUE]
    finally:
        key.destroy()
    assert isinstance(value, bytes)
    return value


def _gcm_decrypt(kek: pkcs11.Object, iv: bytes, sealed: bytes, aad: bytes) -> bytes:
    decrypter = _capable(kek, pkcs11.DecryptMixin, "CKA_DECRYPT")
    param = pkcs11.GCMParams(iv, aad, TAG_SIZE * 8)
    out = decrypter.decrypt(sealed, mechanism=Mechanism.AES_GCM, mechanism_param=param)
    assert isinstance(out, bytes)
    return out


def _capable(kek: pkcs11.Object, kind: type[_T], attribute: str) -> _T:
    # python-pkcs11 gives an object the methods its CKA_WRAP/CKA_ENCRYPT/... allow.
    if not isinstance(kek, kind):
        raise ProviderMisconfigured(
            f"KEK {label_of(kek)!r} lacks {attribute}: it was not made by this gateway"
        )
    return kek


def probe(session: pkcs11.Session) -> WrapScheme:
    """Pick the scheme by trying it on a throw-away key whose value we know.

    Mechanism flags lie on SoftHSM2, and a round trip alone would accept a vendor's
    non-standard padding: the output must equal ``cryptography``'s RFC 5649 / GCM.
    """
    value, data, iv = os.urandom(32), os.urandom(PROBE_SIZE), os.urandom(IV_SIZE)
    kek = _session_key(session, value, kek=True)
    try:
        with contextlib.suppress(*_UNSUPPORTED):
            wrapped = kwp_wrap(session, kek, data)
            if wrapped == aes_key_wrap_with_padding(value, data) and data == kwp_unwrap(
                [kek], wrapped
            ):
                return WrapScheme.KWP
        with contextlib.suppress(*_UNSUPPORTED):
            sealed = gcm_encrypt(kek, data, iv, b"probe")
            if sealed == AESGCM(value).encrypt(iv, data, b"probe") and data == gcm_decrypt(
                [kek], iv, sealed, b"probe"
            ):
                return WrapScheme.GCM
    finally:
        kek.destroy()
    raise ProviderMisconfigured(
        "the PKCS#11 token offers neither CKM_AES_KEY_WRAP_PAD (RFC 5649) nor CKM_AES_GCM"
    )
