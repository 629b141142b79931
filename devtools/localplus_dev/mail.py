"""The local SMTP server of `make up` and the tests: aiosmtpd delivering every message into a Maildir.

`python -m localplus_dev.mail --port 1025 --maildir .data/mail`. A message whose Message-ID is already in
the Maildir is accepted and dropped: the worker may send a message twice when it dies between the
server's "250" and marking the message sent, and the Message-ID (the outbox row's id) says it is the
same one. `--fail` answers every message with a temporary failure (the tests' failing server).
"""

from __future__ import annotations

import argparse
import email
import email.policy
import mailbox
import signal
import sys
import threading
import time
from pathlib import Path

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session


def message_ids(maildir: Path) -> set[str]:
    box = mailbox.Maildir(maildir, create=True)
    return {str(message["Message-ID"]) for message in box}


class MaildirHandler:
    def __init__(self, maildir: Path, *, fail: bool = False) -> None:
        self.box = mailbox.Maildir(maildir, create=True)
        self.seen = message_ids(maildir)
        self.fail = fail
        self.duplicates = 0
        # Message-ID -> when each refused attempt came (monotonic seconds): the tests' backoff check.
        self.refused: dict[str, list[float]] = {}
        self.lock = threading.Lock()

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        content = envelope.content if isinstance(envelope.content, bytes) else str(envelope.content).encode()
        message = email.message_from_bytes(content, policy=email.policy.default)
        message_id = str(message["Message-ID"])
        if self.fail:
            self.refused.setdefault(message_id, []).append(time.monotonic())
            return "451 4.3.0 Temporary failure, try again later"
        with self.lock:
            if message_id in self.seen:
                self.duplicates += 1
                print(f"duplicate {message_id} dropped ({self.duplicates} so far)", flush=True)
                return "250 OK (already delivered)"
            self.box.add(content)
            self.seen.add(message_id)
        return "250 OK"


def serve(handler: MaildirHandler, host: str, port: int) -> Controller:
    """Start the server in a thread; stop it with `.stop()`."""
    controller = Controller(handler, hostname=host, port=port)
    controller.start()
    return controller


def main() -> int:
    parser = argparse.ArgumentParser(description="a local SMTP server delivering into a Maildir")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=1025)
    parser.add_argument("--maildir", type=Path, default=Path(".data/mail"))
    parser.add_argument("--fail", action="store_true", help="answer every message with 451")
    args = parser.parse_args()
    controller = serve(MaildirHandler(args.maildir, fail=args.fail), args.host, args.port)
    print(f"smtp on {args.host}:{args.port} delivering into {args.maildir}", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda signum, frame: stop.set())
    signal.signal(signal.SIGINT, lambda signum, frame: stop.set())
    stop.wait()
    controller.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
