"""A string that must not leak through `repr`, `str`, f-strings or tracebacks.

Settings, PINs, Vault tokens and client secrets travel as :class:`Secret` so that an
accidental ``log.info("%s", settings)`` prints ``Secret('**********')`` instead of the
value (the same idea as ``starlette.config.Secret``).
"""

from __future__ import annotations

import hmac


class Secret:
    """Holds a secret string; only :meth:`reveal` gives the value back."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('**********')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Secret):
            return NotImplemented
        return hmac.compare_digest(self._value.encode(), other._value.encode())

    def __hash__(self) -> int:
        return hash(self._value)

    def __bool__(self) -> bool:
        return bool(self._value)
