"""Settings: defaults, the ``MSERVICES_`` environment and ``.env``, fail-fast validation, and
the cookie secret generated once into the data directory."""

from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from server.settings import (
    COOKIE_SECRET_FILE,
    MIN_SECRET_LENGTH,
    Settings,
    describe_settings_error,
    load_cookie_secret,
)

GOOD_SECRET = "0123456789abcdef" * 4
MYSQL_URL = "mysql+asyncmy://app:pw@db.test:3306/mservices"


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No ``MSERVICES_*`` variable of the caller and no ``.env`` of the checkout leaks in."""
    for name in list(os.environ):
        if name.startswith("MSERVICES_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def settings(**values: Any) -> Settings:
    """Settings from the environment and ``values`` only, never from a ``.env`` file."""
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


def refusal(**values: Any) -> str:
    """The one-line description of why these settings are refused (fails if they are not)."""
    with pytest.raises(ValidationError) as caught:
        settings(**values)
    line = describe_settings_error(caught.value)
    assert "\n" not in line
    return line


def test_defaults_serve_locally_on_the_embedded_database(tmp_path: Path) -> None:
    defaults = settings()
    assert defaults.host == "127.0.0.1"
    assert defaults.port == 8000
    assert defaults.tcp_port == 8011
    assert defaults.debug is False
    assert defaults.redis_url is None
    assert defaults.cors_origins == ["*"]
    assert defaults.cookie_secret is None
    assert defaults.uses_embedded_database
    expected = (tmp_path / "data" / "mservices.db").resolve()
    assert defaults.effective_database_url == f"sqlite+aiosqlite:///{expected}"


def test_the_embedded_database_lives_inside_the_configured_data_dir(tmp_path: Path) -> None:
    configured = settings(data_dir=tmp_path / "elsewhere")
    expected = (tmp_path / "elsewhere" / "mservices.db").resolve()
    assert configured.effective_database_url == f"sqlite+aiosqlite:///{expected}"


def test_a_configured_database_url_is_used_as_is() -> None:
    configured = settings(database_url=MYSQL_URL, cookie_secret=GOOD_SECRET)
    assert not configured.uses_embedded_database
    assert configured.effective_database_url == MYSQL_URL


def test_variables_with_the_mservices_prefix_are_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MSERVICES_HOST", "0.0.0.0")
    monkeypatch.setenv("MSERVICES_PORT", "9000")
    monkeypatch.setenv("MSERVICES_TCP_PORT", "0")
    monkeypatch.setenv("MSERVICES_DEBUG", "true")
    monkeypatch.setenv("MSERVICES_REDIS_URL", "redis://cache.test:6379/0")
    monkeypatch.setenv("MSERVICES_DATABASE_URL", MYSQL_URL)
    monkeypatch.setenv("MSERVICES_COOKIE_SECRET", GOOD_SECRET)
    read = settings()
    assert read.host == "0.0.0.0"
    assert read.port == 9000
    assert read.tcp_port == 0
    assert read.debug is True
    assert read.redis_url == "redis://cache.test:6379/0"
    assert read.database_url == MYSQL_URL
    assert read.cookie_secret is not None
    assert read.cookie_secret.get_secret_value() == GOOD_SECRET


def test_variables_without_the_prefix_are_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PORT", "9000")
    monkeypatch.setenv("DATABASE_URL", "postgresql://elsewhere/db")
    read = settings()
    assert read.port == 8000
    assert read.uses_embedded_database


def test_a_dotenv_file_in_the_working_directory_is_read(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text(
        f"MSERVICES_PORT=9100\nMSERVICES_DATABASE_URL={MYSQL_URL}\n"
        f"MSERVICES_COOKIE_SECRET={GOOD_SECRET}\n",
        encoding="utf-8",
    )
    read = Settings()
    assert read.port == 9100
    assert read.database_url == MYSQL_URL


def test_the_environment_wins_over_the_dotenv_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / ".env").write_text("MSERVICES_PORT=9100\n", encoding="utf-8")
    monkeypatch.setenv("MSERVICES_PORT", "9200")
    assert Settings().port == 9200


def test_the_secret_is_hidden_from_the_settings_repr() -> None:
    configured = settings(database_url=MYSQL_URL, cookie_secret=GOOD_SECRET)
    assert GOOD_SECRET not in repr(configured)
    assert GOOD_SECRET not in str(configured.model_dump())


def test_comma_separated_cors_origins_become_a_list_without_trailing_slashes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MSERVICES_CORS_ORIGINS", "http://a.test, https://b.test/")
    assert settings().cors_origins == ["http://a.test", "https://b.test"]


@pytest.mark.parametrize("origin", ["a.test", "ftp://a.test", "//a.test"])
def test_an_origin_that_is_not_http_is_refused_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, origin: str
) -> None:
    monkeypatch.setenv("MSERVICES_CORS_ORIGINS", f"http://ok.test,{origin}")
    line = refusal()
    assert line.startswith("invalid setting MSERVICES_CORS_ORIGINS: ")
    assert origin in line


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://app:pw@db.test/mservices",
        "mysql+pymysql://app:pw@db.test/mservices",
        "mysql://app:pw@db.test/mservices",
        "sqlite:///data/mservices.db",
    ],
)
def test_a_database_url_without_an_async_driver_is_refused(url: str) -> None:
    line = refusal(database_url=url, cookie_secret=GOOD_SECRET)
    assert line.startswith("invalid setting MSERVICES_DATABASE_URL: ")
    assert "async" in line


@pytest.mark.parametrize(
    "url", ["sqlite+aiosqlite:///x.db", "mysql+asyncmy://u@h/d", "mariadb+asyncmy://u@h/d"]
)
def test_a_database_url_with_an_async_driver_is_accepted(url: str) -> None:
    assert settings(database_url=url, cookie_secret=GOOD_SECRET).database_url == url


def test_a_database_url_without_a_cookie_secret_is_refused_naming_the_secret() -> None:
    line = refusal(database_url=MYSQL_URL)
    assert "MSERVICES_COOKIE_SECRET" in line
    assert "MSERVICES_DATABASE_URL" in line


@pytest.mark.parametrize(
    "secret", ["changeme", "CHANGEME", "secret", "short", "x" * (MIN_SECRET_LENGTH - 1)]
)
def test_a_placeholder_or_short_cookie_secret_is_refused(secret: str) -> None:
    line = refusal(database_url=MYSQL_URL, cookie_secret=secret)
    assert str(MIN_SECRET_LENGTH) in line


def test_a_weak_cookie_secret_is_refused_even_on_the_embedded_database() -> None:
    refusal(cookie_secret="changeme")


def test_a_refused_cookie_secret_is_described_naming_the_variable() -> None:
    assert "MSERVICES_COOKIE_SECRET" in refusal(database_url=MYSQL_URL, cookie_secret="changeme")


def test_a_cookie_secret_of_the_minimum_length_is_accepted() -> None:
    secret = secrets.token_hex(MIN_SECRET_LENGTH // 2)
    configured = settings(database_url=MYSQL_URL, cookie_secret=secret)
    assert configured.cookie_secret is not None
    assert configured.cookie_secret.get_secret_value() == secret


@pytest.mark.parametrize(("value", "detail"), [("abc", "integer"), ("70000", "65535"), ("0", "1")])
def test_an_invalid_port_is_described_in_one_line_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, value: str, detail: str
) -> None:
    monkeypatch.setenv("MSERVICES_PORT", value)
    line = refusal()
    assert line.startswith("invalid setting MSERVICES_PORT: ")
    assert detail in line.removeprefix("invalid setting MSERVICES_PORT: ")


def test_a_bad_redis_url_is_described_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MSERVICES_REDIS_URL", "http://cache.test")
    assert refusal().startswith("invalid setting MSERVICES_REDIS_URL: ")


def test_an_empty_redis_url_means_no_redis(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MSERVICES_REDIS_URL", "")
    assert settings().redis_url is None


def test_the_cookie_secret_is_generated_once_into_the_data_dir_with_mode_0600(
    tmp_path: Path,
) -> None:
    configured = settings(data_dir=tmp_path / "data")
    first = load_cookie_secret(configured)
    path = tmp_path / "data" / COOKIE_SECRET_FILE
    assert len(first) >= MIN_SECRET_LENGTH
    assert path.read_text(encoding="ascii").strip() == first
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_cookie_secret(configured) == first
    assert load_cookie_secret(settings(data_dir=tmp_path / "data")) == first


def test_generated_cookie_secrets_differ_between_data_dirs(tmp_path: Path) -> None:
    one = load_cookie_secret(settings(data_dir=tmp_path / "one"))
    two = load_cookie_secret(settings(data_dir=tmp_path / "two"))
    assert one != two


def test_a_configured_cookie_secret_is_returned_without_writing_a_file(tmp_path: Path) -> None:
    configured = settings(data_dir=tmp_path / "data", cookie_secret=GOOD_SECRET)
    assert load_cookie_secret(configured) == GOOD_SECRET
    assert not (tmp_path / "data" / COOKIE_SECRET_FILE).exists()


def test_settings_cannot_be_changed_after_validation() -> None:
    configured = settings()
    with pytest.raises(ValidationError):
        configured.port = 1  # type: ignore[misc]


def test_download_quotas_default_to_three_at_once_fifty_a_day_one_gib_and_seven_days() -> None:
    configured = settings()
    assert configured.download_user_concurrency == 3
    assert configured.download_user_daily == 50
    assert configured.download_disk_max_bytes == 1024**3
    assert configured.download_keep_days == 7


def test_download_quotas_are_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MSERVICES_DOWNLOAD_USER_CONCURRENCY", "5")
    monkeypatch.setenv("MSERVICES_DOWNLOAD_USER_DAILY", "10")
    monkeypatch.setenv("MSERVICES_DOWNLOAD_DISK_MAX_BYTES", "1000000")
    monkeypatch.setenv("MSERVICES_DOWNLOAD_KEEP_DAYS", "0.5")
    configured = settings()
    assert (
        configured.download_user_concurrency,
        configured.download_user_daily,
        configured.download_disk_max_bytes,
        configured.download_keep_days,
    ) == (5, 10, 1_000_000, 0.5)


@pytest.mark.parametrize(
    "variable",
    [
        "MSERVICES_DOWNLOAD_USER_CONCURRENCY",
        "MSERVICES_DOWNLOAD_USER_DAILY",
        "MSERVICES_DOWNLOAD_DISK_MAX_BYTES",
        "MSERVICES_DOWNLOAD_KEEP_DAYS",
    ],
)
def test_a_download_quota_of_zero_is_refused_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str
) -> None:
    monkeypatch.setenv(variable, "0")
    assert refusal().startswith(f"invalid setting {variable}: ")


def test_the_database_pool_defaults_to_ten_connections_and_five_more_under_load() -> None:
    configured = settings()
    assert (configured.db_pool_size, configured.db_max_overflow) == (10, 5)


def test_the_database_pool_is_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MSERVICES_DB_POOL_SIZE", "4")
    monkeypatch.setenv("MSERVICES_DB_MAX_OVERFLOW", "0")
    configured = settings()
    assert (configured.db_pool_size, configured.db_max_overflow) == (4, 0)


@pytest.mark.parametrize(
    ("variable", "value"),
    [("MSERVICES_DB_POOL_SIZE", "0"), ("MSERVICES_DB_MAX_OVERFLOW", "-1")],
)
def test_an_impossible_pool_is_refused_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)
    assert refusal().startswith(f"invalid setting {variable}: ")
