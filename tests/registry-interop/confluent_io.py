#!/usr/bin/env python3
"""Produce and consume Kafka records with Confluent's own Protobuf serdes.

The reference side of the Schema Registry interop tests: the Rust tests run this as a subprocess
(with the Python that scripts/python-interop prints) to check that what the gateway writes,
Confluent's ProtobufDeserializer reads, and that what Confluent's ProtobufSerializer writes, the
gateway reads. See README.md beside this file.

    confluent_io.py --bootstrap HOST:PORT --registry URL --proto-path DIR --proto FILE ...
        produce --topic T [--strategy topic|record|topic_record] [--key-strategy ...]
                [--timeout SECONDS]
        consume --topic T --type NAME [--type NAME ...] --count N [--strategy ...]
                [--key-type NAME [--key-strategy ...]] [--descriptors registry|local]
                [--timeout SECONDS]

produce reads JSON lines from stdin, {"type": "interop.v1.Reading", "key": "k" or null,
"value": {...proto3 JSON...}}, and prints one JSON line per record it produced:
{"partition", "offset", "key_hex", "schema_id", "subject", "type", "value_hex"}. A line with
"key_type": "interop.v1.SourceKey" has a proto3-JSON "key" of that message instead, written
with a ProtobufSerializer for keys (subject <topic>-key by default); its output line also has
"key_schema_id", "key_subject" and "key_type".

consume reads the topic from the beginning and prints one JSON line per record:
{"partition", "offset", "key", "schema_id", "indexes", "type", "value"}; with --key-type the
"key" is the deserialized message (proto field names) and "key_schema_id" and "key_indexes"
are added.

Exit status 0 on success; 1 with a one-line reason on stderr for an expected failure (a registry
error, a record that does not deserialize, a timeout); 2 for bad arguments (argparse).
"""

from __future__ import annotations

import argparse
import base64
import binascii
import importlib
import importlib.resources
import json
import sys
import tempfile
import time
import traceback
import uuid
from pathlib import Path
from typing import Any, Callable, NoReturn, Optional, Sequence, TextIO

import attrs
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer
from confluent_kafka import Message as KafkaRecord
from confluent_kafka.schema_registry import (
    RegisteredSchema,
    Schema,
    SchemaReference,
    SchemaRegistryClient,
    dual_schema_id_deserializer,
    record_subject_name_strategy,
    topic_record_subject_name_strategy,
    topic_subject_name_strategy,
)
from confluent_kafka.schema_registry.error import SchemaRegistryError
from confluent_kafka.schema_registry.protobuf import ProtobufDeserializer, ProtobufSerializer
from confluent_kafka.schema_registry.serde import SchemaId
from confluent_kafka.serialization import (
    MessageField,
    SerializationContext,
    SerializationError,
    StringDeserializer,
    StringSerializer,
)
from google.protobuf import descriptor_pb2, descriptor_pool, json_format, message_factory
from google.protobuf.descriptor import Descriptor, FileDescriptor
from google.protobuf.descriptor_pool import DescriptorPool
from google.protobuf.message import DecodeError, Message
from grpc_tools import protoc

SubjectStrategy = Callable[[Optional[SerializationContext], Optional[str]], Optional[str]]

# The subject name strategies confluent-kafka ships, by the names the Java serdes' docs use.
# Always passed explicitly: 2.16's default is the "associated" strategy, which first asks the
# registry's associations API (Confluent only) and only falls back to the topic strategy on 404.
STRATEGIES: dict[str, SubjectStrategy] = {
    "topic": topic_subject_name_strategy,
    "record": record_subject_name_strategy,
    "topic_record": topic_record_subject_name_strategy,
}

# grpc_tools bundles the well-known types' .proto files, so google/protobuf/* imports resolve
# without a system protoc.
BUNDLED_PROTOS = str(importlib.resources.files("grpc_tools") / "_proto")

