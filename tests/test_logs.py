"""JSON log lines: one object per line, stable key order, EUI-64s, no secrets."""

from __future__ import annotations

import asyncio
import enum
import io
import json
import logging
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.config import Secret, load_config
from gateway.logs import JsonLog, route_stdlib_logging

EPOCH = 1_700_000_000.123  # 2023-11-14T22:13:20.123Z
ESME = bytes.fromhex("00DB1234567890A0")
CHF = bytes.fromhex("00DB1234567890A1")


class Color(enum.StrEnum):
    RED = "red"


class Tagged(msgspec.Struct):
    device: bytes
    token: str


def make_log(level: str = "info") -> tuple[JsonLog, io.StringIO]:
    stream = io.StringIO()
    return JsonLog(stream, level=level, clock=lambda: EPOCH), stream


def lines(stream: io.StringIO) -> list[dict[str, Any]]:
    text = stream.getvalue()
    assert text.endswith("\n") or text == ""
    return [json.loads(line) for line in text.splitlines()]


def test_each_record_is_one_json_object_on_one_line() -> None:
    log, stream = make_log()
    log.info("alert.forwarded", note="two\nlines")
    log.warning("alert.late")
    records = lines(stream)
    assert [r["event"] for r in records] == ["alert.forwarded", "alert.late"]
    assert records[0]["note"] == "two\nlines"


def test_timestamp_is_utc_iso8601_with_milliseconds() -> None:
    log, stream = make_log()
    log.info("x")
    assert lines(stream)[0]["ts"] == "2023-11-14T22:13:20.123Z"


def test_timestamps_round_to_the_millisecond_across_a_second() -> None:
    stream = io.StringIO()
    JsonLog(stream, clock=lambda: 1_700_000_000.9996).info("x")
    assert lines(stream)[0]["ts"] == "2023-11-14T22:13:21.000Z"


def test_keys_come_in_a_stable_order() -> None:
    log, stream = make_log()
    log.info(
        "alert.suppressed",
        zeta=1,
        topic="csp/dcc/alert",
        alpha=2,
        request_id="r",
        chf_id=CHF,
        device_id=ESME,
        alert_id="a-1",
        reason="inside-window",
    )
    assert list(lines(stream)[0]) == [
        "ts",
        "level",
        "event",
        "reason",
        "alert_id",
        "device_id",
        "chf_id",
        "request_id",
        "topic",
        "alpha",
        "zeta",
    ]


def test_eight_bytes_are_written_as_eui64_and_other_bytes_as_hex() -> None:
    log, stream = make_log()
    log.info("x", device_id=ESME, payload=b"\x01\xab", nested={"chf": CHF, "ids": [ESME]})
    record = lines(stream)[0]
    assert record["device_id"] == "00-DB-12-34-56-78-90-A0"
    assert record["payload"] == "01ab"
    assert record["nested"] == {
        "chf": "00-DB-12-34-56-78-90-A1",
        "ids": ["00-DB-12-34-56-78-90-A0"],
    }


def test_values_that_json_cannot_hold_are_written_as_text() -> None:
    log, stream = make_log()
    log.info("x", path=Path("/var/lib/poa"), error=ValueError("bad"), obj=object, color=Color.RED)
    record = lines(stream)[0]
    assert record["path"] == "/var/lib/poa"
    assert record["error"] == "bad"
    assert record["obj"] == str(object)
    assert record["color"] == "red"


def test_structs_are_written_as_objects_with_formatted_bytes_and_scrubbed_secrets() -> None:
    log, stream = make_log()
    log.info("x", tagged=Tagged(device=ESME, token="t0ps3cret"))
    assert lines(stream)[0]["tagged"] == {"device": "00-DB-12-34-56-78-90-A0", "token": "***"}


@pytest.mark.parametrize(
    "name", ["password", "mqtt_password", "client_secret", "Token", "api_token_hash"]
)
def test_fields_named_like_secrets_are_never_written(name: str) -> None:
    log, stream = make_log()
    log.info("x", **{name: "hunter2"}, nested={name: "hunter2"})
    text = stream.getvalue()
    assert "hunter2" not in text
    assert lines(stream)[0][name] == "***"
    assert lines(stream)[0]["nested"][name] == "***"


def test_secret_values_are_never_written_whatever_the_field_name() -> None:
    log, stream = make_log()
    log.info("x", credential=Secret("hunter2"), many=[Secret("hunter2")])
    assert "hunter2" not in stream.getvalue()
    assert lines(stream)[0]["credential"] == "***"


def test_a_logged_configuration_keeps_the_password_out() -> None:
    config = load_config(None, env={"POA_MQTT_PASSWORD": "hunter2"})
    log, stream = make_log()
    log.info("config.loaded", config=config, effective=config.redacted_dict())
    assert "hunter2" not in stream.getvalue()
    record = lines(stream)[0]
    assert record["config"]["suppression"]["window"] == 1_800_000
    assert record["effective"]["suppression"]["window"] == "30m"


