// Axon v1 — independent JavaScript implementation of the event encoding, the
// canonical signing payload and the event validation rules (spec §1–§3).
//
// Written from the protocol spec (shared/spec/axon-v1.md) and the test vector
// README only, to cross-check the relay's test vectors.

import { ed25519 } from '@noble/curves/ed25519.js';
import { sha256, sha512 } from '@noble/hashes/sha2.js';
import { Encoder } from '@msgpack/msgpack';

// ---------------------------------------------------------------------------
// Errors and limits

export class AxonError extends Error {
  constructor(code, message) {
    super(message);
    this.name = 'AxonError';
    this.code = code;
  }
}

const invalid = (msg) => new AxonError(400, `invalid: ${msg}`);

/** The relay's default limits (spec §2 / relay.yaml). */
export const DEFAULT_LIMITS = Object.freeze({
  maxContentBytes: 65536,
  maxTags: 256,
  maxTagNameBytes: 64,
  maxTagValues: 16,
  maxTagValueBytes: 1024,
});

const U16_MAX = 0xffff;
const U32_MAX = 0xffffffff;
const TWO_63 = 1n << 63n;

// ---------------------------------------------------------------------------
// Small byte helpers

const utf8Encoder = new TextEncoder();
const utf8Decoder = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

export function hexToBytes(hex) {
  if (typeof hex !== 'string' || hex.length % 2 !== 0 || !/^[0-9a-fA-F]*$/.test(hex)) {
    throw new TypeError('hexToBytes: not an even-length hex string');
  }
  const out = new Uint8Array(hex.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(hex.slice(2 * i, 2 * i + 2), 16);
  return out;
}

export function bytesToHex(bytes) {
  let s = '';
  for (const b of bytes) s += b.toString(16).padStart(2, '0');
  return s;
}

function toBytes(x, what) {
  if (x instanceof Uint8Array) return x;
  if (typeof x === 'string') return utf8Encoder.encode(x);
  throw new TypeError(`${what}: expected string or Uint8Array`);
}

function concat(parts) {
  let n = 0;
  for (const p of parts) n += p.length;
  const out = new Uint8Array(n);
  let off = 0;
  for (const p of parts) {
    out.set(p, off);
    off += p.length;
  }
  return out;
}

function u16(x) {
  if (!Number.isInteger(x) || x < 0 || x > U16_MAX) throw invalid(`${x} does not fit uint16`);
  return new Uint8Array([x >>> 8, x & 0xff]);
}

function u32(x) {
  if (!Number.isInteger(x) || x < 0 || x > U32_MAX) throw invalid(`${x} does not fit uint32`);
  return new Uint8Array([x >>> 24, (x >>> 16) & 0xff, (x >>> 8) & 0xff, x & 0xff]);
}

function u64(x) {
  const v = BigInt(x);
  if (v < 0n || v >= 1n << 64n) throw invalid(`${x} does not fit uint64`);
  const out = new Uint8Array(8);
  new DataView(out.buffer).setBigUint64(0, v, false);
  return out;
}

/** Byte-wise lexicographic comparison (a proper prefix sorts first). */
export function compareBytes(a, b) {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) if (a[i] !== b[i]) return a[i] - b[i];
  return a.length - b.length;
}

function bytesEqual(a, b) {
  return a.length === b.length && compareBytes(a, b) === 0;
}

// ---------------------------------------------------------------------------
// §3 Canonical tags

/**
 * Normalise tags given as `[name, ...values]` arrays (strings or Uint8Arrays)
 * into `{ name: Uint8Array, values: Uint8Array[] }`.
 */
function normaliseTags(tags) {
  if (!Array.isArray(tags)) throw new TypeError('tags must be an array');
  return tags.map((t, i) => {
    if (!Array.isArray(t) || t.length < 1) throw new TypeError(`tag ${i} must be [name, ...values]`);
    return {
      name: toBytes(t[0], `tag ${i} name`),
      values: t.slice(1).map((v) => toBytes(v, `tag ${i} value`)),
    };
  });
}

