"""The outbound policy's URL and address rules, in every spelling an attacker would try."""

from __future__ import annotations

import ipaddress

import pytest

from connectors import EgressPolicy, EgressRefused

STRICT = EgressPolicy()
DEV = EgressPolicy.development()


@pytest.mark.parametrize("url", [
    "http://169.254.169.254/latest/meta-data",
    "https://169.254.169.254/",
    "https://[::ffff:169.254.169.254]/",  # IPv4-mapped IPv6
    "https://[::ffff:a9fe:a9fe]/",  # the same, in hex
    "https://[64:ff9b::a9fe:a9fe]/",  # NAT64 (RFC 6052)
    "https://2852039166/",  # 169.254.169.254 as one decimal number
    "https://0xa9.0xfe.0xa9.0xfe/",  # hex parts
    "https://0251.0376.43518/",  # octal parts, the last two as one number
    "https://[fe80::1]/",
    "https://[fe80::1%25eth0]/",  # a zone identifier
])
def test_link_local_and_metadata_targets_are_refused_even_in_development(url: str) -> None:
    assert STRICT.url_problem(url) is not None
    assert DEV.url_problem(url) is not None


@pytest.mark.parametrize("url", [
    "http://[::ffff:127.0.0.1]/", "https://[::ffff:127.0.0.1]/", "http://2130706433/",
    "https://2130706433/", "https://0177.1/", "https://0x7f.1/", "https://127.1/",
    "https://localhost/", "https://LOCALHOST./", "https://a.localhost/", "https://[::1]/",
    "https://[2002:7f00:1::]/",  # 6to4 around 127.0.0.1
])
def test_loopback_in_any_spelling_needs_the_development_opt_in(url: str) -> None:
    assert "loopback" in (STRICT.url_problem(url) or "")
    assert DEV.url_problem(url) is None


@pytest.mark.parametrize("url", [
    "https://10.0.0.5/", "https://172.16.1.1/", "https://192.168.1.1/", "https://100.64.0.1/",
    "https://0.0.0.0/", "https://[::]/", "https://[fc00::1]/", "https://224.0.0.1/",
    "https://240.0.0.1/", "https://[::ffff:10.0.0.5]/", "https://167772165/",
])
def test_private_shared_and_reserved_addresses_are_refused(url: str) -> None:
    assert "private" in (DEV.url_problem(url) or "")


@pytest.mark.parametrize("url", [
    "http://example.com/", "http://93.184.216.34/", "ftp://example.com/", "file:///etc/passwd",
    "gopher://127.0.0.1/", "https://user:pw@example.com/", "https:///nohost",
    "https://metadata.google.internal/", "https://metadata/", "https://printer.local/",
    "https://intranet/",
])
def test_schemes_userinfo_and_internal_names_are_refused(url: str) -> None:
    assert STRICT.url_problem(url) is not None
    assert DEV.url_problem(url) is not None


@pytest.mark.parametrize("url", [
    "https://example.com/", "https://EXAMPLE.com./x", "https://93.184.216.34/",
    "https://[2606:2800:220:1:248:1893:25c8:1946]/", "https://bücher.example/",
])
def test_public_https_targets_pass(url: str) -> None:
    assert STRICT.url_problem(url) is None


def test_listed_networks_and_hosts_are_the_operators_exceptions() -> None:
    policy = EgressPolicy(allowed_networks=(ipaddress.ip_network("10.20.0.0/16"),),
                          allowed_hosts=frozenset({"Bank-Proxy.corp."}))
    assert policy.url_problem("https://10.20.3.4/") is None
    assert policy.url_problem("http://10.20.3.4/") is not None  # still https only
    assert policy.url_problem("https://10.21.0.1/") is not None
    assert policy.check_addresses("bank-proxy.corp", ["10.9.9.9"])
    # A listed name does not unlock the metadata service; only a listed network would.
    with pytest.raises(EgressRefused, match="link-local"):
        policy.check_addresses("bank-proxy.corp", ["169.254.169.254"])


def test_one_refused_answer_refuses_the_name() -> None:
    with pytest.raises(EgressRefused, match="loopback"):
        STRICT.check_addresses("rebind.example", ["93.184.216.34", "127.0.0.1"])
    with pytest.raises(EgressRefused, match="no address"):
        STRICT.check_addresses("empty.example", [])
    assert STRICT.check_addresses("ok.example", ["93.184.216.34"]) == [
        ipaddress.ip_address("93.184.216.34")]


def test_refusals_never_echo_the_url() -> None:
    url = "https://user:hunter2@10.0.0.5/callback?token=abc"
    problem = STRICT.url_problem(url)
    assert problem is not None
    assert "hunter2" not in problem
    assert "abc" not in problem


@pytest.mark.parametrize(("url", "why"), [
    ("https://[::127.0.0.1]/", "loopback"),  # IPv4-compatible (deprecated)
    ("https://[::a9fe:a9fe]/", "link-local"),
    ("https://[64:ff9b:1::a9fe:a9fe]/", "reserved"),  # RFC 8215 local-use NAT64
    ("https://[fec0::1]/", "reserved"),  # site-local: Python 3.11 calls it global
    ("https://168.63.129.16/", "link-local"),  # Azure's platform address
    ("https://100.100.100.200/", "link-local"),  # Alibaba Cloud metadata
    ("https://[fd00:ec2::254]/", "link-local"),  # AWS IMDS over IPv6
    ("https://[3fff::1]/", "reserved"),  # documentation (RFC 9637)
    ("https://[5f00::1]/", "reserved"),  # SRv6 SIDs
])
def test_special_purpose_addresses_from_the_pinned_tables_are_refused(url: str,
                                                                     why: str) -> None:
    assert why in (STRICT.url_problem(url) or "")


@pytest.mark.parametrize("address", [
    "2002:a9fe:a9fe::1",  # 6to4 of 169.254.169.254
    "64:ff9b::a9fe:a9fe",  # NAT64 of it
    "2001:0:4136:e378:8000:63bf:5601:5601",  # Teredo, client 169.254.169.254 (bits inverted)
])
def test_embedded_metadata_addresses_are_judged_before_any_exemption(address: str) -> None:
    policy = EgressPolicy(allowed_hosts=frozenset({"bank-proxy.corp"}),
                          allowed_networks=(ipaddress.ip_network("2000::/3"),))
    with pytest.raises(EgressRefused, match="link-local"):
        policy.check_addresses("bank-proxy.corp", [address])


def test_a_percent_encoded_host_gets_a_message_about_percent_encoding() -> None:
    problem = STRICT.url_problem("https://ex%61mple.com/")
    assert problem is not None
    assert "zone" not in problem
    assert "percent" in problem
