// Self-tests of src/axon.mjs that do not depend on the vector files.

import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { decode } from '@msgpack/msgpack';
import { ed25519, ED25519_TORSION_SUBGROUP } from '@noble/curves/ed25519.js';
import { sha256, sha512 } from '@noble/hashes/sha2.js';

import {
  bytesToHex,
  canonicalPayload,
  canonicalTags,
  createEvent,
  encodeEvent,
  eventId,
  hexToBytes,
  publicKeyFromSeed,
  sign,
  tagsHash,
  validateEvent,
  verifyStrict,
} from '../src/axon.mjs';

const SEED = hexToBytes('9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60'); // RFC 8032 test 1
const te = new TextEncoder();

// --- a tiny MessagePack writer for hand-made (also malformed) inputs --------
const cat = (...parts) => {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
};
const be = (n, width) => {
  const out = new Uint8Array(width);
  let v = BigInt(n);
  if (v < 0n) v += 1n << BigInt(8 * width);
  for (let i = width - 1; i >= 0; i--) {
    out[i] = Number(v & 0xffn);
    v >>= 8n;
  }
  return out;
};
const mp = {
  str: (s) => {
    const b = typeof s === 'string' ? te.encode(s) : s;
    if (b.length < 32) return cat([0xa0 | b.length], b);
    if (b.length < 256) return cat([0xd9, b.length], b);
    return cat([0xda], be(b.length, 2), b);
  },
  bin: (b) => {
    if (b.length < 256) return cat([0xc4, b.length], b);
    if (b.length < 65536) return cat([0xc5], be(b.length, 2), b);
    return cat([0xc6], be(b.length, 4), b);
  },
  uint64: (n) => cat([0xcf], be(n, 8)),
  int64: (n) => cat([0xd3], be(n, 8)),
  uint32: (n) => cat([0xce], be(n, 4)),
  int8: (n) => cat([0xd0], be(n, 1)),
  float64: (x) => {
    const b = new Uint8Array(9);
    b[0] = 0xcb;
    new DataView(b.buffer).setFloat64(1, x);
    return b;
  },
  arr: (items) => cat([0x90 | items.length], ...items),
  map: (entries) => cat([0x80 | entries.length], ...entries.flatMap(([k, v]) => [typeof k === 'string' ? mp.str(k) : k, v])),
};

function eventEntries(ev, overrides = {}) {
  const base = {
    id: mp.bin(ev.id),
    pubkey: mp.bin(ev.pubkey),
    created_at: mp.uint64(ev.created_at),
    kind: mp.uint32(ev.kind),
    content: mp.bin(ev.content),
    sig: mp.bin(ev.sig),
    tags: mp.arr(ev.tags.map((t) => mp.map([['name', mp.str(t[0])], ['values', mp.arr(t.slice(1).map(mp.str))]]))),
  };
  return Object.entries({ ...base, ...overrides });
}

const sample = () =>
  createEvent(SEED, {
    created_at: 1700000000,
    kind: 1000,
    content: te.encode('hello'),
    tags: [['t', 'x'], ['e'], ['a', '1', '2'], ['t', 'w']],
  });

const codeOf = (bytes) => {
  const r = validateEvent(bytes);
  return r.ok ? 'ok' : r.code;
};

// ---------------------------------------------------------------------------

