"""The worker's settings, all from the environment (CONTRACT §2: SMTP_URL, LOCALPLUS_MAILDIR's server)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from localplus_common.config import database_url_from_env, dev_mode, exit_if_missing
from localplus_common.push_services import push_service_hosts
from localplus_common.unsubscribe import SECRET_VAR, signing_secret_from_env

DEV_SMTP_URL = "smtp://127.0.0.1:1025"


@dataclass(frozen=True)
class Smtp:
    host: str
    port: int
    username: str
    password: str
    # smtps:// speaks TLS from the start; smtp:// upgrades with STARTTLS when the server offers it.
    implicit_tls: bool

    @classmethod
    def from_url(cls, url: str) -> Smtp:
        parts = urlsplit(url)
        if parts.scheme not in ("smtp", "smtps") or not parts.hostname:
            raise SystemExit(f"SMTP_URL must look like smtp://user:password@host:587 (got scheme {parts.scheme!r})")
        return cls(
            host=parts.hostname,
            port=parts.port or (465 if parts.scheme == "smtps" else 25),
            username=unquote(parts.username or ""),
            password=unquote(parts.password or ""),
            implicit_tls=parts.scheme == "smtps",
        )


@dataclass(frozen=True)
class WorkerSettings:
    database_url: str
    smtp: Smtp
    mail_from: str
    # Where links in messages point (the gateway as users reach it).
    public_url: str
    signing_secret: str
    # VAPID: the application server's private key (PEM file or base64url raw key) and contact.
    vapid_private_key: str
    vapid_subject: str
    # Where pushes may go (localplus_common.push_services).
    push_service_hosts: tuple[str, ...]
    concurrency: int
    batch_size: int
    lease_seconds: float
    max_attempts: int
    # The first retry waits this long, each next one twice as long, up to backoff_max_seconds.
    backoff_seconds: float
    backoff_max_seconds: float
    poll_seconds: float
    db_statement_cache_size: int
    # Touched while the delivery loop runs (the container's liveness probe reads it); "" for none.
    heartbeat_file: str

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> WorkerSettings:
        database_url = database_url_from_env(env)
        smtp_url = env.get("SMTP_URL") or (DEV_SMTP_URL if dev_mode(env) else "")
        secret = signing_secret_from_env(env)
        exit_if_missing({"DATABASE_URL": database_url, "SMTP_URL": smtp_url, SECRET_VAR: secret})
        return cls(
            database_url=database_url,
            smtp=Smtp.from_url(smtp_url),
            mail_from=env.get("NOTIFICATIONS_FROM") or "LocalPlus <no-reply@localplus.local>",
            public_url=(env.get("LOCALPLUS_PUBLIC_URL") or "http://127.0.0.1:8080").rstrip("/"),
            signing_secret=secret,
            vapid_private_key=env.get("VAPID_PRIVATE_KEY", ""),
            vapid_subject=env.get("VAPID_SUBJECT") or "mailto:no-reply@localplus.local",
            push_service_hosts=push_service_hosts(env),
            concurrency=int(env.get("NOTIFICATIONS_CONCURRENCY") or 4),
            batch_size=int(env.get("NOTIFICATIONS_BATCH_SIZE") or 50),
            lease_seconds=float(env.get("NOTIFICATIONS_LEASE_SECONDS") or 120),
            max_attempts=int(env.get("NOTIFICATIONS_MAX_ATTEMPTS") or 8),
            backoff_seconds=float(env.get("NOTIFICATIONS_BACKOFF_SECONDS") or 30),
            backoff_max_seconds=float(env.get("NOTIFICATIONS_BACKOFF_MAX_SECONDS") or 3600),
            poll_seconds=float(env.get("NOTIFICATIONS_POLL_SECONDS") or 2),
            db_statement_cache_size=int(env.get("DB_STATEMENT_CACHE_SIZE") or 100),
            heartbeat_file=env.get("NOTIFICATIONS_HEARTBEAT_FILE", ""),
        )
