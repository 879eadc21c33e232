"""Operator alerts for broken OAuth app registrations: logged, kept for `/readyz`, cleared."""

from __future__ import annotations

import logging

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.db.base import utcnow
from app.oauth.models import ProviderAlert

log = logging.getLogger(__name__)


async def raise_alert(session: AsyncSession, provider: str, code: str, detail: str) -> None:
    log.error(
        "OAuth app configuration broken: the operator must fix it",
        extra={"provider": provider, "code": code, "detail": detail},
    )
    alert = await session.get(ProviderAlert, provider)
    if alert is None:
        session.add(ProviderAlert(provider=provider, code=code, detail=detail, at=utcnow()))
    else:
        alert.code, alert.detail, alert.at = code, detail, utcnow()


async def clear_alert(session: AsyncSession, provider: str) -> None:
    await session.execute(delete(ProviderAlert).where(ProviderAlert.provider == provider))


async def active_alerts(session: AsyncSession) -> list[ProviderAlert]:
    return list(await session.scalars(select(ProviderAlert).order_by(ProviderAlert.provider)))
