/**
 * Protobuf binary encoding: a growable {@link Writer} and a bounds-checked {@link Reader}.
 *
 * Used by the runtime's own frames (frames.ts) and by generated message codecs. Conventions:
 * 32-bit integer types are `number`, 64-bit integer types are `bigint`; a `Reader` never reads
 * past its end and reports every malformation as a {@link WireError}.
 */

/** Protobuf wire types: the low 3 bits of a field's tag, saying how its value is encoded. */
export const WireType = {
  /** int32, int64, uint32, uint64, sint32, sint64, bool, enum. */
  Varint: 0,
  /** fixed64, sfixed64, double: 8 bytes, little-endian. */
  Fixed64: 1,
  /** string, bytes, sub-messages, packed repeated fields: a varint length, then that many bytes. */
  LengthDelimited: 2,
  /** Start of a group (deprecated proto2 groups). */
  StartGroup: 3,
  /** End of a group. */
  EndGroup: 4,
  /** fixed32, sfixed32, float: 4 bytes, little-endian. */
  Fixed32: 5,
} as const;
/** A wire type number, 0 to 5: one of the values of the {@link WireType} object. */
export type WireType = (typeof WireType)[keyof typeof WireType];

/** Malformed protobuf input: truncated data, a bad wire type, an overlong varint, a length past the end. */
export class WireError extends Error {
  /** Byte offset in the input where the problem was found. */
  readonly offset: number;
  /** The error's `message` is `"<message> at byte <offset>"`. */
  constructor(message: string, offset: number) {
    super(`${message} at byte ${offset}`);
    this.name = "WireError";
    this.offset = offset;
  }
}

const utf8Encoder = new TextEncoder();
const utf8Decoder = new TextDecoder("utf-8", { fatal: true });
const U32 = 0xffffffffn;

/** Splits a 64-bit value into unsigned 32-bit halves (two's complement for negatives). */
function split64(value: bigint): [lo: number, hi: number] {
  const v = BigInt.asUintN(64, value);
  return [Number(v & U32), Number(v >> 32n)];
}

/**
 * Appends protobuf values to a growable buffer.
 *
 * Each method writes a bare value; write the field key with {@link tag} first. Sub-messages
 * use {@link fork}/{@link join}: the length prefix is inserted when the sub-message is done.
 */
export class Writer {
  #buf = new Uint8Array(64);
  #pos = 0;
  #view: DataView | undefined;
  readonly #forks: number[] = [];

  /** Bytes written so far. */
  get length(): number {
    return this.#pos;
  }

