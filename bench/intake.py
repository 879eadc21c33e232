"""Intake: `POST /v1/tenants/{t}/messages` through uvicorn vs a bare FastAPI endpoint.

    python -m bench.intake [--database-url sqlite|postgresql+asyncpg://…] [--count 3000]

Each server runs alone in one uvicorn process (`bench.intake_server`, same uvicorn settings,
real HTTP over loopback); the same httpx load generator sends `--count` requests with
`--concurrency` connections to each, after a warm-up. The relay's in-process worker is off, so
only intake is measured (the row is committed before the 202). Target: relay ≥ 0.4 x bare.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
from sqlalchemy import func, select

from app.apikeys.service import create_api_key
from app.db.migrations import upgrade
from app.outbox.models import Message
from app.runtime import Runtime
from app.settings import Settings
from bench.common import (
    TENANT,
    CpuMeter,
    Verdict,
    add_database_argument,
    backend,
    bench_settings,
    exit_cleanly_on_sigterm,
    finish,
    message_body,
    print_machine,
    print_table,
    repo_root,
    scratch_database,
    settings_env,
    workdir,
)

TARGET = 0.4
WARMUP = 200


@dataclass
class Result:
    name: str
    ok: int
    errors: int
    seconds: float
    p50_ms: float
    p99_ms: float
    cpu: str
    server_ms: float  # server CPU per request
    client_ms: float  # load generator CPU per request

    @property
    def ceiling(self) -> float:
        """Requests/s if the busier of the two single-process sides had a core to itself."""
        busiest = max(self.server_ms, self.client_ms)
        return 1000 / busiest if busiest else 0.0

    @property
    def rate(self) -> float:
        return self.ok / self.seconds if self.seconds else 0.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Server:
    """`python -m bench.intake_server <app>` as a child process, up once /healthz answers."""

    def __init__(self, app: str, env: dict[str, str], log: Path) -> None:
        self.port = free_port()
        self._log = log.open("w")
        self.process = subprocess.Popen(  # noqa: S603 (our own module)
            [sys.executable, "-m", "bench.intake_server", app, "--port", str(self.port)],
            env=env,
            cwd=repo_root(),
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        self.url = f"http://127.0.0.1:{self.port}"

    async def ready(self, bound: float = 30) -> None:
        deadline = time.monotonic() + bound
        async with httpx.AsyncClient() as client:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise RuntimeError(f"server exited with {self.process.returncode}")
                try:
                    if (await client.get(f"{self.url}/healthz")).status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.1)
        raise TimeoutError("the server did not come up")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()


async def load(
    url: str, token: str, count: int, concurrency: int, *, first: int = 0
) -> tuple[int, int, float, list[float]]:
    """`count` POSTs over `concurrency` keep-alive connections; (ok, errors, seconds, latencies)."""
    numbers = itertools.count(first)
    latencies: list[float] = []
    errors = 0
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    headers = {"Authorization": f"Bearer {token}"}
    path = f"/v1/tenants/{TENANT}/messages"

    client = httpx.AsyncClient(base_url=url, limits=limits, headers=headers, timeout=60)
    async with client:

        async def user() -> None:
            nonlocal errors
            while (i := next(numbers)) < first + count:
                started = time.perf_counter()
                response = await client.post(path, json=message_body(i))
                latencies.append(time.perf_counter() - started)
                if response.status_code != 202:
                    errors += 1
                    if errors <= 3:
                        print(f"  {response.status_code}: {response.text[:200]}")

        started = time.perf_counter()
        await asyncio.gather(*(user() for _ in range(concurrency)))
        seconds = time.perf_counter() - started
    return count - errors, errors, seconds, latencies


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p * len(ordered)))] * 1000 if ordered else 0.0


async def measure(
    name: str, app: str, env: dict[str, str], token: str, args: argparse.Namespace, log: Path
) -> Result:
    server = Server(app, env, log)
    try:
        await server.ready()
        await load(server.url, token, WARMUP, args.concurrency, first=10**6)
        meter = CpuMeter(
            {"server": server.process.pid, "load generator": os.getpid()},
            postgres=not env["MAILRELAY_DATABASE_URL"].startswith("sqlite"),
        )
        meter.start()
        ok, errors, seconds, latencies = await load(server.url, token, args.count, args.concurrency)
        meter.stop()
    finally:
        server.stop()
    return Result(
        name,
        ok,
        errors,
        seconds,
        percentile(latencies, 0.5),
        percentile(latencies, 0.99),
        meter.describe(seconds),
        1000 * meter.spent.get("server", 0.0) / ok if ok else 0.0,
        1000 * meter.spent.get("load generator", 0.0) / ok if ok else 0.0,
    )


async def make_key(settings: Settings) -> str:
    runtime = Runtime.create(settings)
    try:
        async with runtime.sessionmaker.begin() as session:
            return (await create_api_key(session, name="bench")).token
    finally:
        await runtime.aclose()


async def count_messages(settings: Settings) -> int:
    runtime = Runtime.create(settings)
    try:
        async with runtime.sessionmaker() as session:
            return int(await session.scalar(select(func.count()).select_from(Message)) or 0)
    finally:
        await runtime.aclose()


async def run(settings: Settings, args: argparse.Namespace, directory: Path) -> int:
    token = await make_key(settings)
    env = settings_env(settings)
    bare = await measure("bare FastAPI", "bare", env, token, args, directory / "bare.log")
    relay = await measure(
        "relay POST /messages", "relay", env, token, args, directory / "relay.log"
    )
    stored = await count_messages(settings)

    print()
    print_table(
        [
            "server",
            "requests",
            "errors",
            "seconds",
            "req/s",
            "p50 ms",
            "p99 ms",
            "server CPU ms/req",
            "CPU (share of one core)",
        ],
        [
            [
                r.name,
                r.ok,
                r.errors,
                f"{r.seconds:.2f}",
                f"{r.rate:.0f}",
                f"{r.p50_ms:.1f}",
                f"{r.p99_ms:.1f}",
                f"{r.server_ms:.2f}",
                r.cpu,
            ]
            for r in (bare, relay)
        ],
    )
    print(f"\nmessages stored: {stored} (expected {args.count + WARMUP})")
    if relay.errors or bare.errors or stored != args.count + WARMUP:
        print("some requests failed")
        return 1
    ratio = relay.rate / bare.rate if bare.rate else 0.0
    if bare.ceiling:
        print(
            f"CPU-bound estimate: bare {bare.ceiling:.0f} req/s (load generator"
            f" {bare.client_ms:.2f} ms/req), relay {relay.ceiling:.0f} req/s (server"
            f" {relay.server_ms:.2f} ms/req), ratio {relay.ceiling / bare.ceiling:.2f}"
        )
    return finish([Verdict(f"intake {backend(settings.database_url)}: relay/bare", ratio, TARGET)])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_database_argument(parser)
    parser.add_argument("--count", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args(argv)

    exit_cleanly_on_sigterm()
    print_machine()
    with workdir() as directory, scratch_database(args.database_url, directory) as url:
        upgrade(url)
        settings = bench_settings(url, directory, worker_in_process=False)
        print(
            f"intake: {args.count} requests (after {WARMUP} warm-up), {args.concurrency}"
            f" connections, {backend(url)}, one uvicorn process each"
        )
        return asyncio.run(run(settings, args, directory))


if __name__ == "__main__":
    sys.exit(main())
