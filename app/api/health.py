"""Liveness and readiness probes."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from app.api.deps import RuntimeDep
from app.db.migrations import head_revision
from app.oauth.alerts import active_alerts

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


@router.get("/readyz", responses={503: {"description": "Not ready; `checks` says why."}})
async def readyz(runtime: RuntimeDep) -> JSONResponse:
    """Ready to serve: the database answers and its schema is at the newest migration."""
    checks: dict[str, Any] = {}
    try:
        async with runtime.engine.connect() as connection:
            revision = await connection.scalar(text("SELECT version_num FROM alembic_version"))
        checks["database"] = {"ok": True}
        head = head_revision()
        checks["migrations"] = {"ok": revision == head, "current": revision, "head": head}
        async with runtime.sessionmaker() as session:
            alerts = await active_alerts(session)
        # Informational: a broken OAuth app needs the operator, but this process still serves.
        checks["providers"] = {
            "ok": True,
            "alerts": [
                {"provider": a.provider, "code": a.code, "detail": a.detail, "at": a.at.isoformat()}
                for a in alerts
            ],
        }
    except (SQLAlchemyError, OSError) as exc:
        # A refused connection surfaces as OSError from the driver, not as SQLAlchemyError.
        checks["database"] = {"ok": False, "detail": exc.__class__.__name__}
    ready = all(check["ok"] for check in checks.values()) and "migrations" in checks
    status = "ready" if ready else "unavailable"
    if ready and checks["providers"]["alerts"]:
        status = "degraded"
    return JSONResponse(
        {"status": status, "checks": checks},
        status_code=200 if ready else 503,
    )
