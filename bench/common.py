"""Shared by the benchmarks: scratch databases, settings, the sink process, CPU and the verdict."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import EmailMessage
from email.policy import SMTP as SMTP_POLICY
from email.utils import format_datetime, make_msgid
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet
from sqlalchemy.engine import make_url

from app.db.base import utcnow
from app.settings import Settings

POSTGRES_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
TENANT = "bench-tenant"
BARE_FROM = "bare@bench.example"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")

TEXT = (
    "Hello Alex,\n\n"
    "your leave request for 12-16 May (5 working days) was approved by Maria Schmidt.\n"
    "Remaining annual leave after this request: 14 days.\n\n"
    "You can see the details and the approval history in the HR portal under\n"
    "Time off > My requests. If anything looks wrong, reply to this e-mail and the HR team\n"
    "will get back to you.\n\n"
    "Kind regards\nAcme HR\n"
)
HTML = (
    '<!doctype html><html><body style="font-family:sans-serif">'
    "<p>Hello Alex,</p><p>your leave request for <b>12-16 May</b> (5 working days) was "
    "approved by Maria Schmidt.</p><p>Remaining annual leave after this request: "
    "<b>14 days</b>.</p><p>You can see the details and the approval history in the "
    '<a href="https://hr.acme.example/time-off">HR portal</a> under Time off &gt; My '
    "requests. If anything looks wrong, reply to this e-mail and the HR team will get back to "
    "you.</p><p>Kind regards<br>Acme HR</p></body></html>"
)


def message_body(i: int) -> dict[str, Any]:
    """The JSON body of `POST /messages` for message `i`: a typical HR notification."""
    return {
        "to": [f"employee{i}@acme.example"],
        "subject": f"Your leave request #{i} was approved",
        "text": TEXT,
        "html": HTML,
        "metadata": {"request_id": i},
    }


def bare_email(i: int) -> bytes:
    """The same message as `message_body(i)`, built the way a plain client would."""
    msg = EmailMessage(policy=SMTP_POLICY)
    msg["From"] = f"Notifications <{BARE_FROM}>"
    msg["To"] = f"employee{i}@acme.example"
    msg["Subject"] = f"Your leave request #{i} was approved"
    msg["Date"] = format_datetime(utcnow())
    msg["Message-ID"] = make_msgid(domain="bench.example")
    msg.set_content(TEXT)
    msg.add_alternative(HTML, subtype="html")
    return msg.as_bytes()


# -- arguments, settings, environment


def add_database_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--database-url",
        default="sqlite",
        help="'sqlite' (a file in a temporary directory, the default) or a PostgreSQL URL such "
        f"as {POSTGRES_URL}; a scratch database is made beside it and dropped afterwards",
    )


def bench_settings(database_url: str, workdir: Path, **overrides: Any) -> Settings:
    """Settings for a run: a fresh key and var dir; explicit values win over MAILRELAY_* vars."""
    values: dict[str, Any] = {
        "env": "dev",
        "database_url": database_url,
        "var_dir": workdir / "var",
        "secret_keys": [Fernet.generate_key().decode()],
        "webhook_url": None,
        "log_level": "WARNING",
    }
    values.update(overrides)
    return Settings(**values)


def settings_env(settings: Settings) -> dict[str, str]:
    """The environment that makes a child process (`mailrelay worker`, uvicorn) see `settings`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILRELAY_")}
    env.update(
        {
            "MAILRELAY_ENV": settings.env,
            "MAILRELAY_DATABASE_URL": settings.database_url,
            "MAILRELAY_VAR_DIR": str(settings.var_dir),
            "MAILRELAY_SECRET_KEYS": ",".join(k.get_secret_value() for k in settings.secret_keys),
            "MAILRELAY_LOG_LEVEL": settings.log_level,
            "MAILRELAY_DEFAULT_CONCURRENCY": str(settings.default_concurrency),
            "MAILRELAY_WORKER_CONCURRENCY": str(settings.worker_concurrency),
            "MAILRELAY_WORKER_BATCH_SIZE": str(settings.worker_batch_size),
            "MAILRELAY_WORKER_IN_PROCESS": "true" if settings.run_worker_in_process else "false",
        }
    )
    if settings.default_smtp_url is not None:
        env["MAILRELAY_DEFAULT_SMTP_URL"] = settings.default_smtp_url.get_secret_value()
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(repo_root()), env.get("PYTHONPATH")]))
    return env


def repo_root() -> Path:
    return Path(__file__).resolve().parents[1]


def exit_cleanly_on_sigterm() -> None:
    """Turn SIGTERM (`timeout`, a CI job's cancel) into SystemExit, so that scratch databases,
    temporary directories and child processes are still cleaned up."""

    def handler(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, handler)


# -- databases


@contextlib.contextmanager
def workdir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="mailrelay-bench-") as name:
        yield Path(name)


