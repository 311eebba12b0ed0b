"""Brokers for the MQTT conformance tests (tests/test_mqtt_conformance.py).

Two kinds:

- mosquitto, configured by the helpers here on top of tests/e2e_support.Broker: a TLS
  listener that requires client certificates (a CA, a server and a client certificate
  generated in the test with ``cryptography``), users with passwords and an ACL.
- :class:`ScriptedBroker`, an asyncio server in the test's own event loop that speaks
  just enough MQTT 5 (packets built and read by the ``mqtt5`` codec) to hold a session
  up, and lets a test decide what each subscribing connection is sent: a flood that
  ignores our Receive Maximum, half a packet and a hang-up, a malformed packet. It can
  also stay silent to PINGREQs, hold its PUBACKs back, or refuse publishes with a
  reason code. mosquitto can do none of these on purpose.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path

import mqtt5
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.e2e_support import Broker

QOS1 = mqtt5.QoS.AT_LEAST_ONCE


# -- events and waiting -------------------------------------------------------------------


class Events:
    """An ``on_event`` sink that keeps (event, fields) in order."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, dict[str, object]]] = []

    def __call__(self, event: str, fields: dict[str, object]) -> None:
        self.seen.append((event, dict(fields)))

    def named(self, event: str) -> list[dict[str, object]]:
        """The fields of every event with that name, in order."""
        return [f for e, f in self.seen if e == event]

    def mentioning(self, word: str) -> list[tuple[str, dict[str, object]]]:
        """Every event whose name or any field value contains ``word`` (any case)."""
        word = word.lower()
        return [
            (e, f)
            for e, f in self.seen
            if word in e.lower() or any(word in str(v).lower() for v in f.values())
        ]


async def until(condition: Callable[[], object], limit_s: float = 20) -> None:
    """Wait until ``condition()`` is true; fail after ``limit_s`` seconds."""
    deadline = asyncio.get_running_loop().time() + limit_s
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.02)


# -- mosquitto: TLS, passwords ------------------------------------------------------------


class Pki:
    """PEM files of a test CA, a server certificate for 127.0.0.1 and a client
    certificate it signed, and their keys; nothing of it leaves the test's tmp folder."""

    def __init__(self, root: Path, name: str = "test") -> None:
        root.mkdir(parents=True, exist_ok=True)
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{name} CA")])
        ca = _certificate(ca_name, ca_name, ca_key, ca_key, ca=True)
        self.ca_file = _write(root / f"{name}-ca.pem", ca.public_bytes(serialization.Encoding.PEM))
        self.server_cert, self.server_key = self._leaf(
            root, f"{name}-server", ca, ca_key, ExtendedKeyUsageOID.SERVER_AUTH
        )
        self.client_cert, self.client_key = self._leaf(
            root, f"{name}-client", ca, ca_key, ExtendedKeyUsageOID.CLIENT_AUTH
        )

    @staticmethod
    def _leaf(
        root: Path,
        name: str,
        ca: x509.Certificate,
        ca_key: ec.EllipticCurvePrivateKey,
        usage: x509.ObjectIdentifier,
    ) -> tuple[Path, Path]:
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        cert = _certificate(subject, ca.subject, key, ca_key, ca=False, usage=usage)
        key_pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        return (
            _write(root / f"{name}.pem", cert.public_bytes(serialization.Encoding.PEM)),
            _write(root / f"{name}.key", key_pem),
        )


