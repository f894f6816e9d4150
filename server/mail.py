"""Outgoing mail: verification and password reset links.

``MSERVICES_SMTP_URL`` says where mail goes; the URL forms are

- ``smtp://[user[:password]@]host[:port]``: plain SMTP (port 25), for a relay on the same host
  or a trusted network; no STARTTLS even if offered;
- ``smtp+starttls://...`` : STARTTLS required (port 587), the usual submission port;
- ``smtps://...``: TLS from the first byte (port 465).

User and password are percent-decoded (``%40`` for ``@``) and used for AUTH when given. Without
the setting nothing is sent: each message is written to the log as one WARNING line holding the
recipient and the link, so a developer can follow it (and an operator sees that mail is off).

Mail is sent after the request's transaction commits, in the background, so the response time
never depends on the mail server (and cannot tell whether an address has an account); a
failure is logged, never shown to the requester.

A message is written in its recipient's language (``compose``): the account's chosen language,
else that of the request that caused it; the caller decides and says so explicitly, since the
mail leaves long after that request's locale is gone.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import make_msgid
from urllib.parse import unquote, urlsplit

import aiosmtplib

from schemas.text import Text
from server.i18n import DEFAULT_LANGUAGE, locale_for, translate
from server.settings import Settings

log = logging.getLogger("mservices.mail")

SMTP_TIMEOUT = 20.0
"""Seconds one SMTP conversation may take before it is abandoned (and logged)."""
DEFAULT_PORTS = {"smtp": 25, "smtp+starttls": 587, "smtps": 465}


@dataclass(frozen=True, slots=True)
class Mail:
    """One message: to whom, about what, the link it carries, and the language it is written
    in (one of ``server.i18n.LANGUAGES``)."""

    to: str
    subject: str
    text: str
    link: str
    language: str = DEFAULT_LANGUAGE


def compose(*, to: str, subject: Text, text: Text, link: str, language: str) -> Mail:
    """A message written in ``language``: the recipient's, which the caller chose (the account's
    language when set, else that of the request that caused the mail)."""
    locale = locale_for(language)
    return Mail(
        to=to,
        subject=translate(locale, subject),
        text=translate(locale, text),
        link=link,
        language=locale.code,
    )


@dataclass(frozen=True, slots=True)
class SmtpTarget:
    """A parsed ``MSERVICES_SMTP_URL``."""

    host: str
    port: int
    tls: bool
    """TLS from the first byte (``smtps``)."""
    starttls: bool
    """STARTTLS required (``smtp+starttls``)."""
    username: str | None = None
    password: str | None = None

    @classmethod
    def parse(cls, url: str) -> SmtpTarget:
        """The target of ``url`` (see the module docstring); ValueError when it is not one."""
        parts = urlsplit(url)
        if parts.scheme not in DEFAULT_PORTS or not parts.hostname:
            raise ValueError("must be smtp://, smtp+starttls:// or smtps:// with a host")
        return cls(
            host=parts.hostname,
            port=parts.port or DEFAULT_PORTS[parts.scheme],
            tls=parts.scheme == "smtps",
            starttls=parts.scheme == "smtp+starttls",
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password is not None else None,
        )


class Mailer:
    """Sends ``Mail`` through SMTP, or writes it to the log when no server is configured."""

    def __init__(self, target: SmtpTarget | None, *, sender: str) -> None:
        self.target = target
        self.sender = sender

    @classmethod
    def from_settings(cls, settings: Settings) -> Mailer:
        """The mailer ``MSERVICES_SMTP_URL`` and ``MSERVICES_MAIL_FROM`` describe."""
        url = settings.smtp_url.get_secret_value() if settings.smtp_url is not None else None
        return cls(SmtpTarget.parse(url) if url else None, sender=settings.mail_from)

    def message(self, mail: Mail) -> EmailMessage:
        """``mail`` as a MIME message (plain text, UTF-8)."""
        message = EmailMessage()
        message["From"] = self.sender
        message["To"] = mail.to
        message["Subject"] = mail.subject
        message["Message-ID"] = make_msgid(domain="mservices")
        message.set_content(mail.text)
        # After set_content, which clears every Content-* header.
        message["Content-Language"] = mail.language.replace("_", "-")
        return message

    async def send(self, mail: Mail) -> None:
        """Deliver ``mail`` (or log it, without SMTP); a delivery failure is logged, not raised."""
        if self.target is None:
            log.warning(
                "mail not sent (MSERVICES_SMTP_URL is unset) to %s: %s %s",
                mail.to,
                mail.subject,
                mail.link,
            )
            return
        target = self.target
        try:
            await aiosmtplib.send(
                self.message(mail),
                hostname=target.host,
                port=target.port,
                username=target.username,
                password=target.password,
                use_tls=target.tls,
                start_tls=target.starttls,
                timeout=SMTP_TIMEOUT,
            )
        except (aiosmtplib.SMTPException, OSError) as error:
            log.warning("mail to %s could not be sent via %s: %s", mail.to, target.host, error)
