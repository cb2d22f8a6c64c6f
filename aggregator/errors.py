"""Errors raised by the gateway itself, one tree rooted at :class:`GatewayError`.

::

    GatewayError
    ├── ConfigError           the settings file or an environment override is invalid
    └── ResidencyViolation    a write would put one region's entity into another region's store

`vault.VaultError` and `connectors.ConnectorError` are the other packages' roots; the
HTTP layer and the CLI map all three.
"""

from __future__ import annotations


class GatewayError(Exception):
    """Root of every error the gateway raises on its own account."""

    code = "gateway_error"


class ConfigError(GatewayError):
    """Settings are invalid; raised at start-up with the file and key at fault."""

    code = "invalid_configuration"


class ResidencyViolation(GatewayError):
    """Raised when an entity of one region is about to be written through another's session."""

    code = "residency_violation"
