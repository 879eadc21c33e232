"""Tenant ids are chosen by the HRMS; they only have to be safe in paths, logs and keys."""

from __future__ import annotations

import re

from app.errors import InvalidInputError

TENANT_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
_TENANT_ID = re.compile(TENANT_ID_PATTERN)


def validate_tenant_id(tenant_id: str) -> str:
    if not _TENANT_ID.fullmatch(tenant_id):
        raise InvalidInputError(
            "invalid_tenant_id",
            "A tenant id is 1 to 64 letters, digits, '.', '_' or '-',"
            " starting with a letter or digit.",
        )
    return tenant_id