  #reserve(n: number): void {
    if (this.#pos + n <= this.#buf.length) return;
    let size = this.#buf.length * 2;
    while (size < this.#pos + n) size *= 2;
    const next = new Uint8Array(size);
    next.set(this.#buf.subarray(0, this.#pos));
    this.#buf = next;
    this.#view = undefined;
  }

  #dataView(n: number): DataView {
    this.#reserve(n);
    return (this.#view ??= new DataView(this.#buf.buffer));
  }

  /** Field key: `(field << 3) | wireType`. */
  tag(field: number, wireType: WireType): this {
    return this.uint32(((field << 3) | wireType) >>> 0);
  }

  /** Unsigned varint of a value in [0, 2^32). */
  uint32(value: number): this {
    this.#reserve(5);
    let v = value >>> 0;
    while (v > 127) {
      this.#buf[this.#pos++] = (v & 127) | 128;
      v >>>= 7;
    }
    this.#buf[this.#pos++] = v;
    return this;
  }

  /** int32 varint: negative values take 10 bytes (sign-extended to 64 bits), as protobuf requires. */
  int32(value: number): this {
    return value < 0 ? this.#varint64(value >>> 0, 0xffffffff) : this.uint32(value);
  }

  /** sint32: ZigZag-encoded varint. */
  sint32(value: number): this {
    return this.uint32(((value << 1) ^ (value >> 31)) >>> 0);
  }

  #varint64(lo: number, hi: number): this {
    this.#reserve(10);
    while (hi) {
      this.#buf[this.#pos++] = (lo & 127) | 128;
      lo = ((lo >>> 7) | (hi << 25)) >>> 0;
      hi >>>= 7;
    }
    return this.uint32(lo);
  }

  /** uint64 / int64 varint (two's complement, 10 bytes for negatives). */
  uint64(value: bigint): this {
    return this.#varint64(...split64(value));
  }

  /** int64 varint; the same bytes as {@link uint64}. */
  int64(value: bigint): this {
    return this.uint64(value);
  }

  /** sint64: ZigZag-encoded varint. */
  sint64(value: bigint): this {
    const v = BigInt.asIntN(64, value);
    return this.uint64((v << 1n) ^ (v >> 63n));
  }

  /** bool: a one-byte varint, 1 or 0. */
  bool(value: boolean): this {
    return this.uint32(value ? 1 : 0);
  }

  /** fixed32 (little-endian, 4 bytes). */
  fixed32(value: number): this {
    this.#dataView(4).setUint32(this.#pos, value >>> 0, true);
    this.#pos += 4;
    return this;
  }

  /** sfixed32 (little-endian two's complement, 4 bytes). */
  sfixed32(value: number): this {
    return this.fixed32(value | 0);
  }

  /** fixed64 / sfixed64 (little-endian, 8 bytes). */
  fixed64(value: bigint): this {
    this.#dataView(8).setBigUint64(this.#pos, BigInt.asUintN(64, value), true);
    this.#pos += 8;
    return this;
  }

  /** sfixed64 (little-endian two's complement, 8 bytes). */
  sfixed64(value: bigint): this {
    return this.fixed64(value);
  }

  /** float (IEEE 754 single precision, little-endian, 4 bytes; `value` is rounded to it). */
  float(value: number): this {
    this.#dataView(4).setFloat32(this.#pos, value, true);
    this.#pos += 4;
    return this;
  }

  /** double (IEEE 754 double precision, little-endian, 8 bytes). */
  double(value: number): this {
    this.#dataView(8).setFloat64(this.#pos, value, true);
    this.#pos += 8;
    return this;
  }

  /** Length-prefixed bytes. */
  bytes(value: Uint8Array): this {
    this.uint32(value.length);
    return this.raw(value);
  }

  /** Length-prefixed UTF-8. */
  string(value: string): this {
    return this.bytes(utf8Encoder.encode(value));
  }

  /** Bytes copied verbatim, e.g. unknown fields captured by {@link Reader.skip}. */
  raw(value: Uint8Array): this {
    this.#reserve(value.length);
    this.#buf.set(value, this.#pos);
    this.#pos += value.length;
    return this;
  }

  /** Starts a length-delimited sub-message; end it with {@link join}. */
  fork(): this {
    this.#forks.push(this.#pos);
    return this;
  }

  /** Ends the innermost {@link fork}: inserts its length prefix. */
  join(): this {
    const start = this.#forks.pop();
    if (start === undefined) throw new Error("Writer.join() without fork()");
    const len = this.#pos - start;
    let n = 1;
    while (len >>> (7 * n) && n < 5) n++;
    this.#reserve(n);
    this.#buf.copyWithin(start + n, start, this.#pos);
    const end = this.#pos + n;
    this.#pos = start;
    this.uint32(len);
    this.#pos = end;
    return this;
  }

  /** The encoded bytes (a copy; the writer can be reused or dropped). */
  finish(): Uint8Array<ArrayBuffer> {
    if (this.#forks.length) throw new Error("Writer.finish() with an unjoined fork()");
    return this.#buf.slice(0, this.#pos);
  }
}

/**
 * Reads protobuf values from a byte array, never past its end.
 *
 * Typical decode loop: `while (!r.eof()) { const t = r.tag(); switch (t) { case 8: ...; default: r.skip(t) } }`.
 * Switching on the whole tag (field and wire type) sends a field with an unexpected wire type
 * to `skip`, like an unknown field.
 */
export class Reader {
  /** Offset in the buffer of the next byte to read. */
  pos: number;
  /** Offset in the buffer where this reader's input ends (exclusive). */
  readonly end: number;
  readonly #buf: Uint8Array;
  #view: DataView | undefined;
  /** Where the last tag read by {@link tag} started. */
  #tagStart = 0;

  /** Reads `buf` from `start` up to `end` (default: all of it); the bytes are not copied. */
  constructor(buf: Uint8Array, start = 0, end = buf.length) {
    this.#buf = buf;
    this.pos = start;
    this.end = end;
  }

  /** True when every byte up to {@link Reader.end} has been read. */
  eof(): boolean {
    return this.pos >= this.end;
  }

  #need(n: number): number {
    const at = this.pos;
    if (at + n > this.end) throw new WireError(`truncated input: need ${n} more bytes`, at);
    this.pos = at + n;
    return at;
  }

  #byte(): number {
    return this.#buf[this.#need(1)] as number;
  }

  #dataView(n: number): [DataView, number] {
    const at = this.#need(n);
    this.#view ??= new DataView(this.#buf.buffer, this.#buf.byteOffset, this.#buf.byteLength);
    return [this.#view, at];
  }

