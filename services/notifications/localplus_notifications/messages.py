"""What each notification says, in English and Thai (the user's `locale` in auth.users metadata,
English by default), as plain text and HTML for email and as a short title and body for push."""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from datetime import datetime
from zoneinfo import ZoneInfo

LOCALES = ("en", "th")

# kind -> (subject, body); placeholders: title, when, previous, venue, code, amount.
TEMPLATES: dict[str, dict[str, tuple[str, str]]] = {
    "en": {
        "registration_confirmed": ("You're going: {title}", "Your place at {title} on {when} is confirmed."),
        "waitlist_promoted": (
            "A place opened up: {title}",
            "Good news: you moved off the waitlist and are now going to {title} on {when}.",
        ),
        "event_cancelled": ("Cancelled: {title}", "{title}, planned for {when}, has been cancelled."),
        "event_moved": ("New time: {title}", "{title} has moved from {previous} to {when}."),
        "occurrence_cancelled": ("Cancelled: {title} on {when}", "The {when} date of {title} has been cancelled."),
        "occurrence_moved": ("New time: {title}", "The {previous} date of {title} has moved to {when}."),
        "order_paid": (
            "Your tickets for {title}",
            "Thank you for your order {code} ({amount}). Your e-tickets for {title} on {when} are attached: "
            "show their QR codes at the door.",
        ),
        "refund_issued": ("Refund for {title}", "We have refunded {amount} for your order for {title}."),
        "event_reminder": ("Tomorrow: {title}", "A reminder: {title} starts {when}."),
    },
    "th": {
        "registration_confirmed": (
            "ยืนยันการลงทะเบียน: {title}",
            "การลงทะเบียนของคุณสำหรับ {title} วันที่ {when} ได้รับการยืนยันแล้ว",
        ),
        "waitlist_promoted": (
            "มีที่ว่างแล้ว: {title}",
            "ข่าวดี: คุณได้รับที่นั่งจากรายชื่อสำรองสำหรับ {title} วันที่ {when} แล้ว",
        ),
        "event_cancelled": ("ยกเลิกแล้ว: {title}", "{title} ซึ่งกำหนดจัดวันที่ {when} ถูกยกเลิกแล้ว"),
        "event_moved": ("เปลี่ยนเวลา: {title}", "{title} เปลี่ยนเวลาจาก {previous} เป็น {when}"),
        "occurrence_cancelled": ("ยกเลิกแล้ว: {title} วันที่ {when}", "รอบวันที่ {when} ของ {title} ถูกยกเลิกแล้ว"),
        "occurrence_moved": ("เปลี่ยนเวลา: {title}", "รอบวันที่ {previous} ของ {title} เปลี่ยนเป็น {when}"),
        "order_paid": (
            "บัตรของคุณสำหรับ {title}",
            "ขอบคุณสำหรับคำสั่งซื้อ {code} ({amount}) บัตรอิเล็กทรอนิกส์สำหรับ {title} วันที่ {when} แนบมาด้วย กรุณาแสดงคิวอาร์โค้ดที่หน้างาน",
        ),
        "refund_issued": ("คืนเงินสำหรับ {title}", "เราได้คืนเงิน {amount} สำหรับคำสั่งซื้อ {title} ของคุณแล้ว"),
        "event_reminder": ("พรุ่งนี้: {title}", "แจ้งเตือน: {title} จะเริ่ม {when}"),
    },
}
FOOTER = {
    "en": ("You get this because of your LocalPlus account.", "Unsubscribe from these emails"),
    "th": ("คุณได้รับอีเมลนี้เนื่องจากบัญชี LocalPlus ของคุณ", "ยกเลิกการรับอีเมลประเภทนี้"),
}


@dataclass(frozen=True)
class Facts:
    """What a message is about, read with the outbox row."""

    kind: str
    locale: str
    title: str = ""
    starts_at: datetime | None = None
    timezone: str = "UTC"
    venue: str = ""
    previous_starts_at: datetime | None = None
    confirmation_code: str = ""
    amount_minor: int | None = None
    currency: str = ""
    ticket_codes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Rendered:
    subject: str
    text: str
    html: str


def _when(moment: datetime | None, timezone: str) -> str:
    if moment is None:
        return ""
    local = moment.astimezone(ZoneInfo(timezone))
    return f"{local:%Y-%m-%d %H:%M} ({timezone})"


def _amount(minor: int | None, currency: str) -> str:
    # Every currency LocalPlus sells in has two minor digits (THB satang, USD cents, ...).
    return "" if minor is None else f"{minor / 100:,.2f} {currency}"


def locale_of(value: str | None) -> str:
    tag = (value or "").lower().replace("_", "-").split("-")[0]
    return tag if tag in LOCALES else "en"


def render(facts: Facts, unsubscribe_url: str | None) -> Rendered:
    locale = locale_of(facts.locale)
    subject_template, body_template = TEMPLATES[locale][facts.kind]
    values = {
        "title": facts.title,
        "when": _when(facts.starts_at, facts.timezone),
        "previous": _when(facts.previous_starts_at, facts.timezone),
        "venue": facts.venue,
        "code": facts.confirmation_code,
        "amount": _amount(facts.amount_minor, facts.currency),
    }
    # One line: a title written through Supabase's REST may hold line breaks, which no mail header can.
    subject = " ".join(subject_template.format(**values).split())
    body = body_template.format(**values)
    lines = [body]
    if facts.venue:
        lines.append(facts.venue)
    reason, unsubscribe = FOOTER[locale]
    text = "\n\n".join([*lines, "--", reason] + ([f"{unsubscribe}: {unsubscribe_url}"] if unsubscribe_url else []))
    paragraphs = "".join(f"<p>{html.escape(line)}</p>" for line in lines)
    link = f' <a href="{html.escape(unsubscribe_url)}">{html.escape(unsubscribe)}</a>' if unsubscribe_url else ""
    markup = (
        f'<!doctype html><html lang="{locale}"><head><meta charset="utf-8"><title>{html.escape(subject)}</title>'
        f"</head><body>{paragraphs}<hr><p><small>{html.escape(reason)}{link}</small></p></body></html>"
    )
    return Rendered(subject=subject, text=text + "\n", html=markup)
