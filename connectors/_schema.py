"""Typed reading of a parsed TOML table, each failure naming the file and the key."""

from __future__ import annotations

import difflib
import ipaddress
import re
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any, Final
from urllib.parse import urljoin, urlsplit

from connectors.errors import ProfileError
from connectors.hooks import Hook, get_hook, hook_names

BANK_ID: Final = re.compile(r"[a-z0-9][a-z0-9-]{1,62}")
COUNTRY: Final = re.compile(r"[A-Z]{2}")  # ISO 3166-1 alpha-2
REGION: Final = re.compile(r"[a-z][a-z0-9-]{1,15}")
CLIENT_ID: Final = re.compile(r"[\x20-\x7e]{1,255}")  # RFC 6749 Appendix A.1: VSCHAR
SCOPE_TOKEN: Final = re.compile(r"[\x21\x23-\x5b\x5d-\x7e]+")  # RFC 6749 §3.3
ENV_NAME: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")

_SECRET_KEYS: Final = frozenset(
    {"client_secret", "secret", "private_key", "private_key_pem", "password", "api_key"}
)
_MISSING: Final = object()


def is_loopback_url(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def merge(
    data: Mapping[str, Any], override: Mapping[str, Any], prefix: str = ""
) -> tuple[dict[str, Any], frozenset[str]]:
    """Deep-merge `override` into a copy of `data`; also return the dotted keys it set.

    A None value removes the key (TOML has no null, so a file never means that).
    """
    out = dict(data)
    touched: set[str] = set()
    for raw_key, value in override.items():
        head, _, rest = raw_key.partition(".")
        if rest:
            value = {rest: value}
        current = out.get(head)
        if value is None:
            out.pop(head, None)
            touched.add(f"{prefix}{head}")
        elif isinstance(value, Mapping) and isinstance(current, Mapping):
            out[head], inner = merge(current, value, f"{prefix}{head}.")
            touched |= inner
        else:
            out[head] = dict(value) if isinstance(value, Mapping) else value
            touched.add(f"{prefix}{head}")
    return out, frozenset(touched)


def _type_name(value: object) -> str:
    names = {str: "a string", bool: "a boolean", int: "an integer", float: "a float"}
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "an array"
    return names.get(type(value), type(value).__name__)


def _find_pem(value: object, path: str) -> str | None:
    if isinstance(value, str) and "-----BEGIN" in value:
        return path
    if isinstance(value, Mapping):
        for key, item in value.items():
            found = _find_pem(item, f"{path}.{key}" if path else str(key))
            if found:
                return found
    if isinstance(value, list):
        for item in value:
            found = _find_pem(item, path)
            if found:
                return found
    return None


class Table:
    """One TOML table of a profile file; unknown keys are refused on construction."""

    def __init__(
        self,
        data: Mapping[str, Any],
        known: Collection[str] | None,
        *,
        file: str,
        overridden: frozenset[str] = frozenset(),
        prefix: str = "",
    ) -> None:
        self._data = data
        self._file = file
        self._overridden = overridden
        self._prefix = prefix
        if not prefix:  # the whole file, nested tables included, is scanned once
            pem_key = _find_pem(data, "")
            if pem_key:
                raise self.error(
                    pem_key,
                    "looks like a literal private key; a profile may only name one "
                    "(private_key_pem_env or private_key_file)",
                )
        if known is not None:
            self._check_keys(known)

    def _check_keys(self, known: Collection[str]) -> None:
        for key in self._data:
            if key in _SECRET_KEYS:
                raise self.error(
                    key,
                    "a literal secret is not allowed in a profile; name an environment "
                    "variable instead (client_secret_env, private_key_pem_env)",
                )
        unknown = sorted(set(self._data) - set(known))
        if unknown:
            hints = [
                f"{key!r} (did you mean {close[0]!r}?)" if close else repr(key)
                for key in unknown
                for close in [difflib.get_close_matches(key, known, n=1)]
            ]
            raise self.error(
                ", ".join(unknown),
                f"unknown key{'s' if len(unknown) > 1 else ''} {', '.join(hints)}; "
                f"known keys: {', '.join(sorted(known))}",
            )

    def error(self, key: str, problem: str) -> ProfileError:
        path = f"{self._prefix}{key}"
        from_override = any(
            path == o or path.startswith(f"{o}.") or o.startswith(f"{path}.")
            for o in self._overridden
        )
        file = f"{self._file} (with overrides)" if from_override else self._file
        return ProfileError(file, path, problem)

    def names(self) -> list[str]:
        return list(self._data)

    def get(self, key: str, default: Any = _MISSING) -> Any:
        if key in self._data:
            return self._data[key]
        if default is _MISSING:
            raise self.error(key, "required key is missing")
        return default

    def _typed(self, key: str, kind: type, default: Any = _MISSING) -> Any:
        value = self.get(key, default)
        if value is not default and (
            not isinstance(value, kind) or (kind is int and isinstance(value, bool))
        ):
            expected = _type_name(kind())
            raise self.error(key, f"must be {expected}, not {_type_name(value)}")
        return value

    def table(self, key: str, known: Collection[str] | None, *, required: bool = False) -> Table:
        value = self._typed(key, dict, _MISSING if required else {})
        return Table(
            value,
            known,
            file=self._file,
            overridden=self._overridden,
            prefix=f"{self._prefix}{key}.",
        )

    def string(
        self, key: str, *, pattern: re.Pattern[str] | None = None, max_length: int = 200
    ) -> str:
        value: str = self._typed(key, str)
        if not value.strip():
            raise self.error(key, "must not be empty")
        if len(value) > max_length:
            raise self.error(key, f"longer than {max_length} characters")
        if pattern is not None and not pattern.fullmatch(value):
            raise self.error(key, f"{value!r} does not match {pattern.pattern}")
        return value

    def optional_string(self, key: str, *, pattern: re.Pattern[str] | None = None) -> str | None:
        return self.string(key, pattern=pattern) if key in self._data else None

    def boolean(self, key: str, *, default: bool) -> bool:
        value: bool = self._typed(key, bool, default)
        return value

    def integer(self, key: str, *, default: int, minimum: int, maximum: int) -> int:
        value: int = self._typed(key, int, default)
        if not minimum <= value <= maximum:
            raise self.error(key, f"must be between {minimum} and {maximum}, not {value}")
        return value

    def choice(self, key: str, options: Collection[str]) -> str:
        value = self.string(key)
        if value not in options:
            raise self.error(key, f"unknown value {value!r}; expected one of {sorted(options)}")
        return value

    def optional_choice(self, key: str, options: Collection[str]) -> str | None:
        return self.choice(key, options) if key in self._data else None

    def env_name(self, key: str) -> str | None:
        return self.optional_string(key, pattern=ENV_NAME)

    def url(self, key: str, *, issuer: bool = False, base: str | None = None) -> str:
        value = self.string(key, max_length=2000)
        if base is not None and value.startswith("/"):
            value = urljoin(base, value)
        problem = url_problem(value, issuer=issuer)
        if problem:
            raise self.error(key, problem)
        return value

    def optional_url(self, key: str, *, required: bool = False) -> str | None:
        if key in self._data or required:
            return self.url(key)
        return None

    def path(self, key: str, *, base: Path) -> Path | None:
        value = self.optional_string(key)
        if value is None:
            return None
        path = (base / value).resolve()
        if not path.is_file():
            raise self.error(key, f"no such file: {path}")
        return path

    def scopes(self, key: str) -> tuple[str, ...]:
        value = self.get(key)
        if isinstance(value, str):
            value = value.split()
        if not isinstance(value, list) or not all(isinstance(s, str) for s in value):
            raise self.error(key, "must be a space-separated string or an array of strings")
        if not value:
            raise self.error(key, "must name at least one scope")
        for scope in value:
            if not SCOPE_TOKEN.fullmatch(scope):
                raise self.error(key, f"{scope!r} is not a valid scope token (RFC 6749 §3.3)")
        if len(set(value)) != len(value):
            raise self.error(key, "lists a scope twice")
        return tuple(value)

    def hooks(self, key: str) -> tuple[Hook, ...]:
        names = self._typed(key, list, [])
        hooks = []
        for name in names:
            if not isinstance(name, str):
                raise self.error(key, "must be an array of hook names")
            try:
                hooks.append(get_hook(name))
            except KeyError:
                raise self.error(
                    key, f"unknown hook {name!r}; known hooks: {', '.join(hook_names())}"
                ) from None
        if len(set(names)) != len(names):
            raise self.error(key, "names a hook twice")
        return tuple(hooks)

    def dialect(self, key: str) -> str:
        from connectors.dialects import DIALECTS

        return self.choice(key, list(DIALECTS))

    def logo(self, key: str, *, base: Path) -> str | None:
        value = self.optional_string(key)
        if value is None:
            return None
        if "://" in value:
            return self.url(key)
        path = self.path(key, base=base)
        return str(path)


def url_problem(value: str, *, issuer: bool = False) -> str | None:
    """Why `value` is not an acceptable endpoint URL (or issuer), or None if it is."""
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError on a malformed port
    except ValueError:
        return f"{value!r} is not a valid URL"
    if parts.scheme not in ("https", "http") or not parts.hostname:
        return f"{value!r} is not an absolute http(s) URL"
    if parts.scheme == "http" and not is_loopback_url(value):
        return f"{value!r}: plain http is allowed only for a loopback host (127.0.0.1, ::1)"
    if parts.username is not None or parts.password is not None:
        return "credentials are not allowed in a URL"
    if parts.fragment or value.endswith("#"):
        return f"{value!r} must not have a fragment"
    if issuer and (parts.query or "?" in value):
        return f"{value!r}: an issuer has no query component (RFC 8414 §2)"
    return None
