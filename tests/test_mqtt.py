"""The MQTT adapter against a real mosquitto: inbound flow control, the publish window,
acknowledgement only after the handler returns, and write coalescing."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio

from gateway.mqtt import MqttAdapter, MqttSettings, PublishRefused
from tests.e2e_support import Broker

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio, pytest.mark.timeout(120)]

LIMIT = 50
MESSAGES = 3000
SIZE = 4096  # 64 KiB, gmqtt's read size, is 16 messages


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
        assert receiver.flow_control, "gmqtt's internals moved: no inbound flow control"
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
        assert receiver.coalescing, "gmqtt's internals moved: one system call per packet"
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
        assert adapter.checks_puback_reasons, "gmqtt's internals moved: refusals look like acks"
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
        window = source.window_size  # 99: the test broker's Receive Maximum - 1
        forgetful.stop()
        await until(lambda: not source.connected)
        # Written to a dead socket and kept in gmqtt's store; the broker that comes
        # back has no session for us, so gmqtt drops them and the adapter sends them
        # again, and the packet ids they held come back to the pool.
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


async def test_the_publish_window_is_the_brokers_receive_maximum_less_one(broker: Broker) -> None:
    async def ignore(_topic: str, _payload: bytes) -> None:
        return None

    # The test broker says max_inflight_messages 100: gmqtt then allocates 99 packet
    # ids, and a window of 1000 would overflow them (relaybench pitfall P4).
    adapter = MqttAdapter(settings(broker, "wide", inflight=1000), ignore)
    await adapter.connect()
    try:
        assert adapter.window_size == 99
        await asyncio.wait_for(
            adapter.publish_many([("t/out", message(i)) for i in range(500)]), 30
        )
    finally:
        await adapter.close()
