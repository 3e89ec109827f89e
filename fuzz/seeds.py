#!/usr/bin/env python3
"""Writes the seed inputs of the fuzz targets: python3 fuzz/seeds.py CORPUS_DIR

Creates CORPUS_DIR/<target>/seed-<name> for frame, cursor, confluent and token: a few
well-formed inputs of each kind, encoded here by hand after proto/kafkasocks/v1/frame.proto,
so that libFuzzer starts from real frames instead of from nothing. scripts/fuzz runs this
before every run (files are rewritten, libFuzzer's own finds are left alone); nothing binary
is checked in.
"""

import base64
import json
import os
import struct
import sys


# --- protobuf, the little we need ------------------------------------------------------------
def varint(n):
    n &= (1 << 64) - 1
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def zigzag(n):
    return (n << 1) ^ (n >> 63)


def key(field, wire_type):
    return varint(field << 3 | wire_type)


def v(field, n):
    """A varint field (negative int32/int64 as ten bytes, as protobuf does)."""
    return key(field, 0) + varint(n)


def ld(field, data):
    """A length-delimited field: bytes, a string or a message."""
    if isinstance(data, str):
        data = data.encode()
    return key(field, 2) + varint(len(data)) + data


def frame(kind, body):
    """A Frame with member `kind` (field number) set to the message `body`."""
    return ld(kind, body)


# Frame members (frame.proto).
HELLO, WELCOME, SUBSCRIBE, SUBSCRIBED, DATA, CHECKPOINT, UNSUBSCRIBE, END, PUBLISH, RECEIPT, \
    ERROR, PING, PONG, TOKEN_REFRESH, TOKEN_ACCEPTED, CREDIT, GO_AWAY = range(1, 18)

TOPIC_ID = bytes(range(0x10, 0x20))


def cursor(positions, topic_id=TOPIC_ID):
    body = ld(1, topic_id) if topic_id else b""
    for partition, offset in positions:
        body += ld(2, v(1, partition) + v(2, offset))
    return body


def record(partition, offset, key_bytes, payload, headers=(), schema_id=0):
    body = v(1, partition) + v(2, offset) + v(3, 1_764_633_600_000) + ld(4, key_bytes)
    for k, val in headers:
        body += ld(5, ld(1, k) + ld(2, val))
    body += ld(6, payload)
    if schema_id:
        body += v(7, schema_id)
    return body


CHAT_MESSAGE = ld(1, "room-1") + ld(2, "hello") + v(3, 7)  # a request/payload message

FRAMES = {
    "hello": frame(HELLO, v(1, 1) + ld(2, "eyJhbGciOiJFUzI1NiJ9.e30.sig") + ld(3, "kafkasocks-ts/0.1.0")),
    "hello-anonymous": frame(HELLO, v(1, 1)),
    "welcome": frame(WELCOME, ld(1, "s-1") + ld(2, "gw-1") + ld(3, v(1, 1 << 20) + v(2, 64) + v(5, 1000))
                     + v(4, 15000) + v(5, 1_764_640_000_000) + v(6, 1_764_633_600_000)),
    "subscribe-latest": frame(SUBSCRIBE, v(1, 1) + ld(2, "chat.v1.ChatStreams/Messages") + ld(3, CHAT_MESSAGE)
                              + ld(4, ld(1, b"")) + v(5, 100)),
    "subscribe-cursor": frame(SUBSCRIBE, v(1, 2) + ld(2, "chat.v1.ChatStreams/Messages") + ld(3, CHAT_MESSAGE)
                              + ld(4, ld(4, cursor([(0, 41), (1, 0), (2, 1 << 40)])))),
    "subscribe-timestamp": frame(SUBSCRIBE, v(1, 3) + ld(2, "m") + ld(4, v(3, 1_764_633_600_000))),
    "subscribed": frame(SUBSCRIBED, v(1, 1) + ld(2, "chat.messages") + ld(3, cursor([(0, 5)])) + v(4, 100)),
    "data": frame(DATA, v(1, 1) + ld(2, record(0, 41, b"room-1", CHAT_MESSAGE, [("trace", b"\x01\x02")]))
                  + ld(2, record(1, 7, b"", b"", schema_id=3))),
    "checkpoint": frame(CHECKPOINT, v(1, 1) + ld(2, v(1, 0) + v(2, 42))),
    "unsubscribe": frame(UNSUBSCRIBE, v(1, 1)),
    "end": frame(END, v(1, 1)),
    "publish": frame(PUBLISH, v(1, 9) + ld(2, "chat.v1.ChatStreams/Post") + ld(3, CHAT_MESSAGE) + ld(4, b"idem-1")),
    "receipt": frame(RECEIPT, v(1, 9) + ld(2, "chat.messages") + v(3, 2) + v(4, 1234) + v(5, 1_764_633_600_000)
                     + v(6, 1)),
    "error": frame(ERROR, v(1, 15) + ld(2, "offset below log start") + v(3, 1) + v(5, 1) + v(6, 500)),
    "ping": frame(PING, v(1, 1 << 63)),
    "pong": frame(PONG, v(1, 1)),
    "token-refresh": frame(TOKEN_REFRESH, ld(1, "eyJ.eyJ.sig")),
    "token-accepted": frame(TOKEN_ACCEPTED, v(1, 1_764_640_000_000) + v(2, -1)),
    "credit": frame(CREDIT, v(1, 1) + v(2, 500)),
    "go-away": frame(GO_AWAY, ld(1, "draining") + v(2, 1000)),
    "unknown-kind": frame(99, b"\x08\x01"),
    "empty": b"",
}


