"""Ids carry their region; anything else raises a typed error, never a crash."""

from __future__ import annotations

import pytest

from aggregator.errors import InvalidId, MalformedId, UnknownRegion
from aggregator.ids import (
    REGIONAL_ID,
    is_request_id,
    new_id,
    new_secret,
    parse_id,
    parse_secret,
    region_of,
    secret_digest,
)


def test_regional_ids_name_kind_and_region() -> None:
    user = new_id("usr", "eu")
    assert user.startswith("usr_eu_")
    assert parse_id(user) == ("usr", "eu")
    assert region_of(new_id("con", "us")) == "us"
    assert REGIONAL_ID.fullmatch(user)


def test_application_ids_are_global() -> None:
    app = new_id("app")
    assert parse_id(app) == ("app", None)
    assert not REGIONAL_ID.search(app)
    with pytest.raises(ValueError, match="global"):
        new_id("app", "eu")  # type: ignore[call-overload]
    with pytest.raises(ValueError, match="need a region"):
        new_id("usr", None)  # type: ignore[call-overload]


def test_ids_are_unique_and_unpredictable() -> None:
    assert len({new_id("txn", "eu") for _ in range(1000)}) == 1000


@pytest.mark.parametrize("text", [
    "", "usr", "usr_eu", "usr_eu_", "usr_eu_short", "USR_eu_" + "a" * 26, "zzz_eu_" + "a" * 26,
    "usr_" + "a" * 26,                  # a regional kind without its region
    "app_eu_" + "a" * 26,               # a global kind with one
    "usr_eu_" + "a" * 25 + "1",         # outside the base32 alphabet
    "usr_e_" + "a" * 26, "usr_eu_" + "a" * 26 + "\n", "../../etc/passwd",
])
def test_malformed_ids_raise_malformed_id(text: str) -> None:
    with pytest.raises(MalformedId):
        parse_id(text)


def test_a_non_string_is_malformed() -> None:
    with pytest.raises(MalformedId):
        parse_id(42)  # type: ignore[arg-type]


def test_the_wrong_kind_is_malformed_for_that_purpose() -> None:
    with pytest.raises(MalformedId, match="expected a user id, got a connection id"):
        parse_id(new_id("con", "eu"), kind="usr")


def test_an_unconfigured_region_raises_unknown_region() -> None:
    with pytest.raises(UnknownRegion, match="'ap'"):
        parse_id(new_id("usr", "ap"), regions=("eu", "us"))
    assert issubclass(UnknownRegion, InvalidId)
    assert issubclass(MalformedId, InvalidId)


def test_secrets_carry_their_region_and_are_stored_as_digests() -> None:
    token = new_secret("lnt", "eu")
    assert parse_secret(token, kind="lnt") == "eu"
    with pytest.raises(MalformedId):
        parse_secret(token, kind="sta")
    with pytest.raises(UnknownRegion):
        parse_secret(new_secret("lnt", "ap"), kind="lnt", regions=("eu",))
    assert len(secret_digest(token)) == 32
    assert secret_digest(token) != secret_digest(new_secret("lnt", "eu"))


def test_request_ids_are_ours_or_uuids() -> None:
    assert is_request_id(new_id("req"))
    assert is_request_id("3f2b8c1e-8d5c-4b4e-9a44-0c6f1f0d2a11")
    assert not is_request_id("Bearer abc.def")
    assert not is_request_id("someone@example.com")
