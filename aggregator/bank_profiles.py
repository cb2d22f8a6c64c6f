"""Which bank profiles this gateway offers, and why (docs/operations.md, "Sandbox banks").

The rule, in one place for the gateway, the worker, the demo and ``aggregator banks
list``: every profile shipped in the package's own directory (``connectors/banks/``,
:data:`connectors.profiles.BUILTIN_PROFILES_DIR`) is a sandbox bank, and it is loaded only
when ``[banks] sandbox = true`` (or ``AGGREGATOR_BANKS_SANDBOX=true``). Profiles in the
operator's ``[banks] directories`` always load. A production deployment therefore never
offers "Sandbox Bank (EU)" to its users unless someone asked for it, and a new sandbox
profile added to ``connectors/banks/`` follows the same switch without a marker of its own.
A profile's ``dev_private_key`` is generated here, in the data directory
(:mod:`aggregator.sandbox_keys`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aggregator.sandbox_keys import resolve_sandbox_keys
from aggregator.settings import Settings
from connectors import BankProfile, bank_ssl_context, load_client_credentials, load_profiles
from connectors.profiles import BUILTIN_PROFILES_DIR

log = logging.getLogger(__name__)

#: The setting that turns the sandbox banks on, as an operator writes it.
SANDBOX_SETTING = "[banks] sandbox = true (or AGGREGATOR_BANKS_SANDBOX=true)"


def is_sandbox(profile: BankProfile) -> bool:
    """Whether ``profile`` is one of the package's own sandbox banks."""
    return profile.source.resolve().parent == BUILTIN_PROFILES_DIR.resolve()


def gateway_profiles(
    settings: Settings, overrides: Mapping[str, Mapping[str, Any]] | None = None
) -> dict[str, BankProfile]:
    """The profiles this gateway offers: the operator's, plus the sandboxes if opted in."""
    profiles = load_profiles(settings.bank_dirs, overrides,
                             include_builtin=settings.sandbox_banks)
    return resolve_sandbox_keys(profiles, settings.data_dir)


def check_profiles(settings: Settings) -> dict[str, BankProfile]:
    """Load every bank profile and the credentials of those in a served region.

    A typo in a profile, a missing client secret or an unreadable (or group-readable)
    transport certificate key stops start-up here instead of failing the first user who
    picks that bank.
    """
    profiles = gateway_profiles(settings)
    for profile in profiles.values():
        if profile.region in settings.regions:
            load_client_credentials(profile)
            bank_ssl_context(profile)
            for url in (profile.issuer, profile.api.base_url):
                problem = settings.egress.url_problem(url)
                if problem:  # the built-in loopback sandboxes, in production
                    log.warning("bank %s is unreachable under the egress policy: %s",
                                profile.id, problem)
                    break
    return profiles


@dataclass(frozen=True, slots=True)
class ProfileStatus:
    """One profile found on disk, whether it is offered, and the reason in words."""

    profile: BankProfile
    loaded: bool
    reason: str


def profile_statuses(settings: Settings) -> list[ProfileStatus]:
    """Every profile on disk (the sandboxes included) with why it is or is not offered."""
    statuses: list[ProfileStatus] = []
    for profile in load_profiles(settings.bank_dirs).values():
        if is_sandbox(profile):
            loaded = settings.sandbox_banks
            reason = ("sandbox bank, enabled ([banks] sandbox / AGGREGATOR_BANKS_SANDBOX)"
                      if loaded
                      else f"sandbox bank, off: set {SANDBOX_SETTING} to offer it")
        else:
            loaded, reason = True, f"from {_directory(profile.source, settings)}"
        if loaded and profile.region not in settings.regions:
            reason += f"; region {profile.region!r} is not configured, so no user sees it"
        statuses.append(ProfileStatus(profile, loaded, reason))
    return statuses


def _directory(source: Path, settings: Settings) -> str:
    for directory in settings.bank_dirs:
        if source.resolve().parent == directory.resolve():
            return f"[banks] directories: {directory}"
    return str(source.parent)
