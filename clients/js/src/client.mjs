// axon-client: the Axon v1 client for Node (>= 20) and browsers.
//
// Keys, events, the WebSocket connection with CHALLENGE/AUTH, pipelined publishing,
// subscriptions with gapless resume, queries, direct messages (§12) and admin events
// (§10). The encoding and validation code is the independent implementation in axon.mjs.

import { ed25519, x25519 } from '@noble/curves/ed25519.js';
import { sha256 } from '@noble/hashes/sha2.js';
import { hkdf } from '@noble/hashes/hkdf.js';
import { chacha20poly1305 } from '@noble/ciphers/chacha.js';
import { Encoder, decode } from '@msgpack/msgpack';

import { bytesToHex, checkDuplicateTags, eventId, hexToBytes, verifySignature } from './axon.mjs';

// ---------------------------------------------------------------------------
// Errors

const ERROR_NAMES = {
  400: 'BadRequestError',
  401: 'AuthError',
  403: 'ForbiddenError',
  409: 'DuplicateError',
  410: 'ExpiredError',
  412: 'LeaseLostError',
  413: 'TooLargeError',
  429: 'RateLimitedError',
  500: 'StorageError',
  503: 'UnavailableError',
};

/**
 * An error answered by the relay (`code` is the spec's code), or a connection failure
 * (`code` 0: no answer, the connection closed or could not be opened).
 */
export class AxonError extends Error {
  constructor(code, message, details = {}) {
    super(message);
    this.name = ERROR_NAMES[code] ?? 'AxonError';
    this.code = code;
    /** Milliseconds to wait before retrying (spec §15), when the relay said so. */
    this.retryAfterMs = details.retryAfterMs ?? null;
    this.id = details.id ?? null;
    this.subId = details.subId ?? null;
    this.seq = details.seq ?? null;
  }

  /** The error subclass for a code. */
  static fromCode(code, message, details) {
    const Class = ERROR_CLASSES[code] ?? AxonError;
    return new Class(code, message, details);
  }
}

export class BadRequestError extends AxonError {}
export class AuthError extends AxonError {}
export class ForbiddenError extends AxonError {}
export class DuplicateError extends AxonError {}
export class ExpiredError extends AxonError {}
export class LeaseLostError extends AxonError {}
export class TooLargeError extends AxonError {}
export class RateLimitedError extends AxonError {}
export class StorageError extends AxonError {}
export class UnavailableError extends AxonError {}
/** {@link Relay#request} got no result in time; code 0. */
export class RequestTimeoutError extends AxonError {
  constructor(message, details) {
    super(0, message, details);
    this.name = 'RequestTimeoutError';
  }
}
/** The connection closed (or never opened) before the relay answered. */
export class ConnectionClosedError extends AxonError {
  constructor(message, details) {
    super(0, message, details);
    this.name = 'ConnectionClosedError';
  }
}

const ERROR_CLASSES = {
  400: BadRequestError,
  401: AuthError,
  403: ForbiddenError,
  409: DuplicateError,
  410: ExpiredError,
  412: LeaseLostError,
  413: TooLargeError,
  429: RateLimitedError,
  500: StorageError,
  503: UnavailableError,
};

// ---------------------------------------------------------------------------
// Byte helpers

const textEncoder = new TextEncoder();
const textDecoder = new TextDecoder();
const HEX64 = /^[0-9a-f]{64}$/;

function concat(...parts) {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let offset = 0;
  for (const part of parts) {
    out.set(part, offset);
    offset += part.length;
  }
  return out;
}

function randomBytes(n) {
  const out = new Uint8Array(n);
  globalThis.crypto.getRandomValues(out);
  return out;
}

/** 32 bytes from a Uint8Array or a 64-character hex string; TypeError otherwise. */
function bytes32(value, what) {
  if (value instanceof Uint8Array) {
    if (value.length !== 32) throw new TypeError(`${what} must be 32 bytes, got ${value.length}`);
    return value;
  }
  if (typeof value === 'string') {
    if (!/^[0-9a-fA-F]{64}$/.test(value)) throw new TypeError(`${what} must be 64 hex characters`);
    return hexToBytes(value);
  }
  throw new TypeError(`${what} must be a Uint8Array or a hex string`);
}

export { bytesToHex, hexToBytes };

// ---------------------------------------------------------------------------
// Keys

/** An Ed25519 key pair. The seed (secret key) is the 32 bytes of an `axon keygen` file. */
export class Key {
  #seed;

