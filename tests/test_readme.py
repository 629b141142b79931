"""The README's curl examples, run as written against the test stack: a newcomer creates and publishes an
event, sells a paid ticket type, buys two tickets as another user, pays at localstripe, and gets the order
PAID with its tickets, a QR image, a check-in and a refund."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
from pathlib import Path

import asyncpg

from localplus_dev.stack import Stack

ROOT = Path(__file__).resolve().parent.parent


def readme_shell_blocks() -> list[str]:
    """The ```sh blocks of "Calling the API" that use curl alone (grpcurl is not installed here)."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Calling the API", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```sh\n(.*?)```", section, flags=re.S)
    return [block for block in blocks if "grpcurl" not in block]


def test_the_readme_blocks_cover_the_ticketing_flow() -> None:
    script = "\n".join(readme_shell_blocks())
    for step in (
        ":approve",
        "/ticket-types",
        "/api/orders ",
        ":checkout",
        "/confirm",
        "/qr.svg",
        "/api/check-ins",
        ":refund",
        "/sales",
    ):
        assert step in script, step


async def test_the_readme_examples_work_as_written(stack: Stack, db: asyncpg.Pool, tmp_path: Path) -> None:
    gateway = stack.gateway_url.removeprefix("http://")
    stripe = stack.stripe.url.removeprefix("http://")
    script = "\n".join(readme_shell_blocks())
    script = script.replace("localhost:8080", gateway).replace("localhost:8420", stripe)
    # `make token` from the checkout, whatever the working directory (ticket.svg lands in tmp_path).
    prelude = f'make() {{ command make --no-print-directory -C "{ROOT}" "$@"; }}\n'
    result = await asyncio.to_thread(
        subprocess.run,
        ["bash", "-e", "-o", "pipefail", "-c", prelude + script + '\necho "ORDER=$ORDER"\n'],
        cwd=tmp_path,
        env={**os.environ, "DATABASE_URL": stack.database_url, "LOCALPLUS_ENV": "dev"},
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    output = result.stdout
    assert output.index("CHECK_IN_RESULT_ADMITTED") < output.index("CHECK_IN_RESULT_ALREADY_CHECKED_IN")
    assert "PARTIALLY_REFUNDED" in output
    order_id = output.rsplit("ORDER=", 1)[1].strip()

    order = await db.fetchrow("select status, total_minor, refunded_minor from public.orders where id = $1", order_id)
    assert order is not None and dict(order) == {
        "status": "partially_refunded",
        "total_minor": 100_000,
        "refunded_minor": 50_000,
    }
    tickets = await db.fetch("select status from public.tickets where order_id = $1 order by status", order_id)
    assert [t["status"] for t in tickets] == ["checked_in", "void"]
    assert (tmp_path / "ticket.svg").read_text().lstrip().startswith(("<?xml", "<svg"))
