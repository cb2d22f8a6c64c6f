"""Holding a grant's token for revocation after the user's data key is destroyed.

Crypto-shredding kills every value sealed under the user's key, including the tokens a
later revocation retry needs. Before shredding, each token is therefore re-encrypted
under a key of the erasure request alone: HMAC-SHA256 of the request id under the
region's pepper (purpose ``revocation_escrow``), so it is as safe as the region's keyed
hashes, never stored, and the same in every process of the region. AES-256-GCM with a
random 96-bit nonce; the AAD names the request and the revocation row, so a blob copied
to another row does not open. The escrow is cleared once the bank confirms revocation
or retries give up; it never holds anything but the token.
"""

from __future__ import annotations

import os

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from aggregator.sealing import KeyedHasher

_CONTEXT = b"aggregator/revocation-escrow/v1"
_NONCE = 12


def _aesgcm(hasher: KeyedHasher, request_id: str) -> AESGCM:
    return AESGCM(hasher.digest("revocation_escrow", request_id))


def _aad(request_id: str, n: int) -> bytes:
    return _CONTEXT + request_id.encode("ascii") + n.to_bytes(4, "big")


def seal_token(hasher: KeyedHasher, request_id: str, n: int, token: str) -> bytes:
    nonce = os.urandom(_NONCE)
    return nonce + _aesgcm(hasher, request_id).encrypt(
        nonce, token.encode("utf-8"), _aad(request_id, n)
    )


def open_token(hasher: KeyedHasher, request_id: str, n: int, blob: bytes) -> str:
    nonce, body = blob[:_NONCE], blob[_NONCE:]
    return _aesgcm(hasher, request_id).decrypt(nonce, body, _aad(request_id, n)).decode("utf-8")