describe('canonical tags and id', () => {
  it('id does not depend on the wire order of tags', () => {
    const tags = [['t', 'x'], ['e'], ['a', '1', '2'], ['t', 'w'], ['e', '']];
    const base = { pubkey: ed25519.getPublicKey(SEED), created_at: 1, kind: 1, content: new Uint8Array() };
    const id1 = bytesToHex(eventId({ ...base, tags }));
    const id2 = bytesToHex(eventId({ ...base, tags: tags.slice().reverse() }));
    const id3 = bytesToHex(eventId({ ...base, tags: [tags[3], tags[1], tags[4], tags[0], tags[2]] }));
    assert.equal(id1, id2);
    assert.equal(id1, id3);
  });

  it('sorts by name, then no-values first, then first value, byte-wise', () => {
    // "é" (U+00E9) is c3 a9 in UTF-8 and "𝄞" (U+1D11E) is f0 9d 84 9e; in
    // UTF-16 code units "𝄞" (d834) would sort before "￿" (ffff), byte-wise after.
    const ct = canonicalTags([['b'], ['a', 'z'], ['a', '\u{1D11E}'], ['a', '\uffff'], ['a'], ['a', ''], ['ab']]);
    const expectOrder = [['a'], ['a', ''], ['a', 'z'], ['a', '\uffff'], ['a', '\u{1D11E}'], ['ab'], ['b']];
    const expected = canonicalTags(expectOrder); // canonicalTags is idempotent on sorted input
    assert.equal(bytesToHex(ct), bytesToHex(expected));
    // and spell out the first entries by hand
    assert.equal(bytesToHex(ct).slice(0, 4), '0007');
    assert.equal(bytesToHex(ct).slice(4, 4 + 2 * 5), '0001610000'); // "a", 0 values
    assert.equal(bytesToHex(ct).slice(14, 14 + 2 * 9), '000161000100000000'); // "a", 1 value ""
  });

  it('rejects duplicate tags with 400', () => {
    assert.throws(() => canonicalTags([['t', 'x', '1'], ['t', 'x', '2']]), { code: 400 });
    assert.throws(() => canonicalTags([['t'], ['t']]), { code: 400 });
    assert.doesNotThrow(() => canonicalTags([['t'], ['t', '']]));
    assert.doesNotThrow(() => canonicalTags([['t', 'x'], ['u', 'x']]));
  });

  it('lays out canonical_tags and canonical_payload as in spec §3', () => {
    const pubkey = ed25519.getPublicKey(SEED);
    const tags = [['p', 'ab', 'c'], ['e']];
    const ct = canonicalTags(tags);
    // 2 tags; "e" no values; "p" 2 values "ab", "c"
    assert.equal(bytesToHex(ct), '0002' + '000165' + '0000' + '000170' + '0002' + '00000002' + '6162' + '00000001' + '63');
    const ev = { pubkey, created_at: 0x0102030405, kind: 0x0a0b, content: new Uint8Array([0xde, 0xad]), tags };
    const payload = canonicalPayload(ev);
    const want =
      '0020' + bytesToHex(pubkey) + '0000000102030405' + '0a0b' + '00000002' + 'dead' + bytesToHex(sha256(ct));
    assert.equal(bytesToHex(payload), want);
    assert.equal(bytesToHex(eventId(ev)), bytesToHex(sha256(payload)));
    assert.equal(bytesToHex(tagsHash(tags)), bytesToHex(sha256(ct)));
    assert.equal(bytesToHex(canonicalTags([])), '0000');
  });
});

describe('Ed25519 (RFC 8032 §7.1)', () => {
  it('test 1 and test 2 reproduce exactly and verify strictly', () => {
    const cases = [
      {
        seed: '9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60',
        pub: 'd75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a',
        msg: '',
        sig: 'e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b',
      },
      {
        seed: '4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb',
        pub: '3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c',
        msg: '72',
        sig: '92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00',
      },
    ];
    for (const c of cases) {
      const seed = hexToBytes(c.seed);
      assert.equal(bytesToHex(publicKeyFromSeed(seed)), c.pub);
      assert.equal(bytesToHex(sign(seed, hexToBytes(c.msg))), c.sig);
      assert.equal(verifyStrict(hexToBytes(c.sig), hexToBytes(c.msg), hexToBytes(c.pub)), true);
    }
  });
});

describe('msgpack encoding', () => {
  it('uses shortest integer forms for created_at', () => {
    const cases = [
      [0, '00'],
      [127, '7f'],
      [128, 'cc80'],
      [255, 'ccff'],
      [256, 'cd0100'],
      [65535, 'cdffff'],
      [65536, 'ce00010000'],
      [2 ** 32 - 1, 'ceffffffff'],
      [2 ** 32, 'cf0000000100000000'],
      [2 ** 40, 'cf0000010000000000'],
      [Number.MAX_SAFE_INTEGER, 'cf001fffffffffffff'],
      [2n ** 63n - 1n, 'cf7fffffffffffffff'],
    ];
    for (const [n, want] of cases) {
      const ev = { ...sample(), created_at: n };
      const hex = bytesToHex(encodeEvent(ev));
      const key = bytesToHex(mp.str('created_at'));
      const at = hex.indexOf(key) + key.length;
      assert.equal(hex.slice(at, at + want.length), want, `created_at ${n}`);
      assert.equal(hex.slice(at + want.length, at + want.length + 2), 'a4', `created_at ${n}: next is "kind"`);
    }
  });

  it('uses fixstr/str8/str16 and bin8/bin16 by length, keys in spec order', () => {
    const ev = createEvent(SEED, {
      created_at: 1,
      kind: 65535,
      content: new Uint8Array(300),
      tags: [['n'.repeat(31), 'v'.repeat(32), 'w'.repeat(256)]],
    });
    const hex = bytesToHex(encodeEvent(ev));
    assert.ok(hex.startsWith('87a26964c420'), 'fixmap 7, "id", bin8 32');
    assert.ok(hex.includes('a46b696e64cdffff'), 'kind uint16');
    assert.ok(hex.includes('a7636f6e74656e74c5012c'), 'content bin16');
    assert.ok(hex.includes('bf' + '6e'.repeat(31)), 'fixstr 31');
    assert.ok(hex.includes('d920' + '76'.repeat(32)), 'str8 32');
    assert.ok(hex.includes('da0100' + '77'.repeat(256)), 'str16 256');
    const decoded = decode(encodeEvent(ev));
    assert.deepEqual(Object.keys(decoded), ['id', 'pubkey', 'created_at', 'kind', 'content', 'sig', 'tags']);
    assert.deepEqual(Object.keys(decoded.tags[0]), ['name', 'values']);
  });

  it('round-trips through validateEvent', () => {
    const ev = sample();
    const r = validateEvent(encodeEvent(ev));
    assert.ok(r.ok, r.message);
    assert.deepEqual(r.event.tags, ev.tags);
  });
});

