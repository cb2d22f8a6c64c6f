"""`aggregator apps create|list|show|update|rotate-key|revoke-key|disable`.

The logic is :mod:`aggregator.applications` (shared with any other front end); this module
parses, validates what an operator typed and prints. A new API key is printed once, on
stdout, and only its digest is stored. Every change is an audit event in every region.
"""

from __future__ import annotations

import argparse
import asyncio
import re
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

from aggregator import applications as lifecycle
from aggregator import branding
from aggregator.applications import ApplicationInfo, create_application
from aggregator.commands.output import console, examples, print_json, print_table, when
from aggregator.errors import ConfigError
from aggregator.redirect_uris import redirect_uri_problem
from aggregator.settings import load_settings
from aggregator.store import RegionRouter, require_head

T = TypeVar("T")
_RAW = argparse.RawDescriptionHelpFormatter


def register(subparsers: Any) -> None:
    apps = subparsers.add_parser(
        "apps", help="manage the applications that call the API",
        description="Register applications, change their redirect URIs, rotate or revoke "
        "their API keys and disable them. Each change is recorded in every region's audit "
        "trail (actor: operator).",
        epilog=examples("aggregator apps create Budgetly --redirect-uri "
                        "https://budgetly.example/linked",
                        "aggregator apps list", "aggregator apps rotate-key app_… --overlap 24h"),
        formatter_class=_RAW,
    )
    actions = apps.add_subparsers(dest="action", required=True, metavar="ACTION")

    create = actions.add_parser(
        "create", help="register an application and print its API key (shown once)",
        epilog=examples("aggregator apps create Budgetly --redirect-uri "
                        "https://budgetly.example/linked",
                        "aggregator apps create Local --redirect-uri http://127.0.0.1:3000/cb "
                        "--json"),
        formatter_class=_RAW,
    )
    create.add_argument("name", metavar="NAME", help="a display name, e.g. Budgetly")
    _redirect_option(create, required=True)
    _json_option(create)
    create.set_defaults(handler=_create)

    listing = actions.add_parser(
        "list", help="every application, its state and its live keys",
        epilog=examples("aggregator apps list", "aggregator apps list --json | jq '.[].id'"),
        formatter_class=_RAW,
    )
    _json_option(listing)
    listing.set_defaults(handler=_list)

    show = actions.add_parser(
        "show", help="one application: redirect URIs and every key's state",
        epilog=examples("aggregator apps show app_01j…", "aggregator apps show app_01j… --json"),
        formatter_class=_RAW,
    )
    show.add_argument("app_id", metavar="APP_ID")
    _json_option(show)
    show.set_defaults(handler=_show)

    update = actions.add_parser(
        "update", help="rename an application or replace its redirect URIs",
        description="--redirect-uri replaces the whole list (give every URI to keep).",
        epilog=examples("aggregator apps update app_01j… --redirect-uri "
                        "https://budgetly.example/linked --redirect-uri "
                        "https://budgetly.example/relinked",
                        "aggregator apps update app_01j… --name 'Budgetly EU'",
                        "aggregator apps update app_01j… --brand-name Budgetly "
                        "--brand-accent '#0b57d0' --brand-logo budgetly.png"),
        formatter_class=_RAW,
    )
    update.add_argument("app_id", metavar="APP_ID")
    update.add_argument("--name", help="a new display name")
    update.add_argument("--brand-name", metavar="NAME",
                        help="the name the Link page shows ('' clears it)")
    update.add_argument("--brand-logo", metavar="FILE",
                        help="a PNG, JPEG or WebP file of at most 16 KiB, stored as a "
                             "data: URL ('' clears it)")
    update.add_argument("--brand-accent", metavar="#RRGGBB",
                        help="the Link page's button colour; refused below WCAG AA "
                             "contrast with white ('' clears it)")
    _redirect_option(update, required=False)
    _json_option(update)
    update.set_defaults(handler=_update)

    rotate = actions.add_parser(
        "rotate-key", help="issue a new API key; the old ones keep working for --overlap",
        description="Prints the new key once. Every key live now stops working when the "
        "overlap ends, so callers can switch without downtime; --overlap 0 revokes them now "
        "(a leaked key).",
        epilog=examples("aggregator apps rotate-key app_01j…",
                        "aggregator apps rotate-key app_01j… --overlap 7d",
                        "aggregator apps rotate-key app_01j… --overlap 0   # leaked"),
        formatter_class=_RAW,
    )
    rotate.add_argument("app_id", metavar="APP_ID")
    rotate.add_argument("--overlap", default="24h", type=_duration, metavar="DURATION",
                        help="how long the old keys stay valid: 0, 30m, 24h, 7d (default 24h)")
    _json_option(rotate)
    rotate.set_defaults(handler=_rotate)

    revoke = actions.add_parser(
        "revoke-key", help="revoke one API key now, by its public prefix",
        description="The prefix is the part after agk_ and before the next underscore; "
        "`aggregator apps show APP_ID` lists them.",
        epilog=examples("aggregator apps revoke-key 7dz2k4qa"), formatter_class=_RAW,
    )
    revoke.add_argument("prefix", metavar="PREFIX")
    _json_option(revoke)
    revoke.set_defaults(handler=_revoke)

    disable = actions.add_parser(
        "disable", help="refuse every key of an application from now on",
        description="Its users, connections and data stay; erase users separately.",
        epilog=examples("aggregator apps disable app_01j…"), formatter_class=_RAW,
    )
    disable.add_argument("app_id", metavar="APP_ID")
    _json_option(disable)
    disable.set_defaults(handler=_disable)