# What the protobuf runtime already ships as generated modules (compiling them again would put
# a second google.protobuf on sys.path), and what registries know without a reference.
WELL_KNOWN_PREFIX = "google/protobuf/"

# Errors that say something about the registry or the broker rather than about this script:
# reported in one line, without a traceback.
EXPECTED_ERRORS = (SchemaRegistryError, SerializationError, KafkaException)


class Failure(Exception):
    """An expected failure: its message goes to stderr and the exit status is 1."""


def fail(message: str) -> NoReturn:
    raise Failure(message)


def describe(error: BaseException) -> str:
    """One line naming an error from Confluent's code: its type, its text, where it was raised.

    Whatever a serializer or deserializer raises is a finding of the interop test, not a bug
    here, so it is reported like this instead of with a traceback; the place tells a registry
    error from, say, a base64 decode of a schema that is not base64.
    """
    kind = type(error)
    name = kind.__qualname__
    if kind.__module__ != "builtins":
        name = f"{kind.__module__}.{name}"
    text = f"{name}: {error}"
    frames = traceback.extract_tb(error.__traceback__)
    # The deepest frame in confluent-kafka says what it was doing (one in base64 would not).
    ours = [frame for frame in frames if "/confluent_kafka/" in frame.filename] or frames
    if ours:
        frame = ours[-1]
        path = frame.filename.split("site-packages/")[-1]
        text += f" (at {path}:{frame.lineno} in {frame.name})"
    return text


def one_line(error: BaseException) -> str:
    """An exception's text on one line (json_format's parse errors list fields on a second)."""
    return " ".join(str(error).split())


def emit(out: TextIO, record: dict[str, Any]) -> None:
    # One line per record, flushed at once: the Rust tests read records as they come.
    out.write(json.dumps(record, sort_keys=True) + "\n")
    out.flush()


def run_protoc(arguments: Sequence[str]) -> bool:
    """protoc in-process; it prints its own error messages to stderr."""
    return protoc.main(["protoc", *arguments]) == 0


# --------------------------------------------------------------------------------------------
# Compiling the test schemas


def module_name(proto_file: str) -> str:
    """The module protoc's Python generator writes for a .proto path (its naming rule)."""
    stem = proto_file.removesuffix(".proto").replace("-", "_")
    return stem.replace("/", ".") + "_pb2"


def compile_protos(proto_paths: Sequence[str], protos: Sequence[str], out_dir: Path) -> None:
    """Compile the protos and everything they import into out_dir, then import the modules.

    The imports are compiled too (found with --include_imports), so --proto needs to name only
    the files whose messages are used: a generated module imports those of its dependencies.
    """
    includes = [f"--proto_path={path}" for path in proto_paths] + [f"--proto_path={BUNDLED_PROTOS}"]
    descriptor_set = out_dir / "protos.pb"
    if not run_protoc([*includes, "--include_imports", f"--descriptor_set_out={descriptor_set}",
                       *protos]):
        fail(f"protoc could not compile {' '.join(protos)} (its messages are above)")
    files = descriptor_pb2.FileDescriptorSet.FromString(descriptor_set.read_bytes()).file
    ours = [f.name for f in files if not f.name.startswith(WELL_KNOWN_PREFIX)]

    python_out = out_dir / "python"
    python_out.mkdir()
    if not run_protoc([*includes, f"--python_out={python_out}", *ours]):
        fail(f"protoc could not generate Python for {' '.join(ours)} (its messages are above)")
    # protoc writes packages without __init__.py; they import as namespace packages.
    sys.path.insert(0, str(python_out))
    for name in ours:
        importlib.import_module(module_name(name))


def message_class(full_name: str) -> type[Message]:
    """The generated class of a message, by full name (nested ones too: "pkg.Outer.Inner")."""
    try:
        descriptor = descriptor_pool.Default().FindMessageTypeByName(full_name)
    except KeyError:
        fail(f"unknown message type {full_name!r} (not in the compiled --proto files)")
    return message_factory.GetMessageClass(descriptor)


