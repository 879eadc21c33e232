"""Imports every model so that `Model.metadata` is complete (Alembic, tests)."""

from app.apikeys.models import ApiKey
from app.db.base import Model
from app.mailboxes.models import Mailbox
from app.oauth.models import OAuthState, ProviderAlert
from app.outbox.models import Message, MessageAttempt, SendLimit
from app.webhooks.models import Event

__all__ = [
    "ApiKey",
    "Event",
    "Mailbox",
    "Message",
    "MessageAttempt",
    "Model",
    "OAuthState",
    "ProviderAlert",
    "SendLimit",
]
