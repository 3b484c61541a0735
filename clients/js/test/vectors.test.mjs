// Checks the Axon v1 test vectors (testvectors/valid.json, invalid.json) with
// the independent JavaScript implementation in src/axon.mjs.
//
// The vector files are required: if they are missing or empty these tests FAIL.
// AXON_VECTORS_DIR may point at another directory (default: ../../testvectors).

import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, readdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import path from 'node:path';

import {
  bytesToHex,
  canonicalPayload,
  canonicalTags,
  eventId,
  encodeEvent,
  hexToBytes,
  publicKeyFromSeed,
  sign,
  tagsHash,
  validateEvent,
  verifyStrict,
} from '../src/axon.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const vectorsDir = process.env.AXON_VECTORS_DIR
  ? path.resolve(process.env.AXON_VECTORS_DIR)
  : path.resolve(here, '..', '..', '..', 'testvectors');

function loadVectors(file) {
  const p = path.join(vectorsDir, file);
  let text;
  try {
    text = readFileSync(p, 'utf8');
  } catch (e) {
    // Deliberately a failure, not a skip: the cross-check is the whole point.
    throw new Error(`test vector file missing: ${p} (${e.code ?? e.message})`);
  }
  const doc = JSON.parse(text);
  assert.equal(doc.version, 1, `${file}: version must be 1`);
  assert.ok(Array.isArray(doc.vectors), `${file}: vectors must be an array`);
  assert.ok(doc.vectors.length > 0, `${file}: no vectors`);
  const names = new Set();
  for (const v of doc.vectors) {
    assert.equal(typeof v.name, 'string', `${file}: every vector needs a name`);
    assert.ok(!names.has(v.name), `${file}: duplicate vector name ${v.name}`);
    names.add(v.name);
  }
  return doc.vectors;
}

// Load at module level so that a missing file is reported per file as a
// failing test (not as a crash of the whole run, and never as a skip).
function tryLoad(file) {
  try {
    return { vectors: loadVectors(file) };
  } catch (error) {
    return { error };
  }
}

// valid.json and invalid.json are required; any other *.json file in the directory is
// checked too: a vector with a `code` is an invalid one, one with a boolean `valid` a
// signature-rule vector (signatures.json: pubkey, message, sig, valid, msgpack), any
// other a valid one.
const valid = tryLoad('valid.json');
const invalid = tryLoad('invalid.json');
const signatures = [];
const extraFiles = readdirSync(vectorsDir)
  .filter((f) => f.endsWith('.json') && f !== 'valid.json' && f !== 'invalid.json')
  .sort();
for (const file of extraFiles) {
  const loaded = tryLoad(file);
  if (loaded.error) {
    (valid.extraErrors ??= []).push(loaded.error);
    continue;
  }
  for (const v of loaded.vectors) {
    const tagged = { ...v, name: `${file}: ${v.name}` };
    if (v.code !== undefined) (invalid.vectors ??= []).push(tagged);
    else if (typeof v.valid === 'boolean') signatures.push(tagged);
    else (valid.vectors ??= []).push(tagged);
  }
}

const isHex = (s) => typeof s === 'string' && /^([0-9a-f]{2})*$/.test(s);