# --------------------------------------------------------------------------------------------
# Confluent framing, as confluent-kafka itself parses it


def parse_frame(value: bytes) -> SchemaId:
    """The schema id and message indexes at the front of a framed value.

    Read with confluent-kafka's own parser (the one ProtobufDeserializer uses), so what is
    reported is what Confluent's client makes of the bytes.
    """
    schema_id = SchemaId("PROTOBUF")
    try:
        dual_schema_id_deserializer(value, None, schema_id)
    except (SerializationError, EOFError, IndexError, ValueError) as error:
        raise SerializationError(f"not Confluent-framed: {describe(error)}") from error
    return schema_id


# --------------------------------------------------------------------------------------------
# Where the deserializer's descriptors come from


def is_serialized_descriptor(schema_str: str) -> bool:
    """Whether a registered schema is a base64 FileDescriptorProto (as ProtobufSerializer
    registers it) rather than .proto text (as the gateway registers it)."""
    try:
        descriptor_pb2.FileDescriptorProto.FromString(base64.b64decode(schema_str, validate=True))
    except (binascii.Error, ValueError, DecodeError):
        return False
    return True


class LocallyCompilingRegistryClient(SchemaRegistryClient):
    """A registry client that answers format=serialized itself, by compiling the registered text.

    ProtobufDeserializer asks the registry for every schema with format=serialized, which on
    Confluent Schema Registry returns the schema as a base64 FileDescriptorProto, whatever was
    registered. Apicurio Registry 3.3.3's Confluent API answers that with the raw descriptor
    bytes read as UTF-8 (every non-UTF-8 byte replaced by U+FFFD: not base64, and lossy), and
    with HTTP 500 for a schema that was registered as a base64 descriptor; so against Apicurio
    the registry path of the deserializer cannot work at all.

    This client does the registry's part on this side instead: it fetches the schema as it
    was registered, fetches each reference (recursively) by the subject and version the schema
    names, compiles the text with protoc, and hands the deserializer the base64 descriptor that
    Confluent's registry would have served. Everything else the deserializer does (look-ups by
    id, subject and version, resolving references into a pool, walking the message indexes)
    runs unchanged against the real registry. Schemas registered as base64 descriptors (by
    ProtobufSerializer) are passed through as they are.
    """

    ROOT_FILE = "__registered_schema__.proto"    # any name: the deserializer renames the root

    def __init__(self, conf: dict[str, Any]) -> None:
        super().__init__(conf)
        self._serialized: dict[Schema, Schema] = {}

    def get_schema(self, schema_id: int, subject_name: Optional[str] = None,
                   fmt: Optional[str] = None, reference_format: Optional[str] = None) -> Schema:
        if fmt != "serialized":
            return super().get_schema(schema_id, subject_name, fmt, reference_format)
        return self._compiled(super().get_schema(schema_id, subject_name, None, reference_format))

    def get_version(self, subject_name: str, version: Any = "latest", deleted: bool = False,
                    fmt: Optional[str] = None) -> RegisteredSchema:
        if fmt != "serialized":
            return super().get_version(subject_name, version, deleted, fmt)
        registered = super().get_version(subject_name, version, deleted, None)
        return attrs.evolve(registered, schema=self._compiled(registered.schema))

    def _compiled(self, schema: Schema) -> Schema:
        if schema.schema_str is None or is_serialized_descriptor(schema.schema_str):
            return schema
        cached = self._serialized.get(schema)
        if cached is not None:
            return cached
        with tempfile.TemporaryDirectory(prefix="confluent-io-schema-") as work:
            sources = Path(work) / "src"
            sources.mkdir()
            self._write_references(schema.references or [], sources, set())
            (sources / self.ROOT_FILE).write_text(schema.schema_str, encoding="utf-8")
            out = Path(work) / "schema.pb"
            if not run_protoc([f"--proto_path={sources}", f"--proto_path={BUNDLED_PROTOS}",
                               f"--descriptor_set_out={out}", self.ROOT_FILE]):
                raise SerializationError(
                    "protoc could not compile the registered schema (its messages are above)")
            (file,) = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes()).file
        compiled = attrs.evolve(
            schema, schema_str=base64.standard_b64encode(file.SerializeToString()).decode("ascii"))
        self._serialized[schema] = compiled
        return compiled

    def _write_references(self, references: Sequence[SchemaReference], sources: Path,
                          written: set[str]) -> None:
        """Write each referenced file's registered text under its import path."""
        for reference in references:
            name = reference.name
            if name is None or name in written or name.startswith(WELL_KNOWN_PREFIX):
                continue
            written.add(name)
            if reference.subject is None or reference.version is None:
                raise SerializationError(f"reference {name} names no subject and version")
            referenced = super().get_version(reference.subject, reference.version, True, None)
            text = referenced.schema.schema_str or ""
            if is_serialized_descriptor(text):
                raise SerializationError(
                    f"reference {name} ({reference.subject} version {reference.version}) is "
                    "stored as a serialized descriptor, which protoc cannot import")
            path = sources / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
            self._write_references(referenced.schema.references or [], sources, written)


