"""`aggregator keys init | status | rotate`: the regions' key-encryption keys."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from aggregator.keyring import envelope_for
from aggregator.settings import Settings, load_settings
from vault import Envelope, KeyProvider


def register(subparsers: Any) -> None:
    keys = subparsers.add_parser("keys", help="manage the regions' key-encryption keys")
    actions = keys.add_subparsers(dest="action", required=True, metavar="ACTION")

    init = actions.add_parser("init", help="create each region's KEK if it does not exist")
    init.add_argument("--region", help="only this region")
    init.set_defaults(handler=_init)

    status = actions.add_parser("status", help="show providers, KEK versions and cache policy")
    status.add_argument("--region", help="only this region")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.set_defaults(handler=_status)

    rotate = actions.add_parser("rotate", help="add a new KEK version to one region")
    rotate.add_argument("--region", required=True)
    rotate.set_defaults(handler=_rotate)


def _settings(args: argparse.Namespace) -> Settings:
    return load_settings(Path(args.config) if args.config else None)


def _envelopes(args: argparse.Namespace) -> dict[str, Envelope]:
    settings = _settings(args)
    names = [settings.region(args.region).name] if args.region else list(settings.regions)
    return {name: envelope_for(settings.regions[name], settings) for name in names}


def _init(args: argparse.Namespace) -> int:
    for name, env in _envelopes(args).items():
        env.provider.ensure_kek()
        st = env.provider.status()
        print(f"{name}: {st.provider} KEK {st.kek_id!r} ready (version {st.latest_version})")
        env.provider.close()
    return 0


def _status(args: argparse.Namespace) -> int:
    report = {name: _describe(env) for name, env in _envelopes(args).items()}
    missing = [name for name, info in report.items() if not info["kek_versions"]]
    if args.json:
        print(json.dumps(report, indent=2, sort_keys=True))
        return 1 if missing else 0
    for name, info in report.items():
        print(f"region {name}")
        for key, value in info.items():
            print(f"  {key:<24} {value}")
    for name in missing:
        print(f"region {name} has no KEK yet: run `aggregator keys init --region {name}`")
    return 1 if missing else 0


def _describe(env: Envelope) -> dict[str, Any]:
    provider: KeyProvider = env.provider
    st = provider.status()
    cache = env.stats()
    provider.close()
    return {
        "provider": st.provider,
        "kek_id": st.kek_id,
        "kek_versions": list(st.versions),
        "latest_version": st.latest_version,
        "min_decryption_version": st.min_decryption_version,
        **{f"detail.{k}": v for k, v in sorted(st.details.items())},
        "cache_ttl_seconds": cache.ttl_seconds,
        "cache_max_keys": cache.max_size,
    }


def _rotate(args: argparse.Namespace) -> int:
    for name, env in _envelopes(args).items():
        version = env.provider.rotate()
        print(f"{name}: KEK {env.provider.kek_id!r} rotated to version {version}; "
              "existing data keys still open under older versions until rewrapped")
        env.provider.close()
    return 0
