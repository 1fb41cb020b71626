"""Several messages of one partition key in one Kinesis record, and back.

Kinesis answers each entry of a ``PutRecords`` request on its own: it may reject one entry and
accept a later one of the same key, so a request that held two records of one key could put them
out of order on a retry. :class:`~ensemble_trader.adapters.aws.kinesis.KinesisPublisher`
therefore never puts two records of one key in a request — and a backlog of one symbol would
cost a request per message. Packing a key's consecutive messages into one record (as the
Kinesis Producer Library does, in a format of our own) keeps the order and sends a backlog of
``MAX_MESSAGES`` messages per request and key.

Format: ``MAGIC`` (``\\x1eETA1``: a record separator byte, which no JSON message begins with),
the number of messages, then for each message its length and its bytes (counts and lengths 4
bytes, big-endian): a record cut anywhere, even between two messages, is refused. A record
without the magic is one plain message, so consumers read both, and records from other
producers pass unchanged.

The bound on messages per record bounds a consumer's work per Kinesis record: an event source
mapping batches *records* (500 for the features stage), and a stage must finish its batch well
within its timeout whatever a record holds.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

MAGIC = b"\x1eETA1"
MAX_MESSAGES = 10
"""Messages per aggregated record at most: a consumer's batch of N records is at most 10·N
messages (the meta-agent stage's 200 records: 2,000 decisions, a few seconds of its 30)."""
MAX_BYTES = 256 * 1024
"""Bytes of one aggregated record at most (Kinesis takes 1 MiB; a shard 1 MiB/s)."""
_LENGTH = struct.Struct(">I")


class AggregationError(ValueError):
    """An aggregated record whose lengths do not add up (truncated or corrupted)."""


def pack(messages: Sequence[bytes]) -> bytes:
    """One record holding ``messages`` in order."""
    return MAGIC + _LENGTH.pack(len(messages)) + b"".join(_LENGTH.pack(len(m)) + m for m in messages)


def unpack(data: bytes) -> list[bytes] | None:
    """The messages of an aggregated record, or None when ``data`` is one plain message."""
    if not data.startswith(MAGIC):
        return None
    head = len(MAGIC) + _LENGTH.size
    if len(data) < head:
        raise AggregationError("aggregated record truncated in its message count")
    (count,) = _LENGTH.unpack_from(data, len(MAGIC))
    if count == 0:
        raise AggregationError("aggregated record holds no message")
    if count > MAX_MESSAGES:  # not one of ours: refused whole, not dead-lettered message by message
        raise AggregationError(f"aggregated record announces {count} messages (at most {MAX_MESSAGES})")
    out, i, end = [], head, len(data)
    while len(out) < count:
        if i + _LENGTH.size > end:
            raise AggregationError(f"aggregated record truncated in the length of message {len(out)}")
        (n,) = _LENGTH.unpack_from(data, i)
        i += _LENGTH.size
        if i + n > end:
            raise AggregationError(f"aggregated record truncated in message {len(out)} ({n} bytes announced, "
                                   f"{end - i} left)")
        out.append(data[i : i + n])
        i += n
    if i != end:
        raise AggregationError(f"aggregated record has {end - i} bytes after its {count} messages")
    return out


def messages_of(data: bytes) -> list[bytes]:
    """The messages of a record for counting and inspection: an aggregated record's messages, a
    plain or corrupt one as itself (a consumer that must refuse a corrupt record uses
    :func:`unpack`)."""
    try:
        packed = unpack(data)
    except AggregationError:
        return [data]
    return [data] if packed is None else packed


def aggregate(records: Sequence[tuple[str, bytes]]) -> list[tuple[str, bytes]]:
    """``(key, message)`` records with each key's messages packed into as few records as the
    bounds allow, each key's order kept. A key with one message keeps it plain (the usual case:
    one bar per symbol and batch); so does a message too large to share a record."""
    by_key: dict[str, list[bytes]] = {}
    for key, data in records:
        by_key.setdefault(key, []).append(data)
    out: list[tuple[str, bytes]] = []
    for key, messages in by_key.items():
        if len(messages) == 1:
            out.append((key, messages[0]))
            continue
        run: list[bytes] = []
        size = len(MAGIC) + _LENGTH.size
        for m in messages:
            entry = _LENGTH.size + len(m)
            if run and (len(run) >= MAX_MESSAGES or size + entry > MAX_BYTES):
                out.append((key, _packed(run)))
                run, size = [], len(MAGIC) + _LENGTH.size
            run.append(m)
            size += entry
        out.append((key, _packed(run)))
    return out


def _packed(run: list[bytes]) -> bytes:
    return run[0] if len(run) == 1 else pack(run)