describe('valid.json', () => {
  it('exists and is well-formed', () => {
    if (valid.error) throw valid.error;
    for (const error of valid.extraErrors ?? []) throw error;
  });

  for (const v of valid.vectors ?? []) {
    it(`${v.name}`, () => {
      for (const k of ['seed', 'pubkey', 'content', 'canonical_tags', 'tags_hash', 'canonical_payload', 'id', 'sig', 'msgpack']) {
        assert.ok(isHex(v[k]), `${k} must be lowercase hex`);
      }
      assert.ok(Number.isSafeInteger(v.created_at) && v.created_at >= 0, 'created_at must be a non-negative safe integer');
      assert.ok(Number.isInteger(v.kind), 'kind must be an integer');
      assert.ok(Array.isArray(v.tags), 'tags must be an array');

      const seed = hexToBytes(v.seed);
      const pubkey = publicKeyFromSeed(seed);
      assert.equal(bytesToHex(pubkey), v.pubkey, 'pubkey derived from seed');

      const event = {
        pubkey,
        created_at: v.created_at,
        kind: v.kind,
        content: hexToBytes(v.content),
        tags: v.tags,
      };
      assert.equal(bytesToHex(canonicalTags(v.tags)), v.canonical_tags, 'canonical_tags');
      assert.equal(bytesToHex(tagsHash(v.tags)), v.tags_hash, 'tags_hash');
      assert.equal(bytesToHex(canonicalPayload(event)), v.canonical_payload, 'canonical_payload');
      const id = eventId(event);
      assert.equal(bytesToHex(id), v.id, 'id');
      const ownSig = sign(seed, id);
      assert.ok(verifyStrict(ownSig, id, pubkey), 'verification of our own signature');
      const sig = hexToBytes(v.sig);
      if (bytesToHex(ownSig) !== v.sig) {
        // Not the deterministic RFC 8032 signature (e.g. R with a torsion component):
        // it must still be valid by the §3 rule.
        assert.ok(verifyStrict(sig, id, pubkey), `sig is neither Ed25519-Sign(seed, id) nor valid by §3`);
      }

      const encoded = encodeEvent({ ...event, id, sig });
      assert.equal(bytesToHex(encoded), v.msgpack, 'msgpack encoding');

      const res = validateEvent(hexToBytes(v.msgpack));
      assert.ok(res.ok, `validateEvent rejected the vector: ${res.code} ${res.message}`);
      assert.equal(bytesToHex(res.event.id), v.id);
      assert.equal(bytesToHex(res.event.pubkey), v.pubkey);
      assert.equal(res.event.created_at, v.created_at);
      assert.equal(res.event.kind, v.kind);
      assert.equal(bytesToHex(res.event.content), v.content);
      assert.equal(bytesToHex(res.event.sig), v.sig);
      assert.deepEqual(res.event.tags, v.tags);
    });
  }
});

describe('invalid.json', () => {
  it('exists and is well-formed', () => {
    if (invalid.error) throw invalid.error;
  });

  for (const v of invalid.vectors ?? []) {
    it(`${v.name} → ${v.code}`, () => {
      assert.ok(isHex(v.msgpack), 'msgpack must be lowercase hex');
      assert.ok(Number.isInteger(v.code), 'code must be an integer');
      const res = validateEvent(hexToBytes(v.msgpack));
      assert.equal(res.ok, false, `validateEvent accepted an invalid vector (${v.description ?? ''})`);
      assert.equal(res.code, v.code, `expected ${v.code}, got ${res.code} (${res.message}); vector: ${v.description ?? ''}`);
    });
  }
});

describe('signature-rule vectors (spec §3 as amended)', () => {
  it('are present', () => {
    assert.ok(signatures.length >= 6, `expected the signature-rule vectors, found ${signatures.length}`);
  });

  for (const v of signatures) {
    it(`${v.name} → ${v.valid ? 'valid' : 'invalid'}`, () => {
      for (const k of ['pubkey', 'message', 'sig', 'msgpack']) assert.ok(isHex(v[k]), `${k} must be lowercase hex`);
      const verdict = verifyStrict(hexToBytes(v.sig), hexToBytes(v.message), hexToBytes(v.pubkey));
      assert.equal(verdict, v.valid, `the rule's verdict; vector: ${v.description ?? ''}`);
      const res = validateEvent(hexToBytes(v.msgpack));
      if (v.valid) {
        assert.ok(res.ok, `validateEvent rejected a valid signature: ${res.code} ${res.message}`);
        assert.equal(bytesToHex(res.event.sig), v.sig);
      } else {
        assert.equal(res.ok, false, 'validateEvent accepted an invalid signature');
        assert.equal(res.code, 400);
      }
    });
  }
});
