"""``poa-gateway`` command line: --version, decode, and its one-line errors."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from gateway import __version__
from gateway.cli import main, subcommand_names

from .conftest import vector_files


def test_version_prints_the_package_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"poa-gateway {__version__}"


@pytest.mark.parametrize("command", subcommand_names())
def test_every_subcommand_has_help(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    assert "usage: poa-gateway" in capsys.readouterr().out


@pytest.mark.parametrize("path", vector_files(), ids=lambda p: p.name)
def test_decode_prints_json_for_every_vector(
    path: Path, keystore_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["decode", "--trust", str(keystore_dir), str(path)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["file"] == str(path)
    assert out["header"]["message_code"].startswith("0x")
    assert out["header"]["message_code_name"]
    assert out["payload"]["type"]
    if "PRECOMMAND" in path.name:
        assert out["signature"] == {
            "present": False,
            "field": False,
            "status": "unsigned",
            "valid": False,
        }
    elif out["signature"]["present"]:
        assert out["signature"]["valid"] is True


def test_decode_without_trust_never_claims_valid(capsys: pytest.CaptureFixture[str]) -> None:
    cs06 = next(
        p for p in vector_files() if p.name == "CS06_11.3_IMMEDIATE_SUCCESS_COMMAND_GBCS.HEX"
    )
    assert main(["decode", str(cs06)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["signature"]["status"] == "not-checked"
    assert out["signature"]["valid"] is None
    assert out["payload"]["activation"] == "on-demand"


def test_decode_raw_bytes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = next(p for p in vector_files() if p.name == "ECS80_NA_8F36_ALERT_GBCS.HEX")
    raw = tmp_path / "frame.bin"
    raw.write_bytes(bytes.fromhex(src.read_text()))
    assert main(["decode", "--raw", str(raw)]) == 0
    assert json.loads(capsys.readouterr().out)["payload"]["alert_code"] == "0x8F36"


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        ("DD000000000000819C1100000000DF0901", "truncated"),
        ("DF0901000000", "truncated"),
        ("4142434445", "bad-tag"),
        ("", "truncated"),
        ("not hex at all", "not hex"),
        ("DF090400000000000003E80890B3D51F300100000800DB1234567890A000020012020500", "bad-field"),
    ],
)
def test_decode_bad_input_prints_one_line_with_the_reason(
    content: str, reason: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bad.hex"
    path.write_text(content)
    assert main(["decode", str(path)]) != 0
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1
    assert reason in lines[0]
    assert str(path) in lines[0]


def test_decode_missing_file_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["decode", str(tmp_path / "nope.hex")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert "cannot read" in err[0]


def test_console_script_decodes_every_vector_in_one_run(keystore_dir: Path) -> None:
    exe = shutil.which("poa-gateway", path=str(Path(sys.executable).parent))
    assert exe is not None, "console script not installed in the venv"
    files = [str(p) for p in vector_files()]
    done = subprocess.run(
        [exe, "decode", "--trust", str(keystore_dir), *files],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == len(files)
    assert [json.loads(line)["file"] for line in lines] == files


def test_console_script_truncated_frame_exits_non_zero(tmp_path: Path) -> None:
    exe = shutil.which("poa-gateway", path=str(Path(sys.executable).parent))
    assert exe is not None
    done = subprocess.run(
        [exe, "decode", "-"],
        input="DF0901",
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr.count("\n") == 1
    assert "truncated" in done.stderr
