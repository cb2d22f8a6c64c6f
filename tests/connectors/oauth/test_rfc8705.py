"""Mutual TLS to a bank (RFC 8705) against a real TLS server on 127.0.0.1 that requires a
client certificate, with throw-away CAs made here (trustme): the right certificate works
for PAR, token, refresh, revocation and the account API, through the §5 aliases; a
certificate from another CA, or none, is refused in the handshake."""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import trustme

from connectors import (
    BankOAuthClient,
    BankProfile,
    BankUnavailable,
    EgressPolicy,
    ProfileError,
    Severity,
    bank_ssl_context,
    egress_client,
    fapi2_readiness,
    get_dialect,
    load_profiles,
)

HOST = "bank.test"  # resolved to 127.0.0.1 by the test resolver; the name TLS verifies
POLICY = EgressPolicy.development()  # the bank listens on loopback


async def resolve(host: str, port: int) -> Sequence[str]:
    assert host == HOST
    return ["127.0.0.1"]


@dataclass
class MtlsBank:
    """Answers discovery, PAR, token, revocation and accounts; records who called what."""

    port: int = 0
    calls: list[tuple[str, str, str | None]] = field(default_factory=list)  # path, body, CN
    handshakes_refused: int = 0

    @property
    def issuer(self) -> str:
        return f"https://{HOST}:{self.port}"

    def metadata(self) -> dict[str, object]:
        base = self.issuer
        return {
            "issuer": base, "authorization_endpoint": f"{base}/authorize",
            "token_endpoint": f"{base}/token", "revocation_endpoint": f"{base}/revoke",
            "pushed_authorization_request_endpoint": f"{base}/par",
            "code_challenge_methods_supported": ["S256"],
            "token_endpoint_auth_methods_supported": ["tls_client_auth"],
            "revocation_endpoint_auth_methods_supported": ["tls_client_auth"],
            "tls_client_certificate_bound_access_tokens": True,
            "mtls_endpoint_aliases": {
                "token_endpoint": f"{base}/mtls/token",
                "revocation_endpoint": f"{base}/mtls/revoke",
                "pushed_authorization_request_endpoint": f"{base}/mtls/par",
            },
        }

    def answer(self, path: str) -> tuple[int, object]:
        if path == "/.well-known/oauth-authorization-server":
            return 200, self.metadata()
        if path == "/mtls/par":
            return 201, {"request_uri": "urn:example:par:1", "expires_in": 60}
        if path == "/mtls/token":
            return 200, {"access_token": "at-1", "token_type": "Bearer", "expires_in": 300,
                         "refresh_token": "rt-1"}
        if path == "/mtls/revoke":
            return 200, {}
        if path.startswith("/open-banking/v3.1/aisp/accounts"):
            return 200, {"Data": {"Account": []}, "Links": {}, "Meta": {}}
        return 404, {"error": "not_found"}

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            lines = head.decode("latin-1").split("\r\n")
            headers = {k.strip().lower(): v.strip()
                       for k, v in (ln.split(":", 1) for ln in lines[1:] if ":" in ln)}
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            cert = writer.get_extra_info("peercert") or {}
            subject = dict(pair[0] for pair in cert.get("subject", ()))
            path = lines[0].split()[1]
            self.calls.append((path, body.decode(), subject.get("commonName")))
            status, answer = self.answer(path.split("?")[0])
            data = json.dumps(answer).encode()
            writer.write(b"HTTP/1.1 %d X\r\nconnection: close\r\ncontent-type: application/json\r\n"
                         b"content-length: %d\r\n\r\n" % (status, len(data)) + data)
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError, TimeoutError):
            self.handshakes_refused += 1
        finally:
            writer.close()


