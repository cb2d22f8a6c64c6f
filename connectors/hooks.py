"""Named quirk hooks: the code half of "banks are data; quirks are named hooks".

A bank profile lists hook names (``hooks = ["expires_in_as_string"]``); the loader looks
each one up here, so a typo fails at start-up rather than at a user's first link. A hook
is a pair of optional pure functions, one applied to the authorization request
parameters, one to every JSON object the token endpoint answers, before it is parsed (the
idea of authlib's ``register_compliance_hook("access_token_response", fn)``, on decoded
JSON rather than on the HTTP response).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["Hook", "get_hook", "hook_names", "register_hook"]

AuthorizeParamsFn = Callable[[Mapping[str, str]], dict[str, str]]
TokenResponseFn = Callable[[Mapping[str, Any]], dict[str, Any]]


@dataclass(frozen=True)
class Hook:
    """A named workaround for one way a bank bends a specification.

    `authorize_params` receives the complete authorization request parameters (after
    the profile's ``extra_authorize_params``) and returns the parameters to send.
    `token_response` receives the decoded JSON object of a token-endpoint answer,
    success or error, and returns the object to parse. Both must be pure. Example::

        register_hook(Hook(
            name="token_type_missing",
            summary="the bank omits token_type; RFC 6749 §5.1 requires it",
            token_response=lambda data: {"token_type": "Bearer", **data},
        ))
    """

    name: str
    summary: str
    authorize_params: AuthorizeParamsFn | None = None
    token_response: TokenResponseFn | None = None


_REGISTRY: dict[str, Hook] = {}


def register_hook(hook: Hook) -> Hook:
    """Add `hook` to the registry; names are unique so a profile's meaning never shifts."""
    if hook.name in _REGISTRY:
        raise ValueError(f"a hook named {hook.name!r} is already registered")
    _REGISTRY[hook.name] = hook
    return hook


def get_hook(name: str) -> Hook:
    """Return the hook called `name`; `KeyError` if none is registered."""
    return _REGISTRY[name]


def hook_names() -> list[str]:
    return sorted(_REGISTRY)


def _prompt_consent_for_offline_access(params: Mapping[str, str]) -> dict[str, str]:
    # OIDC Core §11: a server issues a refresh token for `offline_access` only when the
    # request carries prompt=consent; without it the scope is silently dropped.
    out = dict(params)
    if "offline_access" not in out.get("scope", "").split():
        return out
    prompts = out.get("prompt", "").split()
    if "none" in prompts or "consent" in prompts:
        return out
    out["prompt"] = " ".join([*prompts, "consent"])
    return out


def _expires_in_as_string(data: Mapping[str, Any]) -> dict[str, Any]:
    # RFC 6749 §5.1 makes expires_in a number; some banks send "3600".
    out = dict(data)
    value = out.get("expires_in")
    if isinstance(value, str) and value.strip().isdigit():
        out["expires_in"] = int(value.strip())
    return out


def _scope_as_list(data: Mapping[str, Any]) -> dict[str, Any]:
    # RFC 6749 §3.3 makes scope a space-delimited string; some banks send a JSON array.
    out = dict(data)
    value = out.get("scope")
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        out["scope"] = " ".join(value)
    return out


register_hook(
    Hook(
        name="prompt_consent_for_offline_access",
        summary="add prompt=consent when offline_access is requested (OIDC Core §11)",
        authorize_params=_prompt_consent_for_offline_access,
    )
)
register_hook(
    Hook(
        name="expires_in_as_string",
        summary='accept a token response whose expires_in is a string ("3600")',
        token_response=_expires_in_as_string,
    )
)
register_hook(
    Hook(
        name="scope_as_list",
        summary="accept a token response whose scope is a JSON array of strings",
        token_response=_scope_as_list,
    )
)