  constructor(seed) {
    this.#seed = bytes32(seed, 'secret key').slice();
    /** The public key (32 bytes): the identity. */
    this.publicKey = ed25519.getPublicKey(this.#seed);
    Object.freeze(this);
  }

  /** A new random key. */
  static generate() {
    return new Key(ed25519.utils.randomSecretKey());
  }

  /** A key from its 32-byte seed (Uint8Array or 64 hex characters). */
  static fromBytes(seed) {
    return new Key(seed);
  }

  /** A key from 64 hex characters (surrounding whitespace ignored). */
  static fromHex(hex) {
    if (typeof hex !== 'string') throw new TypeError('key hex must be a string');
    return new Key(hex.trim());
  }

  /** A key from the text of an `axon keygen` file: 64 hex characters and a newline. */
  static fromKeyFile(text) {
    if (text instanceof Uint8Array) text = textDecoder.decode(text);
    if (typeof text !== 'string' || !/^[0-9a-fA-F]{64}$/.test(text.trim())) {
      throw new TypeError('a key file must hold 64 hex characters');
    }
    return new Key(text.trim());
  }

  /** Node only: reads an `axon keygen` file. */
  static async load(path) {
    const fs = await import('node:fs/promises');
    let text;
    try {
      text = await fs.readFile(path, 'utf8');
    } catch (error) {
      throw new Error(`cannot read key file ${path}: ${error.message}`);
    }
    try {
      return Key.fromKeyFile(text);
    } catch {
      throw new TypeError(`key file ${path} must hold 64 hex characters`);
    }
  }

  /** Node only: writes the key file (mode 0600); refuses to overwrite an existing file. */
  async save(path) {
    const fs = await import('node:fs/promises');
    await fs.writeFile(path, this.toKeyFile(), { mode: 0o600, flag: 'wx' });
  }

  /** The text of an `axon keygen` file. */
  toKeyFile() {
    return `${bytesToHex(this.#seed)}\n`;
  }

  /** The 32-byte seed (a copy). Keep it secret. */
  secretBytes() {
    return this.#seed.slice();
  }

  get publicHex() {
    return bytesToHex(this.publicKey);
  }

  /** Ed25519 signature of `message`. */
  sign(message) {
    return ed25519.sign(message, this.#seed);
  }

  /** The X25519 secret of this key (§12). */
  x25519Secret() {
    return ed25519.utils.toMontgomerySecret(this.#seed);
  }

  toString() {
    return `Key(${this.publicHex})`;
  }
}

// ---------------------------------------------------------------------------
// Events

/** A signed event. Tags are `[name, ...values]` arrays of strings. */
export class Event {
  constructor({ id, pubkey, created_at, kind, content, sig, tags, seq = null }) {
    this.id = id;
    this.pubkey = pubkey;
    this.created_at = created_at;
    this.kind = kind;
    this.content = content;
    this.sig = sig;
    this.tags = tags;
    /** The relay's seq (null when unknown; 0 for ephemeral events). */
    this.seq = seq;
  }

  get idHex() {
    return bytesToHex(this.id);
  }
  get pubkeyHex() {
    return bytesToHex(this.pubkey);
  }
  get sigHex() {
    return bytesToHex(this.sig);
  }
  /** The content decoded as UTF-8 (invalid bytes replaced). */
  get text() {
    return textDecoder.decode(this.content);
  }

  /** The first value of the first tag named `name`, or undefined. */
  tag(name) {
    return this.tags.find((t) => t[0] === name)?.[1];
  }

  /** True when the id matches the fields and the signature is valid by the §3 rule. */
  verify() {
    try {
      const id = eventId(this);
      return id.every((b, i) => b === this.id[i]) && verifySignature(this.sig, this.id, this.pubkey);
    } catch {
      return false;
    }
  }

  /** The wire map (spec §2). */
  toWire() {
    return {
      id: this.id,
      pubkey: this.pubkey,
      created_at: this.created_at,
      kind: this.kind,
      content: this.content,
      sig: this.sig,
      tags: this.tags.map((t) => ({ name: t[0], values: t.slice(1) })),
    };
  }

  /** A plain JSON-friendly object (hex for bytes, content as UTF-8 text and hex). */
  toJSON() {
    return {
      id: this.idHex,
      pubkey: this.pubkeyHex,
      created_at: this.created_at,
      kind: this.kind,
      tags: this.tags,
      content: this.text,
      content_hex: bytesToHex(this.content),
      sig: this.sigHex,
      seq: this.seq,
    };
  }

  /** An event from its wire map (as decoded from a frame). */
  static fromWire(map, seq = null) {
    if (!map || typeof map !== 'object') throw new AxonError(400, 'invalid: event is not a map');
    const tags = (map.tags ?? []).map((t) => [t.name, ...(t.values ?? [])]);
    const createdAt = typeof map.created_at === 'bigint' ? Number(map.created_at) : map.created_at;
    return new Event({ ...map, created_at: createdAt, tags, seq });
  }
}

const DEFAULT_LIMITS = { maxContentBytes: 65536, maxTags: 256, maxTagValues: 16, maxTagValueBytes: 1024 };

function normaliseTags(tags) {
  if (tags === undefined || tags === null) return [];
  if (!Array.isArray(tags)) throw new TypeError('tags must be an array of [name, ...values] arrays');
  return tags.map((tag, i) => {
    if (!Array.isArray(tag) || tag.length < 1) throw new TypeError(`tag ${i} must be a [name, ...values] array`);
    for (const part of tag) {
      if (typeof part !== 'string') throw new TypeError(`tag ${i}: name and values must be strings`);
    }
    return tag.slice();
  });
}

/**
 * Builds and signs an event. `content` is a string (UTF-8) or Uint8Array; `expiresIn`
 * (seconds) adds an `expires_at` tag. Checks the relay's default limits (or `limits`)
 * and throws TypeError/AxonError(400/413) before anything is sent.
 */
export function signEvent(key, { kind, content = new Uint8Array(), tags, createdAt, expiresIn } = {}, limits = DEFAULT_LIMITS) {
  if (!(key instanceof Key)) throw new TypeError('key must be an axon Key');
  if (!Number.isInteger(kind) || kind < 0 || kind > 65535) throw new TypeError(`kind must be an integer 0..=65535, got ${kind}`);
  let body;
  if (typeof content === 'string') body = textEncoder.encode(content);
  else if (content instanceof Uint8Array) body = content;
  else throw new TypeError('content must be a string or a Uint8Array');
  const tagList = normaliseTags(tags);
  if (expiresIn !== undefined && expiresIn !== null) {
    if (!Number.isFinite(expiresIn) || expiresIn <= 0) throw new TypeError('expiresIn must be a positive number of seconds');
    tagList.push(['expires_at', String(Math.floor(Date.now() / 1000) + Math.ceil(expiresIn))]);
  }
  const created = createdAt ?? Math.floor(Date.now() / 1000);
  if (!Number.isSafeInteger(created) || created < 0) throw new TypeError('createdAt must be a non-negative integer (unix seconds)');
  if (body.length > limits.maxContentBytes) {
    throw new TooLargeError(413, `too-large: content is ${body.length} bytes (limit ${limits.maxContentBytes})`);
  }
  if (tagList.length > limits.maxTags) throw new BadRequestError(400, `invalid: more than ${limits.maxTags} tags`);
  for (const [i, tag] of tagList.entries()) {
    const nameBytes = textEncoder.encode(tag[0]).length;
    if (nameBytes < 1 || nameBytes > 64) throw new BadRequestError(400, `invalid: tag ${i}: name must be 1..=64 bytes`);
    if (tag.length - 1 > limits.maxTagValues) throw new BadRequestError(400, `invalid: tag ${i}: more than ${limits.maxTagValues} values`);
    for (const value of tag.slice(1)) {
      if (textEncoder.encode(value).length > limits.maxTagValueBytes) {
        throw new BadRequestError(400, `invalid: tag ${i}: a value is longer than ${limits.maxTagValueBytes} bytes`);
      }
    }
  }
  try {
    checkDuplicateTags(tagList);
  } catch (error) {
    throw new BadRequestError(400, error.message);
  }
  const unsigned = { pubkey: key.publicKey, created_at: created, kind, content: body, tags: tagList };
  const id = eventId(unsigned);
  return new Event({ ...unsigned, id, sig: key.sign(id) });
}

// ---------------------------------------------------------------------------
// Direct messages (§12)

const DM_INFO = textEncoder.encode('axon-dm-v1');
export const KIND_DM = 2000;
export const KIND_ALLOW = 9000;
export const KIND_REVOKE = 9001;

function dmKey(key, peer) {
  const peerPoint = ed25519.Point.fromBytes(peer); // throws on an invalid key
  const shared = x25519.getSharedSecret(key.x25519Secret(), ed25519.utils.toMontgomery(peerPoint.toBytes()));
  if (shared.every((b) => b === 0)) throw new Error('key agreement failed: small-order peer key');
  return hkdf(sha256, shared, new Uint8Array(), DM_INFO, 32);
}

/** Seals `plaintext` from `key` to `recipient` (hex or bytes): the DM event's content. */
export function sealDm(key, recipient, plaintext) {
  const to = bytes32(recipient, 'recipient');
  const body = typeof plaintext === 'string' ? textEncoder.encode(plaintext) : plaintext;
  if (!(body instanceof Uint8Array)) throw new TypeError('plaintext must be a string or a Uint8Array');
  const nonce = randomBytes(12);
  const aad = concat(key.publicKey, to);
  return concat(nonce, chacha20poly1305(dmKey(key, to), nonce, aad).encrypt(body));
}

/**
 * Opens a DM event (sent by or to `key`); returns the plaintext bytes. Throws when the
 * event is not a DM to or from this key or does not decrypt.
 */
export function openDm(key, event) {
  if (!(key instanceof Key)) throw new TypeError('key must be an axon Key');
  const recipientHex = event.tags.find((t) => t[0] === 'p')?.[1];
  if (!recipientHex || !HEX64.test(recipientHex)) throw new Error('not a DM: no p tag naming the recipient');
  const recipient = hexToBytes(recipientHex);
  const sender = event.pubkey;
  const own = key.publicKey;
  const isSender = own.every((b, i) => b === sender[i]);
  const peer = isSender ? recipient : sender;
  if (event.content.length < 28) throw new Error('DM content too short to be a sealed message');
  const nonce = event.content.subarray(0, 12);
  try {
    return chacha20poly1305(dmKey(key, peer), nonce, concat(sender, recipient)).decrypt(event.content.subarray(12));
  } catch {
    throw new Error('DM decryption failed: wrong key, wrong sender/recipient, or tampered bytes');
  }
}

// ---------------------------------------------------------------------------
// Filters

const FILTER_KEYS = new Set(['ids', 'authors', 'kinds', 'since', 'until', 'tags', 'limit']);

function prefixBytes(value, what) {
  if (value instanceof Uint8Array) {
    if (value.length < 1 || value.length > 32) throw new TypeError(`${what}: a prefix must be 1..=32 bytes`);
    return value;
  }
  if (typeof value !== 'string' || !/^([0-9a-fA-F]{2}){1,32}$/.test(value)) {
    throw new TypeError(`${what}: "${value}" is not a hex prefix (an even number of 2..64 hex characters)`);
  }
  return hexToBytes(value);
}

function nonNegativeInt(value, what) {
  if (!Number.isSafeInteger(value) || value < 0) throw new TypeError(`${what} must be a non-negative integer, got ${value}`);
  return value;
}

/**
 * A filter as the wire wants it. Accepts `ids`/`authors` as hex prefixes or bytes, and
 * `tags` as `{name: [values]}` or `[{name, values}]`. Unknown keys are a TypeError.
 */
export function encodeFilter(filter) {
  if (!filter || typeof filter !== 'object' || Array.isArray(filter)) throw new TypeError('a filter must be an object');
  const out = {};
  for (const [key, value] of Object.entries(filter)) {
    if (value === undefined) continue;
    if (!FILTER_KEYS.has(key)) throw new TypeError(`unknown filter key "${key}" (allowed: ${[...FILTER_KEYS].join(', ')})`);
    switch (key) {
      case 'ids':
      case 'authors':
        if (!Array.isArray(value)) throw new TypeError(`${key} must be an array`);
        out[key] = value.map((v) => prefixBytes(v, key));
        break;
      case 'kinds':
        if (!Array.isArray(value)) throw new TypeError('kinds must be an array');
        out.kinds = value.map((k) => {
          if (!Number.isInteger(k) || k < 0 || k > 65535) throw new TypeError(`kinds: ${k} is not 0..=65535`);
          return k;
        });
        break;
      case 'since':
      case 'until':
      case 'limit':
        out[key] = nonNegativeInt(value, key);
        break;
      case 'tags': {
        const entries = Array.isArray(value)
          ? value.map((t) => {
              if (!t || typeof t !== 'object') throw new TypeError('tags: entries must be {name, values}');
              return [t.name, t.values];
            })
          : Object.entries(value);
        out.tags = entries.map(([name, values]) => {
          if (typeof name !== 'string' || name.length === 0) throw new TypeError('tags: a name must be a non-empty string');
          if (typeof values === 'string') values = [values];
          if (!Array.isArray(values) || values.length === 0 || values.some((v) => typeof v !== 'string')) {
            throw new TypeError(`tags: "${name}" needs a non-empty array of string values`);
          }
          return { name, values };
        });
        break;
      }
    }
  }
  return out;
}

function encodeFilters(filters) {
  if (!Array.isArray(filters)) filters = [filters];
  if (filters.length === 0) throw new TypeError('at least one filter is needed ({} matches everything)');
  return filters.map(encodeFilter);
}

// ---------------------------------------------------------------------------
// Frames

const FRAME = { AUTH: 1, SUBSCRIBE: 2, UNSUBSCRIBE: 3, PUBLISH: 4, ACK: 5, NACK: 6, EXTEND: 7, CHALLENGE: 10, EVENT: 11, EOSE: 12, OK: 13, ERROR: 14 };
const encoder = new Encoder({ ignoreUndefined: true });

/** The marker a subscription yields once, between stored and live events. */
export const END_OF_STORED = Symbol('END_OF_STORED');

function errorFromPayload(p) {
  return AxonError.fromCode(p.code, p.message ?? '', {
    retryAfterMs: p.retry_after_ms ?? null,
    id: p.id ?? null,
    subId: p.sub_id ?? null,
    seq: p.seq ?? null,
  });
}

async function webSocketClass() {
  if (typeof globalThis.WebSocket === 'function') return globalThis.WebSocket;
  const module = await import('ws');
  return module.WebSocket ?? module.default;
}

/** The info document URL for a relay WebSocket URL (ws → http, wss → https). */
export function infoUrl(url) {
  const u = new URL(url);
  u.protocol = u.protocol === 'wss:' ? 'https:' : 'http:';
  u.pathname = u.pathname.replace(/\/?$/, '/') === '/' ? '/info' : u.pathname;
  return u.toString();
}

/** Fetches the relay's info document (spec §11). */
export async function fetchInfo(url) {
  const response = await fetch(infoUrl(url), { headers: { accept: 'application/json' } });
  if (!response.ok) throw new ConnectionClosedError(`info document: HTTP ${response.status}`);
  return response.json();
}

// ---------------------------------------------------------------------------
// One WebSocket connection, authenticated

class Connection {
  constructor(ws, handlers) {
    this.ws = ws;
    this.handlers = handlers;
    this.closed = false;
    this.closeError = null;
    this.lastError = null;
    this.pending = new Map(); // id hex -> [{resolve, reject}, ...] (oldest first)
    this.subscriptions = new Map(); // sub_id -> handler
    this.pingTimer = null;
  }

  static open(WebSocketImpl, url, key, relayUrl, { timeoutMs, pingIntervalMs }) {
    return new Promise((resolve, reject) => {
      let ws;
      try {
        ws = new WebSocketImpl(url, 'axon.v1');
      } catch (error) {
        reject(new ConnectionClosedError(`cannot open ${url}: ${error.message}`));
        return;
      }
      ws.binaryType = 'arraybuffer';
      const connection = new Connection(ws);
      let settled = false;
      const timer = setTimeout(() => fail(new ConnectionClosedError(`no AUTH answer from ${url} within ${timeoutMs} ms`)), timeoutMs);
      const fail = (error) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        try {
          ws.close();
        } catch {
          /* already closed */
        }
        reject(error);
      };
      ws.onerror = () => fail(new ConnectionClosedError(`cannot connect to ${url}`));
      ws.onclose = (event) => fail(connection.lastError ?? new ConnectionClosedError(`connection to ${url} closed (${event.code}) during AUTH`));
      ws.onmessage = (message) => {
        let frame;
        try {
          frame = decode(new Uint8Array(message.data));
        } catch {
          return fail(new ConnectionClosedError('the relay sent a frame that does not decode'));
        }
        const [type, payload] = frame;
        if (type === FRAME.CHALLENGE) {
          const digest = sha256(concat(payload.nonce, textEncoder.encode(relayUrl)));
          ws.send(encoder.encode([FRAME.AUTH, { pubkey: key.publicKey, sig: key.sign(digest) }]));
        } else if (type === FRAME.OK) {
          settled = true;
          clearTimeout(timer);
          connection.attach(pingIntervalMs);
          resolve(connection);
        } else if (type === FRAME.ERROR) {
          connection.lastError = errorFromPayload(payload);
          fail(connection.lastError);
        }
      };
    });
  }

  attach(pingIntervalMs) {
    const ws = this.ws;
    ws.onmessage = (message) => this.onFrame(message.data);
    ws.onerror = () => {};
    ws.onclose = (event) => this.onClose(event.code, event.reason);
    // Keep-alive: the relay pings every 30 s and the WebSocket answers. On Node (the `ws`
    // package) we ping too, and close a connection that stops answering.
    if (typeof ws.ping === 'function' && pingIntervalMs > 0) {
      let awaiting = 0;
      ws.on?.('pong', () => {
        awaiting = 0;
      });
      this.pingTimer = setInterval(() => {
        if (awaiting >= 2) {
          ws.terminate?.();
          return;
        }
        awaiting += 1;
        try {
          ws.ping();
        } catch {
          /* closing */
        }
      }, pingIntervalMs);
      this.pingTimer.unref?.();
    }
  }

  /** A promise for the next OK/ERROR naming `key` (an id in hex); register before sending. */
  expect(key) {
    return new Promise((resolve, reject) => {
      const waiters = this.pending.get(key);
      if (waiters) waiters.push({ resolve, reject });
      else this.pending.set(key, [{ resolve, reject }]);
    });
  }

  takeWaiter(key) {
    const waiters = this.pending.get(key);
    if (!waiters) return null;
    const waiter = waiters.shift();
    if (waiters.length === 0) this.pending.delete(key);
    return waiter;
  }

  /** Sends a frame and resolves its OK (rejects with its ERROR) naming `key`. */
  request(type, payload, key) {
    if (this.closed) return Promise.reject(this.closeError ?? new ConnectionClosedError('the connection is closed'));
    const reply = this.expect(key);
    try {
      this.send(type, payload);
    } catch (error) {
      reply.catch(() => {}); // a closing socket: onClose rejects the waiter
      return Promise.reject(error);
    }
    return reply;
  }

  send(type, payload) {
    if (this.closed || this.ws.readyState !== 1) throw this.closeError ?? new ConnectionClosedError('the connection is closed');
    this.ws.send(encoder.encode([type, payload]));
  }

  onFrame(data) {
    let frame;
    try {
      frame = decode(new Uint8Array(data));
    } catch {
      return;
    }
    if (!Array.isArray(frame)) return;
    const [type, p] = frame;
    switch (type) {
      case FRAME.EVENT: {
        const handler = this.subscriptions.get(p.sub_id);
        if (handler) handler.onEvent(Event.fromWire(p.event, p.seq ?? null), p);
        break;
      }
      case FRAME.EOSE:
        this.subscriptions.get(p.sub_id)?.onEose();
        break;
      case FRAME.OK: {
        const key = p.id ? bytesToHex(p.id) : '';
        const waiter = this.takeWaiter(key);
        if (waiter) {
          const ok = { id: p.id, seq: p.seq ?? 0, duplicate: false };
          if (p.until_ms !== undefined) ok.untilMs = Number(p.until_ms);
          waiter.resolve(ok);
        }
        break;
      }
      case FRAME.ERROR: {
        const error = errorFromPayload(p);
        if (p.id) {
          const key = bytesToHex(p.id);
          const waiter = this.takeWaiter(key);
          if (waiter) {
            waiter.reject(error);
            break;
          }
          // A job refusal (§14) names its subscription but does not end it.
          if (p.code === 412 || p.code === 410) {
            this.handlers?.onError?.(error);
            break;
          }
        }
        if (p.sub_id !== undefined && this.subscriptions.has(p.sub_id)) {
          const handler = this.subscriptions.get(p.sub_id);
          this.subscriptions.delete(p.sub_id);
          handler.onError(error);
          break;
        }
        // A connection-level error (e.g. 403 on revocation): remembered for the close.
        this.lastError = error;
        this.handlers?.onError?.(error);
        break;
      }
      default:
        break;
    }
  }

  onClose(code, reason) {
    if (this.closed) return;
    this.closed = true;
    clearInterval(this.pingTimer);
    const error =
      this.lastError ??
      new ConnectionClosedError(`connection closed (${code}${reason ? `: ${reason}` : ''})`);
    this.closeError = error;
    for (const waiters of this.pending.values()) for (const waiter of waiters) waiter.reject(error);
    this.pending.clear();
    const subs = [...this.subscriptions.values()];
    this.subscriptions.clear();
    for (const handler of subs) handler.onClosed(error);
    this.handlers?.onClose?.(error);
  }

  close() {
    if (this.closed) return;
    try {
      this.ws.close(1000);
    } catch {
      /* already closing */
    }
    // Fail everything now rather than waiting for the close handshake.
    this.onClose(1000, 'closed by the client');
  }
}

// ---------------------------------------------------------------------------
// Backoff

function backoffMs(attempt, { baseMs, maxMs }) {
  const ceiling = Math.min(maxMs, baseMs * 2 ** attempt);
  return ceiling / 2 + Math.random() * (ceiling / 2); // jitter
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// ---------------------------------------------------------------------------
// The relay client

let subCounter = 0;

/**
 * A connection to a relay, authenticated as `key`. Created by {@link connect}. When the
 * connection drops, pending publishes reject; resuming subscriptions reconnect it.
 */
export class Relay {
  constructor(url, key, options, info) {
    this.url = url;
    this.key = key;
    this.options = options;
    /** The relay's info document (null if it was not fetched). */
    this.info = info;
    this.relayUrl = options.relayUrl ?? info?.relay_url ?? url;
    this.limits = info?.limits
      ? {
          maxContentBytes: info.limits.max_content_bytes,
          maxTags: info.limits.max_tags,
          maxTagValues: info.limits.max_tag_values,
          maxTagValueBytes: info.limits.max_tag_value_bytes,
        }
      : DEFAULT_LIMITS;
    this.connection = null;
    this.connecting = null;
    this.closedByUser = false;
    this.listeners = { state: new Set(), error: new Set() };
    this.state = 'connecting';
  }

  /** Listens to 'state' ('connecting' | 'open' | 'reconnecting' | 'closed', error) and 'error' events. */
  on(name, listener) {
    this.listeners[name].add(listener);
    return () => this.listeners[name].delete(listener);
  }

  setState(state, error = null) {
    this.state = state;
    for (const listener of this.listeners.state) listener(state, error);
  }

  async connectOnce() {
    const WebSocketImpl = this.options.WebSocket ?? (await webSocketClass());
    const connection = await Connection.open(WebSocketImpl, this.url, this.key, this.relayUrl, {
      timeoutMs: this.options.timeoutMs ?? 10000,
      pingIntervalMs: this.options.pingIntervalMs ?? 20000,
    });
    connection.handlers = {
      onClose: (error) => {
        if (this.connection === connection) this.connection = null;
        this.lastCloseError = error;
        if (!this.closedByUser) this.setState('disconnected', error);
      },
      onError: (error) => {
        for (const listener of this.listeners.error) listener(error);
      },
    };
    this.connection = connection;
    this.setState('open');
    return connection;
  }

  /** The open connection, reconnecting (with backoff, honouring retry_after_ms) if needed. */
  async ensureConnection() {
    if (this.closedByUser) throw new ConnectionClosedError('the client was closed');
    if (this.connection && !this.connection.closed) return this.connection;
    if (!this.connecting) {
      this.connecting = (async () => {
        let attempt = 0;
        for (;;) {
          if (this.closedByUser) throw new ConnectionClosedError('the client was closed');
          try {
            return await this.connectOnce();
          } catch (error) {
            if (error.code === 401 || error.code === 403) throw error; // not transient
            const wait = Math.max(error.retryAfterMs ?? 0, backoffMs(attempt, this.backoff));
            attempt += 1;
            this.setState('reconnecting', error);
            await sleep(wait);
          }
        }
      })().finally(() => {
        this.connecting = null;
      });
    }
    return this.connecting;
  }

  get backoff() {
    return { baseMs: this.options.backoffBaseMs ?? 250, maxMs: this.options.backoffMaxMs ?? 30000 };
  }

  /** The current connection or a ConnectionClosedError (no reconnect: publishes never hang). */
  current() {
    if (this.closedByUser) throw new ConnectionClosedError('the client was closed');
    if (!this.connection || this.connection.closed) {
      throw this.lastCloseError ?? new ConnectionClosedError('not connected');
    }
    return this.connection;
  }

  /**
   * Signs and publishes an event; resolves `{id, seq, duplicate}` when the relay has
   * accepted it (a 409 duplicate resolves with `duplicate: true`). Many may be in flight.
   * A 429 or 503 refusal is retried up to `retries` times (default: the connect option
   * `maxRetries`, 5), waiting the relay's `retry_after_ms` when it gives one, else
   * backing off exponentially with jitter; other refusals reject with their AxonError.
   */
  async publish(fields, { retries } = {}) {
    if (!fields || typeof fields !== 'object') throw new TypeError('publish needs {kind, content, tags, ...}');
    const event = fields instanceof Event ? fields : signEvent(this.key, fields, this.limits);
    return this.publishEvent(event, { retries });
  }

  /**
   * Publishes an already signed Event (or wire map); retries as {@link Relay#publish}.
   * `ack: {sub_id, job}` completes a job with it (§14; {@link Job#complete} does this).
   */
  async publishEvent(event, { retries, ack, connection } = {}) {
    if (!(event instanceof Event)) event = Event.fromWire(event);
    const budget = retries ?? this.options.maxRetries ?? 5;
    nonNegativeInt(budget, 'retries');
    for (let attempt = 0; ; attempt += 1) {
      try {
        return await this.publishOnce(event, { ack, connection });
      } catch (error) {
        const retryable = error.code === 429 || error.code === 503;
        if (!retryable || attempt >= budget || this.closedByUser) throw error;
        const wait = error.retryAfterMs != null ? error.retryAfterMs + Math.random() * 20 : backoffMs(attempt, { baseMs: 100, maxMs: 10000 });
        await sleep(wait);
      }
    }
  }

  /** One PUBLISH and its reply. */
  async publishOnce(event, { ack, connection = this.current() } = {}) {
    const key = bytesToHex(event.id);
    const payload = { event: event.toWire() };
    if (ack) payload.ack = ack;
    const reply = connection.request(FRAME.PUBLISH, payload, key);
    try {
      const ok = await reply;
      return { ...ok, idHex: key };
    } catch (error) {
      if (error.code === 409) return { id: event.id, idHex: key, seq: error.seq ?? null, duplicate: true };
      throw error;
    }
  }

  /**
   * Subscribes: an async iterator of Events, END_OF_STORED once, then live Events.
   * `afterSeq` replays every stored match with a higher seq (oldest first). With
   * `resume: true` the iterator survives disconnects and overflow: it reconnects with
   * exponential backoff with jitter (honouring retry_after_ms) and resubscribes after
   * the last seq it yielded, without duplicates or gaps. Break out of the loop (or call
   * `return()`) to unsubscribe.
   */
  subscribe(filters, { afterSeq = null, resume = false, subId } = {}) {
    const wire = encodeFilters(filters);
    if (afterSeq !== null && afterSeq !== undefined) nonNegativeInt(afterSeq, 'afterSeq');
    if (subId !== undefined && (typeof subId !== 'string' || subId.length < 1 || subId.length > 64)) {
      throw new TypeError('subId must be a string of 1..=64 characters');
    }
    return new Subscription(this, wire, { afterSeq: afterSeq ?? null, resume, subId: subId ?? `s${++subCounter}` });
  }

  /** The stored events matching `filters` (up to EOSE). */
  async query(filters, { afterSeq = null } = {}) {
    const events = [];
    const subscription = this.subscribe(filters, { afterSeq });
    for await (const item of subscription) {
      if (item === END_OF_STORED) break;
      events.push(item);
    }
    return events;
  }

  /**
   * Joins the job queue `group` (spec §14) for job-request `kinds` (5000–5999): an async
   * iterator of {@link Job}s, each offered to this member alone under a lease. Options:
   * `maxInFlight` (default 1), `leaseSecs` (default 60), `filters` (more filter fields,
   * e.g. `{authors: [...]}`, or a list of them; each is limited to `kinds`), `afterSeq`
   * (where a new group's queue starts), `subId`. When the connection drops the queue is
   * joined again on the next connection (the leases held end with the old one). Break out
   * of the loop (or call `return()`) to leave the group; unfinished jobs go to others.
   */
  jobs(group, kinds, { maxInFlight = 1, leaseSecs = 60, filters, afterSeq = null, subId } = {}) {
    if (typeof group !== 'string' || textEncoder.encode(group).length < 1 || textEncoder.encode(group).length > 64) {
      throw new TypeError('group must be a string of 1..=64 bytes');
    }
    const kindList = Array.isArray(kinds) ? kinds : [kinds];
    if (kindList.length === 0 || kindList.some((k) => !Number.isInteger(k) || k < 5000 || k > 5999)) {
      throw new TypeError(`job kinds must be integers 5000..=5999, got ${kinds}`);
    }
    if (!Number.isInteger(maxInFlight) || maxInFlight < 1 || maxInFlight > 256) throw new TypeError('maxInFlight must be 1..=256');
    if (!Number.isInteger(leaseSecs) || leaseSecs < 1 || leaseSecs > 3600) throw new TypeError('leaseSecs must be 1..=3600');
    if (afterSeq !== null && afterSeq !== undefined) nonNegativeInt(afterSeq, 'afterSeq');
    if (subId !== undefined && (typeof subId !== 'string' || subId.length < 1 || subId.length > 64)) {
      throw new TypeError('subId must be a string of 1..=64 characters');
    }
    const extra = filters === undefined || filters === null ? [{}] : Array.isArray(filters) ? filters : [filters];
    if (extra.length === 0) throw new TypeError('filters must not be an empty list');
    const wire = extra.map((filter) => {
      const own = encodeFilter({ ...filter, kinds: filter.kinds ?? kindList });
      if (own.kinds.some((k) => k < 5000 || k > 5999)) throw new TypeError('a queue filter may only name kinds 5000..=5999');
      delete own.limit; // ignored by queues
      return own;
    });
    return new JobQueue(this, group, wire, { maxInFlight, leaseSecs, afterSeq: afterSeq ?? null, subId: subId ?? `q${++subCounter}` });
  }

  /**
   * Runs `handler(job)` for every job of `group` (up to `concurrency` at once) until
   * `signal` aborts, `maxJobs` offers have been taken or the client is closed; resolves
   * the number of offers handled (a job given back and offered again counts again). While a handler runs its lease is extended every
   * `leaseSecs / 3`. A handler's string or Uint8Array return value is published as the
   * result ({@link Job#complete}); `undefined`/`null` ACKs the job without a result
   * (unless the handler finished the job itself). A handler that throws gives the job
   * back (NACK) after `retryDelaySecs(attempt)` seconds (default 1, 2, 4, … at most 300).
   * Lost leases and late completions are reported to `onError` (default: ignored).
   */
  async work(group, kinds, handler, options = {}) {
    if (typeof handler !== 'function') throw new TypeError('handler must be a function');
    const {
      concurrency = 1,
      leaseSecs = 60,
      filters,
      afterSeq,
      signal,
      maxJobs = Infinity,
      resultKind,
      retryDelaySecs = (attempt) => Math.min(300, 2 ** (attempt - 1)),
      onError = () => {},
    } = options;
    if (!Number.isInteger(concurrency) || concurrency < 1 || concurrency > 256) throw new TypeError('concurrency must be 1..=256');
    const queue = this.jobs(group, kinds, { maxInFlight: concurrency, leaseSecs, filters, afterSeq });
    const running = new Set();
    let handled = 0;
    let slotFree = null;
    const stopped = new Promise((resolve) => {
      if (!signal) return;
      if (signal.aborted) resolve();
      else signal.addEventListener('abort', () => resolve(), { once: true });
    });
    const STOP = Symbol('stop');
    const runOne = async (job) => {
      const stopExtending = job.keepAlive(leaseSecs);
      try {
        let result;
        try {
          result = await handler(job);
        } catch (error) {
          stopExtending();
          if (job.finished) return;
          onError(error, job);
          await job.fail(Math.max(0, Math.round(retryDelaySecs(job.attempt))));
          return;
        }
        stopExtending();
        if (job.finished) return;
        if (result === undefined || result === null) await job.ack();
        else await job.complete(result, resultKind !== undefined ? { kind: resultKind } : {});
      } finally {
        stopExtending();
      }
    };
    try {
      while (handled < maxJobs && !signal?.aborted) {
        while (running.size >= concurrency) {
          await Promise.race([new Promise((resolve) => (slotFree = resolve)), stopped]);
          if (signal?.aborted) break;
        }
        if (signal?.aborted) break;
        const pending = queue.next();
        pending.catch(() => {}); // handled below unless the stop won the race
        const item = await Promise.race([pending, stopped.then(() => STOP)]);
        if (item === STOP || item.done) break;
        const job = item.value;
        handled += 1;
        const task = runOne(job)
          .catch((error) => onError(error, job))
          .finally(() => {
            running.delete(task);
            slotFree?.();
          });
        running.add(task);
      }
    } catch (error) {
      if (!this.closedByUser) throw error;
    } finally {
      await Promise.allSettled([...running]);
      await queue.return();
    }
    return handled;
  }

  /**
   * Publishes a job request (`kind` 5000–5999) and resolves its first result: an event of
   * kind + 1000 with an `e` tag naming the request's id. The result subscription is made
   * before the request is published, so a fast result cannot be missed. Rejects with
   * RequestTimeoutError after `timeoutMs` (default 30000).
   */
  async request(fields, { timeoutMs = 30000, signal } = {}) {
    if (!fields || typeof fields !== 'object') throw new TypeError('request needs {kind, content, tags, ...}');
    const event = fields instanceof Event ? fields : signEvent(this.key, fields, this.limits);
    if (event.kind < 5000 || event.kind > 5999) throw new TypeError(`a job request's kind must be 5000..=5999, got ${event.kind}`);
    const idHex = event.idHex;
    const results = this.subscribe([{ kinds: [event.kind + 1000], tags: [{ name: 'e', values: [idHex] }] }], { resume: true });
    let timer;
    const timeout = new Promise((_, reject) => {
      timer = setTimeout(() => reject(new RequestTimeoutError(`timeout: no result for job ${idHex} within ${timeoutMs} ms`, { id: event.id })), timeoutMs);
      if (signal?.aborted) reject(signal.reason ?? new Error('aborted'));
      else signal?.addEventListener('abort', () => reject(signal.reason ?? new Error('aborted')), { once: true });
    });
    // A promise that loses the race to the timeout must not become an unhandled rejection.
    const guarded = (promise) => {
      promise.catch(() => {});
      return promise;
    };
    const next = async () => {
      const item = await Promise.race([guarded(results.next()), timeout]);
      if (item.done) throw new ConnectionClosedError('the result subscription ended');
      return item.value;
    };
    try {
      let item = await next();
      while (item !== END_OF_STORED) {
        if (item.tags.some((t) => t[0] === 'e' && t[1] === idHex)) return item; // already answered
        item = await next();
      }
      await Promise.race([guarded(this.publishEvent(event)), timeout]);
      for (;;) {
        item = await next();
        if (item !== END_OF_STORED && item.tags.some((t) => t[0] === 'e' && t[1] === idHex)) return item;
      }
    } finally {
      clearTimeout(timer);
      timeout.catch(() => {});
      await results.return();
    }
  }

  /** Seals `plaintext` to `recipient` (hex or bytes) and publishes it as a kind 2000 DM. */
  async sendDm(recipient, plaintext, { tags = [], kind = KIND_DM, expiresIn } = {}) {
    const to = bytes32(recipient, 'recipient');
    const content = sealDm(this.key, to, plaintext);
    return this.publish({ kind, content, tags: [['p', bytesToHex(to)], ...tags], expiresIn });
  }

  /** Admins: allow keys (hex or bytes) to connect and publish (kind 9000). */
  async allow(...keys) {
    return this.publish({ kind: KIND_ALLOW, tags: adminTags(keys) });
  }

  /** Admins: revoke keys (kind 9001); their open connections are closed. */
  async revoke(...keys) {
    return this.publish({ kind: KIND_REVOKE, tags: adminTags(keys) });
  }

  /** Admins: the admin log (every ALLOW and REVOKE event), oldest first. */
  async adminLog() {
    const events = await this.query([{ kinds: [KIND_ALLOW, KIND_REVOKE] }], { afterSeq: 0 });
    return events.sort((a, b) => a.seq - b.seq);
  }

  /** Admins: the keys allowed at run time (hex), replaying the admin log. Keys in relay.yaml are not listed. */
  async allowlist() {
    const allowed = new Map();
    for (const event of await this.adminLog()) {
      for (const tag of event.tags) {
        if (tag[0] !== 'p' || !HEX64.test(tag[1] ?? '')) continue;
        if (event.kind === KIND_ALLOW) {
          if (!allowed.has(tag[1])) allowed.set(tag[1], true);
        } else allowed.delete(tag[1]);
      }
    }
    return [...allowed.keys()];
  }

  /** Closes the connection; pending publishes reject and subscriptions end. */
  close() {
    this.closedByUser = true;
    this.connection?.close();
    this.connection = null;
    this.setState('closed');
  }
}

function adminTags(keys) {
  if (keys.length === 1 && Array.isArray(keys[0])) keys = keys[0];
  if (keys.length === 0) throw new TypeError('name at least one key');
  return keys.map((k) => ['p', bytesToHex(bytes32(k, 'key'))]);
}

class Subscription {
  constructor(relay, filters, { afterSeq, resume, subId }) {
    this.relay = relay;
    this.filters = filters;
    this.afterSeq = afterSeq;
    this.resume = resume;
    this.subId = subId;
    this.queue = [];
    this.waiter = null;
    this.done = false;
    this.failure = null;
    this.eoseSeen = false;
    this.storedIds = new Set(); // ids yielded before EOSE (non-replay mode), to skip after a re-subscribe
    this.lastSeq = afterSeq; // highest seq yielded (or the resume point)
    this.started = false;
    this.connection = null;
    this.attempt = 0;
  }

  [Symbol.asyncIterator]() {
    return this;
  }

  push(item) {
    this.queue.push(item);
    if (this.waiter) {
      const waiter = this.waiter;
      this.waiter = null;
      waiter();
    }
  }

  async start() {
    const connection = this.resume ? await this.relay.ensureConnection() : this.relay.current();
    this.connection = connection;
    const handler = {
      onEvent: (event) => this.push({ event }),
      onEose: () => this.push({ eose: true }),
      onError: (error) => this.push({ error }),
      onClosed: (error) => this.push({ closed: error }),
    };
    connection.subscriptions.set(this.subId, handler);
    const payload = { sub_id: this.subId, filters: this.filters };
    if (this.lastSeq !== null) payload.after_seq = this.lastSeq;
    connection.send(FRAME.SUBSCRIBE, payload);
  }

  async next() {
    for (;;) {
      if (this.done) {
        if (this.failure) {
          const failure = this.failure;
          this.failure = null;
          throw failure;
        }
        return { done: true, value: undefined };
      }
      if (!this.started) {
        this.started = true;
        try {
          await this.start();
        } catch (error) {
          this.finish();
          throw error;
        }
      }
      if (this.queue.length === 0) {
        await new Promise((resolve) => {
          this.waiter = resolve;
        });
        continue;
      }
      const item = this.queue.shift();
      if (item.event) {
        const event = item.event;
        if (event.seq) {
          if (this.lastSeq !== null) {
            // Replay mode or live phase: seq order; skip what a resume replays again.
            if (event.seq <= this.lastSeq) continue;
            this.lastSeq = event.seq;
          } else if (this.eoseSeen) {
            // A live-only subscription's first live event: resume after it from now on.
            this.lastSeq = event.seq;
          } else {
            // Stored phase without after_seq (newest first): skip what was yielded
            // before a reconnect.
            const idHex = event.idHex;
            if (this.storedIds.has(idHex)) continue;
            this.storedIds.add(idHex);
            this.maxStoredSeq = Math.max(this.maxStoredSeq ?? 0, event.seq);
          }
        }
        this.attempt = 0;
        return { done: false, value: event };
      }
      if (item.eose) {
        if (this.eoseSeen) continue;
        this.eoseSeen = true;
        // The resume point after the stored phase: the newest stored seq, or 0 when nothing
        // matched (then no stored event matches at all). A filter with limit 0 hides the
        // stored events, so with nothing seen the point stays unknown until the first live
        // event (a resume before it subscribes live again).
        const liveOnly = this.filters.some((filter) => filter.limit === 0);
        if (this.lastSeq === null && !(liveOnly && this.maxStoredSeq === undefined)) this.lastSeq = this.maxStoredSeq ?? 0;
        this.storedIds.clear();
        return { done: false, value: END_OF_STORED };
      }
      const error = item.error ?? item.closed;
      if (this.resume && this.resumable(error)) {
        // Overflow carries the resume point: every match up to it was delivered.
        if (error.code === 503 && error.seq !== null && error.seq !== undefined) {
          this.lastSeq = Math.max(this.lastSeq ?? 0, error.seq);
        }
        if (this.connection) this.connection.subscriptions.delete(this.subId);
        const wait = Math.max(error.retryAfterMs ?? 0, backoffMs(this.attempt, this.relay.backoff));
        this.attempt += 1;
        this.queue = [];
        await sleep(wait);
        try {
          await this.start();
        } catch (startError) {
          if (!this.resumable(startError)) {
            this.finish(startError);
          } else {
            this.push({ error: startError });
          }
        }
        continue;
      }
      this.finish(error);
    }
  }

  resumable(error) {
    if (this.relay.closedByUser) return false;
    return error.code === 0 || error.code === 503 || error.code === 500 || error.code === 429;
  }

  finish(error = null) {
    this.done = true;
    this.failure = error;
    if (this.connection) this.connection.subscriptions.delete(this.subId);
  }

  async return() {
    if (this.waiter) {
      const waiter = this.waiter;
      this.waiter = null;
      waiter();
    }
    if (!this.done) {
      this.done = true;
      const connection = this.connection;
      if (connection && !connection.closed && connection.subscriptions.has(this.subId)) {
        connection.subscriptions.delete(this.subId);
        try {
          connection.send(FRAME.UNSUBSCRIBE, { sub_id: this.subId });
        } catch {
          /* closed meanwhile */
        }
      }
    }
    this.failure = null;
    return { done: true, value: undefined };
  }
}

// ---------------------------------------------------------------------------
// Job queues (§14)

function leaseLost(job, why) {
  return new LeaseLostError(412, `lease-lost: ${why}`, { id: job.id, subId: job.subId });
}

/** A job offered to this worker under a lease (spec §14). */
export class Job {
  #queue;
  #generation;
  #chain = Promise.resolve();

  constructor(queue, generation, event, lease) {
    this.#queue = queue;
    this.#generation = generation;
    /** The job request. */
    this.event = event;
    /** The job id (the request's event id, 32 bytes). */
    this.id = event.id;
    this.idHex = event.idHex;
    this.group = queue.group;
    this.subId = queue.subId;
    /** Which offer of this job this is (from 1). */
    this.attempt = Number(lease?.attempt ?? 1);
    /** When the lease ends (unix ms), unless extended. */
    this.leaseUntilMs = Number(lease?.until_ms ?? 0);
    /** True once the job was completed, ACKed or NACKed by this worker. */
    this.finished = false;
  }

  /** The job request's content as text. */
  get text() {
    return this.event.text;
  }

  /** False once the subscription that holds the lease ended (the lease with it). */
  get held() {
    return this.#generation.alive && !this.finished;
  }

  // One job frame at a time per job: replies are matched by the job id.
  #serial(operation) {
    const run = this.#chain.then(operation, operation);
    this.#chain = run.catch(() => {});
    return run;
  }

  #control(type, extra, what) {
    return this.#serial(async () => {
      const generation = this.#generation;
      if (!generation.alive || generation.connection.closed) throw leaseLost(this, `cannot ${what}: the subscription that held the lease ended`);
      return generation.connection.request(type, { sub_id: this.subId, job: this.id, ...extra }, this.idHex);
    });
  }

  /**
   * Publishes the result and completes the job in one step (PUBLISH with `ack`).
   * Default kind: the request's kind + 1000; tags: `["e", job id hex]` then `tags`.
   * Resolves the publish result (a 409 on a retry counts as success, `duplicate: true`);
   * LeaseLostError when the job is no longer this worker's.
   */
  complete(result = '', { kind, tags = [], retries } = {}) {
    const relay = this.#queue.relay;
    const event = signEvent(relay.key, { kind: kind ?? this.event.kind + 1000, content: result, tags: [['e', this.idHex], ...normaliseTags(tags)] }, relay.limits);
    const ack = { sub_id: this.subId, job: this.id };
    return this.#serial(async () => {
      const generation = this.#generation;
      if (!generation.alive || generation.connection.closed) throw leaseLost(this, 'cannot complete: the subscription that held the lease ended');
      let answer;
      try {
        answer = await relay.publishEvent(event, { ack, connection: generation.connection, retries });
      } catch (error) {
        if (error.code !== 0 || relay.closedByUser) throw error;
        // The connection dropped with the PUBLISH in flight. Ask again on a new one: 409 =
        // it had been stored (done), 412 = it had not (the lease ended with the connection).
        const connection = await relay.ensureConnection();
        answer = await relay.publishEvent(event, { ack, connection, retries });
      }
      this.finished = true;
      return answer;
    });
  }

  /** Completes the job without a result (ACK). */
  async ack() {
    await this.#control(FRAME.ACK, {}, 'ack');
    this.finished = true;
  }

  /** Gives the job back (NACK); it is offered again after `delaySecs` (default 0). */
  async fail(delaySecs = 0) {
    nonNegativeInt(delaySecs, 'delaySecs');
    await this.#control(FRAME.NACK, delaySecs ? { delay_secs: delaySecs } : {}, 'fail');
    this.finished = true;
  }

  /** Renews the lease from now for `leaseSecs` (default: the queue's); resolves the new end (unix ms). */
  async extend(leaseSecs) {
    if (leaseSecs !== undefined && (!Number.isInteger(leaseSecs) || leaseSecs < 1 || leaseSecs > 3600)) throw new TypeError('leaseSecs must be 1..=3600');
    const ok = await this.#control(FRAME.EXTEND, leaseSecs ? { lease_secs: leaseSecs } : {}, 'extend');
    if (ok.untilMs) this.leaseUntilMs = ok.untilMs;
    return this.leaseUntilMs;
  }

  /**
   * Extends the lease every `leaseSecs / 3` until the returned function is called or the
   * job is finished or lost. Used by {@link Relay#work}.
   */
  keepAlive(leaseSecs = this.#queue.leaseSecs) {
    const everyMs = Math.max(200, (leaseSecs * 1000) / 3);
    let stopped = false;
    const timer = setInterval(() => {
      if (stopped || !this.held) return stop();
      this.extend(leaseSecs).catch((error) => {
        if (error.code === 412 || error.code === 410 || error.code === 0) stop();
      });
    }, everyMs);
    const stop = () => {
      stopped = true;
      clearInterval(timer);
    };
    return stop;
  }
}

