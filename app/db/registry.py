"""Imports every model so that `Model.metadata` is complete (Alembic, tests)."""

from app.apikeys.models import ApiKey
from app.db.base import Model
from app.mailboxes.models import Mailbox

__all__ = ["ApiKey", "Mailbox", "Model"]
