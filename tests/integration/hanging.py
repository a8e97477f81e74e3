"""Makes a hanging transaction on purpose, the way broker bugs make them (KIP-664).

A transactional record batch is written straight to a partition with a Produce request, for a
producer id that no transaction coordinator knows, while the broker's verification of
transactional writes (KIP-890 part 1, ``transaction.partition.verification.enable``) is off.
The partition then holds the start of a transaction that nobody will ever end: its last stable
offset stays there, exactly as after a coordinator that dropped an ABORT marker. No client
library can do this (they all register the partition with the coordinator first), hence the
few lines of Kafka protocol below: Produce v3 and a v2 record batch.
"""

from __future__ import annotations

import socket
import struct
import time

from confluent_kafka.admin import AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource

VERIFICATION = "transaction.partition.verification.enable"


def _crc32c_table() -> list[int]:
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_TABLE = _crc32c_table()


def crc32c(data: bytes) -> int:
    crc = 0xFFFFFFFF
    for b in data:
        crc = _TABLE[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def _varint(n: int) -> bytes:
    z = (n << 1) ^ (n >> 63)
    out = bytearray()
    while True:
        if z < 0x80:
            out.append(z)
            return bytes(out)
        out.append((z & 0x7F) | 0x80)
        z >>= 7


def record_batch(producer_id: int, records: list[tuple[bytes, bytes]], *, epoch: int = 0) -> bytes:
    """A magic-2 record batch of ``records`` (key, value), marked transactional."""
    now = int(time.time() * 1000)
    body = bytearray()
    for i, (key, value) in enumerate(records):
        rec = b"\x00" + _varint(0) + _varint(i) + _varint(len(key)) + key + _varint(len(value)) + value + _varint(0)
        body += _varint(len(rec)) + rec
    after_crc = struct.pack(">hiqqqhii", 0x10, len(records) - 1, now, now, producer_id, epoch, 0, len(records)) + body
    after_length = struct.pack(">ibI", -1, 2, crc32c(after_crc)) + after_crc
    return struct.pack(">qi", 0, len(after_length)) + after_length


def _string(s: str) -> bytes:
    raw = s.encode()
    return struct.pack(">h", len(raw)) + raw


def produce_raw(bootstrap: str, topic: str, partition: int, batch: bytes, *, transactional_id: str) -> int:
    """Send one Produce v3 request to the (single) broker; return the batch's base offset."""
    body = (_string(transactional_id) + struct.pack(">hi", -1, 10_000) + struct.pack(">i", 1) + _string(topic)
            + struct.pack(">i", 1) + struct.pack(">ii", partition, len(batch)) + batch)
    request = struct.pack(">hhi", 0, 3, 7) + _string("kstream-test-hanging") + body
    host, _, port = bootstrap.partition(",")[0].rpartition(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(struct.pack(">i", len(request)) + request)
        size = struct.unpack(">i", _read(sock, 4))[0]
        resp = _read(sock, size)
    pos = 4 + 4  # correlation id, topics count
    name_len = struct.unpack_from(">h", resp, pos)[0]
    pos += 2 + name_len + 4  # topic name, partitions count
    _, error, base_offset = struct.unpack_from(">ihq", resp, pos)
    if error:
        raise RuntimeError(f"produce to {topic}[{partition}] failed with Kafka error code {error}")
    return int(base_offset)


def _read(sock: socket.socket, n: int) -> bytes:
    out = bytearray()
    while len(out) < n:
        chunk = sock.recv(n - len(out))
        if not chunk:
            raise ConnectionError("broker closed the connection")
        out += chunk
    return bytes(out)


def set_verification(bootstrap: str, enabled: bool) -> None:
    """Turn every broker's transactional-write verification on or off (a dynamic broker config)."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    entry = ConfigEntry(VERIFICATION, "true" if enabled else "false", incremental_operation=AlterConfigOpType.SET)
    brokers = admin.list_topics(timeout=10).brokers
    futures = admin.incremental_alter_configs([ConfigResource(ConfigResource.Type.BROKER, str(b), incremental_configs=[entry])
                                              for b in brokers])
    for fut in futures.values():
        fut.result(timeout=30)


def make_hanging_transaction(bootstrap: str, topic: str, partition: int, producer_id: int = 987_654_321) -> int:
    """Leave a hanging transaction (one record) on ``topic[partition]``; return its start offset."""
    set_verification(bootstrap, False)
    try:
        # The broker applies a dynamic config asynchronously: retry until the write is accepted.
        deadline = time.monotonic() + 30
        while True:
            try:
                return produce_raw(bootstrap, topic, partition, record_batch(producer_id, [(b"hang", b'"hang"')]),
                                   transactional_id=f"kstream-test-hanging-{producer_id}")
            except RuntimeError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
    finally:
        set_verification(bootstrap, True)
