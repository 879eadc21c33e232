"""Configuration: one `Settings` object read from `MAILRELAY_*` environment variables."""

from __future__ import annotations

import ipaddress
from datetime import timedelta
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def _split_commas(value: object) -> object:
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


_PROVIDER_URLS = (
    "google_authorize_url",
    "google_token_url",
    "google_revoke_url",
    "google_userinfo_url",
    "google_gmail_url",
    "microsoft_authority",
    "microsoft_graph_url",
)


class Settings(BaseSettings):
    """Every knob of the service; names and defaults are those of DESIGN.md."""

    model_config = SettingsConfigDict(env_prefix="MAILRELAY_", extra="ignore")

    env: Literal["dev", "production"] = "dev"
    database_url: str = "sqlite+aiosqlite:///./var/mailrelay.db"
    secret_keys: Annotated[list[SecretStr], NoDecode] = Field(default_factory=list)
    var_dir: Path = Path("./var")
    public_url: str = "http://localhost:8000"

    default_from: str = "notifications@example.com"
    default_from_name: str = "Notifications"
    default_smtp_url: SecretStr | None = None

    smtp_allowed_networks: Annotated[list[IPNetwork], NoDecode] = Field(default_factory=list)
    smtp_ca_file: Path | None = None
    smtp_timeout: timedelta = timedelta(seconds=30)

    google_client_id: str | None = None
    google_client_secret: SecretStr | None = None
    google_authorize_url: str = "https://accounts.google.com/o/oauth2/v2/auth"
    google_token_url: str = "https://oauth2.googleapis.com/token"  # noqa: S105 (a URL)
    google_revoke_url: str = "https://oauth2.googleapis.com/revoke"
    google_userinfo_url: str = "https://openidconnect.googleapis.com/v1/userinfo"
    google_gmail_url: str = "https://gmail.googleapis.com"
    microsoft_client_id: str | None = None
    microsoft_client_secret: SecretStr | None = None
    microsoft_authority: str = "https://login.microsoftonline.com/common"
    microsoft_graph_url: str = "https://graph.microsoft.com/v1.0"

    oauth_return_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)

    webhook_url: str | None = None
    webhook_secret: SecretStr | None = None

    test_timeout: timedelta = timedelta(seconds=30)
    mailbox_retry_window: timedelta = timedelta(minutes=15)
    mailbox_broken_after: timedelta = timedelta(hours=6)
    max_message_bytes: int = Field(default=25 * 1024 * 1024, gt=0)
    retry_base: timedelta = timedelta(seconds=5)
    retry_max: timedelta = timedelta(minutes=10)

    dns_timeout: timedelta = timedelta(seconds=5)

    # Delivery worker (not in DESIGN.md's table; see docs/configuration.md).
    worker_in_process: bool | None = None  # None: on for SQLite, off for PostgreSQL
    worker_batch_size: int = Field(default=50, gt=0)
    worker_concurrency: int = Field(default=50, gt=0)
    worker_poll_interval: timedelta = timedelta(seconds=1)
    worker_lease: timedelta = timedelta(minutes=2)
    mailbox_concurrency: int = Field(default=2, gt=0)
    smtp_rate_per_minute: int = Field(default=120, gt=0)
    google_rate_per_minute: int = Field(default=120, gt=0)  # Gmail: about 2 a second
    microsoft_rate_per_minute: int = Field(default=30, gt=0)  # Exchange Online: 30 a minute
    default_concurrency: int = Field(default=10, gt=0)
    message_max_age: timedelta = timedelta(days=3)
    webhook_timeout: timedelta = timedelta(seconds=10)
    log_level: str = "INFO"

    @field_validator(
        "smtp_timeout",
        "test_timeout",
        "mailbox_retry_window",
        "mailbox_broken_after",
        "retry_base",
        "retry_max",
        "dns_timeout",
        "worker_poll_interval",
        "worker_lease",
        "message_max_age",
        "webhook_timeout",
        mode="before",
    )
    @classmethod
    def _seconds(cls, value: object) -> object:
        # `MAILRELAY_SMTP_TIMEOUT=30` means 30 seconds; ISO 8601 (`PT15M`) works as well.
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                return value
        return value

    @field_validator("default_smtp_url", "webhook_url", "webhook_secret", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        # `MAILRELAY_WEBHOOK_URL=` in a compose file means "off", not "an empty URL".
        return None if value == "" else value

    _split = field_validator(
        "secret_keys", "smtp_allowed_networks", "oauth_return_origins", mode="before"
    )(_split_commas)

    @field_validator("public_url")
    @classmethod
    def _public_url_is_absolute(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError("must be an absolute http(s) URL")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _production_refuses_dev_shortcuts(self) -> Settings:
        if self.is_production and not self.secret_keys:
            raise ValueError("MAILRELAY_SECRET_KEYS is required when MAILRELAY_ENV=production")
        if self.is_production:
            for name in ("public_url", *_PROVIDER_URLS):
                if not str(getattr(self, name)).startswith("https://"):
                    raise ValueError(f"MAILRELAY_{name.upper()} must be https in production")
        if self.webhook_url and not self.webhook_secret:
            raise ValueError("MAILRELAY_WEBHOOK_SECRET is required with MAILRELAY_WEBHOOK_URL")
        return self

    @property
    def is_production(self) -> bool:
        return self.env == "production"

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    @property
    def run_worker_in_process(self) -> bool:
        """`serve` delivers mail itself: by default on SQLite, the one-command set-up."""
        if self.worker_in_process is None:
            return self.is_sqlite
        return self.worker_in_process


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings, read once from the environment."""
    return Settings()