# --------------------------------------------------------------------------------------------
# produce


def require_topic(client: Producer | Consumer, topic: str, timeout: float) -> None:
    """Fail at once when the topic does not exist: a producer would wait for it to appear
    until its message timeout, and the test brokers do not create topics on demand."""
    try:
        metadata = client.list_topics(topic, timeout=timeout)
    except KafkaException as error:
        fail(f"no metadata for {topic} from the broker within {timeout} s: {error}")
    found = metadata.topics.get(topic)
    if found is None or found.error is not None:
        why = found.error if found is not None else "not in the metadata"
        fail(f"topic {topic} is not there ({why}); create it first")


def protobuf_serializer(cache: dict[str, ProtobufSerializer], cls: type[Message],
                        registry: SchemaRegistryClient,
                        strategy: SubjectStrategy) -> ProtobufSerializer:
    """The serializer of one message type, made on first use: one per type, as in an app.

    Keys and values get separate caches: a serializer is made with one subject name
    strategy, and --key-strategy need not be --strategy (a class may be used as both)."""
    full_name = cls.DESCRIPTOR.full_name
    serializer = cache.get(full_name)
    if serializer is None:
        serializer = ProtobufSerializer(cls, registry, {
            "auto.register.schemas": True,
            "subject.name.strategy": strategy,
        })
        cache[full_name] = serializer
    return serializer