@contextlib.contextmanager
def scratch_database(url: str, directory: Path, label: str = "db") -> Iterator[str]:
    """A fresh, empty database for one run; call outside an event loop.

    `sqlite` is a file under `directory`; a PostgreSQL URL names the server (and the database to
    connect to for CREATE DATABASE); the scratch database is dropped afterwards.
    """
    if url == "sqlite":
        yield f"sqlite+aiosqlite:///{directory / f'{label}.sqlite'}"
        return
    parsed = make_url(url)
    if parsed.get_backend_name() != "postgresql":
        raise SystemExit("--database-url: 'sqlite' or a postgresql+asyncpg:// URL")
    name = f"mailrelay_bench_{uuid.uuid4().hex[:10]}"
    admin_dsn = parsed.set(drivername="postgresql").render_as_string(hide_password=False)

    async def execute(statement: str) -> None:
        import asyncpg  # type: ignore[import-untyped]

        connection = await asyncpg.connect(admin_dsn)
        try:
            await connection.execute(statement)
        finally:
            await connection.close()

    asyncio.run(execute(f'CREATE DATABASE "{name}"'))
    try:
        yield parsed.set(database=name).render_as_string(hide_password=False)
    finally:
        asyncio.run(execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def backend(url: str) -> str:
    return "sqlite" if url.startswith("sqlite") else "postgresql"


# -- the sink process


class Sink:
    """`python -m bench.sink` as a child process; `stop()` returns its counts."""

    def __init__(self, loop: str = "uvloop") -> None:
        self.process = subprocess.Popen(  # noqa: S603 (our own module)
            [sys.executable, "-m", "bench.sink", "--loop", loop],
            stdout=subprocess.PIPE,
            text=True,
            cwd=repo_root(),
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line.startswith("port "):
            self.process.kill()
            raise RuntimeError(f"the sink did not start: {line!r}")
        self.port = int(line.split()[1])

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def url(self) -> str:
        return f"smtp://127.0.0.1:{self.port}?security=none"

    def stop(self) -> dict[str, Any]:
        if self.process.poll() is None:
            self.process.terminate()
        out, _ = self.process.communicate(timeout=30)
        lines = [line for line in out.splitlines() if line.startswith("{")]
        return json.loads(lines[-1]) if lines else {}

    def __enter__(self) -> Sink:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


# -- CPU accounting (what limits a number on a 2-core machine)


def process_cpu(pid: int) -> float:
    """User + system CPU seconds of a process (and its threads), or 0 if it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def system_busy() -> float:
    """CPU seconds the whole machine spent busy (all cores), from /proc/stat."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return (sum(fields[:8]) - idle) / CLOCK_TICKS


def postgres_pids() -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if (entry / "comm").read_text().strip() == "postgres":
                    pids.append(int(entry.name))
    return pids


class CpuMeter:
    """CPU seconds spent by named processes between `start()` and `stop()`."""

    def __init__(self, pids: dict[str, int], *, postgres: bool = False) -> None:
        self.pids = pids
        self.postgres = postgres
        self.spent: dict[str, float] = {}

    def _sample(self) -> dict[str, float]:
        sample = {name: process_cpu(pid) for name, pid in self.pids.items()}
        if self.postgres:
            # Backends come and go; those that exit between samples are missed (small).
            self._pg = {pid: process_cpu(pid) for pid in postgres_pids()}
            sample["postgres"] = sum(self._pg.values())
        return sample

    def start(self) -> None:
        self._before = self._sample()
        self._pg_before = dict(self._pg) if self.postgres else {}
        self._busy_before = system_busy()

    def stop(self) -> dict[str, float]:
        after = self._sample()
        busy = system_busy() - self._busy_before
        self.spent = {name: after[name] - self._before[name] for name in self.pids}
        if self.postgres:
            self.spent["postgres"] = sum(
                cpu - self._pg_before.get(pid, 0.0) for pid, cpu in self._pg.items()
            )
        # Everything else on the machine (other test runs, the kernel's share): a noisy
        # neighbour shows up here and makes the figure of that phase unreliable.
        self.spent["other"] = max(0.0, busy - sum(self.spent.values()))
        return self.spent

    def describe(self, seconds: float) -> str:
        """`name 93%` per process: share of one core over the phase."""
        return ", ".join(
            f"{name} {100 * cpu / seconds:.0f}%" for name, cpu in self.spent.items() if seconds
        )


# -- output


@dataclass
class Verdict:
    name: str
    ratio: float
    target: float
    higher_is_better: bool = True

    @property
    def met(self) -> bool:
        return self.ratio >= self.target if self.higher_is_better else self.ratio <= self.target

    def line(self) -> str:
        sign = "≥" if self.higher_is_better else "≤"
        state = "MET" if self.met else "MISSED"
        return f"{self.name}: {self.ratio:.2f} (target {sign} {self.target:g}) {state}"


def print_table(headers: list[str], rows: list[list[object]]) -> None:
    cells = [headers, *[[str(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    for n, row in enumerate(cells):
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
        if n == 0:
            print("  ".join("-" * w for w in widths))


def print_machine() -> None:
    print(
        f"machine: {len(os.sched_getaffinity(0))} cpus (nproc), Python {platform.python_version()},"
        f" {platform.system()} {platform.release()}"
    )


def finish(verdicts: list[Verdict]) -> int:
    print()
    for verdict in verdicts:
        print(verdict.line())
    return 0 if all(v.met for v in verdicts) else 1