@dataclass
class Pki:
    bank_ca: trustme.CA
    client_ca: trustme.CA
    other_ca: trustme.CA
    directory: Path

    def write_client(self, name: str, ca: trustme.CA) -> tuple[Path, Path]:
        issued = ca.issue_cert("gateway-client@example.test", common_name=name)
        cert, key = self.directory / f"{name}.crt", self.directory / f"{name}.key"
        issued.cert_chain_pems[0].write_to_path(str(cert))
        issued.private_key_pem.write_to_path(str(key))
        key.chmod(0o600)
        return cert, key


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    pki = Pki(trustme.CA(), trustme.CA(), trustme.CA(), tmp_path)
    pki.bank_ca.cert_pem.write_to_path(str(tmp_path / "bank-ca.pem"))
    return pki


@pytest.fixture
async def bank(pki: Pki) -> AsyncIterator[MtlsBank]:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    pki.bank_ca.issue_cert(HOST).configure_cert(context)
    pki.client_ca.configure_trust(context)
    context.verify_mode = ssl.CERT_REQUIRED  # RFC 8705 §2: no certificate, no client
    found = MtlsBank()
    server = await asyncio.start_server(found.handle, "127.0.0.1", 0, ssl=context)
    found.port = server.sockets[0].getsockname()[1]
    yield found
    server.close()
    await server.wait_closed()


def write_profile(
    pki: Pki, bank: MtlsBank, cert: Path, key: Path, **extra: str | None
) -> BankProfile:
    directory = pki.directory / "banks"
    directory.mkdir(exist_ok=True)
    lines = {
        "id": '"fapi-bank"', "display_name": '"FAPI Bank"', "country": '"GB"',
        "region": '"eu"', "issuer": f'"{bank.issuer}"', "scopes": '"accounts"',
        "client_id": '"gateway-client"', "client_auth_method": '"tls_client_auth"',
        "use_par": "true", "tls_client_cert_file": f'"{cert}"',
        "tls_client_key_file": f'"{key}"', "tls_ca_file": '"../bank-ca.pem"', **extra,
    }
    text = "".join(f"{k} = {v}\n" for k, v in lines.items() if v is not None)
    text += '[api]\ndialect = "obie"\nbase_url = "/open-banking/v3.1/aisp"\n'
    (directory / "fapi.toml").write_text(text)
    return load_profiles([directory], include_builtin=False)["fapi-bank"]


async def test_every_call_presents_the_certificate_and_uses_the_mtls_aliases(
    pki: Pki, bank: MtlsBank,
) -> None:
    profile = write_profile(pki, bank, *pki.write_client("gateway", pki.client_ca))
    async with egress_client(POLICY, ssl_context=bank_ssl_context(profile),
                             resolver=resolve) as http:
        client = BankOAuthClient.from_environment(profile, http, environ={})
        pending, url = await client.start_authorization("https://gw.example/callback")
        assert "request_uri=urn%3Aexample%3Apar%3A1" in url
        tokens = await client.exchange_code(pending, "the-code")
        tokens = await client.refresh(tokens.refresh_token or "")
        accounts = await get_dialect("obie")(http, profile.api.base_url, "at-1").accounts()
        await client.revoke(tokens.refresh_token or "", "refresh_token")
    assert accounts == []
    paths = [path.split("?")[0] for path, _, _ in bank.calls]
    assert paths == ["/.well-known/oauth-authorization-server", "/mtls/par", "/mtls/token",
                     "/mtls/token", "/open-banking/v3.1/aisp/accounts", "/mtls/revoke"]
    assert {cn for _, _, cn in bank.calls} == {"gateway"}
    for path, body, _ in bank.calls:
        if path.startswith("/mtls/"):  # RFC 8705 §2: client_id once, and no secret at all
            assert body.count("client_id=gateway-client") == 1, path
            assert "client_secret" not in body
            assert "client_assertion" not in body


