"""Sending notices by email through the SMTP server named in [mail].

One message per recipient (no shared To or Bcc lists), over one connection.
A failure for one recipient does not stop the others; the caller gets, for
each message, None (accepted by the server) or a one-line reason.
"""
from __future__ import annotations

import logging
import email.policy
import smtplib
import ssl
from email.message import EmailMessage
from email.utils import formatdate, make_msgid

from . import turn
from .errors import CofferError

log = logging.getLogger(__name__)
# Lines up to RFC 5322's 998 characters: at the default 78, a header holding one
# long word (an unsubscribe link) would be sent as encoded words no client opens.
POLICY = email.policy.default.clone(max_line_length=998)


class MailError(CofferError):
    """Mail cannot be sent at all (no server configured, bad credentials file)."""


class Mailer:
    def __init__(self, cfg):
        self.cfg = cfg.mail
        if not self.cfg.smtp_host:
            raise MailError("no mail server configured: set [mail] smtp_host (and smtp_port, sender)")
        self.password = None
        if self.cfg.smtp_user:
            path = cfg.path(self.cfg.smtp_password_file, "")
            try:
                self.password = path.read_text(encoding="utf-8").strip()
            except OSError as e:
                raise MailError(f"[mail] smtp_password_file cannot be read: {e.strerror}") from None

    def _connect(self) -> smtplib.SMTP:
        turn.leave()                     # a trip over the network
        smtp = smtplib.SMTP(self.cfg.smtp_host, self.cfg.smtp_port, timeout=30)
        try:
            if self.cfg.smtp_starttls:
                smtp.starttls(context=ssl.create_default_context())
            if self.cfg.smtp_user:
                smtp.login(self.cfg.smtp_user, self.password)
        except BaseException:
            smtp.close()
            raise
        return smtp

    def message(self, to: str, subject: str, body: str, headers: dict | None = None) -> EmailMessage:
        msg = EmailMessage(policy=POLICY)
        msg["From"] = self.cfg.sender
        msg["To"] = to
        msg["Subject"] = subject
        msg["Date"] = formatdate(usegmt=True)
        msg["Message-ID"] = make_msgid(domain=self.cfg.sender.rpartition("@")[2] or None)
        for name, value in (headers or {}).items():
            msg[name] = value
        msg.set_content(body)
        return msg

    def send_each(self, messages: list[tuple]) -> list[str | None]:
        """Send (to, subject, body) or (to, subject, body, headers) messages;
        one result per message."""
        results: list[str | None] = []
        smtp = None
        for to, subject, body, *extra in messages:
            try:
                if smtp is None:
                    smtp = self._connect()
                smtp.send_message(self.message(to, subject, body, *extra))
                results.append(None)
            except smtplib.SMTPRecipientsRefused as e:
                code, text = next(iter(e.recipients.values()), (0, b""))
                results.append(f"the mail server refused the address ({code} "
                               f"{text.decode(errors='replace') if isinstance(text, bytes) else text})")
            except smtplib.SMTPAuthenticationError:
                raise MailError("the mail server refused [mail] smtp_user and its password") from None
            except (smtplib.SMTPException, OSError) as e:
                log.warning("sending a notice failed: %s", type(e).__name__)
                results.append(f"the mail server could not be reached or failed: {e}")
                if smtp is not None:
                    try:
                        smtp.close()
                    finally:
                        smtp = None
        if smtp is not None:
            try:
                smtp.quit()
            except (smtplib.SMTPException, OSError):
                pass
        return results