def test_a_field_named_like_a_header_key_does_not_replace_it() -> None:
    log, stream = make_log()
    log.info("x", level="custom", ts=1)
    record = lines(stream)[0]
    assert (record["level"], record["_level"], record["_ts"]) == ("info", "custom", 1)
    assert record["event"] == "x"


# -- values from the wire: a record is always written -----------------------------------


def test_a_huge_response_code_is_written_as_bounded_text() -> None:
    # Crash class: a signed 0x00CA alert with a 2,000-byte responseCode was logged, and
    # the writer raised (int -> str past 4,300 digits).
    log, stream = make_log()
    code = int.from_bytes(b"\x01" + b"\x55" * 1999, "big")
    log.info("alert.read", response_code=code, negative=-code, nested={"codes": [code]})
    record = lines(stream)[0]
    assert record["response_code"] == "0x1555555555555555... (15993 bits)"
    assert record["negative"] == "-0x1555555555555555... (15993 bits)"
    assert record["nested"] == {"codes": ["0x1555555555555555... (15993 bits)"]}


def test_integers_keep_their_json_number_up_to_64_bits_and_their_digits_to_128() -> None:
    log, stream = make_log()
    log.info("x", u64=2**64 - 1, i64=-(2**63), wide=2**100, bool_=True)
    record = lines(stream)[0]
    assert (record["u64"], record["i64"], record["bool_"]) == (2**64 - 1, -(2**63), True)
    assert record["wide"] == str(2**100)


class Unprintable:
    def __str__(self) -> str:
        raise RuntimeError("no text")

    __repr__ = __str__


class HugeIntEnum(enum.IntEnum):
    BIG = 2**20_000


class BadIntSubclass(int):
    def __int__(self) -> int:
        raise RuntimeError("no int")


def test_a_field_that_cannot_be_printed_is_written_as_unloggable() -> None:
    log, stream = make_log()
    log.info("x", a=Unprintable(), b=[Unprintable()], c=BadIntSubclass(3), keep="kept")
    record = lines(stream)[0]
    assert record["a"] == "<unloggable Unprintable>"
    assert record["b"] == ["<unloggable Unprintable>"]
    assert record["c"] == "<unloggable BadIntSubclass>"
    assert record["keep"] == "kept"


def test_keys_that_are_not_text_are_written_as_text() -> None:
    log, stream = make_log()
    log.info("x", m={1: "a", (1, 2): "b", 2**20_000: "c", Unprintable(): "d", b"k": "e"})
    assert lines(stream)[0]["m"] == {
        "1": "a",
        "(1, 2)": "b",
        "0x1000000000000000... (20001 bits)": "c",
        "<unloggable Unprintable>": "d",
        "b'k'": "e",
    }


def test_self_containing_and_very_deep_values_are_cut_at_the_depth_bound() -> None:
    looped: list[object] = []
    looped.append(looped)
    deep: list[object] = []
    for _ in range(100_000):  # str() of it exceeds the recursion limit
        deep = [deep]
    log, stream = make_log()
    log.info("x", looped=looped, deep=deep, enum=HugeIntEnum.BIG)
    record = lines(stream)[0]
    assert record["looped"] == [[[[[["[[...]]"]]]]]]
    assert record["deep"] == [[[[[["<unloggable list>"]]]]]]
    assert record["enum"] == "0x1000000000000000... (20001 bits)"


def test_text_that_utf8_cannot_hold_is_escaped() -> None:
    log, stream = make_log()
    log.info("x", lone="\udc80", fine="é")
    assert lines(stream)[0]["lone"] == "\udc80"
    assert lines(stream)[0]["fine"] == "é"


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=2**64, max_value=2**20_000)
    | st.floats()
    | st.text()
    | st.binary()
    | st.builds(Unprintable),
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(st.integers() | st.text() | st.binary(), children, max_size=3)
        | st.tuples(children, children)
    ),
    max_leaves=10,
)


@given(fields=st.dictionaries(st.text(min_size=1), json_values, max_size=5))
def test_any_value_is_written_as_one_json_line(fields: dict[str, object]) -> None:
    log, stream = make_log()
    log.info("x", **fields)
    text = stream.getvalue()
    assert text.count("\n") == 1  # (journald splits on newlines only; not on U+0085)
    assert json.loads(text)["event"] == "x"


def test_records_below_the_level_are_not_written() -> None:
    log, stream = make_log("warning")
    log.debug("d")
    log.info("i")
    log.warning("w")
    log.error("e")
    log.log("info", "i2")
    log.log("error", "e2")
    assert [(r["level"], r["event"]) for r in lines(stream)] == [
        ("warning", "w"),
        ("error", "e"),
        ("error", "e2"),
    ]
    assert not log.enabled_for("info")
    log.level = "debug"
    log.debug("d2")
    assert lines(stream)[-1]["event"] == "d2"


