"""`mailrelay`: serve | worker | migrate | apikey | secrets | openapi."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError

from app.apikeys import service as apikeys
from app.apikeys.models import ApiKey
from app.crypto import SecretDecryptError
from app.db import migrations
from app.errors import RelayError
from app.logs import configure_logging
from app.runtime import Runtime
from app.settings import Settings, get_settings

log = logging.getLogger("mailrelay")

T = TypeVar("T")


def _with_runtime(settings: Settings, work: Callable[[Runtime], Awaitable[T]]) -> T:
    async def run() -> T:
        runtime = Runtime.create(settings)
        try:
            return await work(runtime)
        finally:
            await runtime.aclose()

    return asyncio.run(run())


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    import uvicorn

    from app.main import create_app

    if settings.is_sqlite:
        migrations.upgrade(settings.database_url)
    if args.worker is not None:
        settings = settings.model_copy(update={"worker_in_process": args.worker})

    async def count_keys(runtime: Runtime) -> int | None:
        try:
            async with runtime.sessionmaker() as session:
                return int(await session.scalar(select(func.count()).select_from(ApiKey)) or 0)
        except (SQLAlchemyError, OSError) as exc:
            log.error("database not ready (%s); run `mailrelay migrate`", exc.__class__.__name__)
            return None

    if _with_runtime(settings, count_keys) == 0:
        log.warning(
            "no API key exists yet; make one with: mailrelay apikey create"
            " (in a checkout: .venv/bin/mailrelay apikey create)"
        )
    log.info("database %s", _redacted_url(settings.database_url))
    uvicorn.run(
        create_app(settings),
        host=args.host,
        port=args.port,
        log_config=None,
        proxy_headers=True,
        forwarded_allow_ips=args.forwarded_allow_ips,
    )
    return 0


def cmd_worker(args: argparse.Namespace, settings: Settings) -> int:
    import signal

    from app.outbox.worker import Worker

    async def run(runtime: Runtime) -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        await Worker(runtime).run(stop)

    _with_runtime(settings, run)
    return 0


def cmd_migrate(args: argparse.Namespace, settings: Settings) -> int:
    migrations.upgrade(settings.database_url, args.revision)
    log.info("database is at %s", args.revision)
    return 0


def cmd_apikey_create(args: argparse.Namespace, settings: Settings) -> int:
    async def work(runtime: Runtime) -> str:
        async with runtime.sessionmaker.begin() as session:
            new = await apikeys.create_api_key(session, tenant_id=args.tenant, name=args.name)
            return new.token

    token = _with_runtime(settings, work)
    scope = f"tenant {args.tenant}" if args.tenant else "all tenants"
    print(f"API key for {scope} (shown once, store it now):", file=sys.stderr)
    print(token)
    return 0


def cmd_apikey_list(args: argparse.Namespace, settings: Settings) -> int:
    async def work(runtime: Runtime) -> list[ApiKey]:
        async with runtime.sessionmaker() as session:
            return await apikeys.list_api_keys(session)

    print(f"{'KEY ID':<18} {'TENANT':<24} {'CREATED':<20} {'REVOKED':<20} NAME")
    for key in _with_runtime(settings, work):
        revoked = key.revoked_at.strftime("%Y-%m-%d %H:%M") if key.revoked_at else "-"
        created = key.created_at.strftime("%Y-%m-%d %H:%M")
        print(f"{key.key_id:<18} {key.scope:<24} {created:<20} {revoked:<20} {key.name}")
    return 0


def cmd_apikey_revoke(args: argparse.Namespace, settings: Settings) -> int:
    async def work(runtime: Runtime) -> bool:
        async with runtime.sessionmaker.begin() as session:
            return await apikeys.revoke_api_key(session, key_id=args.key_id)

    if not _with_runtime(settings, work):
        print(f"no active API key with id {args.key_id}", file=sys.stderr)
        return 1
    print(f"revoked {args.key_id}", file=sys.stderr)
    return 0


def cmd_secrets_rotate(args: argparse.Namespace, settings: Settings) -> int:
    from app.secrets_rotation import rotate_secrets

    count = _with_runtime(settings, rotate_secrets)
    print(f"re-encrypted {count} secrets under the newest key", file=sys.stderr)
    return 0


def cmd_openapi(args: argparse.Namespace, settings: Settings) -> int:
    from app.openapi import render_openapi

    document = render_openapi()
    if args.output == "-":
        sys.stdout.write(document)
    else:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(document)
        print(f"wrote {args.output}", file=sys.stderr)
    return 0


def _redacted_url(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mailrelay", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the HTTP API (migrates SQLite itself)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument(
        "--forwarded-allow-ips", default="127.0.0.1", help="proxies trusted for X-Forwarded-*"
    )
    serve.add_argument(
        "--worker",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="deliver mail in this process too (default: on for SQLite, off for PostgreSQL)",
    )
    serve.set_defaults(func=cmd_serve)

    worker = commands.add_parser("worker", help="run the delivery worker alone")
    worker.set_defaults(func=cmd_worker)

    migrate = commands.add_parser("migrate", help="upgrade the database schema")
    migrate.add_argument("--revision", default="head")
    migrate.set_defaults(func=cmd_migrate)

    apikey = commands.add_parser("apikey", help="make, list and revoke API keys")
    apikey_commands = apikey.add_subparsers(dest="apikey_command", required=True)
    create = apikey_commands.add_parser("create", help="make a key; prints it once on stdout")
    create.add_argument("--tenant", help="bind the key to this tenant (default: all tenants)")
    create.add_argument("--name", default="", help="a note for `apikey list`")
    create.set_defaults(func=cmd_apikey_create)
    apikey_commands.add_parser("list", help="list keys").set_defaults(func=cmd_apikey_list)
    revoke = apikey_commands.add_parser("revoke", help="revoke a key by its id")
    revoke.add_argument("key_id")
    revoke.set_defaults(func=cmd_apikey_revoke)

    secrets = commands.add_parser("secrets", help="manage encrypted secrets")
    secrets_commands = secrets.add_subparsers(dest="secrets_command", required=True)
    secrets_commands.add_parser(
        "rotate", help="re-encrypt every secret under the first key of MAILRELAY_SECRET_KEYS"
    ).set_defaults(func=cmd_secrets_rotate)

    openapi = commands.add_parser("openapi", help="write the OpenAPI document")
    openapi.add_argument("--output", default="openapi/openapi.json", help="a path, or - for stdout")
    openapi.set_defaults(func=cmd_openapi)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    settings = get_settings()
    configure_logging(settings.log_level)
    try:
        result: int = args.func(args, settings)
    except RelayError as exc:
        print(f"mailrelay: {exc.detail} ({exc.code})", file=sys.stderr)
        return 2
    except SecretDecryptError as exc:
        print(
            f"mailrelay: {exc}; is every old key still in MAILRELAY_SECRET_KEYS?", file=sys.stderr
        )
        return 2
    return result


if __name__ == "__main__":
    sys.exit(main())
