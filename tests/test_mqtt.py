"""The MQTT adapter against a real mosquitto: inbound flow control, the publish window,
acknowledgement only after the handler returns, and order with gathered writes."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
import pytest_asyncio

from gateway.transport.codes import ConnectReason
from gateway.transport.mqtt import (
    ConnectionRefusedPermanently,
    MqttAdapter,
    MqttSettings,
    PublishRefused,
    install_exception_filter,
)
from tests.e2e_support import Broker

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio, pytest.mark.timeout(120)]

LIMIT = 50
MESSAGES = 3000
SIZE = 4096  # a 64 KiB socket read is 16 messages


@pytest_asyncio.fixture
async def sender(broker: Broker) -> AsyncIterator[MqttAdapter]:
    async def ignore(_topic: str, _payload: bytes) -> None:
        return None

    adapter = MqttAdapter(MqttSettings(port=broker.port, client_id="sender"), ignore)
    await adapter.connect()
    yield adapter
    await adapter.close()


def settings(broker: Broker, client_id: str, inflight: int = LIMIT) -> MqttSettings:
    return MqttSettings(
        port=broker.port,
        client_id=client_id,
        inflight=inflight,
        receive_maximum=inflight,
        reconnect_min_s=0.1,
        reconnect_max_s=0.5,
    )


def message(i: int) -> bytes:
    return i.to_bytes(4, "big") + bytes(SIZE - 4)


async def until(condition: object, limit_s: float = 20) -> None:
    assert callable(condition)
    deadline = asyncio.get_running_loop().time() + limit_s
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.02)


async def test_inbound_messages_in_progress_stay_bounded(
    broker: Broker, sender: MqttAdapter
) -> None:
    release = asyncio.Event()
    seen: Counter[int] = Counter()

    async def slow(_topic: str, payload: bytes) -> None:
        number = int.from_bytes(payload[:4], "big")
        if number % 10 == 0:
            # Most finish at once, so acknowledgements flow: mosquitto before 2.0.13
            # then stops counting its in-flight quota and sends whatever it has.
            await release.wait()
        seen[number] += 1

    receiver = MqttAdapter(settings(broker, "bounded"), slow)
    await receiver.connect()
    try:
        await receiver.subscribe(["t/in"])
        await asyncio.gather(*(sender.publish("t/in", message(i)) for i in range(MESSAGES)))
        await until(lambda: receiver.paused)  # the gate closed at LIMIT in hand
        await asyncio.sleep(1.0)  # time for more to come in, were reading not paused
        # The gate closes at LIMIT; what was already read from the socket (at most one
        # 64 KiB read beyond the chunk that crossed the limit) is still handed over.
        assert receiver.paused
        assert receiver.inbound <= LIMIT + 2 * 16, receiver.inbound
        release.set()
        await until(lambda: len(seen) == MESSAGES)
        assert receiver.inbound_peak <= LIMIT + 2 * 16
        assert receiver.pauses >= 1
    finally:
        await receiver.close()


async def test_a_message_whose_handler_fails_is_redelivered(
    broker: Broker, sender: MqttAdapter
) -> None:
    attempts: Counter[bytes] = Counter()
    done = asyncio.Event()

    async def flaky(_topic: str, payload: bytes) -> None:
        attempts[payload] += 1
        if attempts[payload] == 1:
            raise RuntimeError("store unavailable")
        done.set()

    receiver = MqttAdapter(settings(broker, "flaky"), flaky)
    await receiver.connect()
    try:
        await receiver.subscribe(["t/in"])
        await sender.publish("t/in", b"once")
        # The adapter withholds the PUBACK and starts a new session, where the broker
        # delivers the unacknowledged message again.
        await asyncio.wait_for(done.wait(), 20)
        assert attempts[b"once"] == 2
    finally:
        await receiver.close()


async def test_publish_window_bounds_unacknowledged_publishes(broker: Broker) -> None:
    got: list[bytes] = []

    async def collect(_topic: str, payload: bytes) -> None:
        got.append(payload)

    sink = MqttAdapter(settings(broker, "sink", inflight=1000), collect)
    await sink.connect()
    await sink.subscribe(["t/out"])

    async def ignore(_topic: str, _payload: bytes) -> None:
        return None

    source = MqttAdapter(settings(broker, "source", inflight=10), ignore)
    await source.connect()
    try:
        assert 1 <= source.window_size <= 10
        peak = 0

        async def watch() -> None:
            nonlocal peak
            while True:
                peak = max(peak, source.inflight_publishes)
                await asyncio.sleep(0)

        watcher = asyncio.create_task(watch())
        await asyncio.gather(*(source.publish("t/out", message(i)) for i in range(500)))
        watcher.cancel()
        assert 1 <= peak <= source.window_size
        await until(lambda: len(got) >= 500)
        assert sorted(int.from_bytes(p[:4], "big") for p in got) == list(range(500))
    finally:
        await source.close()
        await sink.close()


async def test_writes_are_gathered_and_everything_arrives_in_order(
    broker: Broker, sender: MqttAdapter
) -> None:
    got: list[int] = []

    async def collect(_topic: str, payload: bytes) -> None:
        got.append(int.from_bytes(payload[:4], "big"))

    receiver = MqttAdapter(settings(broker, "ordered", inflight=1000), collect)
    await receiver.connect()
    try:
        await receiver.subscribe(["t/in"])
        # Many publishes in one pass of the loop: gathered into few socket writes.
        tasks = [sender.publish_soon("t/in", message(i)) for i in range(2000)]
        await asyncio.gather(*tasks)
        await until(lambda: len(got) >= 2000)
        assert got == list(range(2000))  # QoS 1 on one connection keeps the order
    finally:
        await receiver.close()


@pytest.fixture
def acl_broker(tmp_path: Path) -> Iterator[Broker]:
    b = Broker(tmp_path / "acl-broker")
    acl = b.root / "acl"
    acl.write_text("topic readwrite allowed/#\n")  # anonymous clients: nothing else
    b.conf.write_text(b.conf.read_text() + f"acl_file {acl}\n")
    b.start()
    yield b
    b.stop()


async def test_a_publish_the_broker_refuses_raises_instead_of_counting_as_delivered(
    acl_broker: Broker,
) -> None:
    async def ignore(_topic: str, _payload: bytes) -> None:
        return None

    adapter = MqttAdapter(settings(acl_broker, "acl"), ignore)
    await adapter.connect()
    try:
        await adapter.publish("allowed/x", b"accepted")
        with pytest.raises(PublishRefused) as refused:
            await adapter.publish("denied/x", b"refused")
        assert refused.value.code == 0x87  # not authorized
        assert refused.value.topic == "denied/x"
        assert adapter.refusals == 1
        await adapter.publish("allowed/x", b"accepted again")  # the link goes on
    finally:
        await adapter.close()


async def test_publishes_lost_with_the_session_are_sent_again(tmp_path: Path) -> None:
    forgetful = Broker(tmp_path / "forgetful")  # no persistence: a restart loses sessions
    forgetful.conf.write_text(
        forgetful.conf.read_text().replace("persistence true", "persistence false")
    )
    forgetful.start()

    async def ignore(_topic: str, _payload: bytes) -> None:
        return None

    source = MqttAdapter(settings(forgetful, "source2", inflight=1000), ignore)
    await source.connect()
    try:
        window = source.window_size  # 100: the test broker's Receive Maximum
        forgetful.stop()
        await until(lambda: not source.connected)
        # Queued in the session while disconnected; the broker that comes back has no
        # session for us, so they go out as new packets with new ids.
        sending = asyncio.create_task(
            source.publish_many([("t/out", message(i)) for i in range(3 * window)])
        )
        await asyncio.sleep(0.2)
        forgetful.start()
        await asyncio.wait_for(sending, 30)
        assert source.inflight_publishes == 0
        await asyncio.wait_for(
            source.publish_many([("t/out", message(i)) for i in range(3 * window)]), 30
        )
    finally:
        await source.close()
        forgetful.stop()


async def test_the_publish_window_is_the_brokers_receive_maximum(broker: Broker) -> None:
    async def ignore(_topic: str, _payload: bytes) -> None:
        return None

    # The test broker says max_inflight_messages 100, its Receive Maximum: a window of
    # 1000 would have the broker refuse the 101st (MQTT v5.0, 4.9).
    adapter = MqttAdapter(settings(broker, "wide", inflight=1000), ignore)
    await adapter.connect()
    try:
        assert adapter.window_size == 100
        await asyncio.wait_for(
            adapter.publish_many([("t/out", message(i)) for i in range(500)]), 30
        )
    finally:
        await adapter.close()


# -- refusals and connection events ------------------------------------------------------


class Events:
    """An on_event sink that keeps (event, fields) in order."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, dict[str, object]]] = []

    def __call__(self, event: str, fields: dict[str, object]) -> None:
        self.seen.append((event, fields))

    def named(self, event: str, **match: object) -> list[dict[str, object]]:
        return [
            f for e, f in self.seen if e == event and all(f.get(k) == v for k, v in match.items())
        ]


