"""The guarded transport over real 127.0.0.1 sockets: resolve once, check, connect to it."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import httpx
import pytest

from connectors import (
    EgressPolicy,
    EgressRefused,
    ResponseTooLarge,
    check_destination,
    egress_client,
)
from tests.connectors.egress.conftest import ServerFactory

STRICT = EgressPolicy()
DEV = EgressPolicy.development()
PUBLIC = "93.184.216.34"  # a global unicast address; never connected to in these tests


class RebindingResolver:
    """A DNS server under an attacker's control: a public answer first, loopback next."""

    def __init__(self, *answers: Sequence[str]) -> None:
        self.answers = list(answers)
        self.asked: list[str] = []

    async def __call__(self, host: str, port: int) -> Sequence[str]:
        self.asked.append(host)
        return self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]


async def test_loopback_is_refused_before_any_connection_unless_development_opts_in(
    serve: ServerFactory,
) -> None:
    server = await serve()
    url = f"http://127.0.0.1:{server.port}/"
    async with egress_client(STRICT) as http:
        with pytest.raises(EgressRefused, match="allow_http_loopback"):
            await http.get(url)
    assert server.connections == 0
    async with egress_client(DEV) as http:
        assert (await http.get(url)).status_code == 200
    assert server.connections == 1


@pytest.mark.parametrize("spelling", ["2130706433", "0x7f.1", "127.1", "[::ffff:127.0.0.1]"])
async def test_odd_loopback_spellings_reach_loopback_so_they_are_judged_as_loopback(
    serve: ServerFactory, spelling: str,
) -> None:
    server = await serve()
    url = f"https://{spelling}:{server.port}/"
    async with egress_client(STRICT) as http:
        with pytest.raises(EgressRefused, match="loopback"):
            await http.get(url)
    assert server.connections == 0
    if spelling.startswith("["):
        return  # the server listens on IPv4 only; the mapped form is refused statically
    async with egress_client(DEV) as http:  # proof that the spelling is 127.0.0.1 indeed
        response = await http.get(f"http://{spelling}:{server.port}/")
    assert response.status_code == 200
    assert server.connections == 1


async def test_a_dns_answer_that_changes_between_check_and_connect_cannot_win(
    serve: ServerFactory,
) -> None:
    server = await serve()
    resolver = RebindingResolver([PUBLIC], ["127.0.0.1"])
    url = f"https://rebind.example:{server.port}/"
    await check_destination(STRICT, url, resolver)  # the registration-time check passes
    async with egress_client(STRICT, resolver=resolver) as http:
        with pytest.raises(EgressRefused, match="resolves to a loopback address"):
            await http.get(url)
    assert resolver.asked == ["rebind.example", "rebind.example"]  # once per check, no more
    assert server.connections == 0


async def test_a_name_with_one_private_answer_among_public_ones_is_refused(
    serve: ServerFactory,
) -> None:
    server = await serve()
    resolver = RebindingResolver(["127.0.0.1", PUBLIC])
    url = f"https://mixed.example:{server.port}/"
    with pytest.raises(EgressRefused):
        await check_destination(STRICT, url, resolver)
    async with egress_client(STRICT, resolver=resolver) as http:
        with pytest.raises(EgressRefused):
            await http.get(url)
    assert server.connections == 0


async def test_plain_http_to_a_listed_name_resolving_to_loopback_is_still_refused(
    serve: ServerFactory,
) -> None:
    server = await serve()
    resolver = RebindingResolver(["127.0.0.1"])
    policy = EgressPolicy(allow_http_loopback=True, allowed_hosts=frozenset({"bank.test"}))
    async with egress_client(policy, resolver=resolver) as http:
        with pytest.raises(EgressRefused, match="plain http"):
            await http.get(f"http://bank.test:{server.port}/")  # http only to loopback names
    assert server.connections == 0


async def test_every_redirect_hop_is_checked_and_none_is_followed_by_default(
    serve: ServerFactory,
) -> None:
    async def redirect(path: str, headers: dict[str, str], writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 302 Found\r\nlocation: http://169.254.169.254/latest/meta-data"
                     b"\r\ncontent-length: 0\r\n\r\n")

    server = await serve(redirect)
    url = f"http://127.0.0.1:{server.port}/"
    async with egress_client(DEV) as http:
        assert (await http.get(url)).status_code == 302  # not followed unless asked
        with pytest.raises(EgressRefused, match="plain http"):
            await http.get(url, follow_redirects=True)
    async def to_private(path: str, headers: dict[str, str], w: asyncio.StreamWriter) -> None:
        w.write(b"HTTP/1.1 307 Temporary\r\nlocation: https://10.0.0.5/\r\n"
                b"content-length: 0\r\n\r\n")

    server = await serve(to_private)
    async with egress_client(DEV) as http:
        with pytest.raises(EgressRefused, match="private"):
            await http.get(f"http://127.0.0.1:{server.port}/", follow_redirects=True)