def test_an_unknown_level_is_refused() -> None:
    with pytest.raises(ValueError, match="verbose"):
        JsonLog(io.StringIO(), level="verbose")


def test_a_closed_stream_drops_lines_instead_of_raising() -> None:
    log, stream = make_log()
    stream.close()
    log.info("x")
    assert log.dropped == 1


def test_each_line_is_flushed() -> None:
    class Recording(io.StringIO):
        flushes = 0

        def flush(self) -> None:
            self.flushes += 1
            super().flush()

    stream = Recording()
    log = JsonLog(stream, clock=lambda: EPOCH)
    log.info("a")
    log.info("b")
    assert stream.flushes == 2


class _CountingFlushes(io.StringIO):
    flushes = 0

    def flush(self) -> None:
        self.flushes += 1
        super().flush()


def test_on_the_daemon_loop_lines_are_flushed_once_per_pass_in_order() -> None:
    stream = _CountingFlushes()
    log = JsonLog(stream, clock=lambda: EPOCH)
    seen: list[tuple[int, int]] = []

    async def main() -> None:
        log.flush_once_per_pass(asyncio.get_running_loop())
        for i in range(100):
            log.info("burst", n=i)
        seen.append((stream.flushes, len(stream.getvalue().splitlines())))
        await asyncio.sleep(0)  # one pass: the scheduled flush runs
        seen.append((stream.flushes, len(stream.getvalue().splitlines())))
        # Another thread's line is flushed at once, not left for the loop.
        await asyncio.to_thread(log.info, "from-a-thread")
        seen.append((stream.flushes, 0))

    asyncio.run(main())
    log.info("after the loop")  # the loop is gone: flushed at once
    assert seen[0] == (0, 100)  # written, not yet flushed
    assert seen[1] == (1, 100)  # one flush for the burst
    assert seen[2][0] == 2
    assert stream.flushes == 3
    assert [json.loads(line)["n"] for line in stream.getvalue().splitlines()[:100]] == list(
        range(100)
    )


def test_on_the_daemon_loop_warnings_and_errors_are_flushed_at_once() -> None:
    stream = _CountingFlushes()
    log = JsonLog(stream, clock=lambda: EPOCH)
    flushes: list[int] = []

    async def main() -> None:
        log.flush_once_per_pass(asyncio.get_running_loop())
        log.info("routine")
        flushes.append(stream.flushes)
        log.warning("look")  # a SIGKILL right after must not take it with it
        flushes.append(stream.flushes)
        log.error("broken")
        flushes.append(stream.flushes)

    asyncio.run(main())
    assert flushes == [0, 1, 2]


def test_lines_from_many_threads_are_never_interleaved() -> None:
    log, stream = make_log()

    def work(n: int) -> None:
        for i in range(200):
            log.info("tick", thread=n, i=i, pad="x" * 200)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(lines(stream)) == 800


def test_default_stream_is_stdout(capsys: pytest.CaptureFixture[str]) -> None:
    JsonLog(clock=lambda: EPOCH).info("hello")
    assert json.loads(capsys.readouterr().out)["event"] == "hello"


# -- the standard logging module ---------------------------------------------------------


@pytest.fixture
def restore_root_logger() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.mark.usefixtures("restore_root_logger")
def test_stdlib_records_come_out_as_lib_events() -> None:
    log, stream = make_log("debug")
    route_stdlib_logging(log, "info")
    logging.getLogger("gmqtt.client").warning("connection lost to %s", "broker")
    logging.getLogger("gmqtt.client").debug("below the routed level")
    record = lines(stream)[0]
    assert len(lines(stream)) == 1
    assert record["event"] == "lib.gmqtt.client"
    assert record["level"] == "warning"
    assert record["message"] == "connection lost to broker"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", record["ts"])


@pytest.mark.usefixtures("restore_root_logger")
def test_stdlib_records_respect_the_log_level_and_carry_exceptions() -> None:
    log, stream = make_log("error")
    route_stdlib_logging(log, "debug")
    lib = logging.getLogger("somelib")
    lib.warning("filtered by the JsonLog level")
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        lib.exception("it failed")
    lib.critical("very bad")
    records = lines(stream)
    assert [(r["level"], r["message"]) for r in records] == [
        ("error", "it failed"),
        ("error", "very bad"),
    ]
    assert "RuntimeError: boom" in records[0]["exc"]


@pytest.mark.usefixtures("restore_root_logger")
def test_routing_twice_replaces_the_handler_and_scrubs_known_secrets() -> None:
    log, stream = make_log()
    route_stdlib_logging(log)
    handler = route_stdlib_logging(log, "warning", secrets=[Secret("hunter2")])
    assert logging.getLogger().handlers.count(handler) == 1
    assert sum(type(h) is type(handler) for h in logging.getLogger().handlers) == 1
    logging.getLogger("gmqtt").warning("CONNECT user=gw password=hunter2")
    assert "hunter2" not in stream.getvalue()
    assert lines(stream)[0]["message"] == "CONNECT user=gw password=***"
