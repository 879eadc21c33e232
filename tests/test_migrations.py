"""Migrations go from empty to head and back to base on every backend."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import inspect
from sqlalchemy.ext.asyncio import create_async_engine

from app.db import migrations
from app.db.registry import Model
from tests.conftest import BACKENDS, make_database


def table_names(url: str) -> set[str]:
    async def read() -> set[str]:
        engine = create_async_engine(url)
        try:
            async with engine.connect() as connection:
                return set(await connection.run_sync(lambda c: inspect(c).get_table_names()))
        finally:
            await engine.dispose()

    return asyncio.run(read())


@pytest.fixture(params=BACKENDS)
def empty_database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    url, drop = make_database(request.param, tmp_path)
    yield url
    drop()


def test_upgrade_to_head_and_downgrade_to_base(empty_database: str) -> None:
    migrations.upgrade(empty_database)
    tables = table_names(empty_database)
    assert set(Model.metadata.tables) <= tables
    assert "alembic_version" in tables

    migrations.downgrade(empty_database, "base")
    assert table_names(empty_database) <= {"alembic_version"}

    migrations.upgrade(empty_database)
    assert set(Model.metadata.tables) <= table_names(empty_database)


def test_models_and_migrations_agree(empty_database: str) -> None:
    """Autogenerate against head finds nothing: no model change lacks its migration."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    migrations.upgrade(empty_database)

    async def diff() -> list[object]:
        engine = create_async_engine(empty_database)
        try:
            async with engine.connect() as connection:
                return await connection.run_sync(
                    lambda c: compare_metadata(MigrationContext.configure(c), Model.metadata)
                )
        finally:
            await engine.dispose()

    assert asyncio.run(diff()) == []
