"""``poa-gateway`` command line: --version, decode, and its one-line errors."""

from __future__ import annotations

import json
import random
import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway import __version__
from gateway.cli.main import main, subcommand_names
from gateway.exits import Exit

from . import fuzz_support
from .conftest import vector_files, vectors_root


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
    assert main(["decode", str(tmp_path / "nope.hex")]) == Exit.USAGE
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
    assert done.returncode == Exit.USAGE
    assert done.stdout == ""
    assert done.stderr.count("\n") == 1
    assert "truncated" in done.stderr


# -- no traceback for any input ---------------------------------------------------------


def _frame_hex(payload: str, *, cra: str = "03", code: str = "00CA", date_time: str = "00") -> str:
    """A bare general-signing frame around ``payload`` (hex), with an empty signature."""
    length = len(payload) // 2
    size = f"{length:02X}" if length < 0x80 else f"82{length:04X}"
    return f"DF09{cra}{'00' * 8}08{'00' * 8}08{'00' * 8}{date_time}02{code}{size}{payload}00"


def _der(tag: str, body: str) -> str:
    length = len(body) // 2
    size = f"{length:02X}" if length < 0x80 else f"82{length:04X}"
    return f"{tag}{size}{body}"


GT = _der("18", b"20300115090000Z".hex())
OUTCOME = _der("30", "020100" + _der("04", "0123ABCF"))