@pytest.mark.parametrize("declared", [True, False])
async def test_answers_past_the_size_limit_are_cut_off(
    serve: ServerFactory, declared: bool,
) -> None:
    async def big(path: str, headers: dict[str, str], writer: asyncio.StreamWriter) -> None:
        if declared:
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 5000\r\n\r\n" + b"x" * 5000)
            return
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
        for _ in range(5):
            writer.write(b"400\r\n" + b"x" * 1024 + b"\r\n")
        writer.write(b"0\r\n\r\n")

    server = await serve(big)
    policy = EgressPolicy(allow_http_loopback=True, max_response_bytes=4096)
    async with egress_client(policy) as http:
        with pytest.raises(ResponseTooLarge, match="4096"):
            await http.get(f"http://127.0.0.1:{server.port}/")
    small = EgressPolicy(allow_http_loopback=True, max_response_bytes=8192)
    async with egress_client(small) as http:
        body = (await http.get(f"http://127.0.0.1:{server.port}/")).content
    assert len(body) == (5000 if declared else 5 * 1024)


async def test_a_body_dribbled_past_the_total_time_limit_is_cut_off(serve: ServerFactory) -> None:
    async def slow(path: str, headers: dict[str, str], writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
        for _ in range(20):  # bounded: 20 chunks, 0.1 s apart
            writer.write(b"1\r\nx\r\n")
            await writer.drain()
            await asyncio.sleep(0.1)
        writer.write(b"0\r\n\r\n")

    server = await serve(slow)
    policy = EgressPolicy(allow_http_loopback=True, total_timeout=0.5)
    async with egress_client(policy) as http:
        with pytest.raises(ResponseTooLarge, match=r"longer than 0\.5 s"):
            await http.get(f"http://127.0.0.1:{server.port}/")


async def test_proxy_variables_in_the_environment_are_ignored(
    serve: ServerFactory, monkeypatch: pytest.MonkeyPatch,
) -> None:
    server = await serve()
    monkeypatch.setenv("HTTP_PROXY", "http://10.0.0.5:3128")
    monkeypatch.setenv("ALL_PROXY", "http://10.0.0.5:3128")
    async with egress_client(DEV) as http:
        response = await http.get(f"http://127.0.0.1:{server.port}/")
    assert response.status_code == 200
    assert server.requests[0][0] == "GET / HTTP/1.1"  # origin-form: sent directly, no proxy


async def test_a_name_that_does_not_resolve_is_a_connect_error_not_a_refusal() -> None:
    async def nxdomain(host: str, port: int) -> Sequence[str]:
        raise OSError(-2, "Name or service not known")

    await check_destination(STRICT, "https://gone.example/", nxdomain)  # judged at delivery
    async with egress_client(STRICT, resolver=nxdomain) as http:
        with pytest.raises(httpx.ConnectError, match="name resolution failed"):
            await http.get("https://gone.example/")


async def test_the_sharded_client_guards_every_shard(serve: ServerFactory) -> None:
    """The refresh worker's client (many connections, several small pools) is still guarded:
    each shard is a guarded transport, so the policy and a rebinding DNS answer are judged
    on every connection of every shard."""
    server = await serve()
    url = f"http://127.0.0.1:{server.port}/"
    limits = httpx.Limits(max_connections=16, max_keepalive_connections=16)
    async with egress_client(STRICT, sharded=True, limits=limits) as http:
        for _ in range(8):
            with pytest.raises(EgressRefused):
                await http.get(url)
    rebinding = RebindingResolver([PUBLIC], ["127.0.0.1"])
    rebind = f"https://rebind.example:{server.port}/"
    await check_destination(STRICT, rebind, rebinding)  # the public answer passes the check
    async with egress_client(STRICT, sharded=True, limits=limits, resolver=rebinding) as http:
        answers = await asyncio.gather(*(http.get(rebind) for _ in range(8)),
                                       return_exceptions=True)
    assert all(isinstance(a, EgressRefused) and "loopback" in str(a) for a in answers)
    assert server.connections == 0
    async with egress_client(DEV, sharded=True, limits=limits) as http:
        statuses = await asyncio.gather(*(http.get(url) for _ in range(8)))
    assert [r.status_code for r in statuses] == [200] * 8