/**
 * Compare two normalised tags in canonical order: by name byte-wise, then a tag
 * without values first, then by first value byte-wise. Returns 0 for tags the
 * spec calls duplicates (same name and same first value, or same name and both
 * without values).
 */
function compareTags(a, b) {
  const c = compareBytes(a.name, b.name);
  if (c !== 0) return c;
  const aEmpty = a.values.length === 0;
  const bEmpty = b.values.length === 0;
  if (aEmpty && bEmpty) return 0;
  if (aEmpty) return -1;
  if (bEmpty) return 1;
  return compareBytes(a.values[0], b.values[0]);
}

/**
 * Sort tags into canonical order; throws AxonError 400 on duplicate tags.
 * Returns a new array (the input is not modified).
 */
function canonicalOrder(ntags) {
  const sorted = ntags.slice().sort(compareTags);
  for (let i = 1; i < sorted.length; i++) {
    if (compareTags(sorted[i - 1], sorted[i]) === 0) {
      const name = new TextDecoder().decode(sorted[i].name);
      throw invalid(`duplicate tag "${name}"`);
    }
  }
  return sorted;
}

/** Throws AxonError(400) if two tags are duplicates in the sense of spec §3. */
export function checkDuplicateTags(tags) {
  canonicalOrder(normaliseTags(tags));
}

/** canonical_tags (spec §3) for tags given as `[name, ...values]` arrays in wire order. */
export function canonicalTags(tags) {
  const sorted = canonicalOrder(normaliseTags(tags));
  const parts = [u16(sorted.length)];
  for (const t of sorted) {
    parts.push(u16(t.name.length), t.name, u16(t.values.length));
    for (const v of t.values) parts.push(u32(v.length), v);
  }
  return concat(parts);
}

/** tags_hash = SHA-256(canonical_tags). */
export function tagsHash(tags) {
  return sha256(canonicalTags(tags));
}

/**
 * canonical_payload (spec §3). `event` needs pubkey (32 bytes), created_at
 * (number or bigint), kind, content (Uint8Array) and tags.
 */
export function canonicalPayload(event) {
  const pubkey = event.pubkey;
  if (!(pubkey instanceof Uint8Array) || pubkey.length !== 32) throw invalid('pubkey must be 32 bytes');
  const content = toBytes(event.content, 'content');
  return concat([
    u16(32),
    pubkey,
    u64(event.created_at),
    u16(event.kind),
    u32(content.length),
    content,
    tagsHash(event.tags),
  ]);
}

/** id = SHA-256(canonical_payload). */
export function eventId(event) {
  return sha256(canonicalPayload(event));
}

// ---------------------------------------------------------------------------
// §1 Identity and signatures

/** The Ed25519 public key (32 bytes) of a 32-byte RFC 8032 seed. */
export function publicKeyFromSeed(seed) {
  return ed25519.getPublicKey(seed);
}

/** Deterministic Ed25519 signature (RFC 8032) of `msg` (the 32-byte id). */
export function sign(seed, msg) {
  return ed25519.sign(msg, seed);
}

const Point = ed25519.Point;
const L = Point.Fn.ORDER;

function bytesToNumberLE(bytes) {
  let n = 0n;
  for (let i = bytes.length - 1; i >= 0; i--) n = (n << 8n) | BigInt(bytes[i]);
  return n;
}

/**
 * Ed25519 verification by the signature rule of spec §3 (amended 2026-12-01).
 * With sig = R || S, a signature is valid if and only if:
 *  1. S < ℓ (canonical scalar);
 *  2. A (pubkey) and R are canonical point encodings (y < p; x = 0 with the sign
 *     bit set is non-canonical) — noble's zip215:false decoding;
 *  3. neither A nor R is of small order;
 *  4. the cofactored equation [8]([S]B − R − [k]A) = identity holds, with
 *     k = SHA-512(R || A || msg) mod ℓ over the received bytes.
 * noble's `ed25519.verify(sig, msg, pub, {zip215: false})` checks 1, 2, small-order A
 * and 4; the small-order check on R is added here. Signatures whose R carries a
 * torsion component are valid (the cofactorless RFC 8032 check would reject them).
 */
