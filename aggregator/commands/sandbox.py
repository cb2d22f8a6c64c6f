"""``aggregator sandbox-bank``: run the sandbox bank on loopback until interrupted."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aggregator.sandbox import DEV_CLIENT_ID, TEST_USERS, SandboxBank
from aggregator.settings import load_settings


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    parser = subparsers.add_parser(
        "sandbox-bank",
        help="run the sandbox bank (OAuth2 + OBIE v3.1 accounts) on loopback",
        description="Run an in-memory sandbox bank for development and tests. It listens "
        "on loopback only: it publishes its test passwords and dev-client secret.",
    )
    parser.add_argument(
        "--host", default="127.0.0.1", help="loopback address (default %(default)s)"
    )
    parser.add_argument("--port", type=int, default=None,
                        help="TCP port (default: where the mode's profile expects it: "
                             "8600, fapi2 8610, obie 8601)")
    parser.add_argument(
        "--mode", choices=sorted(MODES), default="oauth2",
        help="oauth2: the plain bank (profiles sandbox-eu/-us); fapi2: FAPI 2.0 with DPoP, "
             "PAR and private_key_jwt (profile sandbox-fapi2, port 8610); obie: UK Open "
             "Banking consents and request objects (profile sandbox-obie, port 8601)",
    )
    parser.set_defaults(handler=run)


def _mode(bank_id: str) -> Callable[[Path], SandboxBank]:
    def build(data_dir: Path) -> SandboxBank:
        from aggregator.sandbox.config import DEV_REDIRECT_URIS
        from aggregator.sandbox.modes import MODES as BANKS

        return BANKS[bank_id](DEV_REDIRECT_URIS, data_dir)

    return build


#: The bank each ``--mode`` serves, given the data directory its client keys live in
#: (shared with the gateway: aggregator/sandbox_keys.py).
MODES: dict[str, Callable[[Path], SandboxBank]] = {
    "oauth2": lambda _: SandboxBank(), "fapi2": _mode("sandbox-fapi2"),
    "obie": _mode("sandbox-obie"),
}
#: Each mode's default port: where its built-in profile's issuer points.
PORTS = {"oauth2": 8600, "fapi2": 8610, "obie": 8601}


def run(args: argparse.Namespace) -> int:
    port = PORTS[args.mode] if args.port is None else args.port
    config = getattr(args, "config", None)  # the global --config, when run from the CLI
    settings = load_settings(Path(config) if config else None)
    bank = MODES[args.mode](settings.data_dir)
    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C is how one stops it
        asyncio.run(_serve(bank, args.host, port))
    return 0


async def _serve(bank: SandboxBank, host: str, port: int) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    with contextlib.suppress(NotImplementedError):  # not on Windows
        loop.add_signal_handler(signal.SIGTERM, stop.set)
    async with bank.serve(host, port, own_logging=True) as issuer:
        print(banner(issuer), flush=True)
        await stop.wait()


def banner(issuer: str) -> str:
    users = ", ".join(f"{name} / {password}" for name, password in TEST_USERS.items())
    return "\n".join(
        [
            f"sandbox bank issuer: {issuer}",
            f"discovery:           {issuer}/.well-known/oauth-authorization-server",
            f"test users:          {users}",
            f"dev client id:       {DEV_CLIENT_ID} (secret: aggregator.sandbox.DEV_CLIENT_SECRET)",
            "stop with Ctrl-C",
        ]
    )


if __name__ == "__main__":  # pragma: no cover
    parser = argparse.ArgumentParser(prog="sandbox")
    register(parser.add_subparsers(dest="command", required=True))
    namespace = parser.parse_args()
    sys.exit(namespace.handler(namespace))