def cursor_seeds():
    seeds = {}
    for name, positions, topic_id in [
        ("three-partitions", [(0, 41), (1, 0), (2, 1 << 40)], TOPIC_ID),
        ("no-topic-id", [(0, 1)], b""),
        ("negative", [(-1, -5)], TOPIC_ID),
        ("empty", [], b""),
    ]:
        raw = cursor(positions, topic_id)
        seeds[name] = raw
        seeds[name + "-metadata"] = b"cursor:" + base64.urlsafe_b64encode(raw).rstrip(b"=")
    seeds["metadata-std-padded"] = b"cursor:" + base64.b64encode(cursor([(0, 62), (1, 63)]))
    for text in [b"latest", b"earliest", b"ts:1764633600000", b"ts:-1", b" cursor:AAA "]:
        seeds["metadata-" + text.strip().decode().replace(":", "-")] = text
    return seeds


def confluent_seeds():
    def framed(schema_id, indexes, message):
        head = b"\x00" + struct.pack(">I", schema_id)
        if indexes == [0]:
            return head + b"\x00" + message
        return head + varint(zigzag(len(indexes))) + b"".join(varint(zigzag(i)) for i in indexes) + message

    return {
        "first-message": framed(7, [0], CHAT_MESSAGE),
        "nested-message": framed(0x01020304, [1, 3], CHAT_MESSAGE),
        "negative-count": b"\x00\x00\x00\x00\x05" + varint(zigzag(-2)) + CHAT_MESSAGE,
        "truncated-indexes": b"\x00\x00\x00\x00\x05" + varint(zigzag(3)) + b"\x02",
        "unframed": CHAT_MESSAGE,
        "short": b"\x00\x00\x00\x01",
    }


def token_seeds():
    def b64(obj):
        return base64.urlsafe_b64encode(json.dumps(obj, separators=(",", ":")).encode()).rstrip(b"=")

    def signed(header, claims):
        header = json.dumps(header, separators=(",", ":")).encode()
        claims = json.dumps(claims, separators=(",", ":")).encode()
        assert len(header) < 256
        return bytes([len(header)]) + header + claims

    good = {"sub": "ada", "aud": "a", "exp": 4_102_444_800, "iat": 1_764_633_600}
    es256 = {"alg": "ES256", "typ": "JWT"}
    return {
        # 1: signed with the test key (the first is accepted until 2100).
        "signed-good": b"\x01" + signed(es256, good),
        "signed-aud-array": b"\x01" + signed(es256, dict(good, aud=["b", "a"])),
        "signed-expired": b"\x01" + signed(es256, dict(good, exp=1)),
        "signed-no-exp": b"\x01" + signed(es256, {"sub": "ada", "aud": "a"}),
        "signed-nbf-future": b"\x01" + signed(es256, dict(good, nbf=4_102_444_800)),
        "signed-kid": b"\x01" + signed(dict(es256, kid="2026-01"), good),
        "signed-sub-object": b"\x01" + signed(es256, dict(good, sub={"id": 1})),
        "signed-hs256-header": b"\x01" + signed({"alg": "HS256"}, good),
        "signed-none": b"\x01" + signed({"alg": "none"}, good),
        # 3: signed, then one character replaced (here the signature's last).
        "edited-signature": b"\x03\xff\xff" + b"A" + signed(es256, good),
        # 0: raw token text.
        "raw-unsigned": b"\x00" + b64({"alg": "none"}) + b"." + b64(good) + b".",
        "raw-bad-signature": b"\x00" + b64(es256) + b"." + b64(good) + b"." + b"A" * 86,
        "raw-two-parts": b"\x00" + b64(es256) + b"." + b64(good),
        "raw-garbage": b"\x00" + b"not a token",
        "raw-empty": b"\x00",
    }


def main():
    if len(sys.argv) != 2:
        print(__doc__.strip().split("\n")[0], file=sys.stderr)
        return 2
    out = sys.argv[1]
    targets = {
        "frame": FRAMES,
        "cursor": cursor_seeds(),
        "confluent": confluent_seeds(),
        "token": token_seeds(),
    }
    for target, seeds in targets.items():
        os.makedirs(os.path.join(out, target), exist_ok=True)
        for name, data in seeds.items():
            with open(os.path.join(out, target, "seed-" + name), "wb") as f:
                f.write(data)
    return 0


if __name__ == "__main__":
    sys.exit(main())