export function verifySignature(sig, msg, pubkey) {
  try {
    if (!(sig instanceof Uint8Array) || sig.length !== 64) return false;
    if (!(pubkey instanceof Uint8Array) || pubkey.length !== 32) return false;
    if (!(msg instanceof Uint8Array)) return false;
    const s = bytesToNumberLE(sig.subarray(32, 64));
    if (s >= L) return false; // rule 1 (noble checks it too; explicit here)
    const A = Point.fromBytes(pubkey, false); // rule 2: throws on non-canonical / off-curve
    const R = Point.fromBytes(sig.subarray(0, 32), false);
    if (A.isSmallOrder() || R.isSmallOrder()) return false; // rule 3
    return ed25519.verify(sig, msg, pubkey, { zip215: false }) === true; // rule 4
  } catch {
    return false;
  }
}

/** The former name of {@link verifySignature}, kept for existing callers. */
export const verifyStrict = verifySignature;

// ---------------------------------------------------------------------------
// Event creation and MessagePack encoding

/**
 * Build a complete signed event from a seed and fields. `tags` are
 * `[name, ...values]` arrays in wire order; `content` a Uint8Array (or string,
 * taken as UTF-8).
 */
export function createEvent(seed, { created_at, kind, content, tags }) {
  const pubkey = publicKeyFromSeed(seed);
  const ev = { pubkey, created_at, kind, content: toBytes(content, 'content'), tags };
  const id = eventId(ev);
  const sig = sign(seed, id);
  return { id, pubkey, created_at, kind, content: ev.content, sig, tags };
}

const encoderPlain = new Encoder({ useBigInt64: false });
const encoderBig = new Encoder({ useBigInt64: true });

/**
 * Encode an event as the relay writes it (test vector README): a map with the
 * seven str keys in the order id, pubkey, created_at, kind, content, sig,
 * tags; byte fields as bin; integers in shortest form; tags as maps
 * {name: str, values: [str]} in the event's (wire) order.
 */
export function encodeEvent(event) {
  let createdAt = event.created_at;
  if (typeof createdAt === 'bigint' && createdAt >= 0n && createdAt <= BigInt(Number.MAX_SAFE_INTEGER)) {
    createdAt = Number(createdAt);
  }
  if (typeof createdAt === 'number' && !Number.isSafeInteger(createdAt)) {
    throw new TypeError('created_at: a number must be a safe integer (use a bigint beyond 2^53)');
  }
  const tagToMap = (t) => {
    if (!Array.isArray(t) || t.length < 1) throw new TypeError('tag must be [name, ...values]');
    const strs = t.map((x) => (typeof x === 'string' ? x : utf8Decoder.decode(x)));
    return { name: strs[0], values: strs.slice(1) };
  };
  const obj = {
    id: event.id,
    pubkey: event.pubkey,
    created_at: createdAt,
    kind: event.kind,
    content: toBytes(event.content, 'content'),
    sig: event.sig,
    tags: event.tags.map(tagToMap),
  };
  for (const k of ['id', 'pubkey', 'content', 'sig']) {
    if (!(obj[k] instanceof Uint8Array)) throw new TypeError(`${k} must be a Uint8Array`);
  }
  // With useBigInt64 the encoder writes numbers >= 2^32 as float64, so use it
  // only when created_at really is a bigint (>= 2^53, where uint64 is shortest).
  const enc = typeof createdAt === 'bigint' ? encoderBig : encoderPlain;
  return enc.encode(obj);
}

// ---------------------------------------------------------------------------
// Strict MessagePack decoding
//
// @msgpack/msgpack's decoder cannot be used for validation on its own: it
// turns float 1.0 and int 1 into the same JS number, lets a duplicate map key
// silently overwrite the first, and decodes invalid UTF-8 in str with
// replacement characters. So the validator walks the bytes itself and keeps
// the exact MessagePack family of every value.

const MAX_DEPTH = 32;