@pytest.mark.parametrize(
    "content",
    [
        # A negative originator counter of 1,786 bytes (the reported frame).
        "DF0901" + "00" * 8 + "08" + "00" * 8 + "08" + "00" * 8 + "00020012820724"
        "30820720" + "0420" + "00" * 32 + "028206FA" + "80" + "00" * 1785,
        # A positive counter of 2,000 bytes (json.dumps raised on it).
        _frame_hex(_der("30", "020101" + GT + _der("02", "01" * 2000) + OUTCOME)),
        # A 0x00CA alert with a 2,000-byte responseCode.
        _frame_hex(
            _der("30", "020101" + GT + "020101" + _der("30", _der("02", "01" * 2000) + "040100"))
        ),
    ],
    ids=["negative-counter-1786", "positive-counter-2000", "response-code-2000"],
)
def test_decode_of_an_integer_beyond_its_field_is_one_line(
    content: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "frame.hex"
    path.write_text(content)
    assert main(["decode", str(path)]) == Exit.USAGE
    captured = capsys.readouterr()
    assert captured.out == ""
    assert len(captured.err.splitlines()) == 1
    assert "bad-payload" in captured.err
    assert len(captured.err) < 300


def test_decode_of_a_dlms_date_time_past_9999_prints_it_without_an_instant(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # 9999-12-31T23:59 local with a deviation of +720 minutes: UTC is in year 10000, and
    # render_frame raised OverflowError.
    date_time = "0C" + "270F" + "0C1F05173B0000" + "02D0" + "00"
    path = tmp_path / "frame.hex"
    path.write_text(_frame_hex("00", cra="01", code="1234", date_time=date_time))
    assert main(["decode", str(path)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["header"]["date_time"]["year"] == 9999
    assert out["header"]["date_time"]["iso"] is None


def test_decode_with_an_unreadable_trust_store_file_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    trust = tmp_path / "trust"
    (trust / "a-folder.pem").mkdir(parents=True)  # read_bytes() raises IsADirectoryError
    frame = tmp_path / "frame.hex"
    frame.write_text("DF0901")
    assert main(["decode", "--trust", str(trust), str(frame)]) == Exit.USAGE
    assert len(capsys.readouterr().err.splitlines()) == 1


@pytest.fixture(scope="module")
def harness() -> Iterator[fuzz_support.Harness]:
    built = fuzz_support.Harness(vectors_root())
    yield built
    built.close()


def _fuzz_frames(harness: fuzz_support.Harness, count: int, seed: str) -> list[bytes]:
    rnd = random.Random(seed)
    frames: list[bytes] = []
    while len(frames) < count:
        kind, _strategy, data = harness.generate(rnd)
        if kind == "frame":
            frames.append(data)
    return frames


def test_decode_over_fuzzed_frames_exits_0_or_prints_one_line(
    harness: fuzz_support.Harness, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    outcomes: Counter[int] = Counter()
    path = tmp_path / "frame.hex"
    trust = ["--trust", str(vectors_root() / "keystore")]
    for i, data in enumerate(_fuzz_frames(harness, 400, "cli")):
        path.write_text(data.hex())
        # Loading the trust store takes longer than a decode: every tenth frame only.
        status = main(["decode", *(trust if i % 10 == 0 else []), str(path)])
        captured = capsys.readouterr()
        if status == 0:
            assert json.loads(captured.out)["file"] == str(path)
        else:
            assert (status, captured.out) == (Exit.USAGE, "")
            assert len(captured.err.splitlines()) == 1, captured.err
            assert captured.err.startswith(f"poa-gateway decode: {path}: ")
        outcomes[status] += 1
    assert set(outcomes) == {Exit.OK, Exit.USAGE}  # both paths were taken


def test_console_script_over_fuzzed_frames_prints_no_traceback(
    harness: fuzz_support.Harness, tmp_path: Path
) -> None:
    exe = shutil.which("poa-gateway", path=str(Path(sys.executable).parent))
    assert exe is not None
    files = []
    for i, data in enumerate(_fuzz_frames(harness, 300, "console")):
        path = tmp_path / f"{i:03d}.hex"
        path.write_text(data.hex())
        files.append(str(path))
    done = subprocess.run(
        [exe, "decode", *files], capture_output=True, text=True, check=False, timeout=120
    )
    assert "Traceback" not in done.stderr
    assert done.returncode in (Exit.OK, Exit.USAGE)
    printed = len(done.stdout.splitlines()) + len(done.stderr.splitlines())
    assert printed == len(files)  # one line per file: a JSON object or an error


@pytest.fixture(scope="module")
def state_home(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, bytes]:
    home = tmp_path_factory.mktemp("state")
    config = fuzz_support.make_state_home(home)
    return home, config, fuzz_support.state_file(home).read_bytes()


def test_status_and_explain_over_damaged_state_exit_0_or_print_one_line(
    state_home: tuple[Path, Path, bytes], capsys: pytest.CaptureFixture[str]
) -> None:
    home, config, pristine = state_home
    rnd = random.Random("state")
    unreadable = 0
    for _ in range(40):
        fuzz_support.write_state(home, fuzz_support.damage(pristine, rnd))
        for argv in (
            ["status", "--windows"],
            ["explain", "ad1-0007"],
            ["explain", "00-DB-12-34-56-78-90-07"],
            ["explain", rnd.choice(fuzz_support.EXPLAIN_SUBJECTS)],
        ):
            status = main([*argv, "--json", "--config", str(config)])
            captured = capsys.readouterr()
            assert status in (0, 1)
            if status == 0:
                json.loads(captured.out)
            else:
                assert len(captured.err.splitlines()) == 1, captured.err
            unreadable += "unreadable state database" in captured.err
    fuzz_support.write_state(home, pristine)
    assert unreadable  # some damage was found, and reported as such


def test_status_over_a_state_file_with_a_damaged_page_prints_no_traceback(
    state_home: tuple[Path, Path, bytes],
) -> None:
    home, config, pristine = state_home
    damaged = bytearray(pristine)
    damaged[2 * 4096 : 3 * 4096] = random.Random(3).randbytes(4096)  # a b-tree page
    fuzz_support.write_state(home, bytes(damaged))
    exe = shutil.which("poa-gateway", path=str(Path(sys.executable).parent))
    assert exe is not None
    try:
        done = subprocess.run(
            [exe, "status", "--windows", "--config", str(config)],
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )
    finally:
        fuzz_support.write_state(home, pristine)
    assert "Traceback" not in done.stderr
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1
    assert "unreadable state database" in done.stderr