class JobQueue {
  constructor(relay, group, filters, { maxInFlight, leaseSecs, afterSeq, subId }) {
    this.relay = relay;
    this.group = group;
    this.filters = filters;
    this.maxInFlight = maxInFlight;
    this.leaseSecs = leaseSecs;
    this.afterSeq = afterSeq;
    this.subId = subId;
    this.queue = [];
    this.waiter = null;
    this.done = false;
    this.failure = null;
    this.started = false;
    this.generation = null; // {connection, alive}: one SUBSCRIBE on one connection
    this.attempt = 0;
  }

  [Symbol.asyncIterator]() {
    return this;
  }

  push(item) {
    this.queue.push(item);
    if (this.waiter) {
      const waiter = this.waiter;
      this.waiter = null;
      waiter();
    }
  }

  async start() {
    const connection = await this.relay.ensureConnection();
    const generation = { connection, alive: true };
    this.generation = generation;
    const end = (item) => {
      generation.alive = false;
      this.push(item);
    };
    connection.subscriptions.set(this.subId, {
      onEvent: (event, p) => this.push({ event, lease: p?.lease, generation }),
      onEose: () => {},
      onError: (error) => end({ error, generation }),
      onClosed: (error) => end({ closed: error, generation }),
    });
    const payload = {
      sub_id: this.subId,
      filters: this.filters,
      group: this.group,
      lease_secs: this.leaseSecs,
      max_in_flight: this.maxInFlight,
    };
    if (this.afterSeq !== null) payload.after_seq = this.afterSeq;
    connection.send(FRAME.SUBSCRIBE, payload);
  }

