"""Settings: every knob of mservices, read from ``MSERVICES_*`` environment variables or ``.env``.

Settings fail fast: an invalid value stops start-up with one line naming the variable
(see :func:`describe_settings_error`). Secrets are ``SecretStr`` and never have a literal default.
"""

from __future__ import annotations

import ipaddress
import os
import secrets
from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

ENV_PREFIX = "MSERVICES_"
COOKIE_SECRET_FILE = "cookie_secret"  # noqa: S105 - a file name, not a secret
MIN_SECRET_LENGTH = 32
PLACEHOLDER_SECRETS = frozenset({"changeme", "change-me", "secret", "please-change-me"})
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class Settings(BaseSettings):
    """The service configuration, validated once at start-up."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        frozen=True,
    )

    data_dir: Path = Field(default=Path("data"), description="Where embedded data lives.")
    database_url: str = Field(
        default="",
        description="SQLAlchemy async URL; empty means the embedded SQLite file in DATA_DIR.",
    )
    redis_url: str | None = Field(
        default=None, description="Redis for multi-process state; unset means in-memory."
    )
    redis_prefix: str = Field(
        default="mservices",
        pattern=r"^[A-Za-z0-9_.-]{1,64}$",
        description="Namespace of every Redis key and channel (several deployments, one Redis).",
    )
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    tcp_port: int = Field(default=8011, ge=0, le=65535, description="TCP chat port; 0 disables.")
    debug: bool = False
    cookie_secret: SecretStr | None = None
    cors_origins: Annotated[list[str], NoDecode] = Field(default_factory=lambda: ["*"])
    ws_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Origins besides the site's own allowed to open the chat WebSocket.",
    )
    tcp_idle_seconds: float = Field(default=600.0, gt=0, description="TCP chat idle timeout.")
    db_pool_size: int = Field(
        default=10, ge=1, le=200, description="Database connections each process keeps open."
    )
    db_max_overflow: int = Field(
        default=5,
        ge=0,
        le=200,
        description="Connections a process may open beyond DB_POOL_SIZE under load (closed "
        "when returned); a process holds at most DB_POOL_SIZE + DB_MAX_OVERFLOW.",
    )
    db_connect_timeout: float = Field(default=5.0, gt=0, le=120)

    token_idle_days: float = Field(default=7, gt=0, description="A token unused this long expires.")
    token_absolute_days: float = Field(default=30, gt=0, description="A token's hard lifetime.")

    login_free_failures: int = Field(
        default=5, ge=1, description="Per name and IP, before backoff."
    )
    login_ip_free_failures: int = Field(default=50, ge=1, description="Per IP, before backoff.")
    login_backoff_base_seconds: float = Field(default=1.0, gt=0)
    login_backoff_max_seconds: float = Field(default=900.0, gt=0)
    login_failure_window_seconds: float = Field(
        default=3600.0, gt=0, description="Failures are forgotten after this long without one."
    )

    signup_role: str = Field(
        default="",
        max_length=64,
        description="The role a self-registered user receives (empty: none).",
    )
    signup_per_ip: int = Field(
        default=10, ge=1, description="Registrations one client IP may make per window."
    )
    signup_window_seconds: float = Field(
        default=3600.0, gt=0, description="The sliding window of signup_per_ip."
    )

    public_url: str = Field(
        default="",
        description="The site's address as users reach it (https://example.com), used in mailed "
        "links; empty: http://HOST:PORT. Never taken from the request's Host header.",
    )
    smtp_url: SecretStr | None = Field(
        default=None,
        description="Where mail goes: smtp://[user:pass@]host[:25] (plain), "
        "smtp+starttls://...[:587] (STARTTLS required) or smtps://...[:465] (TLS); unset: "
        "links are written to the log.",
    )
    mail_from: str = Field(
        default="mservices <noreply@localhost>",
        min_length=3,
        max_length=254,
        description="The From header of mail sent.",
    )
    email_verify_hours: float = Field(
        default=24, gt=0, le=24 * 30, description="How long an email verification link works."
    )
    password_reset_hours: float = Field(
        default=1, gt=0, le=72, description="How long a password reset link works."
    )
    reset_per_ip: int = Field(
        default=10, ge=1, description="Password reset requests one client IP may make per window."
    )
    reset_per_email: int = Field(
        default=3, ge=1, description="Reset links one address may be sent per window."
    )
    reset_window_seconds: float = Field(
        default=3600.0, gt=0, description="The sliding window of reset_per_ip and reset_per_email."
    )

    password_time_cost: int = Field(default=2, ge=1, le=20)
    password_memory_kib: int = Field(default=19 * 1024, ge=8 * 1024, le=1024 * 1024)
    password_parallelism: int = Field(default=1, ge=1, le=16)
    password_workers: int = Field(
        default=2, ge=1, le=64, description="Threads that hash passwords (the bounded pool)."
    )

    download_dir: Path | None = Field(
        default=None, description="Where downloads are saved; unset means DATA_DIR/downloads."
    )
    download_allow: Annotated[list[IPNetwork], NoDecode] = Field(
        default_factory=list,
        description="IPs or CIDR networks downloads may reach though not public (e.g. 127.0.0.1).",
    )
    download_max_bytes: int = Field(
        default=100 * 1024 * 1024, ge=1, description="The largest body a download may have."
    )
    download_timeout_seconds: float = Field(
        default=300.0, gt=0, le=86400, description="A download's whole time, redirects included."
    )
    download_concurrency: int = Field(
        default=10, ge=1, le=10000, description="Downloads running at once; as many more queue."
    )
    download_user_concurrency: int = Field(
        default=3, ge=1, le=10000, description="Downloads one user may have running or queued."
    )
    download_user_daily: int = Field(
        default=50, ge=1, description="Downloads one user may start in any 24 hours."
    )
    download_disk_max_bytes: int = Field(
        default=1024**3, ge=1, description="The most the downloads directory may hold."
    )
    download_keep_days: float = Field(
        default=7, gt=0, description="Saved downloads older than this are deleted (hourly)."
    )

    xheaders: bool = Field(
        default=False,
        description="Honour X-Real-IP, X-Forwarded-For and X-Forwarded-Proto from trusted proxies.",
    )
    trusted_proxies: Annotated[list[IPNetwork], NoDecode] = Field(
        default_factory=lambda: _loopback_networks(),
        description="Proxy addresses or networks (CIDR) whose forwarding headers are believed.",
    )
    metrics_allow: Annotated[list[IPNetwork], NoDecode] = Field(
        default_factory=lambda: _loopback_networks(),
        description="Client addresses or networks (CIDR) that may read /metrics.",
    )
    log_format: Literal["text", "json"] = Field(
        default="text", description="text: one readable line per record; json: one object."
    )

    @field_validator("cors_origins", "ws_origins", mode="before")
    @classmethod
    def _split_origins(cls, value: object) -> object:
        """Accept a comma-separated string as well as a list."""
        if isinstance(value, str):
            return [origin.strip() for origin in value.split(",") if origin.strip()]
        return value

    @field_validator("cors_origins", "ws_origins")
    @classmethod
    def _check_origins(cls, origins: list[str]) -> list[str]:
        for origin in origins:
            if origin != "*" and not origin.startswith(("http://", "https://")):
                raise ValueError(f"origin {origin!r} must be '*' or start with http:// or https://")
        return [origin.rstrip("/") for origin in origins]

    @field_validator("download_allow", "trusted_proxies", "metrics_allow", mode="before")
    @classmethod
    def _parse_download_allow(cls, value: object) -> object:
        """Accept a comma-separated string of IPs and CIDR networks as well as a list."""
        items = value.split(",") if isinstance(value, str) else value
        if not isinstance(items, list | tuple):
            return value
        networks: list[IPNetwork] = []
        for item in items:
            text = str(item).strip()
            if not text:
                continue
            try:
                networks.append(ipaddress.ip_network(text, strict=False))
            except ValueError:
                raise ValueError(f"{text!r} is not an IP address or CIDR network") from None
        return networks

    @field_validator("database_url")
    @classmethod
    def _check_database_url(cls, url: str) -> str:
        if url and not url.startswith(
            ("sqlite+aiosqlite://", "mysql+asyncmy://", "mariadb+asyncmy://")
        ):
            raise ValueError(
                "must be a sqlite+aiosqlite:// or mysql+asyncmy:// URL (async drivers only)"
            )
        return url

    @field_validator("redis_url")
    @classmethod
    def _check_redis_url(cls, url: str | None) -> str | None:
        if url is None or url == "":
            return None
        if not url.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must be a redis://, rediss:// or unix:// URL")
        return url

    @field_validator("smtp_url")
    @classmethod
    def _check_smtp_url(cls, url: SecretStr | None) -> SecretStr | None:
        if url is None or url.get_secret_value() == "":
            return None
        if not url.get_secret_value().startswith(("smtp://", "smtp+starttls://", "smtps://")):
            raise ValueError("must be an smtp://, smtp+starttls:// or smtps:// URL")
        return url

    @field_validator("public_url")
    @classmethod
    def _check_public_url(cls, url: str) -> str:
        if url and not url.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return url.rstrip("/")

    @field_validator("cookie_secret")
    @classmethod
    def _check_secret(cls, secret: SecretStr | None) -> SecretStr | None:
        if secret is None:
            return None
        value = secret.get_secret_value()
        if value.lower() in PLACEHOLDER_SECRETS or len(value) < MIN_SECRET_LENGTH:
            raise ValueError(f"must be at least {MIN_SECRET_LENGTH} random characters")
        return secret

    @model_validator(mode="after")
    def _require_secret_off_the_embedded_database(self) -> Settings:
        if self.cookie_secret is None and not self.uses_embedded_database:
            raise ValueError(
                "MSERVICES_COOKIE_SECRET is required when MSERVICES_DATABASE_URL is set "
                "(generate one with: python3 -c 'import secrets; print(secrets.token_hex(32))')"
            )
        return self

    @property
    def uses_embedded_database(self) -> bool:
        """True when the database is the default SQLite file inside DATA_DIR."""
        return self.database_url == ""

    @property
    def effective_database_url(self) -> str:
        """The URL actually used: the configured one, or the embedded SQLite file."""
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{(self.data_dir / 'mservices.db').resolve()}"

    @property
    def effective_public_url(self) -> str:
        """The base of mailed links: PUBLIC_URL, or the address this server listens on."""
        return self.public_url or f"http://{self.host}:{self.port}"

    @property
    def effective_download_dir(self) -> Path:
        """Where downloads are saved: DOWNLOAD_DIR, or DATA_DIR/downloads."""
        return (self.download_dir or self.data_dir / "downloads").resolve()


def _loopback_networks() -> list[IPNetwork]:
    """127.0.0.1 and ::1: the default trusted proxy (nginx on the same host) and scraper."""
    return [ipaddress.ip_network("127.0.0.1"), ipaddress.ip_network("::1")]


def load_cookie_secret(settings: Settings) -> str:
    """Return the cookie secret: the configured one, or the one generated once in DATA_DIR.

    The generated secret is written with 0600 permissions, so it survives restarts without
    ever appearing in source or in the environment.
    """
    if settings.cookie_secret is not None:
        return settings.cookie_secret.get_secret_value()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    path = settings.data_dir / COOKIE_SECRET_FILE
    try:
        stored = path.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        stored = ""
    if len(stored) >= MIN_SECRET_LENGTH:
        return stored
    generated = secrets.token_hex(32)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="ascii") as handle:
        handle.write(generated + "\n")
    os.chmod(path, 0o600)
    return generated


def describe_settings_error(error: ValidationError) -> str:
    """Turn a settings ValidationError into one line that names the offending variable."""
    first = error.errors()[0]
    location = [str(part) for part in first.get("loc", ()) if part != "__root__"]
    message = str(first.get("msg", "invalid value")).removeprefix("Value error, ")
    if location:
        return f"invalid setting {ENV_PREFIX}{location[0].upper()}: {message}"
    return f"invalid settings: {message}"