async def ignore(_topic: str, _payload: bytes) -> None:
    return None


def password_broker(root: Path, password: str) -> Broker:
    b = Broker(root)
    b.require_passwords({"gateway": password})
    acl = b.root / "acl"
    acl.write_text("user gateway\ntopic readwrite t/#\n")
    b.add_config(f"acl_file {acl}")
    return b


def with_password(broker: Broker, client_id: str, password: str, protocol: int = 5) -> MqttSettings:
    return msgspec.structs.replace(
        settings(broker, client_id), username="gateway", password=password, protocol=protocol
    )


@pytest.mark.parametrize("protocol", [5, 4])
async def test_a_wrong_password_fails_connect_at_once_naming_the_broker(
    tmp_path: Path, protocol: int
) -> None:
    broker = password_broker(tmp_path / "pw", "right")
    broker.start()
    events = Events()
    adapter = MqttAdapter(
        with_password(broker, "wrong-pw", "wrong", protocol), ignore, on_event=events
    )
    try:
        with pytest.raises(ConnectionRefusedPermanently) as refused:
            await asyncio.wait_for(adapter.connect(), 30)
        # mosquitto says "not authorized" to a bad password (0x87 in MQTT 5, 5 in 3.1.1)
        assert refused.value.code in (0x86, 0x87, 4, 5)
        assert refused.value.reason in ("bad-user-name-or-password", "not-authorized")
        assert (refused.value.host, refused.value.port) == ("127.0.0.1", broker.port)
        assert f"127.0.0.1:{broker.port}" in str(refused.value)
        assert refused.value.link == "out"  # connected first
        assert adapter.failure is refused.value
        assert await adapter.wait_failed() is refused.value
        assert not adapter.connected
        # Not retried: a retry would be refused again, and it would be reported.
        await asyncio.sleep(1.0)  # twice reconnect_max: time for retries, were there any
        assert events.named("mqtt.connect_failed") == []
        assert events.named("mqtt.connected") == []
        assert len(events.named("mqtt.refused", link="out", port=broker.port)) == 1
        assert broker_log(broker).count("disconnected, not authorised") == 1  # one attempt
    finally:
        await adapter.close()
        broker.stop()