def produce(args: argparse.Namespace, registry: SchemaRegistryClient) -> None:
    strategy = STRATEGIES[args.strategy]
    key_strategy = STRATEGIES[args.key_strategy]
    serializers: dict[str, ProtobufSerializer] = {}
    key_serializers: dict[str, ProtobufSerializer] = {}
    string_keys = StringSerializer("utf_8")
    producer = Producer({
        "bootstrap.servers": args.bootstrap,
        # Exactly the records given, once each, in order (librdkafka's default is off).
        "enable.idempotence": True,
        "linger.ms": 0,
        # So that a record that cannot be delivered comes back with librdkafka's reason
        # within the timeout, instead of after the default five minutes.
        "message.timeout.ms": int(args.timeout * 1000),
    })
    require_topic(producer, args.topic, args.timeout)
    value_ctx = SerializationContext(args.topic, MessageField.VALUE)
    key_ctx = SerializationContext(args.topic, MessageField.KEY)

    for number, line in enumerate(sys.stdin, start=1):
        if not line.strip():
            continue
        where = f"stdin line {number}"
        try:
            request = json.loads(line)
        except json.JSONDecodeError as error:
            fail(f"{where}: not JSON: {error}")
        if not isinstance(request, dict) or not isinstance(request.get("type"), str):
            fail(f"{where}: expected an object with a \"type\" string")
        type_name: str = request["type"]
        key_type = request.get("key_type")
        if key_type is not None and not isinstance(key_type, str):
            fail(f"{where}: \"key_type\" must be a message name or absent")
        raw_key = request.get("key")

        # The key first, as a Kafka client serializes it (and as confluent-kafka expects, for
        # the original key it keeps for the value's rules).
        key_subject: Optional[str] = None
        if key_type is None:
            # Without key_type, keys are UTF-8 strings, as they always were here.
            if raw_key is not None and not isinstance(raw_key, str):
                fail(f"{where}: \"key\" must be a string or null (or set \"key_type\")")
            key = string_keys(raw_key, key_ctx)
        else:
            if raw_key is not None and not isinstance(raw_key, dict):
                fail(f"{where}: with \"key_type\", \"key\" must be {key_type} in proto3 JSON "
                     "(an object) or null")
            key_cls = message_class(key_type)
            key = None
            if raw_key is not None:
                try:
                    key_message = json_format.ParseDict(raw_key, key_cls())
                except json_format.ParseError as error:
                    fail(f"{where}: \"key\" is not {key_type} in proto3 JSON: {one_line(error)}")
                key_serializer = protobuf_serializer(key_serializers, key_cls, registry,
                                                     key_strategy)
                try:
                    key = key_serializer(key_message, key_ctx)
                except Exception as error:    # whatever Confluent's code raises is the finding
                    fail(f"{where}: ProtobufSerializer failed for the key {key_type}: "
                         f"{describe(error)}")
                assert key is not None
                key_subject = key_strategy(key_ctx, key_cls.DESCRIPTOR.full_name)

        cls = message_class(type_name)
        try:
            message = json_format.ParseDict(request.get("value") or {}, cls())
        except json_format.ParseError as error:
            fail(f"{where}: \"value\" is not {type_name} in proto3 JSON: {one_line(error)}")

        serializer = protobuf_serializer(serializers, cls, registry, strategy)
        try:
            value = serializer(message, value_ctx)
        except Exception as error:    # whatever Confluent's code raises is the finding
            fail(f"{where}: ProtobufSerializer failed for {type_name}: {describe(error)}")
        assert value is not None

        # Synchronous, one record at a time: a failure names its input line, and the output
        # lines come in input order with their offsets.
        outcome: list[tuple[Optional[KafkaError], KafkaRecord]] = []
        producer.produce(args.topic, value=value, key=key,
                         on_delivery=lambda err, rec: outcome.append((err, rec)))
        remaining = producer.flush(args.timeout)
        if remaining or not outcome:
            fail(f"{where}: not delivered to {args.topic} within {args.timeout} s")
        error, record = outcome[0]
        if error is not None:
            fail(f"{where}: delivery to {args.topic} failed: {error}")

        produced: dict[str, Any] = {
            "partition": record.partition(),
            "offset": record.offset(),
            # The exact key bytes, framed or not (null for a null key).
            "key_hex": key.hex() if key is not None else None,
            "schema_id": parse_frame(value).id,
            "subject": strategy(value_ctx, cls.DESCRIPTOR.full_name),
            "type": type_name,
            "value_hex": value.hex(),
        }
        if key_subject is not None:
            assert key is not None
            produced["key_schema_id"] = parse_frame(key).id
            produced["key_subject"] = key_subject
            produced["key_type"] = key_type
        emit(sys.stdout, produced)


# --------------------------------------------------------------------------------------------
# consume


