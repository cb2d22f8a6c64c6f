"""Quirk hooks: registered by name, pure, and applied where the profile lists them."""

from __future__ import annotations

import pytest

from connectors import Hook, get_hook, hook_names, register_hook


def test_registry_has_the_documented_hooks() -> None:
    assert {"prompt_consent_for_offline_access", "expires_in_as_string", "scope_as_list"} <= set(
        hook_names()
    )
    assert hook_names() == sorted(hook_names())


def test_unknown_hook_is_a_key_error() -> None:
    with pytest.raises(KeyError):
        get_hook("no_such_hook")


def test_names_are_unique() -> None:
    with pytest.raises(ValueError, match="already registered"):
        register_hook(Hook(name="expires_in_as_string", summary="again"))


@pytest.mark.parametrize(
    ("params", "expected_prompt"),
    [
        ({"scope": "openid offline_access accounts"}, "consent"),
        ({"scope": "openid offline_access", "prompt": "login"}, "login consent"),
        ({"scope": "openid offline_access", "prompt": "consent"}, "consent"),
        ({"scope": "openid offline_access", "prompt": "none"}, "none"),
        ({"scope": "openid accounts"}, None),
    ],
)
def test_prompt_consent_for_offline_access(
    params: dict[str, str], expected_prompt: str | None
) -> None:
    fn = get_hook("prompt_consent_for_offline_access").authorize_params
    assert fn is not None

    before = dict(params)

    out = fn(params)

    assert out.get("prompt") == expected_prompt
    assert params == before  # pure: the input is left alone


@pytest.mark.parametrize(
    ("value", "expected"), [("3600", 3600), (" 60 ", 60), (3600, 3600), ("soon", "soon")]
)
def test_expires_in_as_string(value: object, expected: object) -> None:
    fn = get_hook("expires_in_as_string").token_response
    assert fn is not None

    assert fn({"access_token": "a", "expires_in": value})["expires_in"] == expected


def test_scope_as_list() -> None:
    fn = get_hook("scope_as_list").token_response
    assert fn is not None

    assert fn({"scope": ["accounts", "transactions"]})["scope"] == "accounts transactions"
    assert fn({"scope": "accounts"})["scope"] == "accounts"