def broker_log(broker: Broker) -> str:
    log = broker.root / "mosquitto.log"
    return log.read_text() if log.exists() else ""


async def test_a_password_changed_while_connected_is_reported_and_fails_the_adapter(
    tmp_path: Path,
) -> None:
    broker = password_broker(tmp_path / "pw", "first")
    broker.start()
    events = Events()
    adapter = MqttAdapter(with_password(broker, "changed", "first"), ignore, on_event=events)
    try:
        await adapter.connect()
        await adapter.subscribe(["t/in"])
        assert adapter.connected
        broker.require_passwords({"gateway": "second"})
        broker.restart()
        failure = await asyncio.wait_for(adapter.wait_failed(), 30)
        assert isinstance(failure, ConnectionRefusedPermanently)
        assert failure.port == broker.port
        assert failure.reason in ("bad-user-name-or-password", "not-authorized")
        assert adapter.failure is failure
        assert not adapter.connected
        # Both links reconnect and both may be refused before the adapter stops: each
        # refusal is reported, the first one is the adapter's failure.
        refusals = events.named("mqtt.refused")
        assert 1 <= len(refusals) <= 2
        refused = refusals[0]
        assert refused["code"] == failure.code
        assert refused["link"] == failure.link
        for each in refusals:
            assert (each["host"], each["port"]) == ("127.0.0.1", broker.port)
        assert events.named("mqtt.disconnected", link=failure.link)
    finally:
        await adapter.close()
        broker.stop()