@pytest.mark.parametrize("which", ["other CA", "no certificate"])
async def test_a_certificate_from_another_ca_or_none_is_refused_in_the_handshake(
    pki: Pki, bank: MtlsBank, which: str,
) -> None:
    profile = write_profile(pki, bank, *pki.write_client("impostor", pki.other_ca))
    context = bank_ssl_context(profile)
    if which == "no certificate":
        context = ssl.create_default_context(cafile=str(pki.directory / "bank-ca.pem"))
    async with egress_client(POLICY, ssl_context=context, resolver=resolve) as http:
        client = BankOAuthClient.from_environment(profile, http, environ={})
        with pytest.raises(BankUnavailable):
            await client.metadata()
    assert bank.calls == []  # not one request got past the handshake


async def test_without_aliases_the_ordinary_endpoints_are_used(
    pki: Pki, bank: MtlsBank, monkeypatch: pytest.MonkeyPatch,
) -> None:
    plain = bank.metadata()
    del plain["mtls_endpoint_aliases"]
    monkeypatch.setattr(bank, "metadata", lambda: plain)
    profile = write_profile(pki, bank, *pki.write_client("gateway", pki.client_ca))
    async with egress_client(POLICY, ssl_context=bank_ssl_context(profile),
                             resolver=resolve) as http:
        client = BankOAuthClient.from_environment(profile, http, environ={})
        metadata = await client.metadata()
    assert metadata.token_endpoint == f"{bank.issuer}/token"
    assert metadata.pushed_authorization_request_endpoint == f"{bank.issuer}/par"


def test_a_group_readable_key_or_a_broken_certificate_stops_start_up_naming_the_file(
    pki: Pki, bank: MtlsBank,
) -> None:
    cert, key = pki.write_client("gateway", pki.client_ca)
    key.chmod(0o644)
    profile = write_profile(pki, bank, cert, key)
    with pytest.raises(ProfileError, match=r"tls_client_key_file: .*gateway\.key.*0644"):
        bank_ssl_context(profile)
    key.chmod(0o600)
    cert.write_text("not a certificate\n")
    with pytest.raises(ProfileError, match=r"gateway\.crt"):
        bank_ssl_context(write_profile(pki, bank, cert, key))


def test_profile_rules_for_the_certificate_methods(pki: Pki, bank: MtlsBank) -> None:
    cert, key = pki.write_client("gateway", pki.client_ca)
    with pytest.raises(ProfileError, match="tls_client_cert_file: required by tls_client_auth"):
        write_profile(pki, bank, cert, key, tls_client_cert_file=None, tls_client_key_file=None)
    with pytest.raises(ProfileError, match="client_secret_env: not used with tls_client_auth"):
        write_profile(pki, bank, cert, key, client_secret_env='"SECRET"')
    with pytest.raises(ProfileError, match="no such file"):
        write_profile(pki, bank, cert, key, tls_client_key_file='"missing.key"')
    profile = write_profile(pki, bank, cert, key,
                            client_auth_method='"self_signed_tls_client_auth"')
    assert profile.client_auth_method.uses_certificate
    assert profile.mutual_tls


async def test_sender_constraint_mtls_is_fapi2_ready_with_certificate_bound_tokens(
    pki: Pki, bank: MtlsBank,
) -> None:
    profile = write_profile(pki, bank, *pki.write_client("gateway", pki.client_ca),
                            sender_constraint='"mtls"')
    async with egress_client(POLICY, ssl_context=bank_ssl_context(profile),
                             resolver=resolve) as http:
        client = BankOAuthClient.from_environment(profile, http, environ={})
        metadata = await client.metadata()
        pending, _ = await client.start_authorization("https://gw.example/callback")
        tokens = await client.exchange_code(pending, "the-code")
    assert pending.dpop_key is None  # the certificate binds the tokens, not a DPoP key
    assert tokens.token_type == "Bearer"
    findings = {f.message: f.severity for f in fapi2_readiness(profile, metadata)}
    assert findings["certificate-bound tokens (RFC 8705)"] is Severity.INFO
    assert findings["client authentication tls_client_auth, offered by the bank"] \
        is Severity.INFO
