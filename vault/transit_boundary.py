"""Where hvac and requests end: their exceptions and answers become ours, once.

:func:`map_hvac_errors` converts exceptions (as httpx's ``map_httpcore_exceptions()`` does
for httpcore); the ``answer_*`` helpers turn hvac's untyped JSON into checked values, so
``Any`` stops here. Messages quote only Vault's short error strings and our own names (key,
mount, data key id), never hvac's message: that one may copy a whole response body, and a
batch ``decrypt`` body holds plaintext data keys.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager

import hvac.exceptions as hvac_exc
import requests

from vault.errors import (
    DataKeyDestroyed,
    KekVersionRetired,
    ProviderError,
    ProviderMisconfigured,
    ProviderPermissionDenied,
    ProviderUnavailable,
    TamperedBlob,
    VaultError,
)

_UNAVAILABLE = (
    hvac_exc.VaultDown,
    hvac_exc.InternalServerError,
    hvac_exc.BadGateway,
    hvac_exc.RateLimitExceeded,
    hvac_exc.VaultNotInitialized,
    hvac_exc.UnexpectedError,
    requests.ConnectionError,
    requests.Timeout,
)


@contextmanager
def map_hvac_errors(
    key: str,
    mount: str,
    *,
    subject: str | None = None,
    login: bool = False,
    kek_seen: bool = False,
    address: str | None = None,
) -> Iterator[None]:
    """Raise the vault error for any hvac/requests exception escaping the block.

    ``subject`` names what was asked for (``"data key 'dek_1'"``). ``kek_seen`` says the key
    existed earlier in this process, so its absence now means it was deleted - every data
    key it wrapped is shredded - rather than a wrong ``key_name``. ``login`` marks an
    AppRole login, whose 400 answer means bad credentials. ``address`` (the server's URL)
    is named when the server could not be reached, so the operator knows which one.
    """
    where = f"Vault at {address}" if address else "Vault"
    try:
        yield
    except (hvac_exc.Forbidden, hvac_exc.Unauthorized) as exc:
        raise ProviderPermissionDenied(
            f"Vault refused access to transit key {key!r} ({_reason(exc)}): "
            "check the token or the AppRole's policy"
        ) from exc
    except hvac_exc.InvalidRequest as exc:
        if login:
            raise ProviderPermissionDenied(
                f"AppRole login failed ({_reason(exc)}): check approle_role_id, "
                "approle_secret_id and approle_mount"
            ) from exc
        raise classify(_reason(exc), key, mount, subject=subject, kek_seen=kek_seen) from exc
    except hvac_exc.InvalidPath as exc:
        reason = _reason(exc) if exc.errors else "encryption key not found"
        raise classify(reason, key, mount, subject=subject, kek_seen=kek_seen) from exc
    except requests.exceptions.SSLError as exc:
        raise ProviderMisconfigured(
            "TLS handshake with Vault failed: check `url` and `verify` (CA bundle)"
        ) from exc
    except _UNAVAILABLE as exc:
        raise ProviderUnavailable(
            f"{where} did not serve transit key {key!r} ({type(exc).__name__}); check that "
            "it is up, unsealed and reachable at that address, or retry later"
        ) from exc
    except (hvac_exc.VaultError, requests.RequestException) as exc:
        raise ProviderError(
            f"{where}: request for transit key {key!r} failed ({type(exc).__name__})"
        ) from exc


def classify(
    reason: str, key: str, mount: str, *, subject: str | None = None, kek_seen: bool = False
) -> VaultError:
    """Map one Vault error string - a whole request's or one batch item's - to our tree.

    Vault reports all of these as 400 (or inside a batch answer), so only the text tells a
    retired version from a tampered ciphertext. The strings are OpenBao 2.7's.
    """
    what = subject or "the request"
    low = reason.lower()
    if "too old" in low:
        return KekVersionRetired(
            f"{what} is wrapped under a version of transit key {key!r} below the minimum "
            "decryption version; rewrap data keys before retiring a version"
        )
    if "too new" in low:
        return DataKeyDestroyed(
            f"{what} names a version of transit key {key!r} that does not exist (the key was "
            f"recreated, or Vault restored from an older snapshot) (Vault: {reason})"
        )
    if "no handler for route" in low:
        return ProviderMisconfigured(f"no secrets engine is mounted at {mount!r}: check `mount`")
    if "key not found" in low or "no existing key" in low:
        if kek_seen and subject is not None:
            return DataKeyDestroyed(
                f"transit key {key!r} was deleted, so {what} can never be unwrapped"
            )
        return ProviderMisconfigured(
            f"transit key {key!r} does not exist at mount {mount!r}: check `key_name` "
            "and `mount`, or run ensure_kek()"
        )
    if "authentication failed" in low or "invalid ciphertext" in low or "decode" in low:
        return TamperedBlob(
            f"{what} does not open under transit key {key!r}: its wrapped ciphertext was "
            f"altered or belongs to another key (Vault: {reason})"
        )
    return ProviderError(f"Vault rejected the request for transit key {key!r}: {reason}")


def batch_results(answer: object) -> list[dict[str, object]]:
    """The items of a batch answer, read without letting hvac raise on it.

    OpenBao answers a batch with any failed item as HTTP 400 whose body still carries the
    other items' results (plaintext, for ``decrypt``); hvac would copy that body into its
    exception. Call with ``raise_exception=False`` and hand the answer here: per-item
    errors come back as items, other failures raise a body-less hvac exception for
    :func:`map_hvac_errors`.
    """
    if isinstance(answer, requests.Response):
        try:
            body: object = answer.json()
        except ValueError:
            body = None
        if answer.status_code != 400 or "batch_results" not in answer_data(body):
            errors = body.get("errors") if isinstance(body, dict) else None
            raise hvac_exc.VaultError.from_status(
                answer.status_code,
                errors=[str(e) for e in errors] if isinstance(errors, list) and errors else None,
                method="post",
                url=answer.url,
            )
        answer = body
    results = answer_data(answer).get("batch_results")
    if not isinstance(results, list) or not all(isinstance(r, dict) for r in results):
        raise ProviderError("Vault's batch answer has no batch_results")
    return results


def answer_data(answer: object) -> dict[str, object]:
    """The ``data`` object of a Vault answer; empty for a 204 or anything unexpected."""
    data = answer.get("data") if isinstance(answer, dict) else None
    return data if isinstance(data, dict) else {}


def answer_int(data: Mapping[str, object], name: str) -> int:
    value = data.get(name)
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise ProviderError(f"Vault's answer has no integer {name!r}")


def answer_text(data: Mapping[str, object], name: str) -> str:
    value = data.get(name)
    if isinstance(value, str) and value:
        return value
    raise ProviderError(f"Vault's answer has no {name!r}")


def _reason(exc: hvac_exc.VaultError) -> str:
    errors = exc.errors if isinstance(exc.errors, list) else []
    text = "; ".join(str(e) for e in errors) or type(exc).__name__
    return " ".join(text.split())[:200]