  /** Reads a field key; validates the field number and wire type. Returns the raw tag. */
  tag(): number {
    this.#tagStart = this.pos;
    const t = this.uint32();
    if (t >>> 3 === 0) throw new WireError("field number 0", this.#tagStart);
    if ((t & 7) > 5) throw new WireError(`invalid wire type ${t & 7}`, this.#tagStart);
    return t;
  }

  /** Reads a varint of up to 10 bytes; returns [low 32 bits, high 32 bits], both unsigned. */
  #varint64(): [number, number] {
    const start = this.pos;
    let lo = 0;
    let hi = 0;
    let b: number;
    for (let i = 0; i < 4; i++) {
      b = this.#byte();
      lo |= (b & 127) << (i * 7);
      if (b < 128) return [lo >>> 0, 0];
    }
    b = this.#byte();
    lo |= (b & 127) << 28;
    hi = (b & 127) >> 4;
    if (b < 128) return [lo >>> 0, hi];
    for (let i = 0; i < 5; i++) {
      b = this.#byte();
      hi |= (b & 127) << (i * 7 + 3);
      if (b < 128) {
        if (i === 4 && b > 1) throw new WireError("varint overflows 64 bits", start);
        return [lo >>> 0, hi >>> 0];
      }
    }
    throw new WireError("varint longer than 10 bytes", start);
  }

  /** uint32 varint (a longer varint is truncated to its low 32 bits, as protobuf specifies). */
  uint32(): number {
    const b = this.#buf[this.pos];
    if (b !== undefined && b < 128 && this.pos < this.end) {
      this.pos++;
      return b;
    }
    return this.#varint64()[0];
  }

  /** int32 varint (the low 32 bits, as a signed number). */
  int32(): number {
    return this.uint32() | 0;
  }

  /** sint32: ZigZag-decoded varint. */
  sint32(): number {
    const n = this.uint32();
    return (n >>> 1) ^ -(n & 1);
  }

  /** uint64 varint, as an unsigned bigint. */
  uint64(): bigint {
    const [lo, hi] = this.#varint64();
    return (BigInt(hi) << 32n) | BigInt(lo);
  }

  /** int64 varint, as a signed bigint (two's complement). */
  int64(): bigint {
    return BigInt.asIntN(64, this.uint64());
  }

  /** sint64: ZigZag-decoded varint. */
  sint64(): bigint {
    const n = this.uint64();
    return (n >> 1n) ^ -(n & 1n);
  }

  /** bool varint: any non-zero value is true. */
  bool(): boolean {
    const [lo, hi] = this.#varint64();
    return (lo | hi) !== 0;
  }

  /** fixed32 (little-endian, 4 bytes), unsigned. */
  fixed32(): number {
    const [v, at] = this.#dataView(4);
    return v.getUint32(at, true);
  }

  /** sfixed32 (little-endian two's complement, 4 bytes). */
  sfixed32(): number {
    return this.fixed32() | 0;
  }

  /** fixed64 (little-endian, 8 bytes), unsigned. */
  fixed64(): bigint {
    const [v, at] = this.#dataView(8);
    return v.getBigUint64(at, true);
  }

  /** sfixed64 (little-endian two's complement, 8 bytes). */
  sfixed64(): bigint {
    return BigInt.asIntN(64, this.fixed64());
  }

  /** float (IEEE 754 single precision, little-endian, 4 bytes). */
  float(): number {
    const [v, at] = this.#dataView(4);
    return v.getFloat32(at, true);
  }

  /** double (IEEE 754 double precision, little-endian, 8 bytes). */
  double(): number {
    const [v, at] = this.#dataView(8);
    return v.getFloat64(at, true);
  }

  /** Reads a length prefix and checks that many bytes remain; returns the start offset. */
  #delimited(): [start: number, end: number] {
    const at = this.pos;
    const len = this.uint32();
    if (this.pos + len > this.end) throw new WireError(`length ${len} past the end of the input`, at);
    const start = this.pos;
    this.pos += len;
    return [start, this.pos];
  }

  /** Length-prefixed bytes (a copy). */
  bytes(): Uint8Array<ArrayBuffer> {
    const [s, e] = this.#delimited();
    return this.#buf.slice(s, e);
  }

  /** Length-prefixed UTF-8; invalid UTF-8 is a WireError. */
  string(): string {
    const [s, e] = this.#delimited();
    try {
      return utf8Decoder.decode(this.#buf.subarray(s, e));
    } catch {
      throw new WireError("invalid UTF-8 in string field", s);
    }
  }

  /** A reader over the next length-delimited sub-message (no copy). */
  sub(): Reader {
    const [s, e] = this.#delimited();
    return new Reader(this.#buf, s, e);
  }

  /**
   * Skips the value of the field whose tag was just read and returns the field's raw bytes,
   * tag included, so a message can keep its unknown fields and write them back with
   * {@link Writer.raw}.
   */
  skip(tag: number): Uint8Array<ArrayBuffer> {
    const start = this.#tagStart;
    this.#skipValue(tag, 0);
    return this.#buf.slice(start, this.pos);
  }

  #skipValue(tag: number, depth: number): void {
    switch (tag & 7) {
      case 0:
        this.#varint64();
        return;
      case 1:
        this.#need(8);
        return;
      case 2:
        this.#delimited();
        return;
      case 5:
        this.#need(4);
        return;
      case 3: {
        if (depth > 64) throw new WireError("groups nested too deeply", this.pos);
        for (;;) {
          if (this.eof()) throw new WireError("unterminated group", this.pos);
          const t = this.tag();
          if ((t & 7) === 4) {
            if (t >>> 3 !== tag >>> 3) throw new WireError("mismatched end group", this.#tagStart);
            return;
          }
          this.#skipValue(t, depth + 1);
        }
      }
      default:
        throw new WireError(`unexpected wire type ${tag & 7}`, this.#tagStart);
    }
  }
}
