"""`aggregator banks list | check ID`: the bank profiles and what each bank supports."""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path
from typing import Any

import httpx

from aggregator.bank_profiles import SANDBOX_SETTING, profile_statuses
from aggregator.errors import ConfigError
from aggregator.sandbox_keys import resolve_sandbox_keys
from aggregator.settings import Settings, load_settings
from connectors import (
    BankProfile,
    ConnectorError,
    ServerMetadata,
    Severity,
    bank_ssl_context,
    check_compatibility,
    egress_client,
    fapi2_readiness,
    fetch_metadata,
    load_client_credentials,
    load_profiles,
    obie_readiness,
)


def register(subparsers: Any) -> None:
    banks = subparsers.add_parser("banks", help="list bank profiles and check them against banks")
    actions = banks.add_subparsers(dest="action", required=True, metavar="ACTION")

    listing = actions.add_parser(
        "list", help="show every bank profile, whether it is offered, and why",
        description="Every bank profile found (the operator's [banks] directories and the "
        "built-in sandbox banks), whether this gateway offers it, and why.",
        epilog="examples:\n  aggregator banks list\n  aggregator banks list --json | jq "
        "'.[] | select(.loaded)'\n  AGGREGATOR_BANKS_SANDBOX=true aggregator banks list",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    listing.add_argument("--json", action="store_true", help="machine-readable output")
    listing.set_defaults(handler=_list)

    check = actions.add_parser(
        "check", help="fetch a bank's metadata and check the profile's choices against it"
    )
    check.add_argument("bank_id", metavar="ID", help="the bank profile's id")
    check.add_argument(
        "--issuer", help="use this issuer instead of the profile's (a sandbox on another port)"
    )
    check.add_argument("--timeout", type=float, default=10.0, help="HTTP timeout in seconds")
    check.set_defaults(handler=_check)


def _settings(args: argparse.Namespace) -> Settings:
    return load_settings(Path(args.config) if getattr(args, "config", None) else None)


def _list(args: argparse.Namespace) -> int:
    settings = _settings(args)
    statuses = profile_statuses(settings)
    rows = [
        {
            "id": s.profile.id,
            "name": s.profile.display_name,
            "region": s.profile.region,
            "dialect": s.profile.api.dialect,
            "issuer": s.profile.issuer,
            "loaded": s.loaded,
            "reason": s.reason,
        }
        for s in statuses
    ]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    columns = ("id", "name", "region", "dialect", "issuer")
    table = [{k: str(r[k]) for k in columns} | {"loaded": "yes" if r["loaded"] else "no"}
             for r in rows]
    widths = {k: max([len(k), *(len(r[k]) for r in table)]) for k in (*columns, "loaded")}
    for row in [{k: k.upper() for k in widths}, *table]:
        print("  ".join(row[k].ljust(w) for k, w in widths.items()).rstrip())
    print()
    for status in statuses:
        print(f"{status.profile.id}: {'loaded' if status.loaded else 'not loaded'}, "
              f"{status.reason}")
    if not any(s.loaded for s in statuses):
        print("no bank is offered: add profiles to [banks] directories, or set "
              f"{SANDBOX_SETTING} for development")
    return 0


def _check(args: argparse.Namespace) -> int:
    settings = _settings(args)
    profiles = load_profiles(settings.bank_dirs)
    if args.bank_id not in profiles:
        raise ConfigError(
            f"unknown bank id {args.bank_id!r}; known: {', '.join(profiles) or 'none'}"
        )
    profile = profiles[args.bank_id]
    if args.issuer:
        overrides = {args.bank_id: {"issuer": args.issuer}}
        profile = load_profiles(settings.bank_dirs, overrides)[args.bank_id]
    profile = resolve_sandbox_keys({profile.id: profile}, settings.data_dir)[profile.id]
    return asyncio.run(_inspect(profile, args.timeout, settings))


async def _inspect(profile: BankProfile, http_timeout: float, settings: Settings) -> int:
    problems = 0
    print(f"bank {profile.id} ({profile.display_name}), issuer {profile.issuer}")
    if profile.region not in settings.regions:
        print(f"  PROBLEM  region: {profile.region!r} is not a configured region")
        problems += 1
    signing_alg = None
    context = None
    try:
        context = bank_ssl_context(profile)
        _, signer = load_client_credentials(profile)
        signing_alg = signer.algorithm if signer else None
        print(f"  ok       credentials: {profile.client_auth_method.value} credentials found")
    except ConnectorError as exc:
        print(f"  PROBLEM  credentials: {exc}")
        problems += 1
    try:
        async with egress_client(settings.egress, ssl_context=context,
                                 timeout=http_timeout) as http:
            metadata = await fetch_metadata(
                http, profile.issuer, http_timeout=httpx.Timeout(http_timeout), bank=profile.id
            )
    except ConnectorError as exc:
        print(f"  PROBLEM  discovery: {exc}")
        return 1
    print(f"  metadata from {metadata.source}")
    _print_support(metadata)
    compatibility = check_compatibility(profile, metadata, signing_alg=signing_alg)
    labels = {Severity.INFO: "ok", Severity.WARNING: "warning", Severity.PROBLEM: "PROBLEM"}
    for finding in compatibility.findings:
        print(f"  {labels[finding.severity]:<8} {finding.topic}: {finding.message}")
    problems += len(compatibility.problems)
    print("  FAPI 2.0 readiness"
          + (f" (sender_constraint = {profile.sender_constraint.value!r}):"
             if profile.sender_constraint.value != "none" else " (informational):"))
    readiness = fapi2_readiness(profile, metadata)
    for finding in readiness:
        print(f"    {labels[finding.severity]:<8} {finding.message}")
    problems += sum(1 for f in readiness if f.severity is Severity.PROBLEM)
    consent_checks = obie_readiness(profile, metadata)
    if consent_checks:
        print("  UK Open Banking (standard = 'obie'):")
    for finding in consent_checks:
        print(f"    {labels[finding.severity]:<8} {finding.message}")
    problems += sum(1 for f in consent_checks if f.severity is Severity.PROBLEM)
    print("compatible" if problems == 0 else f"{problems} problem(s)")
    return 0 if problems == 0 else 1


def _print_support(md: ServerMetadata) -> None:
    par = md.pushed_authorization_request_endpoint
    rows = {
        "PKCE S256": "yes" if "S256" in md.code_challenge_methods_supported else "no",
        "PAR": ("required" if md.require_pushed_authorization_requests else "offered")
        if par
        else "no",
        "iss parameter": "yes" if md.authorization_response_iss_parameter_supported else "no",
        "revocation": "yes" if md.revocation_endpoint else "no",
        "token auth methods": ", ".join(md.token_endpoint_auth_methods_supported),
    }
    for name, value in rows.items():
        print(f"  {name + ':':<20} {value}")
