"""Resolve the client secret or private key a profile refers to, at start-up."""

from __future__ import annotations

import os
from collections.abc import Mapping

from connectors.errors import ProfileError
from connectors.oauth.rfc7523 import PemSigner
from connectors.profiles import BankProfile
from vault import Secret

__all__ = ["load_client_credentials"]


def load_client_credentials(
    profile: BankProfile, environ: Mapping[str, str] | None = None
) -> tuple[Secret | None, PemSigner | None]:
    """Return ``(client_secret, signer)`` for `profile`; at most one is not None.

    A secret comes from the environment variable ``client_secret_env`` (or, for a
    loopback development bank only, ``client_secret_dev_default``); a key from
    ``private_key_pem_env`` or ``private_key_file`` (for a ``dev_private_key``, the file the
    application generated and set in ``private_key_file``). A missing or unreadable one is a
    :class:`ProfileError`, raised at start-up. A vault-held key will arrive as another
    :class:`~connectors.oauth.rfc7523.Signer`, passed to the client directly. The
    ``tls_client_auth`` methods need neither: the transport certificate is the credential
    (:func:`connectors.oauth.rfc8705.bank_ssl_context` loads it).
    """
    env = os.environ if environ is None else environ
    file = str(profile.source)
    if profile.client_auth_method.uses_secret:
        name = profile.client_secret_env
        value = env.get(name) if name else None
        if value:
            return Secret(value), None
        if profile.client_secret_dev_default:
            return Secret(profile.client_secret_dev_default), None
        raise ProfileError(file, "client_secret_env", f"environment variable {name} is not set")
    if profile.client_auth_method.uses_certificate:
        return None, None
    if profile.private_key_pem_env:
        key = "private_key_pem_env"
        pem = env.get(profile.private_key_pem_env)
        if not pem:
            raise ProfileError(
                file, key, f"environment variable {profile.private_key_pem_env} is not set"
            )
        data = pem.encode()
    elif profile.private_key_file is None:
        # The loader requires a key source; only a generated one can be unresolved yet.
        raise ProfileError(file, "dev_private_key", "the development key "
                           f"{profile.dev_private_key!r} has not been generated: the "
                           "application resolves it in its data directory first")
    else:
        key = "private_key_file"
        try:
            data = profile.private_key_file.read_bytes()
        except OSError as exc:
            raise ProfileError(file, key, f"cannot read key file: {exc.strerror}") from None
    try:
        signer = PemSigner.from_pem(
            data, algorithm=profile.signing_alg, key_id=profile.client_key_id
        )
    except ValueError as exc:
        raise ProfileError(file, key, str(exc)) from None
    return None, signer
