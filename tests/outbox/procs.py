"""`mailrelay worker` as a real OS process: start it, kill it, stop it, read what it logged."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from types import TracebackType

from tests.conftest import TEST_KEY

REPO = Path(__file__).resolve().parents[2]


def worker_env(
    *, database_url: str, smtp_port: int, var_dir: Path, **settings: str
) -> dict[str, str]:
    """This environment without any `MAILRELAY_*`, plus a worker's; `settings` by field name."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("MAILRELAY_")}
    env.update(
        MAILRELAY_DATABASE_URL=database_url,
        MAILRELAY_SECRET_KEYS=TEST_KEY,
        MAILRELAY_DEFAULT_SMTP_URL=f"smtp://127.0.0.1:{smtp_port}?security=none",
        MAILRELAY_VAR_DIR=str(var_dir),
        MAILRELAY_LOG_LEVEL="INFO",
    )
    env.update(settings_env(settings))
    return env


def settings_env(settings: dict[str, str]) -> dict[str, str]:
    """`{"worker_lease": "PT5S"}` as `{"MAILRELAY_WORKER_LEASE": "PT5S"}`."""
    return {f"MAILRELAY_{name.upper()}": value for name, value in settings.items()}


class WorkerProcess:
    """One `python -m app.cli worker`, its stdout and stderr in a file."""

    def __init__(self, name: str, env: dict[str, str], directory: Path) -> None:
        self.name = name
        self.log_path = directory / f"{name}.log"
        with self.log_path.open("wb") as log:
            self.popen = subprocess.Popen(
                [sys.executable, "-m", "app.cli", "worker"],
                env=env,
                cwd=REPO,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.signalled = False  # stopped or killed by the test, so an exit is expected

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def running(self) -> bool:
        return self.popen.poll() is None

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def owner(self) -> str:
        """The lease owner the worker named itself in its "worker started" line."""
        found = re.search(r"worker started .*owner='([^']+)'", self.output())
        assert found, f"{self.name} logged no start:\n{self.output()}"
        return found[1]

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs, leases stay behind."""
        self.signalled = True
        os.kill(self.pid, signal.SIGKILL)
        self.popen.wait(timeout=10)

    async def stop(self, within: float) -> int:
        """SIGTERM, then its exit status; fails if it is still running after `within` seconds."""
        self.signalled = True
        self.popen.send_signal(signal.SIGTERM)
        try:
            return await asyncio.to_thread(self.popen.wait, within)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"{self.name} still running {within:g} s after SIGTERM:\n{self.output()}"
            ) from None


class WorkerProcesses:
    """Starts workers with one environment; at exit kills those still running."""

    def __init__(self, env: dict[str, str], directory: Path) -> None:
        self.env = env
        self.directory = directory
        self.started: list[WorkerProcess] = []

    def start(self, name: str, **settings: str) -> WorkerProcess:
        process = WorkerProcess(name, {**self.env, **settings_env(settings)}, self.directory)
        self.started.append(process)
        return process

    def check_running(self) -> None:
        """Fail at once, with its output, if a started worker has exited."""
        for process in self.started:
            status = process.popen.poll()
            if status is not None and not process.signalled:
                raise AssertionError(f"{process.name} exited with {status}:\n{process.output()}")

    def logs(self) -> str:
        return "\n".join(
            f"----- {p.name} (pid {p.pid}, exit {p.popen.returncode})\n{p.output()}"
            for p in self.started
        )

    def __enter__(self) -> WorkerProcesses:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for process in self.started:
            if process.running:
                process.popen.kill()
            process.popen.wait(timeout=10)