def _certificate(
    subject: x509.Name,
    issuer: x509.Name,
    key: ec.EllipticCurvePrivateKey,
    issuer_key: ec.EllipticCurvePrivateKey,
    *,
    ca: bool,
    usage: x509.ObjectIdentifier | None = None,
) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
            critical=False,
        )
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    if usage is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    if usage == ExtendedKeyUsageOID.SERVER_AUTH:
        # Python checks the address it connected to against the subjectAltName.
        san = x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
        builder = builder.add_extension(san, critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    path.chmod(0o600)  # a key readable by others is a habit not to teach
    return path


def require_client_certificates(broker: Broker, pki: Pki) -> None:
    """Make the broker's only listener TLS, with the server certificate of ``pki``, and
    admit only clients with a certificate its CA signed (from the next start)."""
    # Lines after `listener` apply to that listener: Broker's configuration has one.
    broker.add_config(
        f"cafile {pki.ca_file}",
        f"certfile {pki.server_cert}",
        f"keyfile {pki.server_key}",
        "require_certificate true",
    )


def require_user(broker: Broker, user: str, password: str, topics: str) -> None:
    """Admit only ``user`` with ``password`` (mosquitto_passwd writes the file), allowed
    to read and write ``topics`` and nothing else (from the next start)."""
    broker.require_passwords({user: password})
    acl = broker.root / "acl"
    acl.write_text(f"user {user}\ntopic readwrite {topics}\n")
    broker.add_config(f"acl_file {acl}")


def broker_log(broker: Broker) -> str:
    """What mosquitto has logged so far."""
    log = broker.root / "mosquitto.log"
    return log.read_text() if log.exists() else ""


# -- a scripted MQTT 5 broker ---------------------------------------------------------------


def publish_packet(topic: str, payload: bytes, packet_id: int) -> bytes:
    """A QoS 1 PUBLISH, encoded."""
    return mqtt5.PublishPacket(topic, payload, qos=QOS1, packet_id=packet_id).write()


class Connection:
    """One client connection to a :class:`ScriptedBroker`, as the broker saw it."""

    def __init__(self, number: int, writer: asyncio.StreamWriter) -> None:
        self.number = number  # 1, 2, ... over all clients
        self.connect: mqtt5.ConnectPacket | None = None
        self.attempt = 0  # the how-manieth connection of its client id
        self.subscription = 0  # the how-manieth connection to subscribe; 0: none yet
        self.received: list[mqtt5.Packet] = []  # every packet after the CONNECT
        self.closed = asyncio.Event()  # set when the connection is over
        self.hung_up = False  # the broker closed it
        self.held: list[int] = []  # packet ids of publishes not yet acknowledged
        self.max_held = 0
        self._writer = writer

    @property
    def client_id(self) -> str:
        return self.connect.client_id if self.connect is not None else ""

    def count(self, kind: type) -> int:
        """How many packets of that class the client sent on this connection."""
        return sum(isinstance(p, kind) for p in self.received)

    def write(self, data: bytes) -> None:
        """Send raw bytes to the client."""
        self._writer.write(data)

    def hang_up(self) -> None:
        """Close the connection from the broker's side (after what was written)."""
        self.hung_up = True
        self._writer.close()


Hook = Callable[[Connection], Awaitable[None]]


async def _nothing(_conn: Connection) -> None:
    return None


class ScriptedBroker:
    """Just enough of an MQTT 5 broker, on a free loopback port, to script a session.

    Every CONNECT is accepted (CONNACK without a session: the client subscribes again),
    every SUBSCRIBE granted QoS 1. ``on_connect`` is called with the
    :class:`Connection` after its CONNACK is written, ``on_subscribe`` after each SUBACK:
    what the test sends the client comes from there. A PUBLISH is
    kept in :attr:`published` and answered with a PUBACK whose reason code is
    ``puback_code(topic)``; with ``ack_after_s``, PUBACKs are held that long and sent
    together, so that the client's unacknowledged publishes pile up
    (:attr:`Connection.max_held`). A PINGREQ is answered if ``answer_ping(connection)``.
    A packet it cannot read is a bug of the test: kept in :attr:`errors` and raised at
    the end of the ``async with``.
    """

    def __init__(
        self,
        *,
        receive_max: int = 65535,
        on_connect: Hook = _nothing,
        on_subscribe: Hook = _nothing,
        answer_ping: Callable[[Connection], bool] = lambda _c: True,
        puback_code: Callable[[str], int] = lambda _topic: 0,
        ack_after_s: float | None = None,
    ) -> None:
        self.receive_max = receive_max
        self.on_connect = on_connect
        self.on_subscribe = on_subscribe
        self.answer_ping = answer_ping
        self.puback_code = puback_code
        self.ack_after_s = ack_after_s
        self.port = 0
        self.connections: list[Connection] = []
        self.published: list[mqtt5.PublishPacket] = []
        self.errors: list[BaseException] = []
        self._attempts: Counter[str] = Counter()
        self._subscriptions = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> ScriptedBroker:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, exc_type: object, *_exc: object) -> None:
        assert self._server is not None
        self._server.close()
        # Closed rather than cancelled: asyncio's stream server reports a cancelled
        # connection task to the loop's exception handler, which some tests watch. A
        # connection accepted just before the close has its task started only on a later
        # pass of the loop: hang up until no new one appears, or its socket would outlive
        # the test (a ResourceWarning in whichever test the collector runs next).
        served = -1
        while served != len(self._tasks):
            served = len(self._tasks)
            for conn in self.connections:
                conn.hang_up()
            await asyncio.wait_for(asyncio.gather(*self._tasks), 10)
            for _ in range(3):
                await asyncio.sleep(0)
        if exc_type is None and self.errors:
            raise AssertionError(f"the scripted broker failed: {self.errors!r}")

    def subscribers(self) -> list[Connection]:
        """The connections that subscribed, in the order they did."""
        return sorted((c for c in self.connections if c.subscription), key=lambda c: c.subscription)

    def attempts(self, client_id: str) -> int:
        """How many times that client id connected."""
        return self._attempts[client_id]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        conn = Connection(len(self.connections) + 1, writer)
        self.connections.append(conn)
        try:
            first = await _read(reader)
            if not isinstance(first, mqtt5.ConnectPacket):
                return
            conn.connect = first
            self._attempts[first.client_id] += 1
            conn.attempt = self._attempts[first.client_id]
            writer.write(
                mqtt5.ConnAckPacket(session_present=False, receive_max=self.receive_max).write()
            )
            await self.on_connect(conn)
            while not conn.hung_up:
                packet = await _read(reader)
                conn.received.append(packet)
                if isinstance(packet, mqtt5.DisconnectPacket):
                    return
                await self._answer(conn, packet)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        except Exception as exc:  # noqa: BLE001 - the test's own bug: raised at the end
            self.errors.append(exc)
        finally:
            conn.closed.set()
            writer.close()
            self._tasks.discard(task)

    async def _answer(self, conn: Connection, packet: mqtt5.Packet) -> None:
        if isinstance(packet, mqtt5.SubscribePacket):
            granted = [mqtt5.SubAckReasonCode.GRANTED_QOS_AT_LEAST_ONCE] * len(packet.topic_filters)
            conn.write(mqtt5.SubAckPacket(packet.packet_id, granted).write())
            self._subscriptions += 1
            conn.subscription = conn.subscription or self._subscriptions
            await self.on_subscribe(conn)
        elif isinstance(packet, mqtt5.PublishPacket):
            self.published.append(packet)
            if packet.packet_id is None:
                return
            if self.ack_after_s is None:
                conn.write(self._puback(packet.topic, packet.packet_id))
                return
            if not conn.held:
                asyncio.get_running_loop().call_later(self.ack_after_s, self._release, conn)
            conn.held.append(packet.packet_id)
            conn.max_held = max(conn.max_held, len(conn.held))
        elif isinstance(packet, mqtt5.PingReqPacket) and self.answer_ping(conn):
            conn.write(mqtt5.PingRespPacket().write())

    def _puback(self, topic: str, packet_id: int) -> bytes:
        code = mqtt5.PubAckReasonCode(self.puback_code(topic))
        return mqtt5.PubAckPacket(packet_id, reason_code=code).write()

    def _release(self, conn: Connection) -> None:
        held, conn.held = conn.held, []
        if not conn.closed.is_set():
            conn.write(b"".join(mqtt5.PubAckPacket(i).write() for i in held))


async def _read(reader: asyncio.StreamReader) -> mqtt5.Packet:
    # Frame one packet (fixed header, remaining length: MQTT v5.0, 2.1) and only then
    # hand it to mqtt5, which reads whole packets.
    head = await reader.readexactly(1)
    length, shift = 0, 0
    while True:
        byte = await reader.readexactly(1)
        head += byte
        length |= (byte[0] & 0x7F) << shift
        shift += 7
        if not byte[0] & 0x80:
            break
    raw = head + await reader.readexactly(length)
    packet, used = mqtt5.read(memoryview(raw))
    assert used == len(raw), f"mqtt5 read {used} of a {len(raw)}-byte packet"
    return packet
