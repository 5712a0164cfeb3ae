"""``prismq-queue dashboard``: serve the web dashboard (the ``dashboard`` extra)."""

from __future__ import annotations

import argparse
import ipaddress
import os
from collections.abc import Callable

from ..database import QueueDatabase
from ..errors import ConfigError
from . import output

__all__ = ["COMMANDS", "add_parsers", "is_loopback"]

TOKEN_ENV = "PRISMQ_DASHBOARD_TOKEN"  # noqa: S105 (the variable's name, not a secret)
BASIC_AUTH_ENV = "PRISMQ_DASHBOARD_BASIC_AUTH"


def add_parsers(command: Callable[..., argparse.ArgumentParser]) -> None:
    """Add the ``dashboard`` subcommand through the main parser's ``command`` helper."""
    p = command("dashboard", "serve the web dashboard (127.0.0.1 by default)", json_output=False)
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8765, help="port (default 8765)")
    p.add_argument("--read-only", action="store_true", help="show everything, allow no action")
    p.add_argument(
        "--token-env",
        action="store_true",
        help=f"require the token in ${TOKEN_ENV} (bearer header, or ?token= once in a browser)",
    )
    p.add_argument(
        "--basic-auth-env",
        action="store_true",
        help=f"require HTTP basic auth with user:password from ${BASIC_AUTH_ENV}",
    )


def is_loopback(host: str) -> bool:
    """True when binding ``host`` only accepts connections from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _secrets(args: argparse.Namespace) -> tuple[str | None, tuple[str, str] | None]:
    token = basic = None
    if args.token_env:
        token = os.environ.get(TOKEN_ENV) or None
        if token is None:
            raise ConfigError(f"--token-env: set ${TOKEN_ENV} to the token first")
    if args.basic_auth_env:
        value = os.environ.get(BASIC_AUTH_ENV, "")
        user, sep, password = value.partition(":")
        if not (sep and user and password):
            raise ConfigError(f"--basic-auth-env: set ${BASIC_AUTH_ENV} to user:password first")
        basic = (user, password)
    return token, basic


def cmd_dashboard(args: argparse.Namespace) -> int:
    token, basic = _secrets(args)
    if not is_loopback(args.host) and token is None and basic is None:
        raise ConfigError(
            f"refusing to serve the dashboard on {args.host} without authentication: add "
            "--token-env or --basic-auth-env, or bind 127.0.0.1"
        )
    if not 0 < args.port < 65536:
        raise ConfigError(f"--port must be 1-65535, got {args.port}")
    try:
        import uvicorn

        from ..dashboard import create_app
    except ImportError as exc:
        raise ConfigError(
            f"the dashboard needs the dashboard extra ({exc.name} is missing): "
            "pip install 'prismq-queue[dashboard]'"
        ) from None
    db = QueueDatabase(args.db)
    try:
        db.initialize_schema()
        app = create_app(db, read_only=args.read_only, token=token, basic_auth=basic)
        output.console.print(f"Dashboard for {db.location} on http://{args.host}:{args.port}/", markup=False)
        uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    finally:
        db.close()
    return 0


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {"dashboard": cmd_dashboard}
