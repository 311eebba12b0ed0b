"""MQTT conformance of the adapter (issue 14, point 2), through its public API only.

On a real mosquitto: persistent sessions across an adapter restart and a broker
restart, keep-alive on an idle connection, TLS with a client certificate, a user with
a password. On a scripted broker (tests/mqtt_broker_support.py), what mosquitto will not
do on purpose: ignore our Receive Maximum, hold its PUBACKs to test its own, refuse
publishes with every failure reason code, stop answering PINGREQs, hang up in the
middle of a packet, send malformed packets (to the adapter and to the real daemon).

Covered in tests/test_mqtt.py and not repeated here: the inbound bound against
mosquitto (test_inbound_messages_in_progress_stay_bounded), the publish window against
our ``inflight`` and mosquitto's max_inflight_messages, a PUBACK refusal from an ACL
(0x87), a wrong password (both protocol versions), a password changed while connected,
a handler failure redelivered, publishes lost with a forgetful broker's session.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import mqtt5
import pytest
import pytest_asyncio

from gateway import wire
from gateway.transport.mqtt import Delivery, MqttAdapter, MqttSettings, PublishRefused
from tests.e2e_support import CHF, Broker, Daemon, Home, now_ms
from tests.mqtt_broker_support import (
    Connection,
    Events,
    Pki,
    ScriptedBroker,
    broker_log,
    publish_packet,
    require_client_certificates,
    require_user,
    until,
)

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio, pytest.mark.timeout(120)]

Handler = Callable[[str, bytes], Awaitable[None]]


def settings(port: int, client_id: str, **overrides: Any) -> MqttSettings:
    return MqttSettings(
        port=port, client_id=client_id, reconnect_min_s=0.05, reconnect_max_s=0.3, **overrides
    )


async def ignore(_topic: str, _payload: bytes) -> None:
    return None


def collector(into: list[bytes]) -> Handler:
    async def collect(_topic: str, payload: bytes) -> None:
        into.append(payload)

    return collect


@contextlib.asynccontextmanager
async def connected(
    s: MqttSettings, on_message: Handler | None = None, **kwargs: Any
) -> AsyncIterator[MqttAdapter]:
    """An adapter, connected, closed on the way out."""
    if on_message is None and "on_delivery" not in kwargs:
        on_message = ignore
    adapter = MqttAdapter(s, on_message, **kwargs)
    try:
        await adapter.connect()
        yield adapter
    finally:
        await adapter.close()


@pytest_asyncio.fixture
async def loop_errors() -> AsyncIterator[list[dict[str, Any]]]:
    """What reached the event loop's exception handler during the test: a task of the
    adapter that died of what the broker sent would be there."""
    loop = asyncio.get_running_loop()
    previous = loop.get_exception_handler()
    seen: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _loop, context: seen.append(context))
    yield seen
    gc.collect()  # a task that died unobserved says so when it is collected
    loop.set_exception_handler(previous)


# -- persistent sessions on mosquitto (persistence true, in the test's tmp folder) ----------


async def test_messages_published_while_the_receiver_is_closed_arrive_when_it_returns(
    broker: Broker,
) -> None:
    async with connected(settings(broker.port, "away")) as first:
        await first.subscribe(["t/away"])
    sent = [b"away-%d" % i for i in range(20)]
    async with connected(settings(broker.port, "away-source")) as source:
        await source.publish_many([("t/away", p) for p in sent])
    got: list[bytes] = []
    # No subscribe: the broker kept the session, and its subscription, for the client id.
    async with connected(settings(broker.port, "away"), collector(got)):
        await until(lambda: len(got) >= len(sent))
    assert got == sent


async def test_messages_in_hand_when_the_receiver_closes_come_again_and_acks_stick(
    broker: Broker,
) -> None:
    held: list[Delivery] = []
    sent = [b"held-%d" % i for i in range(10)]
    async with connected(
        settings(broker.port, "holder"), on_delivery=lambda _t, _p, d: held.append(d)
    ) as first:
        await first.subscribe(["t/held"])
        async with connected(settings(broker.port, "holder-source")) as source:
            await source.publish_many([("t/held", p) for p in sent])
        await until(lambda: len(held) == len(sent))
    for delivery in held:
        delivery.ack()  # too late: its connection is closed, so nothing may be acknowledged
    got: list[bytes] = []
    async with connected(settings(broker.port, "holder"), collector(got)):
        await until(lambda: len(got) >= len(sent))
    assert got == sent
    # Those were acknowledged: a later receiver gets only what was published since.
    async with connected(settings(broker.port, "holder-source")) as source:
        await source.publish("t/held", b"marker")
    after: list[bytes] = []
    async with connected(settings(broker.port, "holder"), collector(after)):
        await until(lambda: after)
    assert after == [b"marker"]


async def test_a_restarted_broker_keeps_the_subscription_and_the_queued_messages(
    broker: Broker,
) -> None:
    async with connected(settings(broker.port, "parked")) as first:
        await first.subscribe(["t/parked"])
    sent = [b"before-%d" % i for i in range(10)]
    async with connected(settings(broker.port, "parked-source")) as source:
        await source.publish_many([("t/parked", p) for p in sent])
        await asyncio.to_thread(broker.restart)
        # Sent once the publisher is back on its own persisted session.
        await asyncio.wait_for(source.publish("t/parked", b"after"), 30)
    assert (broker.root / "mosquitto.db").exists()  # what the restart survived on
    got: list[bytes] = []
    async with connected(settings(broker.port, "parked"), collector(got)):
        await until(lambda: len(got) >= len(sent) + 1)
    assert got == [*sent, b"after"]


async def test_messages_in_hand_across_a_broker_restart_come_again_and_old_acks_are_withheld(
    broker: Broker,
) -> None:
    held: list[tuple[bytes, Delivery]] = []
    events = Events()
    sent = [b"steady-%d" % i for i in range(5)]
    async with connected(
        settings(broker.port, "steady"),
        on_delivery=lambda _t, p, d: held.append((p, d)),
        on_event=events,
    ) as receiver:
        await receiver.subscribe(["t/steady"])
        async with connected(settings(broker.port, "steady-source")) as source:
            await source.publish_many([("t/steady", p) for p in sent])
        await until(lambda: len(held) == len(sent))
        await asyncio.to_thread(broker.restart)
        await until(lambda: len(held) == 2 * len(sent))  # the persisted session redelivers
        assert [p for p, _ in held[len(sent) :]] == sent
        for _payload, delivery in held:  # the old connection's first: they must not go out
            delivery.ack()
        assert events.named("mqtt.ack_withheld")
        assert events.named("mqtt.disconnected")
    async with connected(settings(broker.port, "steady-source")) as source:
        await source.publish("t/steady", b"marker")
    after: list[bytes] = []
    async with connected(settings(broker.port, "steady"), collector(after)):
        await until(lambda: after)
    assert after == [b"marker"]  # the acknowledgements on the new connection counted


# -- Receive Maximum, both ways (scripted broker) -------------------------------------------

LIMIT = 10


async def test_our_receive_maximum_is_announced_and_bounds_messages_in_hand_when_ignored() -> None:
    count = 6 * LIMIT

    async def flood(conn: Connection) -> None:
        # Everything at once, whatever the Receive Maximum we sent (as mosquitto < 2.0.13
        # does once acknowledgements flow).
        conn.write(b"".join(publish_packet("t/flood", b"%d" % i, i) for i in range(1, count + 1)))

    release = asyncio.Event()
    running = peak = 0
    done: set[bytes] = set()

    async def slow(_topic: str, payload: bytes) -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        try:
            await release.wait()
        finally:
            running -= 1
        done.add(payload)

    async with (
        ScriptedBroker(on_subscribe=flood) as fake,
        connected(settings(fake.port, "flooded", receive_maximum=LIMIT, inflight=LIMIT), slow) as a,
    ):
        await a.subscribe(["t/flood"])
        await until(lambda: running >= LIMIT)
        await asyncio.sleep(0.5)  # time for more to be handed over, were the bound not kept
        assert running == LIMIT
        release.set()
        await until(lambda: len(done) == count)
        assert peak == LIMIT
        [subscriber] = fake.subscribers()
        assert subscriber.connect is not None
        assert subscriber.connect.receive_max == LIMIT
        await until(lambda: subscriber.count(mqtt5.PubAckPacket) == count)
        acked = [p.packet_id for p in subscriber.received if isinstance(p, mqtt5.PubAckPacket)]
        assert sorted(acked) == list(range(1, count + 1))


async def test_the_brokers_receive_maximum_bounds_our_unacknowledged_publishes() -> None:
    payloads = [b"%d" % i for i in range(60)]
    async with (
        ScriptedBroker(receive_max=5, ack_after_s=0.05) as fake,
        connected(settings(fake.port, "polite", inflight=100)) as adapter,
    ):
        await asyncio.wait_for(adapter.publish_many([("t/out", p) for p in payloads]), 30)
        assert [p.payload for p in fake.published] == payloads
        assert 1 <= max(c.max_held for c in fake.connections) <= 5


# -- PUBACK reason codes (scripted broker) ----------------------------------------------


def code_in_topic(topic: str) -> int:
    return int(topic.rsplit("/", 1)[1]) if topic.startswith("code/") else 0


@pytest.mark.parametrize("code", [0x80, 0x83, 0x87, 0x90, 0x91, 0x97, 0x99])
async def test_a_puback_reason_code_of_0x80_or_more_fails_the_publish_and_the_link_goes_on(
    code: int,
) -> None:
    async with (
        ScriptedBroker(puback_code=code_in_topic) as fake,
        connected(settings(fake.port, "refused")) as adapter,
    ):
        connections = len(fake.connections)
        with pytest.raises(PublishRefused) as refused:
            await adapter.publish(f"code/{code}", b"refused")
        assert (refused.value.code, refused.value.topic) == (code, f"code/{code}")
        with pytest.raises(PublishRefused):
            await adapter.publish_many(
                [("code/0", b"a"), (f"code/{code}", b"refused"), ("code/0", b"c")]
            )
        # 0x10 "no matching subscribers" is below 0x80: accepted.
        await adapter.publish("code/16", b"nobody listens")
        await adapter.publish("code/0", b"the link goes on")
        assert len(fake.connections) == connections  # no reconnection for a refusal


# -- keep-alive ---------------------------------------------------------------------------


async def test_an_idle_connection_with_a_short_keepalive_stays_up_on_pings(
    tmp_path: Path,
) -> None:
    broker = Broker(tmp_path / "pings")
    broker.add_config("log_type all")  # mosquitto logs each PINGREQ and PINGRESP
    broker.start()
    events = Events()
    try:
        async with connected(settings(broker.port, "idle", keepalive_s=1), on_event=events) as a:
            # mosquitto drops a client silent for 1.5 keep-alives: six answered pings
            # is several of those.
            await until(lambda: broker_log(broker).count("Sending PINGRESP to idle") >= 6)
            assert events.named("mqtt.disconnected") == []
            assert a.connected
            await a.publish("t/idle", b"still up")
    finally:
        broker.stop()


async def test_a_broker_that_stops_answering_pings_is_dropped_and_reconnected() -> None:
    events = Events()
    async with (
        ScriptedBroker(answer_ping=lambda conn: conn.attempt > 1) as fake,
        connected(settings(fake.port, "deaf", keepalive_s=1), on_event=events) as adapter,
    ):

        def firsts() -> list[Connection]:
            return [c for c in fake.connections if c.attempt == 1]

        await until(lambda: firsts() and all(c.closed.is_set() for c in firsts()))
        assert all(c.count(mqtt5.PingReqPacket) >= 1 for c in firsts())  # asked, not heard
        assert not any(c.hung_up for c in firsts())  # the client left, not the broker
        assert events.named("mqtt.disconnected")
        await until(lambda: adapter.connected)
        dropped = len(events.named("mqtt.disconnected"))
        # The next connections, whose pings are answered, stay up.
        later = [c for c in fake.connections if c.attempt > 1]
        await until(lambda: all(c.count(mqtt5.PingReqPacket) >= 2 for c in later))
        assert not any(c.closed.is_set() for c in later)
        assert len(events.named("mqtt.disconnected")) == dropped
        await adapter.publish("t/deaf", b"back")


# -- TLS and passwords on mosquitto --------------------------------------------------------


@pytest.fixture
def tls_broker(tmp_path: Path) -> Iterator[tuple[Broker, Pki]]:
    pki = Pki(tmp_path / "pki")
    broker = Broker(tmp_path / "tls-broker")
    require_client_certificates(broker, pki)
    broker.start()
    yield broker, pki
    broker.stop()


async def test_tls_with_a_client_certificate_connects_publishes_and_receives(
    tls_broker: tuple[Broker, Pki],
) -> None:
    broker, pki = tls_broker
    s = settings(
        broker.port,
        "tls",
        tls=True,
        ca_file=str(pki.ca_file),
        cert_file=str(pki.client_cert),
        key_file=str(pki.client_key),
    )
    got: list[bytes] = []
    async with connected(s, collector(got)) as adapter:
        await adapter.subscribe(["t/tls"])
        await adapter.publish("t/tls", b"over tls")
        await until(lambda: got)
    assert got == [b"over tls"]


@pytest.mark.parametrize("case", ["no-client-certificate", "broker-of-another-ca"])
async def test_tls_does_not_connect_without_a_client_certificate_or_to_an_untrusted_broker(
    tls_broker: tuple[Broker, Pki], tmp_path: Path, case: str
) -> None:
    broker, pki = tls_broker
    if case == "no-client-certificate":
        s = settings(broker.port, "tls-no-cert", tls=True, ca_file=str(pki.ca_file))
    else:
        other = Pki(tmp_path / "other-pki", "other")
        s = settings(
            broker.port,
            "tls-other-ca",
            tls=True,
            ca_file=str(other.ca_file),  # does not vouch for the broker's certificate
            cert_file=str(pki.client_cert),
            key_file=str(pki.client_key),
        )
    events = Events()
    adapter = MqttAdapter(s, ignore, on_event=events)
    connecting = asyncio.create_task(adapter.connect())
    try:
        # Either given up at once or retried: never connected.
        await until(lambda: connecting.done() or len(events.named("mqtt.connect_failed")) >= 2)
        if connecting.done():
            assert connecting.exception() is not None
        assert events.named("mqtt.connected") == []
        assert not adapter.connected
    finally:
        connecting.cancel()
        with contextlib.suppress(BaseException):
            await connecting
        await adapter.close()


PASSWORD = "correct horse bätterÿ staple"  # spaces and non-ASCII: UTF-8 in the CONNECT


async def test_the_right_password_connects_publishes_and_receives_and_is_in_no_event(
    tmp_path: Path,
) -> None:
    broker = Broker(tmp_path / "users")
    require_user(broker, "gateway", PASSWORD, "t/#")
    broker.start()
    s = settings(broker.port, "authed", username="gateway", password=PASSWORD)
    events = Events()
    got: list[bytes] = []
    try:
        async with connected(s, collector(got), on_event=events) as adapter:
            await adapter.subscribe(["t/auth"])
            await adapter.publish("t/auth", b"authenticated")
            await until(lambda: got)
    finally:
        broker.stop()
    assert got == [b"authenticated"]
    assert events.named("mqtt.connected")
    assert events.mentioning(PASSWORD) == []
    assert PASSWORD not in repr(s)


# -- a broker that hangs up mid-packet, or sends a malformed one (scripted broker) ----------

WHOLE_PAYLOAD = b"the whole message, " * 8
WHOLE = publish_packet("t/cut", WHOLE_PAYLOAD, 1)  # a two-byte remaining length


@pytest.mark.parametrize(
    "cut",
    [1, 2, 9, len(WHOLE) - 1],
    ids=["after-the-first-byte", "inside-the-remaining-length", "inside-the-topic", "all-but-one"],
)
async def test_a_broker_closing_mid_packet_is_a_lost_connection_and_the_message_comes_whole(
    cut: int, loop_errors: list[dict[str, Any]]
) -> None:
    async def script(conn: Connection) -> None:
        if conn.subscription == 1:
            conn.write(WHOLE[:cut])
            conn.hang_up()
        else:
            conn.write(WHOLE)

    got: list[bytes] = []
    events = Events()
    async with (
        ScriptedBroker(on_subscribe=script) as fake,
        connected(settings(fake.port, "cut"), collector(got), on_event=events) as adapter,
    ):
        await adapter.subscribe(["t/cut"])
        await until(lambda: got)
        assert got == [WHOLE_PAYLOAD]
        assert events.named("mqtt.disconnected")
        await until(lambda: adapter.connected)
        await adapter.publish("t/after", b"the link goes on")
        later = fake.subscribers()[1]
        await until(lambda: later.count(mqtt5.PubAckPacket) == 1)  # handled, acknowledged
    assert loop_errors == []


MALFORMED = {
    "reserved-packet-type": b"\x00\x00",  # type 0 is reserved (MQTT v5.0, 2.1.2)
    # A topic of 200 bytes in a packet of 6.
    "topic-longer-than-the-packet": bytes([0x32, 6]) + (200).to_bytes(2, "big") + b"t/in",
    # Both QoS bits set (3.3.1.2).
    "publish-with-qos-3": bytes([0x36]) + publish_packet("t/bad", b"qos 3", 9)[1:],
    # A fifth byte of remaining length (1.5.5).
    "remaining-length-of-five-bytes": b"\x30\xff\xff\xff\xff\x01",
}


@pytest.mark.parametrize("name", sorted(MALFORMED))
async def test_a_malformed_packet_closes_the_connection_saying_so_and_the_adapter_reconnects(
    name: str, loop_errors: list[dict[str, Any]]
) -> None:
    async def script(conn: Connection) -> None:
        if conn.subscription == 1:
            # Nothing after a malformed packet can be trusted: never delivered.
            conn.write(MALFORMED[name] + publish_packet("t/bad", b"after the malformed one", 7))
        else:
            conn.write(publish_packet("t/bad", b"on the next connection", 1))

    got: list[bytes] = []
    events = Events()
    async with (
        ScriptedBroker(on_subscribe=script) as fake,
        connected(settings(fake.port, "bad"), collector(got), on_event=events) as adapter,
    ):
        await adapter.subscribe(["t/bad"])
        await until(lambda: got)
        assert got == [b"on the next connection"]
        first = fake.subscribers()[0]
        await until(first.closed.is_set)
        assert not first.hung_up  # the adapter closed it
        assert events.named("mqtt.disconnected")
        assert events.mentioning("malformed"), events.seen
        await until(lambda: adapter.connected)
        await adapter.publish("t/after", b"the link goes on")
    assert loop_errors == []


async def test_garbage_right_after_the_connack_is_malformed_on_every_link(
    loop_errors: list[dict[str, Any]],
) -> None:
    async def garbage(conn: Connection) -> None:
        if conn.attempt == 1:  # each client id's first connection
            conn.write(MALFORMED["reserved-packet-type"])

    async def echo(conn: Connection) -> None:
        conn.write(publish_packet("t/garbled", b"after the garbage", 1))

    def firsts() -> list[Connection]:
        return [c for c in fake.connections if c.attempt == 1]

    got: list[bytes] = []
    events = Events()
    async with (
        ScriptedBroker(on_connect=garbage, on_subscribe=echo) as fake,
        connected(settings(fake.port, "garbled"), collector(got), on_event=events) as adapter,
    ):
        await until(lambda: firsts() and all(fake.attempts(c.client_id) > 1 for c in firsts()))
        await until(lambda: all(c.closed.is_set() for c in firsts()))
        assert not any(c.hung_up for c in firsts())  # the adapter closed them
        assert len(events.named("mqtt.disconnected")) >= len(firsts())
        assert events.mentioning("malformed"), events.seen
        await until(lambda: adapter.connected)
        await adapter.subscribe(["t/garbled"])
        await until(lambda: got)
        assert got == [b"after the garbage"]
        await adapter.publish("t/after", b"the link goes on")
    assert loop_errors == []


async def test_the_daemon_keeps_running_after_a_malformed_packet_and_forwards_the_next_alert(
    tmp_path: Path,
) -> None:
    raised = now_ms()
    alert = wire.encode(
        wire.DccAlertEnvelope(
            v=1,
            kind="dcc-alert",
            code="AD1",
            alert_id="after-malformed",
            device_id=CHF,  # no activation: forwarded
            raised_at=raised,
            sent_at=raised,
        )
    )

    async def script(conn: Connection) -> None:
        if conn.subscription == 1:
            conn.write(MALFORMED["reserved-packet-type"])
        elif conn.subscription == 2:
            conn.write(publish_packet("csp/dcc/alert", alert, 1))

    async with ScriptedBroker(on_subscribe=script) as fake:
        daemon = Daemon(Home(tmp_path / "gw", fake.port))
        try:
            # In threads: the scripted broker runs on this event loop.
            await asyncio.to_thread(daemon.start)

            def forwarded() -> list[str]:
                return [
                    wire.decode_dcc_alert(p.payload).alert_id
                    for p in fake.published
                    if p.topic == "dno/dcc/alert"
                ]

            await until(forwarded, 30)
            assert forwarded() == ["after-malformed"]
            later = fake.subscribers()[1]
            await until(lambda: later.count(mqtt5.PubAckPacket) == 1)  # acknowledged after
            assert daemon.proc is not None
            assert daemon.proc.poll() is None
            lines = daemon.events()
            assert any(e.get("event") == "mqtt.disconnected" for e in lines)
            assert any("malformed" in json.dumps(e).lower() for e in lines)
        finally:
            status = await asyncio.to_thread(daemon.stop)
        assert status == 0