  async next() {
    for (;;) {
      if (this.done) {
        if (this.failure) {
          const failure = this.failure;
          this.failure = null;
          throw failure;
        }
        return { done: true, value: undefined };
      }
      if (!this.started) {
        this.started = true;
        try {
          await this.start();
        } catch (error) {
          this.finish();
          throw error;
        }
        continue;
      }
      if (this.queue.length === 0) {
        await new Promise((resolve) => {
          this.waiter = resolve;
        });
        continue;
      }
      const item = this.queue.shift();
      if (item.event) {
        if (!item.generation.alive) continue; // its lease ended with its subscription
        this.attempt = 0;
        return { done: false, value: new Job(this, item.generation, item.event, item.lease) };
      }
      if (item.generation !== this.generation) continue;
      const error = item.error ?? item.closed;
      if (this.resumable(error)) {
        this.generation.connection.subscriptions.delete(this.subId);
        const wait = Math.max(error.retryAfterMs ?? 0, backoffMs(this.attempt, this.relay.backoff));
        this.attempt += 1;
        await sleep(wait);
        if (this.done) continue;
        try {
          await this.start();
        } catch (startError) {
          if (!this.resumable(startError)) this.finish(startError);
          else this.push({ error: startError, generation: this.generation });
        }
        continue;
      }
      this.finish(this.relay.closedByUser ? null : error);
    }
  }

