"""The dashboard's producer service: a stand-in for the services a Kafka team already runs.

It knows nothing of KafkaSocks. It writes readings of a few simulated sources to
dashboard.readings through the Confluent Schema Registry (Confluent's ProtobufSerializer,
subject dashboard.readings-value) and applies the commands it reads from dashboard.commands
(Confluent's ProtobufDeserializer), which the dashboard page sends through the gateway.

    producer.py --bootstrap HOST:PORT --registry URL [--sources s1,s2,s3,s4] [--sampling-ms 1000]

Its state is Kafka's: at start it reads dashboard.commands from the beginning (a compacted
topic keyed by source, so the last command per source wins) before it samples, so a restart
keeps every source's sampling interval. Each reading says which command it was sampled
under (`applied_command`, the command record's "<partition>@<offset>", which is the receipt
the page got), so the page sees its command take effect.

Prints "producer: ready" on stdout once the topics exist and the commands are read;
SIGTERM or SIGINT stops it after flushing what it produced.
"""

from __future__ import annotations

import argparse
import importlib
import math
import random
import signal
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.protobuf import ProtobufDeserializer, ProtobufSerializer
from confluent_kafka.serialization import MessageField, SerializationContext, StringSerializer
from grpc_tools import protoc

HERE = Path(__file__).resolve().parent
PROTO_ROOT = HERE.parent.parent / "proto"
READINGS_PROTO = "dashboard/v1/readings.proto"
# The bounds the gateway's config enforces on commands, checked again here: the producer
# does not trust what arrives on a topic.
MIN_SAMPLING_MS, MAX_SAMPLING_MS = 100, 10_000


def log(message: str) -> None:
    print(f"producer: {message}", file=sys.stderr, flush=True)


def load_messages() -> Any:
    """readings.proto compiled with protoc (grpcio-tools, in-process) and imported."""
    out = Path(tempfile.mkdtemp(prefix="dashboard-proto-"))
    if protoc.main(["protoc", f"--proto_path={PROTO_ROOT}", f"--python_out={out}", READINGS_PROTO]) != 0:
        sys.exit(f"producer: protoc could not compile {PROTO_ROOT / READINGS_PROTO}")
    sys.path.insert(0, str(out))
    return importlib.import_module("dashboard.v1.readings_pb2")


def ensure_topics(bootstrap: str, readings: str, commands: str, partitions: int) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    wanted = [
        NewTopic(readings, num_partitions=partitions, replication_factor=1),
        # The last command per source is the state: compaction keeps it however old.
        NewTopic(commands, num_partitions=1, replication_factor=1, config={"cleanup.policy": "compact"}),
    ]
    for topic, future in admin.create_topics(wanted, operation_timeout=30).items():
        try:
            future.result()
            log(f"created topic {topic}")
        except KafkaException as e:
            if e.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise


@dataclass
class Source:
    name: str
    sampling_ms: int
    base: float
    period_s: float
    seq: int = 0
    applied_command: str = ""
    next_due: float = 0.0


