// Integration tests against the real relay binary (see support/relay.mjs).

import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';

import {
  AuthError,
  AxonError,
  ConnectionClosedError,
  END_OF_STORED,
  ForbiddenError,
  Key,
  RateLimitedError,
  TooLargeError,
  connect,
  openDm,
} from '../src/index.mjs';
import { AXON_BIN, TestRelay, nextWithin } from './support/relay.mjs';

const admin = Key.generate();
const alice = Key.generate();
const bob = Key.generate();
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

describe('against the real relay', () => {
  let relay;
  before(async () => {
    relay = await TestRelay.start({ admins: [admin.publicHex], allowlist: [alice.publicHex, bob.publicHex] });
  });
  after(async () => {
    await relay?.close();
  });

  it('authenticates (relay_url from the info document)', async () => {
    const client = await connect(relay.url, alice);
    assert.equal(client.relayUrl, relay.url);
    assert.equal(client.info.protocol, 'axon.v1');
    assert.equal(client.state, 'open');
    client.close();
  });

  it('a bad AUTH signature (wrong relay_url) is AuthError 401', async () => {
    await assert.rejects(connect(relay.url, alice, { relayUrl: 'ws://elsewhere/' }), (error) => {
      assert.ok(error instanceof AuthError && error instanceof AxonError);
      assert.equal(error.code, 401);
      return true;
    });
  });

  it('a key that is not allowed is ForbiddenError 403', async () => {
    await assert.rejects(connect(relay.url, Key.generate()), (error) => {
      assert.ok(error instanceof ForbiddenError);
      assert.equal(error.code, 403);
      assert.match(error.message, /./);
      return true;
    });
  });

  it('publishes and queries with every filter field', async () => {
    const client = await connect(relay.url, alice);
    const topic = `t${Date.now()}`;
    const now = Math.floor(Date.now() / 1000);
    const a = await client.publish({ kind: 1000, content: 'one', tags: [['topic', topic]], createdAt: now - 100 });
    const b = await client.publish({ kind: 1001, content: new Uint8Array([0, 255]), tags: [['topic', topic], ['x']], createdAt: now - 50 });
    const c = await client.publish({ kind: 1000, content: 'three', tags: [['topic', 'other']], createdAt: now });
    assert.ok(a.seq > 0 && b.seq > a.seq && c.seq > b.seq, 'seqs increase');
    assert.equal(a.id.length, 32);
    assert.equal(a.duplicate, false);

    const byTag = await client.query([{ tags: { topic: [topic] } }]);
    assert.deepEqual(byTag.map((e) => e.seq), [b.seq, a.seq], 'newest first');
    const first = byTag[1];
    assert.equal(first.text, 'one');
    assert.equal(first.kind, 1000);
    assert.equal(first.pubkeyHex, alice.publicHex);
    assert.equal(first.created_at, now - 100);
    assert.deepEqual(first.tags, [['topic', topic]]);
    assert.ok(first.verify(), 'the stored event verifies');
    assert.deepEqual([...byTag[0].content], [0, 255], 'binary content round-trips');

    const ids = (events) => events.map((e) => e.idHex).sort();
    assert.deepEqual(ids(await client.query([{ ids: [a.idHex.slice(0, 8)] }])), [a.idHex]);
    assert.deepEqual(ids(await client.query([{ ids: [a.id] }])), [a.idHex]);
    assert.deepEqual(ids(await client.query([{ authors: [alice.publicHex.slice(0, 10)], kinds: [1001] }])), [b.idHex]);
    assert.deepEqual(ids(await client.query([{ authors: [alice.publicKey], since: now - 60, until: now - 10 }])), [b.idHex]);
    assert.deepEqual(ids(await client.query([{ tags: [{ name: 'topic', values: [topic, 'other'] }], kinds: [1000] }])), [a.idHex, c.idHex].sort());
    const limited = await client.query([{ authors: [alice.publicHex], limit: 1 }]);
    assert.equal(limited.length, 1);
    const replay = await client.query([{ tags: { topic: [topic] } }], { afterSeq: a.seq });
    assert.deepEqual(replay.map((e) => e.seq), [b.seq], 'afterSeq replays, oldest first');
    // Two filters: OR.
    assert.deepEqual(ids(await client.query([{ ids: [a.idHex] }, { ids: [c.idHex] }])), [a.idHex, c.idHex].sort());

    // 409: a duplicate is success with a flag.
    const again = await client.publishEvent(first);
    assert.equal(again.duplicate, true);
    assert.equal(again.idHex, a.idHex);
    client.close();
  });

  it('pipelines publishes and answers each one', async () => {
    const client = await connect(relay.url, alice);
    const results = await Promise.all(Array.from({ length: 300 }, (_, i) => client.publish({ kind: 1500, content: `p${i}` })));
    const seqs = results.map((r) => r.seq);
    assert.equal(new Set(seqs).size, 300);
    assert.ok(seqs.every((s) => s > 0));
    client.close();
  });

  it('delivers stored events, END_OF_STORED, then live events; ephemeral events have seq 0', async () => {
    const sub = await connect(relay.url, bob);
    const pub = await connect(relay.url, alice);
    const topic = `live${Date.now()}`;
    const stored = await pub.publish({ kind: 1000, content: 'before', tags: [['topic', topic]] });
    const iterator = sub.subscribe([{ tags: { topic: [topic] } }])[Symbol.asyncIterator]();
    assert.equal((await nextWithin(iterator)).idHex, stored.idHex);
    assert.equal(await nextWithin(iterator), END_OF_STORED);
    const live = await pub.publish({ kind: 1000, content: 'after', tags: [['topic', topic]] });
    const got = await nextWithin(iterator);
    assert.equal(got.idHex, live.idHex);
    assert.equal(got.seq, live.seq);
    await pub.publish({ kind: 3000, content: 'progress 50%', tags: [['topic', topic]] });
    const progress = await nextWithin(iterator);
    assert.equal(progress.kind, 3000);
    assert.equal(progress.seq, 0);
    await iterator.return();
    sub.close();
    pub.close();
  });

  it('DMs: the recipient (and the sender) open it; a third key cannot', async () => {
    const a = await connect(relay.url, alice);
    const b = await connect(relay.url, bob);
    const sent = await a.sendDm(bob.publicHex, 'for bob only');
    const [dm] = await b.query([{ ids: [sent.idHex] }]);
    assert.equal(dm.kind, 2000);
    assert.equal(new TextDecoder().decode(openDm(bob, dm)), 'for bob only');
    assert.equal(new TextDecoder().decode(openDm(alice, dm)), 'for bob only');
    assert.throws(() => openDm(Key.generate(), dm), /decryption failed/);
    a.close();
    b.close();
  });

  it('admin: allow, allowlist, revoke closes the revoked key\'s connection with 403', async () => {
    const carol = Key.generate();
    const boss = await connect(relay.url, admin);
    await assert.rejects(connect(relay.url, carol), ForbiddenError);
    await boss.allow(carol.publicHex);
    assert.ok((await boss.allowlist()).includes(carol.publicHex));
    const client = await connect(relay.url, carol);
    const iterator = client.subscribe([{ kinds: [1000], limit: 0 }], { resume: true })[Symbol.asyncIterator]();
    assert.equal(await nextWithin(iterator), END_OF_STORED);
    const states = [];
    client.on('state', (state, error) => states.push([state, error?.code]));
    await boss.revoke(carol.publicHex);
    await assert.rejects(iterator.next(), (error) => {
      assert.ok(error instanceof ForbiddenError, `got ${error}`);
      assert.equal(error.code, 403);
      return true;
    });
    assert.deepEqual(states, [['disconnected', 403]]);
    await assert.rejects(client.publish({ kind: 1000, content: 'x' }), ForbiddenError);
    assert.ok(!(await boss.allowlist()).includes(carol.publicHex));
    const log = await boss.adminLog();
    assert.deepEqual(log.slice(-2).map((e) => e.kind), [9000, 9001]);
    // A non-admin's admin event is refused.
    const a = await connect(relay.url, alice);
    await assert.rejects(a.allow(carol.publicHex), ForbiddenError);
    a.close();
    boss.close();
  });

  it('rejects bad input from the caller before anything is sent', async () => {
    const client = await connect(relay.url, alice);
    await assert.rejects(connect(relay.url, 'not a key'), TypeError);
    await assert.rejects(connect(relay.url, { publicKey: new Uint8Array(32) }), TypeError);
    await assert.rejects(connect('http://127.0.0.1:1', alice), TypeError);
    assert.throws(() => Key.fromHex('zz'), TypeError);
    assert.throws(() => Key.fromBytes(new Uint8Array(31)), TypeError);
    await assert.rejects(client.publish({ kind: 1000, content: new Uint8Array(65537) }), TooLargeError);
    await assert.rejects(client.publish({ kind: 70000, content: 'x' }), TypeError);
    await assert.rejects(client.publish({ kind: 1000, content: 12 }), TypeError);
    await assert.rejects(client.publish({ kind: 1000, tags: [['t', 'a'], ['t', 'a']] }), (e) => e.code === 400);
    await assert.rejects(client.publish({ kind: 1000, tags: 'topic' }), TypeError);
    assert.throws(() => client.subscribe([{ authors: ['xyz'] }]), TypeError);
    assert.throws(() => client.subscribe([{ author: ['ab'] }]), /unknown filter key "author"/);
    assert.throws(() => client.subscribe([{ kinds: [-1] }]), TypeError);
    assert.throws(() => client.subscribe([{ tags: { topic: [] } }]), TypeError);
    await assert.rejects(client.query([{ ids: ['abc'] }]), TypeError);
    await assert.rejects(client.sendDm('nothex', 'x'), TypeError);
    await assert.rejects(client.allow('12'), TypeError);
    // The connection is still fine.
    assert.ok((await client.publish({ kind: 1000, content: 'still fine' })).seq > 0);
    client.close();
    await assert.rejects(client.publish({ kind: 1000, content: 'x' }), ConnectionClosedError);
  });

  it('key files: a JS key works with the Rust CLI and an `axon keygen` key works here', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'axon-keys-'));
    const jsKey = path.join(dir, 'js.key');
    await alice.save(jsKey);
    assert.equal(statSync(jsKey).mode & 0o777, 0o600);
    await assert.rejects(alice.save(jsKey), /EEXIST/);
    assert.equal((await Key.load(jsKey)).publicHex, alice.publicHex);
    const out = execFileSync(AXON_BIN, ['publish', '--url', relay.url, '--key', jsKey, '--kind', '1000', 'from the rust cli'], { encoding: 'utf8' });
    const idHex = out.trim().split(/\s+/)[0];
    const client = await connect(relay.url, bob);
    const [event] = await client.query([{ ids: [idHex] }]);
    assert.equal(event.pubkeyHex, alice.publicHex);
    const rustKey = path.join(dir, 'rust.key');
    const pub = execFileSync(AXON_BIN, ['keygen', '--out', rustKey], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
    const loaded = await Key.load(rustKey);
    assert.equal(loaded.publicHex, pub);
    assert.equal(loaded.toKeyFile(), readFileSync(rustKey, 'utf8'));
    client.close();
  });

  it('a dropped connection rejects pending publishes (no hang)', async () => {
    const other = await TestRelay.start({ allowlist: [alice.publicHex] });
    try {
      const client = await connect(other.url, alice);
      const pending = Array.from({ length: 200 }, (_, i) => client.publish({ kind: 1000, content: `x${i}` }));
      other.process.kill('SIGKILL');
      const results = await Promise.allSettled(pending);
      const failed = results.filter((r) => r.status === 'rejected');
      for (const r of failed) assert.ok(r.reason instanceof AxonError, String(r.reason));
      await assert.rejects(client.publish({ kind: 1000, content: 'after' }), AxonError);
    } finally {
      await other.close();
    }
  });
});