async def test_a_stopped_broker_is_retried_with_each_failed_attempt_reported(
    broker: Broker,
) -> None:
    events = Events()
    adapter = MqttAdapter(settings(broker, "outage"), ignore, on_event=events)
    await adapter.connect()
    try:
        broker.stop()
        await until(lambda: len(events.named("mqtt.connect_failed", reason="cannot-connect")) >= 4)
        assert not adapter.connected
        assert len(events.named("mqtt.disconnected")) == 2  # one per link, once each
        broker.start()
        await until(lambda: adapter.connected)
        assert len(events.named("mqtt.connected", reconnect=True)) == 2
        assert adapter.failure is None
        await adapter.publish("t/out", b"after the outage")
    finally:
        await adapter.close()


class FakeBroker:
    """Answers CONNECTs from a script, then accepts every one: per attempt, a CONNACK
    reason code, "close" (no CONNACK) or "drop" (accepted, then closed at once). Enough
    MQTT 5 for an accepted connection to stay up."""

    def __init__(self, script: list[str | int]) -> None:
        self.script = list(script)
        self.attempts = 0
        self.port = 0
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> FakeBroker:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *_exc: object) -> None:
        assert self._server is not None
        self._server.close()

    async def _packet(self, reader: asyncio.StreamReader) -> int:
        first = (await reader.readexactly(1))[0]
        length, shift = 0, 0
        while True:
            byte = (await reader.readexactly(1))[0]
            length |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                break
        await reader.readexactly(length)
        return first & 0xF0

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            if await self._packet(reader) != 0x10:  # CONNECT
                return
            self.attempts += 1
            answer = self.script.pop(0) if self.script else 0
            if answer == "close":
                return
            code = 0 if answer == "drop" else answer
            assert isinstance(code, int)
            writer.write(bytes([0x20, 3, 0, code, 0]))  # CONNACK, no properties
            await writer.drain()
            if answer == "drop":
                return
            while answer == 0:
                if await self._packet(reader) == 0xC0:  # PINGREQ
                    writer.write(b"\xd0\x00")
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


async def test_transient_refusals_are_retried_until_the_broker_accepts() -> None:
    script: list[str | int] = ["close", ConnectReason.SERVER_BUSY, ConnectReason.QUOTA_EXCEEDED]
    async with FakeBroker(script) as fake:
        events = Events()
        adapter = MqttAdapter(
            MqttSettings(
                port=fake.port, client_id="busy", reconnect_min_s=0.05, reconnect_max_s=0.2
            ),
            ignore,
            on_event=events,
        )
        try:
            await asyncio.wait_for(adapter.connect(), 30)
            assert adapter.connected
            assert adapter.failure is None
            assert fake.attempts == 5  # three failed, then one per link
            failed = events.named("mqtt.connect_failed", link="out")
            assert [f["reason"] for f in failed] == [
                "closed-before-connack",
                "server-busy",
                "quota-exceeded",
            ]
            assert [f.get("code") for f in failed] == [None, 0x89, 0x97]
            assert events.named("mqtt.refused") == []
        finally:
            await adapter.close()


async def test_the_not_authorized_refusal_of_a_reconnect_resolves_wait_failed() -> None:
    # The receiving link is accepted, dropped, and refused when it comes back: the
    # path of a password changed while the gateway runs.
    async with FakeBroker([0, "drop", ConnectReason.NOT_AUTHORIZED]) as fake:
        events = Events()
        adapter = MqttAdapter(
            MqttSettings(
                port=fake.port, client_id="later", reconnect_min_s=0.05, reconnect_max_s=0.2
            ),
            ignore,
            on_event=events,
        )
        try:
            await adapter.connect()
            failure = await asyncio.wait_for(adapter.wait_failed(), 30)
            assert (failure.code, failure.link) == (0x87, "in")
            assert not adapter.connected
            assert [e for e, _ in events.seen][-2:] == ["mqtt.disconnected", "mqtt.refused"]
        finally:
            await adapter.close()


@pytest.mark.asyncio
async def test_the_loop_filter_logs_failures_and_not_cancellations() -> None:
    seen: list[tuple[str, dict[str, Any]]] = []
    loop = asyncio.get_running_loop()
    previous = loop.get_exception_handler()
    install_exception_filter(loop, lambda event, fields: seen.append((event, fields)))
    try:
        loop.call_exception_handler(
            {"message": "Exception in callback x", "exception": asyncio.CancelledError()}
        )
        loop.call_exception_handler(
            {"message": "Task exception was never retrieved", "exception": ValueError("boom")}
        )
    finally:
        loop.set_exception_handler(previous)
    assert seen == [
        (
            "loop.error",
            {"reason": "ValueError('boom')", "detail": "Task exception was never retrieved"},
        )
    ]