class WriterAwareDeserializer(ProtobufDeserializer):
    """ProtobufDeserializer that remembers which message the registry's schema said it read.

    What confluent-kafka 2.16.1 does with a registry client, per record (read from its
    schema_registry/_sync/protobuf.py and _sync/serde.py):
      1. reads the schema id and message indexes off the front of the value (or from a
         __value_schema_id header);
      2. fetches the writer schema, GET /schemas/ids/{id}?subject=<subject>&format=serialized,
         which asks the registry for a base64 FileDescriptorProto whatever text was
         registered, and each of its references, recursively (google/protobuf/*,
         google/type/* and confluent/* skipped as built in), with
         GET /subjects/{subject}/versions/{version}?deleted=true&format=serialized; it
         base64-decodes them into a DescriptorPool, cached per schema;
      3. walks the message indexes through that file's messages to the writer's message,
         raising SerializationError for an index out of range;
      4. decodes the payload with the class it was constructed with, not with the writer's
         descriptor (only with use.latest.version and migration rules does it decode with
         the writer's), so a wrong index or type would go unnoticed by it.
    Steps 2 and 3 need no option: they run whenever a registry client is given, and fail
    the record if the registry cannot serve the schema.
    _get_message_desc is step 3's look-up; its first call per record is for the writer's
    message (a second, with [0], finds the reader's). Recording it lets consume pick the
    --type the registry names for each record, and refuse a record of none of them.
    """

    writer: Optional[Descriptor] = None

    def _get_message_desc(self, pool: DescriptorPool, fd: FileDescriptor,
                          msg_index: list[int]) -> Descriptor:
        found = super()._get_message_desc(pool, fd, msg_index)
        if self.writer is None:
            self.writer = found
        return found

    def deserialize(self, value: bytes, ctx: SerializationContext) -> tuple[Message, Descriptor]:
        self.writer = None
        message = self(value, ctx)
        if message is None or self.writer is None:
            raise SerializationError("the deserializer did not resolve a writer schema")
        return message, self.writer


class Deserializers:
    """One WriterAwareDeserializer per --type, and the choice between them for each record.

    Confluent's deserializer decodes with the class it was made for. A topic may carry several
    message types of one schema (under the topic strategy, Reading and Command share a subject),
    so each record goes first to the first type's deserializer, which resolves the writer's
    message from the registry before it decodes; when that is another of the given types, the
    record goes to that type's deserializer instead (whose look-ups are cached by then).
    consume --key-type uses one of these with a single type for the keys.
    """

    def __init__(self, type_names: Sequence[str], conf: dict[str, Any],
                 registry: SchemaRegistryClient) -> None:
        self.names = list(dict.fromkeys(type_names))
        self._by_name = {name: WriterAwareDeserializer(message_class(name), conf, registry)
                         for name in self.names}

    def deserialize(self, value: bytes, ctx: SerializationContext) -> tuple[Message, Descriptor]:
        first_name = self.names[0]
        first = self._by_name[first_name]
        try:
            message, writer = first.deserialize(value, ctx)
        except Exception:
            # The payload need not even parse as the first type; the writer's message was
            # resolved before the decode failed, unless the registry look-up is what failed.
            writer = first.writer
            if writer is None or writer.full_name == first_name:
                raise
        else:
            if writer.full_name == first_name:
                return message, writer
        other = self._by_name.get(writer.full_name)
        if other is None:
            raise WrongType(writer)
        message, writer = other.deserialize(value, ctx)
        if writer.full_name != message.DESCRIPTOR.full_name:    # the registry changed its mind
            raise WrongType(writer)
        return message, writer


# How consume reads keys: as UTF-8 strings, or (--key-type) as one framed message type.
Keys = StringDeserializer | Deserializers


class WrongType(Exception):
    """The registry names, for a record, a message that is none of the --type ones."""

    def __init__(self, writer: Descriptor) -> None:
        super().__init__(writer.full_name)
        self.writer = writer


