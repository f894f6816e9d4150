"""The mailer: SMTP URL forms, delivery through a real SMTP server, the log without one."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from schemas.text import Text
from server.mail import Mail, Mailer, SmtpTarget, compose
from tests.conftest import make_settings
from tests.mailbox import Mailbox, free_port, link_in

MAIL = Mail(
    to="cxk@example.com",
    subject="mservices 重置密码",
    text="打开 http://127.0.0.1:8000/reset/abcdefghijklmnopqrstuvwxyz 设置新密码",
    link="http://127.0.0.1:8000/reset/abcdefghijklmnopqrstuvwxyz",
)


@pytest.fixture
def mailbox() -> Iterator[Mailbox]:
    box = Mailbox()
    box.start()
    try:
        yield box
    finally:
        box.stop()


@pytest.mark.parametrize(
    ("url", "target"),
    [
        ("smtp://relay.local", SmtpTarget("relay.local", 25, tls=False, starttls=False)),
        (
            "smtp+starttls://me%40x.cn:p%3Ass@mail.x.cn",
            SmtpTarget(
                "mail.x.cn", 587, tls=False, starttls=True, username="me@x.cn", password="p:ss"
            ),
        ),
        ("smtps://u:@mail.x.cn:2465", SmtpTarget("mail.x.cn", 2465, True, False, "u", "")),
    ],
)
def test_each_smtp_url_form_names_its_port_and_security(url: str, target: SmtpTarget) -> None:
    assert SmtpTarget.parse(url) == target


@pytest.mark.parametrize("url", ["http://mail.x.cn", "smtp://", "smtp:///path"])
def test_a_url_that_is_not_smtp_is_refused(url: str) -> None:
    with pytest.raises(ValueError, match="smtp"):
        SmtpTarget.parse(url)


def test_the_settings_refuse_an_smtp_url_of_another_scheme(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="smtp://"):
        make_settings(tmp_path, "", smtp_url="http://mail.x.cn")


async def test_mail_is_delivered_through_smtp(mailbox: Mailbox, tmp_path: Path) -> None:
    settings = make_settings(tmp_path, "", smtp_url=mailbox.url, mail_from="站点 <a@example.com>")

    await Mailer.from_settings(settings).send(MAIL)

    message = await mailbox.wait_for(1)
    assert message["To"] == "cxk@example.com"
    assert message["Subject"] == "mservices 重置密码"
    assert mailbox.envelopes == [("a@example.com", ["cxk@example.com"])]
    assert link_in(message) == MAIL.link


async def test_without_smtp_the_link_is_logged_as_one_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    mailer = Mailer.from_settings(make_settings(tmp_path, ""))

    with caplog.at_level(logging.WARNING, logger="mservices.mail"):
        await mailer.send(MAIL)

    [record] = caplog.records
    assert record.levelno == logging.WARNING
    assert "MSERVICES_SMTP_URL" in record.getMessage()
    assert MAIL.link in record.getMessage() and "\n" not in record.getMessage()


async def test_a_mail_server_that_is_down_is_logged_not_raised(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = make_settings(tmp_path, "", smtp_url=f"smtp://127.0.0.1:{free_port()}")

    with caplog.at_level(logging.WARNING, logger="mservices.mail"):
        await Mailer.from_settings(settings).send(MAIL)

    assert "could not be sent" in caplog.text


@pytest.mark.parametrize(
    ("language", "subject", "tag"),
    [
        ("zh_CN", "mservices 重置密码", "zh-CN"),
        ("en_US", "mservices: reset your password", "en-US"),
    ],
)
def test_a_mail_is_composed_in_the_language_given(language: str, subject: str, tag: str) -> None:
    mail = compose(
        to="cxk@example.com",
        subject=Text("mservices: reset your password"),
        text=Text("the current password is wrong"),
        link=MAIL.link,
        language=language,
    )

    message = Mailer(None, sender="a@example.com").message(mail)

    assert (mail.subject, mail.language) == (subject, language)
    assert message["Subject"] == subject
    assert message["Content-Language"] == tag
    assert mail.text == (
        "当前密码不正确" if language == "zh_CN" else "the current password is wrong"
    )