class Reader {
  constructor(bytes) {
    this.b = bytes;
    this.dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    this.pos = 0;
  }
  need(n) {
    if (this.pos + n > this.b.length) throw invalid('msgpack: unexpected end of input');
  }
  u8() {
    this.need(1);
    return this.b[this.pos++];
  }
  u16() {
    this.need(2);
    const v = this.dv.getUint16(this.pos);
    this.pos += 2;
    return v;
  }
  u32() {
    this.need(4);
    const v = this.dv.getUint32(this.pos);
    this.pos += 4;
    return v;
  }
  u64() {
    this.need(8);
    const v = this.dv.getBigUint64(this.pos);
    this.pos += 8;
    return v;
  }
  i8() {
    this.need(1);
    return this.dv.getInt8(this.pos++);
  }
  i16() {
    this.need(2);
    const v = this.dv.getInt16(this.pos);
    this.pos += 2;
    return v;
  }
  i32() {
    this.need(4);
    const v = this.dv.getInt32(this.pos);
    this.pos += 4;
    return v;
  }
  i64() {
    this.need(8);
    const v = this.dv.getBigInt64(this.pos);
    this.pos += 8;
    return v;
  }
  bytes(n) {
    this.need(n);
    const v = this.b.subarray(this.pos, this.pos + n);
    this.pos += n;
    return v;
  }
  remaining() {
    return this.b.length - this.pos;
  }
}

// A decoded value: { t: 'nil'|'bool'|'int'|'float'|'str'|'bin'|'array'|'map'|'ext', ... }
//   int:   v (bigint)
//   str:   bytes (raw UTF-8 bytes, not yet validated)
//   bin:   bytes
//   array: items
//   map:   entries ([key, value] pairs, in wire order)
function readValue(r, depth) {
  if (depth > MAX_DEPTH) throw invalid('msgpack: nesting too deep');
  const tag = r.u8();
  if (tag <= 0x7f) return { t: 'int', v: BigInt(tag) };
  if (tag >= 0xe0) return { t: 'int', v: BigInt(tag - 0x100) };
  if (tag >= 0x80 && tag <= 0x8f) return readMap(r, tag & 0x0f, depth);
  if (tag >= 0x90 && tag <= 0x9f) return readArray(r, tag & 0x0f, depth);
  if (tag >= 0xa0 && tag <= 0xbf) return { t: 'str', bytes: r.bytes(tag & 0x1f) };
  switch (tag) {
    case 0xc0:
      return { t: 'nil' };
    case 0xc2:
      return { t: 'bool', v: false };
    case 0xc3:
      return { t: 'bool', v: true };
    case 0xc4:
      return { t: 'bin', bytes: r.bytes(r.u8()) };
    case 0xc5:
      return { t: 'bin', bytes: r.bytes(r.u16()) };
    case 0xc6:
      return { t: 'bin', bytes: r.bytes(r.u32()) };
    case 0xc7: {
      const n = r.u8();
      r.i8();
      return { t: 'ext', bytes: r.bytes(n) };
    }
    case 0xc8: {
      const n = r.u16();
      r.i8();
      return { t: 'ext', bytes: r.bytes(n) };
    }
    case 0xc9: {
      const n = r.u32();
      r.i8();
      return { t: 'ext', bytes: r.bytes(n) };
    }
    case 0xca:
      r.bytes(4);
      return { t: 'float' };
    case 0xcb:
      r.bytes(8);
      return { t: 'float' };
    case 0xcc:
      return { t: 'int', v: BigInt(r.u8()) };
    case 0xcd:
      return { t: 'int', v: BigInt(r.u16()) };
    case 0xce:
      return { t: 'int', v: BigInt(r.u32()) };
    case 0xcf:
      return { t: 'int', v: r.u64() };
    case 0xd0:
      return { t: 'int', v: BigInt(r.i8()) };
    case 0xd1:
      return { t: 'int', v: BigInt(r.i16()) };
    case 0xd2:
      return { t: 'int', v: BigInt(r.i32()) };
    case 0xd3:
      return { t: 'int', v: r.i64() };
    case 0xd4:
    case 0xd5:
    case 0xd6:
    case 0xd7:
    case 0xd8: {
      r.i8();
      return { t: 'ext', bytes: r.bytes(1 << (tag - 0xd4)) };
    }
    case 0xd9:
      return { t: 'str', bytes: r.bytes(r.u8()) };
    case 0xda:
      return { t: 'str', bytes: r.bytes(r.u16()) };
    case 0xdb:
      return { t: 'str', bytes: r.bytes(r.u32()) };
    case 0xdc:
      return readArray(r, r.u16(), depth);
    case 0xdd:
      return readArray(r, r.u32(), depth);
    case 0xde:
      return readMap(r, r.u16(), depth);
    case 0xdf:
      return readMap(r, r.u32(), depth);
    default: // 0xc1 is never used
      throw invalid(`msgpack: reserved byte 0x${tag.toString(16)}`);
  }
}

