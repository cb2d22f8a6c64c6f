"""The sandbox's check of sealed NextGenPSD2 requests (Implementation Guidelines v1.3.x §12).

When :attr:`BerlinConsents.require_signatures` is set, every XS2A request must carry a
``Digest`` equal to the body's, a ``Signature`` (draft-cavage-http-signatures-10,
``rsa-sha256``) over at least ``digest`` and ``x-request-id`` (and ``tpp-redirect-uri``,
``psu-id``, ``psu-corporate-id`` when sent), and the ``TPP-Signature-Certificate`` whose
key verifies it and whose serial number and issuer the ``keyId`` names. Refusals are the
guidelines' ``SIGNATURE_MISSING``, ``SIGNATURE_INVALID`` and ``CERTIFICATE_INVALID``.
The sandbox trusts any certificate: checking the QTSP chain is a real bank's business.
"""

from __future__ import annotations

import base64
import binascii
import re

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from starlette.requests import Request
from starlette.responses import Response

from aggregator.sandbox.berlin_api import tpp_error
from connectors.dialects.berlin_signing import digest_of, signing_string

_PARAM = re.compile(r'(\w+)="([^"]*)"')
_MUST = ("digest", "x-request-id")
_WHEN_SENT = ("psu-id", "psu-corporate-id", "tpp-redirect-uri")


async def seal_refused(request: Request, rid: str | None) -> Response | None:
    """None when the request is sealed correctly; else the bank's 400/401 answer."""
    headers = request.headers
    if not all(h in headers for h in ("digest", "signature", "tpp-signature-certificate")):
        return tpp_error(401, "SIGNATURE_MISSING", "The request is not sealed.", rid)
    if headers["digest"] != digest_of(await request.body()):
        return tpp_error(400, "FORMAT_ERROR", "Digest does not match the body.", rid)
    params = dict(_PARAM.findall(headers["signature"]))
    names = params.get("headers", "").split()
    required = [*_MUST, *(n for n in _WHEN_SENT if n in headers)]
    if params.get("algorithm") != "rsa-sha256" or any(n not in names for n in required) \
            or any(n not in headers for n in names):
        return tpp_error(401, "SIGNATURE_INVALID", "The signature covers too little.", rid)
    try:
        certificate = x509.load_der_x509_certificate(
            base64.b64decode(headers["tpp-signature-certificate"], validate=True))
        signature = base64.b64decode(params.get("signature", ""), validate=True)
    except (ValueError, binascii.Error):
        return tpp_error(401, "CERTIFICATE_INVALID", "Unreadable certificate.", rid)
    key = certificate.public_key()
    expected = f"SN={certificate.serial_number:X},CA={certificate.issuer.rfc4514_string()}"
    if not isinstance(key, rsa.RSAPublicKey) or params.get("keyId") != expected:
        return tpp_error(401, "CERTIFICATE_INVALID", "keyId does not name the certificate.",
                         rid)
    try:
        key.verify(signature, signing_string(dict(headers), names), padding.PKCS1v15(),
                   hashes.SHA256())
    except InvalidSignature:
        return tpp_error(401, "SIGNATURE_INVALID", "The signature does not verify.", rid)
    return None
