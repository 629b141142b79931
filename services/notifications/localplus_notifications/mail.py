"""Email over SMTP: one MIME message per outbox row (plain text + HTML, the e-tickets' QR codes
attached), with RFC 8058 one-click unsubscribe headers. The Message-ID is the row's id, the same on
every attempt, so a receiving server (or a person) can tell a resend from a new message."""

from __future__ import annotations

import io
import smtplib
import ssl
from email.message import EmailMessage
from email.policy import EmailPolicy
from email.utils import formatdate

import segno

from localplus_common.unsubscribe import sign
from localplus_notifications.config import Smtp, WorkerSettings
from localplus_notifications.messages import locale_of, render
from localplus_notifications.outbox import Message

MESSAGE_ID_DOMAIN = "notifications.localplus"


class _Policy(EmailPolicy):
    """The default policy, but List-Unsubscribe is written as it is: its <URL> is one word longer than
    a folded line, which the default policy writes as RFC 2047 encoded words, and RFC 2369/8058
    clients then find no URL there (no one-click unsubscribe)."""

    def fold(self, name: str, value: str) -> str:
        if name.lower() == "list-unsubscribe":
            return f"{name}: {value}{self.linesep}"
        return super().fold(name, value)

    def fold_binary(self, name: str, value: str) -> bytes:
        if name.lower() == "list-unsubscribe":
            return self.fold(name, value).encode("ascii")
        return super().fold_binary(name, value)


MAIL_POLICY = _Policy()


class PermanentFailure(Exception):
    """Retrying cannot help (e.g. the server refused the recipient): a dead letter at once."""


def message_id(message: Message) -> str:
    return f"<{message.id}@{MESSAGE_ID_DOMAIN}>"


def unsubscribe_url(settings: WorkerSettings, message: Message) -> str:
    token = sign(settings.signing_secret, message.user_id, message.kind, "email")
    return f"{settings.public_url}/api/unsubscribe/{token}"


def build(settings: WorkerSettings, message: Message) -> EmailMessage:
    link = unsubscribe_url(settings, message)
    rendered = render(message.facts, link)
    mime = EmailMessage(policy=MAIL_POLICY)
    mime["From"] = settings.mail_from
    mime["To"] = message.email
    mime["Subject"] = rendered.subject
    mime["Date"] = formatdate(localtime=False)
    mime["Message-ID"] = message_id(message)
    mime["List-Unsubscribe"] = f"<{link}>"
    mime["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    mime["X-LocalPlus-Kind"] = message.kind
    mime.set_content(rendered.text)
    mime.add_alternative(rendered.html, subtype="html")
    for number, code in enumerate(message.facts.ticket_codes, start=1):
        image = io.BytesIO()
        segno.make(code, error="m").save(image, kind="png", scale=5, border=2)
        mime.add_attachment(image.getvalue(), maintype="image", subtype="png", filename=f"ticket-{number}.png")
    # Last: set_content and add_attachment move or drop the Content-* headers set before them.
    mime["Content-Language"] = locale_of(message.facts.locale)
    return mime


class SmtpSender:
    """One SMTP connection, opened on first use and again after it breaks (not shared between tasks)."""

    def __init__(self, smtp: Smtp) -> None:
        self.smtp = smtp
        self.client: smtplib.SMTP | None = None

    def _connect(self) -> smtplib.SMTP:
        if self.smtp.implicit_tls:
            client: smtplib.SMTP = smtplib.SMTP_SSL(
                self.smtp.host, self.smtp.port, timeout=30, context=ssl.create_default_context()
            )
        else:
            client = smtplib.SMTP(self.smtp.host, self.smtp.port, timeout=30)
            client.ehlo()
            if client.has_extn("starttls"):
                client.starttls(context=ssl.create_default_context())
                client.ehlo()
        if self.smtp.username:
            client.login(self.smtp.username, self.smtp.password)
        return client

    def send(self, mime: EmailMessage) -> None:
        """Blocking (run it in a thread). Raises PermanentFailure on a 5xx answer, OSError/SMTPException
        on anything worth retrying."""
        if self.client is None:
            self.client = self._connect()
        try:
            self.client.send_message(mime)
        except smtplib.SMTPRecipientsRefused as error:
            codes = [code for code, _ in error.recipients.values()]
            self.close()
            if all(code >= 500 for code in codes):
                raise PermanentFailure(f"recipient refused: {codes}") from error
            raise
        except smtplib.SMTPResponseException as error:
            self.close()
            if error.smtp_code >= 500:
                raise PermanentFailure(f"SMTP {error.smtp_code}: {error.smtp_error!r}") from error
            raise
        except (OSError, smtplib.SMTPException):
            self.close()
            raise

    def close(self) -> None:
        if self.client is not None:
            try:
                self.client.quit()
            except (OSError, smtplib.SMTPException):
                self.client.close()
            self.client = None
