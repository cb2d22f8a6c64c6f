"""Sealing of stored answers (:mod:`aggregator.idempotency`): bound to their row."""

from __future__ import annotations

import os

import pytest
from cryptography.exceptions import InvalidTag

from aggregator.idempotency import Claimed, StoredResponse, open_response, seal_response
from aggregator.ids import ApplicationId
from aggregator.sealing import KeyedHasher

HASHER = KeyedHasher(os.urandom(32))
APP = ApplicationId("app_" + "a" * 26)
CLAIM = Claimed("eu", APP, os.urandom(32), os.urandom(32), "owner")
ANSWER = StoredResponse(201, (("content-type", "application/json"), ("location", "/v1/x")),
                        b'{"secret":"whsec_abc"}', "req_1")


def test_a_sealed_answer_opens_to_the_same_answer() -> None:
    blob = seal_response(HASHER, CLAIM, ANSWER)
    assert b"whsec_abc" not in blob
    assert b"content-type" not in blob
    opened = open_response(HASHER, APP, CLAIM.key_digest, CLAIM.fingerprint, 201, blob,
                           "req_1")
    assert opened == ANSWER


@pytest.mark.parametrize("place", ["application", "key", "request", "pepper"])
def test_a_sealed_answer_does_not_open_in_another_place(place: str) -> None:
    blob = seal_response(HASHER, CLAIM, ANSWER)
    hasher, app, key, print_ = HASHER, APP, CLAIM.key_digest, CLAIM.fingerprint
    if place == "application":
        app = ApplicationId("app_" + "b" * 26)
    elif place == "key":
        key = os.urandom(32)
    elif place == "request":
        print_ = os.urandom(32)
    else:
        hasher = KeyedHasher(os.urandom(32))
    with pytest.raises(InvalidTag):
        open_response(hasher, app, key, print_, 201, blob, "req_1")