def consume(args: argparse.Namespace, registry: SchemaRegistryClient) -> None:
    deserializers = Deserializers(args.type, {
        "subject.name.strategy": STRATEGIES[args.strategy],
    }, registry)
    keys: Keys
    if args.key_type is None:
        keys = StringDeserializer("utf_8")
    else:
        # Through the same registry client as the values, so --descriptors applies to both.
        keys = Deserializers([args.key_type], {
            "subject.name.strategy": STRATEGIES[args.key_strategy],
        }, registry)
    consumer = Consumer({
        "bootstrap.servers": args.bootstrap,
        # A group of its own, from the beginning, committing nothing: every run sees the whole
        # topic and leaves no trace for the next one.
        "group.id": f"confluent-io-{uuid.uuid4().hex}",
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
    })
    deadline = time.monotonic() + args.timeout
    seen = 0
    last_error: Optional[KafkaError] = None
    try:
        consumer.subscribe([args.topic])
        while seen < args.count:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                why = f" (last consumer error: {last_error})" if last_error else ""
                fail(f"timed out after {args.timeout} s with {seen} of {args.count} records "
                     f"from {args.topic}{why}")
            record = consumer.poll(min(remaining, 1.0))
            if record is None:
                continue
            if record.error() is not None:
                # librdkafka reports transient trouble (a topic not created yet, a broker
                # reconnect) as error events and retries by itself: only a fatal one ends this.
                last_error = record.error()
                if last_error.fatal():
                    fail(f"consumer error: {last_error}")
                print(f"confluent_io: consumer: {last_error}", file=sys.stderr)
                continue
            emit(sys.stdout, decode(record, args.topic, keys, deserializers))
            seen += 1
    finally:
        consumer.close()


def decode_key(record: KafkaRecord, topic: str, where: str, keys: Keys) -> dict[str, Any]:
    """The key's part of an output line: a UTF-8 string, or with --key-type the message
    (proto field names) with its schema id and message indexes, all null for a null key."""
    key_ctx = SerializationContext(topic, MessageField.KEY, record.headers())
    if isinstance(keys, StringDeserializer):
        try:
            return {"key": keys(record.key(), key_ctx)}
        except SerializationError as error:
            fail(f"{where}: the key is not UTF-8 (pass --key-type for framed keys): {error}")
    key = record.key()
    if key is None:
        return {"key": None, "key_schema_id": None, "key_indexes": None}
    try:
        frame = parse_frame(key)
    except SerializationError as error:
        fail(f"{where}: the key is {error}")
    try:
        message, _ = keys.deserialize(key, key_ctx)
    except WrongType as wrong:
        fail(f"{where}: the key's schema id {frame.id} with indexes {frame.message_indexes} "
             f"is {wrong.writer.full_name} in the registry, not {keys.names[0]}")
    except Exception as error:    # whatever Confluent's code raises is the finding
        fail(f"{where}: ProtobufDeserializer failed for the key (schema id {frame.id}, "
             f"indexes {frame.message_indexes}): {describe(error)}")
    return {
        "key": json_format.MessageToDict(message, preserving_proto_field_name=True),
        "key_schema_id": frame.id,
        "key_indexes": frame.message_indexes,
    }


def decode(record: KafkaRecord, topic: str, keys: Keys,
           deserializers: Deserializers) -> dict[str, Any]:
    where = f"{topic} partition {record.partition()} offset {record.offset()}"
    # The key first, as a consuming application would (confluent-kafka keeps it for the
    # value's rules).
    key = decode_key(record, topic, where, keys)
    value = record.value()
    if value is None:
        fail(f"{where}: a tombstone (null value)")
    try:
        frame = parse_frame(value)
    except SerializationError as error:
        fail(f"{where}: {error}")
    value_ctx = SerializationContext(topic, MessageField.VALUE, record.headers())
    try:
        message, _ = deserializers.deserialize(value, value_ctx)
    except WrongType as wrong:
        fail(f"{where}: schema id {frame.id} with indexes {frame.message_indexes} is "
             f"{wrong.writer.full_name} in the registry, not {' or '.join(deserializers.names)}")
    except Exception as error:    # whatever Confluent's code raises is the finding
        fail(f"{where}: ProtobufDeserializer failed (schema id {frame.id}, indexes "
             f"{frame.message_indexes}): {describe(error)}")
    return {
        "partition": record.partition(),
        "offset": record.offset(),
        **key,
        "schema_id": frame.id,
        "indexes": frame.message_indexes,
        # Also the message that the registry's schema and the indexes name: Deserializers
        # made sure of that.
        "type": message.DESCRIPTOR.full_name,
        "value": json_format.MessageToDict(message, preserving_proto_field_name=True),
    }


