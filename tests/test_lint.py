"""The code and the protos stay clean: buf lint (CONTRACT §1), buf breaking against the recorded
baseline of the last release (CONTRACT §9), ruff and mypy."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
BASELINE = ROOT / "protos/baseline/localplus-v1.txtpb"
PROTOS = "protos/localplus"


@pytest.mark.parametrize(
    "command",
    [
        ["buf", "lint"],
        ["ruff", "check", "."],
        ["ruff", "format", "--check", "."],
        ["mypy", "services", "gateway", "devtools", "tests", "bench"],
    ],
    ids=["buf-lint", "ruff-check", "ruff-format", "mypy"],
)
def test_clean(command: list[str]) -> None:
    result = subprocess.run([str(BIN / command[0]), *command[1:]], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def buf_breaking(root: Path) -> tuple[int, str]:
    """`make lint`'s breaking check on the protos under `root`: an image of them against the baseline."""
    buf = str(BIN / "buf")
    image = subprocess.run([buf, "build", "--path", PROTOS, "-o", "-#format=binpb"], cwd=root, capture_output=True)
    assert image.returncode == 0, image.stderr.decode()
    against = [buf, "breaking", "-#format=binpb", "--against", str(BASELINE), "--exclude-imports"]
    result = subprocess.run(against, cwd=root, input=image.stdout, capture_output=True)
    return result.returncode, (result.stdout + result.stderr).decode()


def test_protos_keep_the_released_contract() -> None:
    returncode, output = buf_breaking(ROOT)
    assert returncode == 0, output


# (file, text in it, replacement or None to delete the file, what buf breaking must say)
BREAKS = {
    "rename-field": (
        "ticketing/v1/ticketing.proto",
        "int32 inventory = 8",
        "int32 stock = 8",
        'changed name from "inventory" to "stock"',
    ),
    "renumber-field": (
        "recurrence/v1/recurrence.proto",
        "string note = 8",
        "string note = 99",
        'Previously present field "8" with name "note"',
    ),
    # Every file is in the baseline: deleting any of them is caught.
    **{
        f"delete-{name}": (f"{name}/v1/{name}.proto", "", None, f'file "localplus/{name}/v1/{name}.proto" was deleted')
        for name in ("events", "ticketing", "recurrence")
    },
}


@pytest.mark.parametrize("case", list(BREAKS))
def test_breaking_check_bites(tmp_path: Path, case: str) -> None:
    """The same check fails on a copy of the protos with one incompatible change, so it compares with
    the release and not with the protos themselves (which `--against .git#branch=main` did on main)."""
    file, old, new, expected = BREAKS[case]
    shutil.copy(ROOT / "buf.yaml", tmp_path)
    shutil.copytree(ROOT / "protos", tmp_path / "protos", ignore=shutil.ignore_patterns("baseline"))
    proto = tmp_path / PROTOS / file
    if new is None:
        proto.unlink()
    else:
        text = proto.read_text()
        assert text.count(old) == 1, f"{old!r} is no longer in {file}: update this case"
        proto.write_text(text.replace(old, new))
    returncode, output = buf_breaking(tmp_path)
    assert returncode != 0, output
    assert expected in output, output