def _redirect_option(parser: argparse.ArgumentParser, *, required: bool) -> None:
    parser.add_argument(
        "--redirect-uri", action="append", default=[], metavar="URI", required=required,
        help="where Link may send users back to (exact match; repeatable); https, or "
             "http on a loopback address" + (" (at least one)" if required else ""),
    )


def _json_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="machine-readable output")


_DURATION = re.compile(r"^(\d{1,6})([smhdw]?)$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def _duration(text: str) -> timedelta:
    match = _DURATION.match(text.strip())
    if match is None:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration like 0, 30m, 24h or 7d")
    return timedelta(seconds=int(match.group(1)) * _UNITS[match.group(2)])


def check_redirect_uri(uri: str) -> str:
    """Refuse redirect URIs that would leak the outcome (RFC 9700 §4.1.1, §2.1)."""
    problem = redirect_uri_problem(uri)
    if problem:
        raise ConfigError(f"--redirect-uri {uri!r}: {problem}")
    return uri


def _check_name(raw: str) -> str:
    name = raw.strip()
    if not 1 <= len(name) <= 200 or not name.isprintable():
        raise ConfigError("NAME must be 1-200 printable characters")
    return name


def _with_router(args: argparse.Namespace,
                 work: Callable[[RegionRouter], Awaitable[T]]) -> T:
    settings = load_settings(Path(args.config) if args.config else None)

    async def run() -> T:
        async with RegionRouter(settings) as router:
            for region in router.regions:
                await require_head(router.engine(region), region)
            return await work(router)

    return asyncio.run(run())


def _as_dict(app: ApplicationInfo) -> dict[str, Any]:
    now = datetime.now(UTC)
    return {
        "id": app.id, "name": app.name, "state": app.state,
        "redirect_uris": list(app.redirect_uris), "created_at": app.created_at,
        "disabled_at": app.disabled_at,
        "brand": {"name": app.brand_name, "accent": app.brand_accent,
                  "logo": app.brand_logo},
        "keys": [{"prefix": k.prefix, "state": k.state(now), "created_at": k.created_at,
                  "revoked_at": k.revoked_at} for k in app.keys],
    }


def _create(args: argparse.Namespace) -> int:
    name = _check_name(args.name)
    uris = [check_redirect_uri(u) for u in args.redirect_uri]
    settings = load_settings(Path(args.config) if args.config else None)

    async def work(router: RegionRouter) -> tuple[str, str]:
        return await create_application(router, name, uris, actor="operator")

    app_id, key = _with_router(args, work)
    if args.json:
        print_json({"id": app_id, "name": name, "redirect_uris": uris, "api_key": key,
                    "regions": list(settings.regions)})
        return 0
    print(f"application {app_id} ({name}) created in regions {', '.join(settings.regions)}")
    print(f"API key (shown once, store it now): {key}")
    return 0


def _list(args: argparse.Namespace) -> int:
    found = _with_router(args, lifecycle.list_applications)
    if args.json:
        print_json([_as_dict(a) for a in found])
        return 0
    if not found:
        print("no applications yet: `aggregator apps create NAME --redirect-uri URI`")
        return 0
    now = datetime.now(UTC)
    rows = [{
        "id": a.id, "name": a.name, "state": a.state,
        "keys": ", ".join(f"{k.prefix} ({k.state(now)})" for k in a.keys
                          if k.state(now) != "revoked") or "-",
        "created": when(a.created_at),
    } for a in found]
    print_table(("id", "name", "state", "keys", "created"), rows, {"state": "green"})
    return 0


def _print_app(app: ApplicationInfo) -> None:
    now = datetime.now(UTC)
    out = console()
    out.print(f"[bold]{app.id}[/bold]  {app.name}  ({app.state})", markup=True)
    out.print(f"  created       {when(app.created_at)}", markup=False)
    if app.disabled_at:
        out.print(f"  disabled      {when(app.disabled_at)}", markup=False)
    for i, uri in enumerate(app.redirect_uris):
        out.print(f"  {'redirect URI' if i == 0 else '':<13} {uri}", markup=False)
    for key in app.keys:
        state = key.state(now)
        until = f", until {when(key.revoked_at)}" if state == "expiring" else (
            f", since {when(key.revoked_at)}" if state == "revoked" else "")
        out.print(f"  key           agk_{key.prefix}_…  {state}{until}", markup=False)
    if app.brand_name or app.brand_accent or app.brand_logo:
        out.print(f"  brand         {app.brand_name or app.name}  accent "
                  f"{app.brand_accent or 'default'}  logo {'yes' if app.brand_logo else 'no'}",
                  markup=False)


def _show(args: argparse.Namespace) -> int:
    app = _with_router(args, lambda r: lifecycle.show_application(r, args.app_id))
    if args.json:
        print_json(_as_dict(app))
    else:
        _print_app(app)
    return 0


def _brand(args: argparse.Namespace) -> dict[str, str | None]:
    """The --brand-* options, checked before anything is written (errors name the option)."""
    logo = args.brand_logo
    if logo:
        try:
            raw = Path(logo).read_bytes()
        except OSError as exc:
            raise ConfigError(f"--brand-logo {logo}: {exc.strerror}") from None
        logo = branding.data_url(raw)
    brand = {"brand_name": args.brand_name, "brand_logo": logo,
             "brand_accent": args.brand_accent}
    try:
        for value, check in ((args.brand_name, branding.check_name),
                             (logo, branding.check_logo),
                             (args.brand_accent, branding.check_accent)):
            if value:
                check(value)
    except branding.BrandInvalid as exc:
        raise ConfigError(f"--{exc}") from None
    return brand


def _update(args: argparse.Namespace) -> int:
    name = _check_name(args.name) if args.name is not None else None
    uris = [check_redirect_uri(u) for u in args.redirect_uri] or None
    brand = _brand(args)
    if name is None and uris is None and all(v is None for v in brand.values()):
        raise ConfigError("nothing to change: give --name, --redirect-uri or --brand-*")
    app = _with_router(args, lambda r: lifecycle.update_application(
        r, args.app_id, name=name, redirect_uris=uris, brand_name=brand["brand_name"],
        brand_logo=brand["brand_logo"], brand_accent=brand["brand_accent"]))
    if args.json:
        print_json(_as_dict(app))
    else:
        print(f"application {app.id} updated")
        _print_app(app)
    return 0


def _rotate(args: argparse.Namespace) -> int:
    key, until = _with_router(args, lambda r: lifecycle.rotate_key(
        r, args.app_id, overlap=args.overlap))
    if args.json:
        print_json({"id": args.app_id, "api_key": key, "previous_keys_valid_until": until})
        return 0
    print(f"application {args.app_id}: new API key (shown once, store it now): {key}")
    if args.overlap:
        print(f"the previous keys keep working until {when(until)}; switch your callers "
              "before then")
    else:
        print("the previous keys are revoked now")
    return 0


def _revoke(args: argparse.Namespace) -> int:
    prefix = args.prefix.removeprefix("agk_").split("_")[0]
    app_id = _with_router(args, lambda r: lifecycle.revoke_key(r, prefix))
    if args.json:
        print_json({"id": app_id, "prefix": prefix, "state": "revoked"})
    else:
        print(f"API key agk_{prefix}_… of application {app_id} revoked")
    return 0


def _disable(args: argparse.Namespace) -> int:
    _with_router(args, lambda r: lifecycle.disable_application(r, args.app_id))
    if args.json:
        print_json({"id": args.app_id, "state": "disabled"})
    else:
        print(f"application {args.app_id} disabled: every one of its API keys is refused")
    return 0
