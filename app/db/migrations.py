"""Run Alembic from code: `mailrelay migrate`, `serve` on SQLite, the tests and `/readyz`."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory


def _ini_path() -> Path:
    # A source checkout has alembic.ini beside the package; an installed copy (the container)
    # runs from the project directory.
    beside_package = Path(__file__).resolve().parents[2] / "alembic.ini"
    return beside_package if beside_package.exists() else Path.cwd() / "alembic.ini"


def alembic_config(database_url: str, *, configure_logging: bool = False) -> Config:
    config = Config(str(_ini_path()))
    config.attributes["database_url"] = database_url
    config.attributes["configure_logging"] = configure_logging
    return config


def upgrade(database_url: str, revision: str = "head") -> None:
    """Migrate to `revision`; must run outside an event loop (Alembic's env uses asyncio.run)."""
    command.upgrade(alembic_config(database_url), revision)


def downgrade(database_url: str, revision: str = "base") -> None:
    command.downgrade(alembic_config(database_url), revision)


@lru_cache
def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config("")).get_current_head()