class Service:
    def __init__(self, args: argparse.Namespace) -> None:
        self.pb = load_messages()
        self.args = args
        self.run = int(time.time() * 1000)
        registry = SchemaRegistryClient({"url": args.registry})
        self.keys = StringSerializer("utf_8")
        self.values = ProtobufSerializer(self.pb.Reading, registry, {"auto.register.schemas": True})
        self.commands = ProtobufDeserializer(self.pb.Command, {})
        self.producer = Producer({
            "bootstrap.servers": args.bootstrap,
            "enable.idempotence": True,
            "linger.ms": 5,
        })
        self.consumer = Consumer({
            "bootstrap.servers": args.bootstrap,
            # No offsets are committed: every start reads the commands from the beginning.
            "group.id": f"dashboard-producer-{self.run}",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
        })
        rng = random.Random(7)
        self.sources = {
            name: Source(name, args.sampling_ms, base=rng.uniform(20, 80), period_s=rng.uniform(20, 60))
            for name in args.sources
        }
        self.stopping = False

    def catch_up_on_commands(self) -> None:
        """Applies every command stored so far, before the first reading."""
        metadata = self.consumer.list_topics(self.args.commands_topic, timeout=30)
        partitions = list(metadata.topics[self.args.commands_topic].partitions)
        self.consumer.assign([TopicPartition(self.args.commands_topic, p, OFFSET_BEGINNING) for p in partitions])
        at_end: set[int] = set()
        deadline = time.monotonic() + 30
        while len(at_end) < len(partitions):
            if time.monotonic() > deadline:
                sys.exit("producer: could not read dashboard.commands to its end within 30 s")
            msg = self.consumer.poll(0.5)
            if msg is None:
                continue
            if msg.error() and msg.error().code() == KafkaError._PARTITION_EOF:
                at_end.add(msg.partition())
                continue
            self.apply(msg, replaying=True)

    def apply(self, msg: Any, replaying: bool = False) -> None:
        if msg.error():
            if msg.error().code() != KafkaError._PARTITION_EOF:
                log(f"reading commands: {msg.error()}")
            return
        where = f"{msg.partition()}@{msg.offset()}"
        try:
            command = self.commands(msg.value(), SerializationContext(msg.topic(), MessageField.VALUE))
        except Exception as e:  # a record this service cannot read is skipped, and said so
            log(f"command {where} is not a dashboard.v1.Command ({e}); skipped")
            return
        source = self.sources.get(command.source)
        if source is None or not MIN_SAMPLING_MS <= command.sampling_ms <= MAX_SAMPLING_MS:
            log(f"command {where} ({command.source!r}, {command.sampling_ms} ms) is out of range; skipped")
            return
        source.sampling_ms = command.sampling_ms
        source.applied_command = where
        if not replaying:
            # Sample under the new interval from now on.
            source.next_due = min(source.next_due, time.monotonic() + command.sampling_ms / 1000)
        log(f"applied command {where}: {source.name} every {command.sampling_ms} ms "
            f"(from {command.issued_by or 'unknown'}{', replayed' if replaying else ''})")

    def sample(self, source: Source) -> None:
        now_ms = int(time.time() * 1000)
        t = now_ms / 1000
        value = source.base + 10 * math.sin(2 * math.pi * t / source.period_s) + random.gauss(0, 0.8)
        reading = self.pb.Reading(
            source=source.name, run=self.run, seq=source.seq + 1, at_ms=now_ms, value=round(value, 3),
            sampling_ms=source.sampling_ms, applied_command=source.applied_command,
        )
        topic = self.args.readings_topic
        try:
            value_bytes = self.values(reading, SerializationContext(topic, MessageField.VALUE))
            self.producer.produce(topic, key=self.keys(source.name), value=value_bytes, on_delivery=self.delivered)
        except BufferError:
            log("the producer's queue is full; this sample is skipped")
            return
        except Exception as e:  # the registry down, say: the next tick tries again
            log(f"could not write a reading of {source.name}: {e}")
            return
        source.seq += 1

    @staticmethod
    def delivered(err: Any, msg: Any) -> None:
        if err is not None:
            log(f"a reading was not stored: {err}")

    def serve(self) -> None:
        self.catch_up_on_commands()
        start = time.monotonic()
        for source in self.sources.values():
            source.next_due = start
        print("producer: ready", flush=True)
        while not self.stopping:
            now = time.monotonic()
            for source in self.sources.values():
                if source.next_due <= now:
                    self.sample(source)
                    interval = source.sampling_ms / 1000
                    # Behind by more than an interval (a pause): carry on from now, no burst.
                    source.next_due = max(source.next_due + interval, now)
            self.producer.poll(0)
            wait = max(0.0, min(s.next_due for s in self.sources.values()) - time.monotonic())
            msg = self.consumer.poll(min(wait, 0.2))
            if msg is not None:
                self.apply(msg)
        log("stopping: flushing what was produced")
        left = self.producer.flush(10)
        if left:
            log(f"{left} readings were not stored before the 10 s flush ended")
        self.consumer.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--registry", required=True, help="the Confluent-compatible Schema Registry URL")
    parser.add_argument("--readings-topic", default="dashboard.readings")
    parser.add_argument("--commands-topic", default="dashboard.commands")
    parser.add_argument("--sources", type=lambda s: [x for x in s.split(",") if x], default=["s1", "s2", "s3", "s4"])
    parser.add_argument("--partitions", type=int, default=3)
    parser.add_argument("--sampling-ms", type=int, default=1000)
    args = parser.parse_args()
    ensure_topics(args.bootstrap, args.readings_topic, args.commands_topic, args.partitions)
    service = Service(args)

    def stop(signum: int, _frame: Any) -> None:
        service.stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    service.serve()


if __name__ == "__main__":
    main()