describe('resume', () => {
  it('survives a relay restart with no gap and no duplicate', async () => {
    const relay = await TestRelay.start({ allowlist: [alice.publicHex, bob.publicHex] });
    try {
      const sub = await connect(relay.url, bob, { backoffBaseMs: 100, backoffMaxMs: 500 });
      const states = [];
      sub.on('state', (state) => states.push(state));
      const iterator = sub.subscribe([{ kinds: [1000] }], { resume: true })[Symbol.asyncIterator]();
      let pub = await connect(relay.url, alice);
      const before = [];
      for (let i = 0; i < 5; i++) before.push((await pub.publish({ kind: 1000, content: `b${i}` })).seq);
      const seen = [];
      for (let i = 0; i < 5; i++) seen.push((await nextWithin(iterator)).seq);
      assert.deepEqual(seen.sort((x, y) => x - y), before);
      assert.equal(await nextWithin(iterator), END_OF_STORED);
      const live = (await pub.publish({ kind: 1000, content: 'live' })).seq;
      assert.equal((await nextWithin(iterator)).seq, live);
      pub.close();
      await relay.restart();
      pub = await connect(relay.url, alice);
      const during = [];
      for (let i = 0; i < 10; i++) during.push((await pub.publish({ kind: 1000, content: `d${i}` })).seq);
      const got = [];
      for (let i = 0; i < 10; i++) got.push((await nextWithin(iterator, 15000)).seq);
      assert.deepEqual(got, during, 'every event once, in seq order');
      const last = (await pub.publish({ kind: 1000, content: 'last' })).seq;
      assert.equal((await nextWithin(iterator)).seq, last, 'no duplicate before the next live event');
      assert.ok(states.includes('disconnected') && states.at(-1) === 'open', states.join(','));
      await iterator.return();
      sub.close();
      pub.close();
    } finally {
      await relay.close();
    }
  });

  it('a live-only subscription (limit 0) resumes across a restart without replaying history', async () => {
    const relay = await TestRelay.start({ allowlist: [alice.publicHex, bob.publicHex] });
    try {
      let pub = await connect(relay.url, alice);
      for (let i = 0; i < 3; i++) await pub.publish({ kind: 1001, content: `old${i}` });
      const sub = await connect(relay.url, bob, { backoffBaseMs: 100, backoffMaxMs: 500 });
      const iterator = sub.subscribe([{ kinds: [1001], limit: 0 }], { resume: true })[Symbol.asyncIterator]();
      assert.equal(await nextWithin(iterator), END_OF_STORED);
      const live = (await pub.publish({ kind: 1001, content: 'live' })).seq;
      assert.equal((await nextWithin(iterator)).seq, live);
      pub.close();
      await relay.restart();
      pub = await connect(relay.url, alice);
      const after = [];
      for (let i = 0; i < 2; i++) after.push((await pub.publish({ kind: 1001, content: `new${i}` })).seq);
      const got = [(await nextWithin(iterator, 15000)).seq, (await nextWithin(iterator)).seq];
      assert.deepEqual(got, after);
      await iterator.return();
      sub.close();
      pub.close();
    } finally {
      await relay.close();
    }
  });

  it('survives a forced overflow (ERROR 503 with a resume seq) with no gap and no duplicate', async () => {
    const relay = await TestRelay.start({ allowlist: [alice.publicHex, bob.publicHex], limits: { outbound_queue: 8 } });
    try {
      const sub = await connect(relay.url, bob, { backoffBaseMs: 50, backoffMaxMs: 200 });
      const iterator = sub.subscribe([{ kinds: [1000], limit: 0 }], { resume: true, afterSeq: 0 })[Symbol.asyncIterator]();
      assert.equal(await nextWithin(iterator), END_OF_STORED);
      // Stop reading the socket so the relay's queue for this connection fills up.
      sub.connection.ws._socket.pause();
      const pub = await connect(relay.url, alice);
      const big = 'x'.repeat(60000);
      const published = [];
      for (let i = 0; i < 300; i++) published.push((await pub.publish({ kind: 1000, content: `${i}${big}` })).seq);
      sub.connection.ws._socket.resume();
      const got = [];
      for (let i = 0; i < published.length; i++) got.push((await nextWithin(iterator, 20000)).seq);
      assert.deepEqual(got, published);
      const metrics = await (await fetch(`${relay.httpUrl}/metrics`)).text();
      const overflows = metrics.split('\n').find((l) => /^axon_\w*overflow\w*\s/.test(l));
      assert.ok(overflows && Number(overflows.split(/\s+/)[1]) >= 1, `the subscription overflowed: ${overflows}`);
      await iterator.return();
      sub.close();
      pub.close();
    } finally {
      await relay.close();
    }
  });
});