describe('validateEvent', () => {
  it('accepts any key order and any integer width', () => {
    const ev = createEvent(SEED, { created_at: 1700000000, kind: 5, content: te.encode('x'), tags: [['t', 'x']] });
    // created_at as uint64, kind as uint32 (both wider than needed), keys reversed
    assert.equal(codeOf(mp.map(eventEntries(ev).reverse())), 'ok');
    // created_at as int64, kind as int8 (signed families, positive values)
    assert.equal(codeOf(mp.map(eventEntries(ev, { created_at: mp.int64(ev.created_at), kind: mp.int8(5) }))), 'ok');
    // the value, not the width, enters the id
    assert.equal(codeOf(mp.map(eventEntries(ev, { kind: mp.int8(6) }))), 400);
  });

  it('rejects a tampered signature, id, content and tag', () => {
    const ev = sample();
    const good = encodeEvent(ev);
    assert.equal(codeOf(good), 'ok');
    const sig = ev.sig.slice();
    sig[5] ^= 1;
    assert.equal(codeOf(encodeEvent({ ...ev, sig })), 400);
    const id = ev.id.slice();
    id[0] ^= 1;
    assert.equal(codeOf(encodeEvent({ ...ev, id })), 400);
    assert.equal(codeOf(encodeEvent({ ...ev, content: te.encode('hellp') })), 400);
    assert.equal(codeOf(encodeEvent({ ...ev, tags: [['t', 'x'], ['e'], ['a', '1', '3'], ['t', 'w']] })), 400);
  });

  it('accepts the same event with its tags in another wire order', () => {
    const ev = sample();
    assert.equal(codeOf(encodeEvent({ ...ev, tags: ev.tags.slice().reverse() })), 'ok');
  });

  it('rejects non-canonical S (S + L) with 400', () => {
    const ev = sample();
    const L = ed25519.Point.Fn.ORDER;
    let s = 0n;
    for (let i = 63; i >= 32; i--) s = (s << 8n) | BigInt(ev.sig[i]);
    s += L;
    const sig = ev.sig.slice();
    for (let i = 32; i < 64; i++) {
      sig[i] = Number(s & 0xffn);
      s >>= 8n;
    }
    // noble's non-strict (zip215) path would still reject S >= L too; what matters is 400
    assert.equal(codeOf(encodeEvent({ ...ev, sig })), 400);
  });

  it('rejects small-order public keys and small-order R', () => {
    // identity point (y = 1) as pubkey, R = identity, S = 0 verifies for every message
    // in lax verifiers: [0]B = R + [k]A with A = R = identity.
    const identity = hexToBytes('01' + '00'.repeat(31));
    const msg = new Uint8Array(32);
    const sig = new Uint8Array(64);
    sig.set(identity, 0);
    assert.equal(verifyStrict(sig, msg, identity), false);
    const base = { pubkey: identity, created_at: 1, kind: 1, content: new Uint8Array(), tags: [] };
    const id = eventId(base);
    assert.equal(codeOf(encodeEvent({ ...base, id, sig })), 400);

    // A real key but R = identity / small order with a matching S cannot be produced;
    // check the small-order R rejection directly: R = point of order 4 (y = 0).
    const order4 = new Uint8Array(32);
    const goodSig = sign(SEED, msg);
    const badR = goodSig.slice();
    badR.set(order4, 0);
    assert.equal(verifyStrict(badR, msg, ed25519.getPublicKey(SEED)), false);
    assert.equal(verifyStrict(goodSig, msg, ed25519.getPublicKey(SEED)), true);
  });

  it('accepts a signature whose R carries a torsion component (amended §3: cofactored equation)', () => {
    // sig' = (R + T, S) with T of order 8 still passes the cofactored equation.
    const pub = ed25519.getPublicKey(SEED);
    const msg = new Uint8Array(32).fill(9);
    // Build R' = [r]B + T and compute S for the new challenge with the secret scalar:
    // [S]B = R' + [k]A - T, so only the cofactored equation [8][S]B = [8]R' + [8][k]A holds.
    const { scalar } = ed25519.utils.getExtendedPublicKey(SEED);
    const P = ed25519.Point;
    const L = P.Fn.ORDER;
    const T = P.fromBytes(hexToBytes(ED25519_TORSION_SUBGROUP[3])); // a point of order 8
    assert.ok(T.isSmallOrder() && !T.is0());
    const r = 12345678901234567890n;
    const Rp = P.BASE.multiply(r).add(T);
    const RpB = Rp.toBytes();
    const h = ed25519sha512k(RpB, pub, msg) % L;
    const S = (r + h * scalar) % L;
    const sig = new Uint8Array(64);
    sig.set(RpB, 0);
    let s = S;
    for (let i = 32; i < 64; i++) {
      sig[i] = Number(s & 0xffn);
      s >>= 8n;
    }
    assert.equal(ed25519.verify(sig, msg, pub, { zip215: false }), true, 'cofactored verify accepts');
    assert.equal(verifyStrict(sig, msg, pub), true, 'the amended rule accepts');
  });

  it('maps size violations to 413 (content) and 400 (everything else)', () => {
    const mk = (fields) => encodeEvent(createEvent(SEED, { created_at: 1, kind: 1, content: new Uint8Array(), tags: [], ...fields }));
    assert.equal(codeOf(mk({ content: new Uint8Array(65536) })), 'ok');
    assert.equal(codeOf(mk({ content: new Uint8Array(65537) })), 413);
    assert.equal(codeOf(mk({ tags: Array.from({ length: 256 }, (_, i) => ['t', String(i)]) })), 'ok');
    assert.equal(codeOf(mk({ tags: Array.from({ length: 257 }, (_, i) => ['t', String(i)]) })), 400);
    assert.equal(codeOf(mk({ tags: [['n'.repeat(64)]] })), 'ok');
    assert.equal(codeOf(mk({ tags: [['n'.repeat(65)]] })), 400);
    assert.equal(codeOf(mk({ tags: [['']] })), 400);
    assert.equal(codeOf(mk({ tags: [['t', ...Array(16).fill('v')]] })), 'ok');
    assert.equal(codeOf(mk({ tags: [['t', ...Array(17).fill('v')]] })), 400);
    assert.equal(codeOf(mk({ tags: [['t', 'v'.repeat(1024)]] })), 'ok');
    assert.equal(codeOf(mk({ tags: [['t', 'v'.repeat(1025)]] })), 400);
    assert.equal(codeOf(mk({ kind: 65535 })), 'ok');
    assert.equal(codeOf(mk({ created_at: 2n ** 63n - 1n })), 'ok');
    assert.equal(codeOf(mk({ created_at: 0 })), 'ok');
  });

  it('rejects created_at out of range and kind out of range', () => {
    const ev = sample();
    assert.equal(codeOf(mp.map(eventEntries(ev, { created_at: mp.uint64(2n ** 63n) }))), 400);
    assert.equal(codeOf(mp.map(eventEntries(ev, { created_at: mp.uint64(2n ** 64n - 1n) }))), 400);
    assert.equal(codeOf(mp.map(eventEntries(ev, { created_at: mp.int8(-1) }))), 400);
    assert.equal(codeOf(mp.map(eventEntries(ev, { created_at: mp.float64(1700000000) }))), 400);
    assert.equal(codeOf(mp.map(eventEntries(ev, { kind: mp.uint32(65536) }))), 400);
    assert.equal(codeOf(mp.map(eventEntries(ev, { kind: mp.int8(-1) }))), 400);
    assert.equal(codeOf(mp.map(eventEntries(ev, { kind: mp.float64(1000) }))), 400);
  });

  it('rejects wrong shapes with 400', () => {
    const ev = sample();
    const M = (o) => mp.map(eventEntries(ev, o));
    const e = eventEntries(ev);
    assert.equal(codeOf(mp.map(e)), 'ok');
    assert.equal(codeOf(mp.map(e.slice(1))), 400, 'missing key');
    assert.equal(codeOf(mp.map([...e, ['extra', mp.bin(new Uint8Array())]])), 400, 'unknown key');
    assert.equal(codeOf(mp.map([...e, ['id', mp.bin(ev.id)]])), 400, 'duplicate key');
    assert.equal(codeOf(M({ content: mp.str('hello') })), 400, 'content as str');
    assert.equal(codeOf(M({ id: mp.str(new Uint8Array(32)) })), 400, 'id as str');
    assert.equal(codeOf(M({ id: mp.bin(ev.id.subarray(0, 31)) })), 400, 'short id');
    assert.equal(codeOf(M({ pubkey: mp.bin(cat(ev.pubkey, [0])) })), 400, 'long pubkey');
    assert.equal(codeOf(M({ sig: mp.bin(ev.sig.subarray(0, 63)) })), 400, 'short sig');
    assert.equal(codeOf(M({ tags: new Uint8Array([0xc0]) })), 400, 'tags nil');
    assert.equal(codeOf(M({ tags: mp.arr([mp.arr([mp.str('t'), mp.str('x')])]) })), 400, 'tag as array');
    assert.equal(codeOf(M({ tags: mp.arr([mp.map([['name', mp.str('t')]])]) })), 400, 'tag without values');
    assert.equal(codeOf(M({ tags: mp.arr([mp.map([['name', mp.str('t')], ['values', mp.arr([])], ['x', mp.arr([])]])]) })), 400, 'tag extra key');
    assert.equal(codeOf(M({ tags: mp.arr([mp.map([['name', mp.bin(te.encode('t'))], ['values', mp.arr([])]])]) })), 400, 'tag name bin');
    assert.equal(codeOf(M({ tags: mp.arr([mp.map([['name', mp.str('t')], ['values', mp.arr([mp.bin(te.encode('x'))])]])]) })), 400, 'tag value bin');
    assert.equal(codeOf(M({ tags: mp.arr([mp.map([['name', mp.str(new Uint8Array([0xff]))], ['values', mp.arr([])]])]) })), 400, 'tag name invalid UTF-8');
    assert.equal(codeOf(mp.map(e.map(([k, v]) => [k === 'id' ? mp.bin(te.encode('id')) : k, v]))), 400, 'bin key');
    assert.equal(codeOf(cat(mp.map(e), [0x00])), 400, 'trailing byte');
    assert.equal(codeOf(mp.arr(e.map(([, v]) => v))), 400, 'array instead of map');
    assert.equal(codeOf(new Uint8Array()), 400, 'empty input');
    assert.equal(codeOf(new Uint8Array([0xc1])), 400, 'reserved byte');
    assert.equal(codeOf(new Uint8Array([0xdf, 0xff, 0xff, 0xff, 0xff])), 400, 'huge map count');
    assert.equal(codeOf(new Uint8Array(Array(100000).fill(0x91))), 400, 'deep nesting');
  });

  it('rejects duplicate tags with 400 (before the id check)', () => {
    // A correctly signed event cannot carry duplicate tags (canonical_tags is
    // undefined for them), so any id works here: duplicate tags must win over the id check.
    const ev = sample();
    assert.equal(codeOf(encodeEvent({ ...ev, tags: [['t', 'x'], ['t', 'x', 'y']] })), 400);
    assert.equal(codeOf(encodeEvent({ ...ev, tags: [['e'], ['e']] })), 400);
  });

  it('never throws on random or mutated input', () => {
    const good = encodeEvent(sample());
    let seed = 12345;
    const rnd = () => {
      seed = (seed * 1103515245 + 12345) & 0x7fffffff;
      return seed;
    };
    for (let i = 0; i < 3000; i++) {
      const b = good.slice(0, i % 5 === 0 ? rnd() % good.length : good.length);
      const flips = 1 + (rnd() % 4);
      for (let f = 0; f < flips && b.length; f++) b[rnd() % b.length] = rnd() & 0xff;
      const r = validateEvent(b);
      assert.ok(r.ok || r.code === 400 || r.code === 413);
    }
    for (let i = 0; i < 2000; i++) {
      const b = new Uint8Array(rnd() % 64).map(() => rnd() & 0xff);
      const r = validateEvent(b);
      assert.ok(!r.ok && (r.code === 400 || r.code === 413));
    }
  });
});

function ed25519sha512k(R, A, msg) {
  const h = sha512(cat(R, A, msg));
  let n = 0n;
  for (let i = h.length - 1; i >= 0; i--) n = (n << 8n) | BigInt(h[i]);
  return n;
}