  resumable(error) {
    if (this.relay.closedByUser || this.done) return false;
    return error.code === 0 || error.code === 503 || error.code === 500 || error.code === 429;
  }

  finish(error = null) {
    this.done = true;
    this.failure = error;
    if (this.generation) {
      this.generation.alive = false;
      if (this.generation.connection.subscriptions.get(this.subId)) this.generation.connection.subscriptions.delete(this.subId);
    }
  }

  /** Leaves the group (UNSUBSCRIBE): the leases still held end and those jobs go to others. */
  async return() {
    if (this.waiter) {
      const waiter = this.waiter;
      this.waiter = null;
      waiter();
    }
    if (!this.done) {
      this.done = true;
      const generation = this.generation;
      if (generation) {
        generation.alive = false;
        const connection = generation.connection;
        if (!connection.closed && connection.subscriptions.has(this.subId)) {
          connection.subscriptions.delete(this.subId);
          try {
            connection.send(FRAME.UNSUBSCRIBE, { sub_id: this.subId });
          } catch {
            /* closed meanwhile */
          }
        }
      }
    }
    this.failure = null;
    return { done: true, value: undefined };
  }
}

/**
 * Connects to `url` (ws:// or wss://), authenticates as `key` and resolves a Relay.
 * Options: `relayUrl` (the string signed into AUTH; default: the info document's
 * relay_url, else `url`), `timeoutMs`, `pingIntervalMs` (Node), `backoffBaseMs`,
 * `backoffMaxMs`, `WebSocket` (an implementation to use).
 */
export async function connect(url, key, options = {}) {
  if (typeof url !== 'string' || !/^wss?:\/\//.test(url)) throw new TypeError(`url must be a ws:// or wss:// URL, got ${url}`);
  if (!(key instanceof Key)) throw new TypeError('key must be an axon Key (Key.generate(), Key.load(path), Key.fromBytes(seed))');
  let info = null;
  if (options.relayUrl === undefined) {
    try {
      info = await fetchInfo(url);
    } catch (error) {
      throw new ConnectionClosedError(`cannot read the relay's info document at ${infoUrl(url)}: ${error.message}`);
    }
  }
  const relay = new Relay(url, key, options, info);
  await relay.connectOnce();
  return relay;
}
