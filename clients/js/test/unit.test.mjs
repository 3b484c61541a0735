// Unit tests of the client library that need no relay.

import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';

import {
  AxonError,
  END_OF_STORED,
  ForbiddenError,
  Key,
  RateLimitedError,
  bytesToHex,
  encodeFilter,
  hexToBytes,
  infoUrl,
  openDm,
  sealDm,
  signEvent,
  validateEvent,
  encodeEvent,
} from '../src/index.mjs';

const fixture = (name) => JSON.parse(readFileSync(new URL(`./fixtures/${name}`, import.meta.url), 'utf8'));

describe('keys', () => {
  it('round-trips the axon keygen file format', () => {
    const key = Key.generate();
    const text = key.toKeyFile();
    assert.match(text, /^[0-9a-f]{64}\n$/);
    assert.equal(Key.fromKeyFile(text).publicHex, key.publicHex);
    assert.equal(Key.fromKeyFile(`  ${text.toUpperCase()}  `).publicHex, key.publicHex);
    assert.equal(Key.fromBytes(key.secretBytes()).publicHex, key.publicHex);
  });

  it('derives the RFC 8032 public key', () => {
    const key = Key.fromHex('9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60');
    assert.equal(key.publicHex, 'd75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a');
  });

  it('refuses malformed key material', () => {
    assert.throws(() => Key.fromKeyFile('abc'), TypeError);
    assert.throws(() => Key.fromBytes(new Uint8Array(33)), TypeError);
    assert.throws(() => Key.fromBytes(42), TypeError);
  });
});

describe('events', () => {
  it('signs events that the independent validator accepts, tags in any order', () => {
    const key = Key.generate();
    const event = signEvent(key, { kind: 1000, content: 'hi', tags: [['topic', 'hello'], ['a', 'b']], createdAt: 1700000000 });
    assert.ok(event.verify());
    const res = validateEvent(encodeEvent(event));
    assert.ok(res.ok, res.message);
    assert.equal(bytesToHex(res.event.id), event.idHex);
    const tampered = signEvent(key, { kind: 1000, content: 'hi', createdAt: 1700000000 });
    tampered.content = new TextEncoder().encode('ho');
    assert.equal(tampered.verify(), false);
  });

  it('adds expires_at for expiresIn and refuses bad fields before sending', () => {
    const key = Key.generate();
    const event = signEvent(key, { kind: 5000, expiresIn: 60 });
    const expires = Number(event.tag('expires_at'));
    assert.ok(expires >= Date.now() / 1000 + 59);
    assert.throws(() => signEvent(key, { kind: 1.5 }), TypeError);
    assert.throws(() => signEvent(key, { kind: 1, content: new Uint8Array(65537) }), (e) => e.code === 413);
    assert.throws(() => signEvent(key, { kind: 1, tags: [['x'.repeat(65)]] }), (e) => e.code === 400);
    assert.throws(() => signEvent(key, { kind: 1, tags: [['t', 1]] }), TypeError);
    assert.throws(() => signEvent('key', { kind: 1 }), TypeError);
  });
});

describe('filters', () => {
  it('encodes hex prefixes as bytes and tags as name/values maps', () => {
    const f = encodeFilter({ ids: ['abcd'], authors: [new Uint8Array([1])], kinds: [1, 2], since: 1, until: 2, limit: 3, tags: { topic: ['a', 'b'], t: 'x' } });
    assert.deepEqual([...f.ids[0]], [0xab, 0xcd]);
    assert.deepEqual(f.tags, [{ name: 'topic', values: ['a', 'b'] }, { name: 't', values: ['x'] }]);
    assert.throws(() => encodeFilter({ ids: ['abc'] }), TypeError);
    assert.throws(() => encodeFilter({ kind: [1] }), /unknown filter key/);
    assert.throws(() => encodeFilter({ since: -1 }), TypeError);
    assert.throws(() => encodeFilter({ ids: ['ab'.repeat(33)] }), TypeError);
  });

  it('maps ws URLs to the info document URL', () => {
    assert.equal(infoUrl('ws://127.0.0.1:8080'), 'http://127.0.0.1:8080/info');
    assert.equal(infoUrl('wss://relay.example/'), 'https://relay.example/info');
  });
});

describe('errors', () => {
  it('are typed by code and carry retryAfterMs', () => {
    const e = AxonError.fromCode(429, 'rate-limited: slow down', { retryAfterMs: 250 });
    assert.ok(e instanceof RateLimitedError && e instanceof AxonError && e instanceof Error);
    assert.equal(e.code, 429);
    assert.equal(e.retryAfterMs, 250);
    assert.ok(AxonError.fromCode(403, 'restricted: x') instanceof ForbiddenError);
    assert.equal(AxonError.fromCode(599, 'x').constructor, AxonError);
    assert.equal(typeof END_OF_STORED, 'symbol');
  });
});

describe('direct messages (§12)', () => {
  it('opens a DM sealed by the Rust implementation (src/protocol/dm.rs)', () => {
    const doc = fixture('dm-from-rust.json');
    const sender = Key.fromHex(doc.sender_seed);
    const recipient = Key.fromHex(doc.recipient_seed);
    const event = { pubkey: sender.publicKey, tags: [['p', recipient.publicHex]], content: hexToBytes(doc.content_hex) };
    assert.equal(bytesToHex(openDm(recipient, event)), doc.plaintext_hex);
    assert.equal(bytesToHex(openDm(sender, event)), doc.plaintext_hex);
  });

  it('the DM sealed here for the Rust side (dm-from-js.json) opens, and tampering is detected', () => {
    const doc = fixture('dm-from-js.json');
    const sender = Key.fromHex(doc.sender_seed);
    const recipient = Key.fromHex(doc.recipient_seed);
    const content = hexToBytes(doc.content_hex);
    const event = { pubkey: sender.publicKey, tags: [['p', recipient.publicHex]], content };
    assert.equal(bytesToHex(openDm(recipient, event)), doc.plaintext_hex);
    const bad = content.slice();
    bad[bad.length - 1] ^= 1;
    assert.throws(() => openDm(recipient, { ...event, content: bad }), /decryption failed/);
    assert.throws(() => openDm(Key.generate(), event), /decryption failed/);
  });

  it('seal/open round trip with fresh keys', () => {
    const a = Key.generate();
    const b = Key.generate();
    const content = sealDm(a, b.publicHex, 'secret');
    assert.equal(new TextDecoder().decode(openDm(b, { pubkey: a.publicKey, tags: [['p', b.publicHex]], content })), 'secret');
  });
});