function readArray(r, n, depth) {
  // Every element takes at least one byte: refuse absurd counts before looping.
  if (n > r.remaining()) throw invalid('msgpack: array longer than input');
  const items = [];
  for (let i = 0; i < n; i++) items.push(readValue(r, depth + 1));
  return { t: 'array', items };
}

function readMap(r, n, depth) {
  if (2 * n > r.remaining()) throw invalid('msgpack: map longer than input');
  const entries = [];
  for (let i = 0; i < n; i++) {
    const k = readValue(r, depth + 1);
    const v = readValue(r, depth + 1);
    entries.push([k, v]);
  }
  return { t: 'map', entries };
}

/** Decode exactly one MessagePack value occupying all of `bytes`. */
export function decodeStrict(bytes) {
  if (!(bytes instanceof Uint8Array)) throw invalid('input is not bytes');
  const r = new Reader(bytes);
  const v = readValue(r, 0);
  if (r.remaining() !== 0) throw invalid('msgpack: trailing bytes after the value');
  return v;
}

function utf8(bytes, what) {
  try {
    return utf8Decoder.decode(bytes);
  } catch {
    throw invalid(`${what}: str is not valid UTF-8`);
  }
}

/**
 * Turn a decoded map into a JS Map of key string → value, requiring str keys,
 * no duplicate keys and exactly the keys `allowed`.
 */
function strictMap(node, allowed, what) {
  if (node.t !== 'map') throw invalid(`${what} must be a map`);
  const out = new Map();
  for (const [k, v] of node.entries) {
    if (k.t !== 'str') throw invalid(`${what}: map keys must be str`);
    const key = utf8(k.bytes, `${what} key`);
    if (!allowed.includes(key)) throw invalid(`${what}: unknown key "${key}"`);
    if (out.has(key)) throw invalid(`${what}: duplicate key "${key}"`);
    out.set(key, v);
  }
  for (const key of allowed) if (!out.has(key)) throw invalid(`${what}: missing key "${key}"`);
  return out;
}

const EVENT_KEYS = ['id', 'pubkey', 'created_at', 'kind', 'content', 'sig', 'tags'];
const TAG_KEYS = ['name', 'values'];

function binField(m, key, len) {
  const v = m.get(key);
  if (v.t !== 'bin') throw invalid(`${key} must be bin`);
  if (len !== undefined && v.bytes.length !== len) throw invalid(`${key} must be ${len} bytes`);
  return v.bytes;
}

function intField(m, key) {
  const v = m.get(key);
  if (v.t !== 'int') throw invalid(`${key} must be an integer`);
  return v.v;
}

/**
 * Step 1 (decode): the Event map's shape and wire types. Fixed-length fields
 * (id, pubkey, sig) are checked here; configurable size limits come later.
 * Returns a raw event whose tags are { name: Uint8Array, values: Uint8Array[] }.
 */