describe('rate limit', () => {
  it('429 carries retry_after_ms; retrying after it succeeds', async () => {
    const relay = await TestRelay.start({ allowlist: [alice.publicHex], limits: { publish_per_second: 2, publish_burst: 1 } });
    try {
      const client = await connect(relay.url, alice);
      await client.publish({ kind: 1000, content: 'first' });
      let limited;
      try {
        await client.publish({ kind: 1000, content: 'second' }, { retries: 0 });
      } catch (error) {
        limited = error;
      }
      assert.ok(limited instanceof RateLimitedError, `expected 429, got ${limited}`);
      assert.equal(limited.code, 429);
      assert.ok(Number.isInteger(limited.retryAfterMs) && limited.retryAfterMs > 0, `retry_after_ms missing: ${limited.retryAfterMs}`);
      await sleep(limited.retryAfterMs);
      assert.ok((await client.publish({ kind: 1000, content: 'second' }, { retries: 0 })).seq > 0);
      // By default publish waits the hint itself: two more at once against 2/s, burst 1.
      const started = Date.now();
      const results = await Promise.all([client.publish({ kind: 1000, content: 'third' }), client.publish({ kind: 1000, content: 'fourth' })]);
      assert.ok(results.every((result) => result.seq > 0), 'both accepted after waiting');
      assert.ok(Date.now() - started >= 400, 'the second waited at least one retry hint');
      client.close();
    } finally {
      await relay.close();
    }
  });
});
