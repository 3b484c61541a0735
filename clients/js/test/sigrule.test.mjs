// The signature rule of spec §3 (amended 2026-12-01), one case per clause:
// a torsion component in R (valid), small-order R, non-canonical R, non-canonical A,
// S = ℓ (each invalid).

import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { ed25519, ED25519_TORSION_SUBGROUP } from '@noble/curves/ed25519.js';
import { sha512 } from '@noble/hashes/sha2.js';

import { createEvent, encodeEvent, hexToBytes, validateEvent, verifySignature } from '../src/axon.mjs';

const P = ed25519.Point;
const L = P.Fn.ORDER;
const PRIME = P.Fp.ORDER;
const SEED = new Uint8Array(32).fill(7);
const { scalar: a, pointBytes: A } = ed25519.utils.getExtendedPublicKey(SEED);
const MSG = new Uint8Array(32).fill(3);

const le = (n, len = 32) => {
  const out = new Uint8Array(len);
  for (let i = 0; i < len; i++) {
    out[i] = Number(n & 0xffn);
    n >>= 8n;
  }
  return out;
};
const fromLe = (b) => b.reduceRight((n, x) => (n << 8n) | BigInt(x), 0n);
const k = (R, pub, msg) => fromLe(sha512(new Uint8Array([...R, ...pub, ...msg]))) % L;

/** A signature with nonce point R = [r]B + T (T torsion or identity), S = r + k·a. */
function signWithR(r, T = P.ZERO, msg = MSG) {
  const R = P.BASE.multiply(r).add(T).toBytes();
  const S = (r + k(R, A, msg) * a) % L;
  return new Uint8Array([...R, ...le(S)]);
}

describe('signature rule (§3 amended)', () => {
  it('a plain RFC 8032 signature is valid', () => {
    assert.equal(verifySignature(ed25519.sign(MSG, SEED), MSG, A), true);
  });

  it('torsion component in R: valid (cofactored equation), though cofactorless RFC 8032 rejects it', () => {
    const T = P.fromBytes(hexToBytes(ED25519_TORSION_SUBGROUP[1]));
    assert.ok(T.isSmallOrder() && !T.is0());
    const sig = signWithR(987654321n, T);
    const R = P.fromBytes(sig.subarray(0, 32));
    const S = fromLe(sig.subarray(32));
    const cofactorless = P.BASE.multiply(S).subtract(P.fromBytes(A).multiply(k(sig.subarray(0, 32), A, MSG))).equals(R);
    assert.equal(cofactorless, false, 'the cofactorless equation fails');
    assert.equal(verifySignature(sig, MSG, A), true);
  });

  it('small-order R: invalid', () => {
    // R = T (r = 0), S = k·a: the cofactored equation holds, only clause 3 rejects it.
    for (const hex of ED25519_TORSION_SUBGROUP) {
      const T = P.fromBytes(hexToBytes(hex));
      const R = T.toBytes();
      const S = (k(R, A, MSG) * a) % L;
      const sig = new Uint8Array([...R, ...le(S)]);
      assert.equal(P.BASE.multiply(S).subtract(P.fromBytes(A).multiply(k(R, A, MSG))).subtract(T).clearCofactor().is0(), true);
      assert.equal(verifySignature(sig, MSG, A), false, `R = ${hex}`);
    }
  });

  it('non-canonical R (y ≥ p, or x = 0 with the sign bit set): invalid', () => {
    const good = ed25519.sign(MSG, SEED);
    // y = p + 1 encodes the identity non-canonically; x = 0 with the sign bit set too.
    const cases = [le(PRIME + 1n), (() => { const b = le(1n); b[31] |= 0x80; return b; })()];
    // And an on-curve y < 19 (not small order) written as y + p.
    for (let y = 2n; y < 19n; y++) {
      try {
        const pt = P.fromBytes(le(y));
        if (!pt.isSmallOrder()) cases.push(le(y + PRIME));
      } catch { /* not on the curve */ }
    }
    for (const R of cases) {
      assert.ok(P.fromBytes(R, true), 'decodes in the lax (zip215) mode');
      const sig = good.slice();
      sig.set(R, 0);
      assert.equal(verifySignature(sig, MSG, A), false);
    }
  });

  it('non-canonical A: invalid', () => {
    // The identity written as y = p + 1 with R = identity and S = 0 satisfies every
    // equation; clause 2 (and 3) reject it.
    const A2 = le(PRIME + 1n);
    assert.ok(P.fromBytes(A2, true).is0());
    const sig = new Uint8Array(64);
    sig.set(le(1n), 0);
    assert.equal(verifySignature(sig, MSG, A2), false);
    // A large-order point with y < 19 written as y + p.
    for (let y = 2n; y < 19n; y++) {
      try {
        const pt = P.fromBytes(le(y));
        if (pt.isSmallOrder()) continue;
        assert.equal(verifySignature(ed25519.sign(MSG, SEED), MSG, le(y + PRIME)), false);
      } catch { /* not on the curve */ }
    }
  });

  it('S = ℓ and S + ℓ: invalid', () => {
    const good = ed25519.sign(MSG, SEED);
    const S = fromLe(good.subarray(32));
    const plusL = good.slice();
    plusL.set(le(S + L), 32);
    assert.equal(verifySignature(plusL, MSG, A), false, 'S + ℓ');
    // S = ℓ ≡ 0: with R = −[k]A... impossible to choose; R = [ℓ]B-equivalent check:
    const sigL = good.slice();
    sigL.set(le(L), 32);
    assert.equal(verifySignature(sigL, MSG, A), false, 'S = ℓ');
  });

  it('a published event with a small-order R is rejected with 400', () => {
    const ev = createEvent(SEED, { created_at: 1, kind: 1000, content: 'x', tags: [] });
    const T = P.fromBytes(hexToBytes(ED25519_TORSION_SUBGROUP[2]));
    const R = T.toBytes();
    const S = (k(R, A, ev.id) * a) % L;
    const sig = new Uint8Array([...R, ...le(S)]);
    const res = validateEvent(encodeEvent({ ...ev, sig }));
    assert.equal(res.ok, false);
    assert.equal(res.code, 400);
    const T8 = P.fromBytes(hexToBytes(ED25519_TORSION_SUBGROUP[1]));
    const r = 4242n;
    const R2 = P.BASE.multiply(r).add(T8).toBytes();
    const S2 = (r + k(R2, A, ev.id) * a) % L;
    assert.equal(validateEvent(encodeEvent({ ...ev, sig: new Uint8Array([...R2, ...le(S2)]) })).ok, true);
  });
});