function decodeEventShape(bytes) {
  const root = decodeStrict(bytes);
  const m = strictMap(root, EVENT_KEYS, 'event');
  const id = binField(m, 'id', 32);
  const pubkey = binField(m, 'pubkey', 32);
  const createdAt = intField(m, 'created_at');
  const kind = intField(m, 'kind');
  const content = binField(m, 'content');
  const sig = binField(m, 'sig', 64);
  const tagsNode = m.get('tags');
  if (tagsNode.t !== 'array') throw invalid('tags must be an array');
  const tags = tagsNode.items.map((tn, i) => {
    const tm = strictMap(tn, TAG_KEYS, `tag ${i}`);
    const nameNode = tm.get('name');
    if (nameNode.t !== 'str') throw invalid(`tag ${i}: name must be str`);
    utf8(nameNode.bytes, `tag ${i} name`);
    const valuesNode = tm.get('values');
    if (valuesNode.t !== 'array') throw invalid(`tag ${i}: values must be an array`);
    const values = valuesNode.items.map((vn, j) => {
      if (vn.t !== 'str') throw invalid(`tag ${i}: value ${j} must be str`);
      utf8(vn.bytes, `tag ${i} value ${j}`);
      return vn.bytes;
    });
    return { name: nameNode.bytes, values };
  });
  return { id, pubkey, createdAt, kind, content, sig, tags };
}

/** Step 2: sizes and field rules, in field order; 413 only for content. */
function checkFieldRules(raw, limits) {
  if (raw.createdAt < 0n || raw.createdAt >= TWO_63) throw invalid('created_at must be >= 0 and < 2^63');
  if (raw.kind < 0n || raw.kind > 65535n) throw invalid('kind must be 0..=65535');
  if (raw.content.length > limits.maxContentBytes) {
    throw new AxonError(413, `too-large: content is ${raw.content.length} bytes (limit ${limits.maxContentBytes})`);
  }
  if (raw.tags.length > limits.maxTags) throw invalid(`more than ${limits.maxTags} tags`);
  raw.tags.forEach((t, i) => {
    if (t.name.length < 1 || t.name.length > limits.maxTagNameBytes) {
      throw invalid(`tag ${i}: name must be 1..=${limits.maxTagNameBytes} bytes`);
    }
    if (t.values.length > limits.maxTagValues) throw invalid(`tag ${i}: more than ${limits.maxTagValues} values`);
    t.values.forEach((v, j) => {
      if (v.length > limits.maxTagValueBytes) {
        throw invalid(`tag ${i}: value ${j} longer than ${limits.maxTagValueBytes} bytes`);
      }
    });
  });
}

/**
 * Run spec §3 validation in order; throws AxonError with the code.
 * Returns the event with tags as `[name, ...values]` string arrays (wire
 * order) and created_at as a number when it is a safe integer, else a bigint.
 */
export function validateEventOrThrow(bytes, limits = DEFAULT_LIMITS) {
  // 1. decode (400)
  const raw = decodeEventShape(bytes);
  // 2. sizes and field rules (400 / 413)
  checkFieldRules(raw, limits);
  // 3. duplicate tags (400)
  canonicalOrder(raw.tags);
  // 4. recompute id and compare (400)
  const createdAt = raw.createdAt <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(raw.createdAt) : raw.createdAt;
  const tags = raw.tags.map((t) => [t.name, ...t.values].map((b) => utf8Decoder.decode(b)));
  const event = {
    id: raw.id,
    pubkey: raw.pubkey,
    created_at: createdAt,
    kind: Number(raw.kind),
    content: raw.content,
    sig: raw.sig,
    tags,
  };
  const expected = sha256(
    concat([
      u16(32),
      raw.pubkey,
      u64(raw.createdAt),
      u16(event.kind),
      u32(raw.content.length),
      raw.content,
      tagsHash(raw.tags.map((t) => [t.name, ...t.values])),
    ]),
  );
  if (!bytesEqual(expected, raw.id)) throw invalid('id does not match the canonical payload');
  // 5. signature over the id by the rule of §3 (400)
  if (!verifySignature(raw.sig, raw.id, raw.pubkey)) throw invalid('bad signature');
  return event;
}

/**
 * Validate MessagePack bytes of an Event. Never throws for any input bytes:
 * returns `{ ok: true, event }` or `{ ok: false, code, message }`.
 */
export function validateEvent(bytes, limits = DEFAULT_LIMITS) {
  try {
    return { ok: true, event: validateEventOrThrow(bytes, limits) };
  } catch (e) {
    if (e instanceof AxonError) return { ok: false, code: e.code, message: e.message };
    throw e; // a bug in this library, not a property of the input
  }
}