# --------------------------------------------------------------------------------------------
# Command line


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Produce and consume Kafka records with Confluent's Protobuf serdes.")
    parser.add_argument("--bootstrap", required=True, metavar="HOST:PORT")
    parser.add_argument("--registry", required=True, metavar="URL",
                        help="Confluent-compatible base URL, e.g. "
                             "http://127.0.0.1:18081/apis/ccompat/v7")
    parser.add_argument("--proto-path", action="append", required=True, metavar="DIR",
                        help="an include directory (repeatable)")
    parser.add_argument("--proto", action="append", required=True, metavar="FILE",
                        help="a .proto file relative to an include directory (repeatable); "
                             "the files it imports are compiled too")
    commands = parser.add_subparsers(dest="command", required=True)

    producing = commands.add_parser("produce", help="JSON lines on stdin to framed records")
    producing.add_argument("--topic", required=True)
    producing.add_argument("--strategy", choices=sorted(STRATEGIES), default="topic",
                           help="subject name strategy for the values (default: topic)")
    producing.add_argument("--key-strategy", choices=sorted(STRATEGIES), default="topic",
                           help="subject name strategy for the keys of lines with a "
                                "\"key_type\" (default: topic, i.e. <topic>-key)")
    producing.add_argument("--timeout", type=float, default=30.0, metavar="SECONDS",
                           help="for each record's delivery (default: 30)")

    consuming = commands.add_parser("consume", help="framed records to JSON lines on stdout")
    consuming.add_argument("--topic", required=True)
    consuming.add_argument("--type", action="append", required=True, metavar="NAME",
                           help="full name of the values' message, e.g. interop.v1.Reading; "
                                "repeatable, for topics that carry several (each record is "
                                "decoded as the one the registry names for it)")
    consuming.add_argument("--count", type=int, required=True, metavar="N")
    consuming.add_argument("--timeout", type=float, default=30.0, metavar="SECONDS",
                           help="for all N records, group join included (default: 30)")
    consuming.add_argument("--strategy", choices=sorted(STRATEGIES), default="topic",
                           help="subject name strategy the values were written with (default: "
                                "topic); only the subject hint of the schema look-up uses it")
    consuming.add_argument("--key-type", metavar="NAME",
                           help="full name of the keys' message, e.g. interop.v1.SourceKey: "
                                "keys are Confluent-framed and read with ProtobufDeserializer "
                                "(default: keys are UTF-8 strings)")
    consuming.add_argument("--key-strategy", choices=sorted(STRATEGIES), default="topic",
                           help="subject name strategy the keys were written with (default: "
                                "topic); only used with --key-type, like --strategy")
    consuming.add_argument("--descriptors", choices=("registry", "local"), default="registry",
                           help="registry (default): the deserializer gets the schemas with "
                                "format=serialized, as confluent-kafka does; local: it gets "
                                "the registered text compiled here by protoc, as Confluent "
                                "Schema Registry would serve it (Apicurio's serialized format "
                                "is unusable)")
    return parser.parse_args(argv)


def main(argv: Sequence[str]) -> int:
    args = parse_args(argv)
    try:
        with tempfile.TemporaryDirectory(prefix="confluent-io-") as out_dir:
            compile_protos(args.proto_path, args.proto, Path(out_dir))
            conf = {"url": args.registry}
            if args.command == "produce":
                produce(args, SchemaRegistryClient(conf))
            elif args.descriptors == "local":
                consume(args, LocallyCompilingRegistryClient(conf))
            else:
                consume(args, SchemaRegistryClient(conf))
    except Failure as failure:
        print(f"confluent_io: {failure}", file=sys.stderr)
        return 1
    except EXPECTED_ERRORS as error:
        print(f"confluent_io: {describe(error)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The test stopped reading; nothing left to tell it.
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
