"""The region's KEK as a HashiCorp Vault / OpenBao Transit key, reached through hvac.

The KEK never leaves Vault: data keys are generated, unwrapped and rewrapped by Transit,
and the key is created ``aes256-gcm96``, not exportable, without plaintext backup, so no
policy mistake can later export it.

Choices, and why:

* **``datakey/wrapped`` then one ``decrypt``, not ``datakey/plaintext``.** Every plaintext
  data key Vault ever releases then comes from ``decrypt/<key>``: the gateway's policy needs
  no path that creates *and* reveals, a provisioning token holding only ``datakey/wrapped``
  never sees a key, the audit log counts plaintext releases on one path, and the stored
  wrapping is proven to open before anyone stores it. The price is one extra round trip when
  a data subject is created (rare); the Envelope caches that plaintext, so the KMS still sees
  one unwrap per DEK per cache period.
* **No ``associated_data``.** OpenBao 2.7 binds ``associated_data`` on ``datakey`` and
  ``decrypt`` for aes256-gcm96 keys, but ``rewrap`` (single and batch) ignores it, so a data
  key bound to its id could only be rotated by decrypting it outside Vault - what rewrap
  exists to avoid. hvac's ``generate_data_key`` and ``rewrap_data`` do not take it either.
  Binding stays with the Envelope (each blob's AAD names its DEK id); the test suite pins
  this upstream behaviour so an upgrade that changes it is noticed.
* **Unwrap and rewrap always use the batch form**, one item or many. OpenBao answers a batch
  ``decrypt`` with any failed item as HTTP 400 whose body still holds the other items'
  plaintext, and hvac copies that body into its exception message. Reading batch answers
  ourselves keeps key material out of every exception and gives per-item errors one path.
* **Only the configuration counts.** No redirects are followed (the token goes only to
  ``url``) and the environment (``VAULT_TOKEN``, proxies, CA bundles) is ignored.

Example::

    provider = TransitProvider(TransitConfig(url="https://vault:8200", key_name="eu",
                                             token=Secret(token)))
    provider.ensure_kek()
    dk = provider.generate_data_key("dek_usr_eu_123")
    assert provider.unwrap(dk.wrapped) == dk.plaintext
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import logging
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import hvac
import hvac.adapters
import hvac.exceptions as hvac_exc
import requests

from vault.config import TransitConfig
from vault.errors import (
    DataKeyDestroyed,
    KekVersionRetired,
    ProviderError,
    ProviderMisconfigured,
    TamperedBlob,
    VaultError,
)
from vault.interfaces import DataKey, KekStatus, WrappedKey
from vault.transit_boundary import (
    answer_data,
    answer_int,
    answer_text,
    batch_results,
    classify,
    map_hvac_errors,
)

__all__ = ["KEY_TYPE", "TransitProvider", "map_hvac_errors"]

log = logging.getLogger(__name__)
T = TypeVar("T")

KEY_TYPE = "aes256-gcm96"
_DATA_KEY_BYTES = 32
_PREFIX = re.compile(rb"vault:v([1-9][0-9]{0,8}):")
_NAME = re.compile(r"[A-Za-z0-9_.-]+")
_MOUNT = re.compile(r"[A-Za-z0-9_.-]+(?:/[A-Za-z0-9_.-]+)*")


class TransitProvider:
    """A :class:`~vault.interfaces.KeyProvider` whose KEK is a Transit key (see module doc).

    Besides the protocol it offers :meth:`unwrap_many` and :meth:`rewrap_many`, one Vault
    round trip for many data keys; a failed item raises, naming its ``dek_id``.
    Authentication is a token, or AppRole: logged in on first use and again once when the
    token expires or Vault answers 403.
    """

    kind = "transit"

    def __init__(self, config: TransitConfig) -> None:
        _validate(config)
        self.kek_id = config.key_name
        self._config = config
        self._mount = config.mount.strip("/")
        self._approle = config.approle_role_id is not None
        session = requests.Session()
        session.trust_env = False
        session.verify = config.verify
        token = config.token.reveal() if config.token is not None else ""
        self._client: Any = hvac.Client(
            url=config.url,
            token=token,
            verify=config.verify,
            timeout=config.timeout,
            namespace=config.namespace,
            session=session,
            allow_redirects=False,
            adapter=_Adapter,
        )
        self._lock = threading.Lock()
        self._generation = 0
        self._token_deadline: float | None = None
        self._min_decrypt: int | None = None
        self._kek_seen = False

    def __repr__(self) -> str:
        return f"TransitProvider(url={_public_url(self._config.url)!r}, key={self.kek_id!r})"

    def ensure_kek(self) -> None:
        def read_or_create(client: Any) -> object:
            try:
                return client.secrets.transit.read_key(name=self.kek_id, mount_point=self._mount)
            except hvac_exc.InvalidPath as exc:
                if exc.errors:  # "no handler for route": the mount is wrong, not the key
                    raise
            log.info("creating transit key %r at mount %r (%s)", self.kek_id, self._mount, KEY_TYPE)
            client.secrets.transit.create_key(
                name=self.kek_id,
                key_type=KEY_TYPE,
                exportable=False,
                allow_plaintext_backup=False,
                mount_point=self._mount,
            )
            return client.secrets.transit.read_key(name=self.kek_id, mount_point=self._mount)

        self._remember(self._verify(answer_data(self._call(read_or_create))))

    def generate_data_key(self, dek_id: str) -> DataKey:
        answer = answer_data(
            self._call(
                lambda c: c.secrets.transit.generate_data_key(
                    name=self.kek_id, key_type="wrapped", mount_point=self._mount
                ),
                subject=f"data key {dek_id!r}",
            )
        )
        ciphertext = answer_text(answer, "ciphertext").encode("ascii")
        version = _version_of(ciphertext, dek_id)
        wrapped = WrappedKey(dek_id, self.kind, self.kek_id, version, ciphertext)
        results = self._batch("decrypt", [wrapped], precheck=False)
        return DataKey(plaintext=_plaintext(results[0], dek_id), wrapped=wrapped)

    def unwrap(self, wrapped: WrappedKey) -> bytes:
        return self.unwrap_many([wrapped])[0]

    def unwrap_many(self, wrapped: Sequence[WrappedKey]) -> list[bytes]:
        results = self._batch("decrypt", wrapped)
        return [_plaintext(r, w.dek_id) for w, r in zip(wrapped, results, strict=True)]

    def rewrap(self, wrapped: WrappedKey) -> WrappedKey:
        return self.rewrap_many([wrapped])[0]

    def rewrap_many(self, wrapped: Sequence[WrappedKey]) -> list[WrappedKey]:
        out = []
        for old, result in zip(wrapped, self._batch("rewrap", wrapped), strict=True):
            ciphertext = answer_text(result, "ciphertext").encode("ascii")
            version = _version_of(ciphertext, old.dek_id)
            out.append(WrappedKey(old.dek_id, self.kind, self.kek_id, version, ciphertext))
        return out

    def rotate(self) -> int:
        name, mount = self.kek_id, self._mount
        data = answer_data(
            self._call(lambda c: c.secrets.transit.rotate_key(name=name, mount_point=mount))
        )
        latest = answer_int(data if "latest_version" in data else self._read(), "latest_version")
        log.info("rotated transit key %r to version %d", name, latest)
        return latest

    def set_min_decryption_version(self, version: int) -> None:
        latest = answer_int(self._read(), "latest_version")
        if not 1 <= version <= latest:
            raise ValueError(f"minimum decryption version must be within 1..{latest}")
        self._call(
            lambda c: c.secrets.transit.update_key_configuration(
                name=self.kek_id, min_decryption_version=version, mount_point=self._mount
            )
        )
        self._min_decrypt = version
        log.info("transit key %r now decrypts from version %d", self.kek_id, version)

    def status(self) -> KekStatus:
        data = self._read()
        self._remember(data)
        latest = answer_int(data, "latest_version")
        oldest = max(1, answer_int(data, "min_available_version"))
        details = {
            "url": _public_url(self._config.url),
            "mount": self._mount,
            "key_name": self.kek_id,
        }
        if self._config.namespace:
            details["namespace"] = self._config.namespace
        return KekStatus(
            provider=self.kind,
            kek_id=self.kek_id,
            latest_version=latest,
            min_decryption_version=answer_int(data, "min_decryption_version"),
            versions=tuple(range(oldest, latest + 1)),
            details=details,
        )

    def close(self) -> None:
        self._client.adapter.close()

    def _read(self) -> Mapping[str, object]:
        name, mount = self.kek_id, self._mount
        return answer_data(
            self._call(lambda c: c.secrets.transit.read_key(name=name, mount_point=mount))
        )

    def _remember(self, data: Mapping[str, object]) -> None:
        self._min_decrypt = answer_int(data, "min_decryption_version")
        self._kek_seen = True

    def _verify(self, data: Mapping[str, object]) -> Mapping[str, object]:
        problems = []
        if data.get("type") != KEY_TYPE:
            problems.append(f"its type is {data.get('type')!r}, not {KEY_TYPE!r}")
        if data.get("exportable") is not False:
            problems.append("it is exportable")
        if data.get("allow_plaintext_backup") is not False:
            problems.append("it allows plaintext backups")
        if data.get("derived") is not False:
            problems.append("it is a derived key")
        if problems:
            raise ProviderMisconfigured(
                f"transit key {self.kek_id!r} at mount {self._mount!r} is refused: "
                f"{', '.join(problems)}. Vault cannot undo these; create a new key and "
                "point `key_name` at it"
            )
        return data

    def _batch(
        self, endpoint: str, wrapped: Sequence[WrappedKey], *, precheck: bool = True
    ) -> list[dict[str, object]]:
        if not wrapped:
            return []
        for item in wrapped:
            self._check(item, precheck=precheck)
        url = f"/v1/{self._mount}/{endpoint}/{self.kek_id}"
        body = {
            "batch_input": [
                {"ciphertext": w.ciphertext.decode("ascii"), "reference": str(i)}
                for i, w in enumerate(wrapped)
            ]
        }
        subject = f"data key {wrapped[0].dek_id!r}"
        if len(wrapped) > 1:
            subject = f"{len(wrapped)} data keys (first {wrapped[0].dek_id!r})"
        results = self._call(
            lambda c: batch_results(c.adapter.post(url, json=body, raise_exception=False)),
            subject=subject,
        )
        if len(results) != len(wrapped):
            raise ProviderError(f"Vault answered {len(results)} items for {len(wrapped)}")
        failures: list[VaultError] = []
        for i, (item, result) in enumerate(zip(wrapped, results, strict=True)):
            if result.get("reference", str(i)) != str(i):
                raise ProviderError("Vault's batch answer is out of order")
            if result.get("error"):
                failures.append(self._item_error(str(result["error"]), item.dek_id))
        if failures:
            raise _combine(failures, len(wrapped), self.kek_id)
        return results

    def _item_error(self, reason: str, dek_id: str) -> VaultError:
        error = classify(
            reason[:200],
            self.kek_id,
            self._mount,
            subject=f"data key {dek_id!r}",
            kek_seen=self._kek_seen,
        )
        if isinstance(error, KekVersionRetired):
            self._min_decrypt = None  # raised by someone else: learn the new floor next time
        return error

    def _check(self, wrapped: WrappedKey, *, precheck: bool) -> None:
        if wrapped.provider != self.kind or wrapped.kek_id != self.kek_id:
            raise DataKeyDestroyed(
                f"data key {wrapped.dek_id!r} is wrapped by {wrapped.provider}:"
                f"{wrapped.kek_id}, not by this provider ({self.kind}:{self.kek_id})"
            )
        version = _version_of(wrapped.ciphertext, wrapped.dek_id)
        if version != wrapped.kek_version:
            raise TamperedBlob(
                f"data key {wrapped.dek_id!r} claims KEK version {wrapped.kek_version} but "
                f"its ciphertext is version {version}"
            )
        if precheck:
            if self._min_decrypt is None:
                self._remember(self._read())
            floor = self._min_decrypt or 1
            if version < floor:
                raise KekVersionRetired(
                    f"data key {wrapped.dek_id!r} is wrapped under version {version} of "
                    f"transit key {self.kek_id!r}, below the minimum decryption version "
                    f"{floor}; rewrap data keys before retiring a version"
                )

    def _call(self, op: Callable[[Any], T], *, subject: str | None = None) -> T:
        with map_hvac_errors(self.kek_id, self._mount, subject=subject, kek_seen=self._kek_seen,
                             address=_public_url(self._config.url)):
            generation = self._authenticate()
            try:
                return op(self._client)
            except hvac_exc.Forbidden:
                if not self._approle:
                    raise
                log.info("Vault refused the AppRole token; logging in again, once")
                self._authenticate(stale=generation)
                return op(self._client)

    def _authenticate(self, stale: int | None = None) -> int:
        if not self._approle:
            return 0
        with self._lock:
            expired = self._token_deadline is not None and time.monotonic() >= self._token_deadline
            if self._generation == 0 or expired or stale == self._generation:
                self._login()
            return self._generation

    def _login(self) -> None:
        cfg = self._config
        assert cfg.approle_secret_id is not None  # _validate() insists on it
        with map_hvac_errors(self.kek_id, self._mount, login=True,
                             address=_public_url(self._config.url)):
            answer = self._client.auth.approle.login(
                role_id=cfg.approle_role_id,
                secret_id=cfg.approle_secret_id.reveal(),
                mount_point=cfg.approle_mount.strip("/"),
            )
        auth = answer.get("auth") if isinstance(answer, dict) else None
        lease = auth.get("lease_duration") if isinstance(auth, dict) else None
        if not isinstance(lease, int):
            raise ProviderError("Vault's AppRole login answer has no lease_duration")
        # Renew a little early, so a call does not start with a token about to lapse.
        self._token_deadline = time.monotonic() + lease * 0.9 if lease > 0 else None
        self._generation += 1
        log.info("logged in to Vault with AppRole at %r; token valid %ds", cfg.approle_mount, lease)


class _Adapter(hvac.adapters.JSONAdapter):  # type: ignore[misc]  # hvac has no types
    """hvac's JSON adapter without the client certificate hvac.Client reads from the
    VAULT_CLIENT_CERT environment variable: settings come from TransitConfig only."""

    def __init__(self, *, cert: object = None, **kwargs: Any) -> None:
        super().__init__(cert=None, **kwargs)


def _validate(config: TransitConfig) -> None:
    parts = urlsplit(config.url)
    if parts.scheme not in ("http", "https"):
        raise ProviderMisconfigured("`url` must be the http(s) URL of the Vault server")
    # The token and every unwrapped data key cross this connection: in clear over http.
    # Plain http only to loopback, where nothing crosses a network (a dev server).
    if parts.scheme == "http" and not _is_loopback(parts.hostname or ""):
        raise ProviderMisconfigured(
            "`url` must use https: plain http is allowed only to a loopback address"
        )
    if not _NAME.fullmatch(config.key_name):
        raise ProviderMisconfigured("`key_name` may hold only letters, digits, '_', '.', '-'")
    for setting, mount in (("mount", config.mount), ("approle_mount", config.approle_mount)):
        if not _MOUNT.fullmatch(mount.strip("/")):
            raise ProviderMisconfigured(f"`{setting}` is not a valid Vault mount path")
    if not config.timeout > 0:
        raise ProviderMisconfigured("`timeout` must be a positive number of seconds")
    approle = config.approle_role_id is not None or config.approle_secret_id is not None
    if config.token is not None and approle:
        raise ProviderMisconfigured("set `token` or the AppRole settings, not both")
    if config.token is None and not approle:
        raise ProviderMisconfigured(
            "no credentials: set `token`, or `approle_role_id` and `approle_secret_id`"
        )
    if config.token is not None and not config.token:
        raise ProviderMisconfigured("`token` is empty")
    if approle and not (config.approle_role_id and config.approle_secret_id):
        raise ProviderMisconfigured("AppRole needs both `approle_role_id` and `approle_secret_id`")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _public_url(url: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


def _combine(failures: list[VaultError], total: int, key: str) -> VaultError:
    if len(failures) == 1:
        return failures[0]
    return type(failures[0])(
        f"{len(failures)} of {total} data keys failed under transit key {key!r}: "
        + "; ".join(str(f) for f in failures)
    )


def _version_of(ciphertext: bytes, dek_id: str) -> int:
    match = _PREFIX.match(ciphertext)
    if match is None or not ciphertext.isascii():
        raise TamperedBlob(f"data key {dek_id!r} is not a Transit ciphertext (no vault:vN: prefix)")
    return int(match.group(1))


def _plaintext(result: Mapping[str, object], dek_id: str) -> bytes:
    try:
        key = base64.b64decode(answer_text(result, "plaintext"), validate=True)
    except binascii.Error as exc:
        raise ProviderError(f"Vault's plaintext for data key {dek_id!r} is not base64") from exc
    if len(key) != _DATA_KEY_BYTES:
        raise TamperedBlob(f"data key {dek_id!r} does not unwrap to a 256-bit key")
    return key
