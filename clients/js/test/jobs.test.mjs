// Job queues (spec §14) against the real relay: relay.jobs, Job, relay.work, relay.request.

import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';

import { Key, LeaseLostError, RequestTimeoutError, connect, signEvent } from '../src/index.mjs';
import { TestRelay, nextWithin } from './support/relay.mjs';

const alice = Key.generate();
const bob = Key.generate();
const carol = Key.generate();
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** Polls `check` until it returns a truthy value; throws after `ms`. */
async function until(check, ms = 10000, what = 'condition') {
  const deadline = Date.now() + ms;
  for (;;) {
    const value = await check();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(25);
  }
}

/** Results (kind) stored per job id hex. */
async function resultsByJob(client, kind) {
  const counts = new Map();
  for (const event of await client.query([{ kinds: [kind] }])) {
    const job = event.tag('e');
    counts.set(job, (counts.get(job) ?? 0) + 1);
  }
  return counts;
}

describe('job queues against the real relay', () => {
  let relay;
  before(async () => {
    relay = await TestRelay.start({ allowlist: [alice.publicHex, bob.publicHex, carol.publicHex] });
  });
  after(async () => {
    await relay?.close();
  });

  it('3 workers x 60 jobs: each handled and completed exactly once, one result per job', async () => {
    const kind = 5000;
    const requester = await connect(relay.url, alice);
    const workers = await Promise.all([alice, bob, carol].map((key) => connect(relay.url, key)));
    const calls = new Map();
    const perWorker = [0, 0, 0];
    const stop = new AbortController();
    const running = workers.map((worker, i) =>
      worker.work(
        'pool',
        kind,
        async (job) => {
          calls.set(job.idHex, (calls.get(job.idHex) ?? 0) + 1);
          perWorker[i] += 1;
          await sleep(Math.random() * 5);
          return `done:${job.text}`;
        },
        { concurrency: 2, signal: stop.signal },
      ),
    );
    const ids = [];
    for (let n = 0; n < 60; n += 1) ids.push((await requester.publish({ kind, content: `job ${n}` })).idHex);
    const results = await until(async () => {
      const counts = await resultsByJob(requester, kind + 1000);
      return counts.size >= 60 ? counts : null;
    }, 20000, '60 results');
    stop.abort();
    const handled = await Promise.all(running);
    assert.equal(handled.reduce((a, b) => a + b, 0), 60);
    for (const id of ids) {
      assert.equal(calls.get(id), 1, `job ${id} handled once`);
      assert.equal(results.get(id), 1, `job ${id} has one result`);
    }
    assert.equal(results.size, 60);
    const stored = await requester.query([{ kinds: [kind + 1000], tags: { e: [ids[7]] } }]);
    assert.equal(stored[0].text, 'done:job 7');
    assert.ok(perWorker.filter((n) => n > 0).length >= 2, `work was shared: ${perWorker}`);
    for (const client of [requester, ...workers]) client.close();
  });

  it('a worker whose connection drops loses its job to another; its queue is joined again', async () => {
    const kind = 5001;
    const requester = await connect(relay.url, alice);
    const a = await connect(relay.url, bob, { backoffBaseMs: 50 });
    const b = await connect(relay.url, carol);
    const queueA = a.jobs('drop', kind, { leaseSecs: 60 });
    const first = (await requester.publish({ kind, content: 'one' })).idHex;
    const jobA = await nextWithin(queueA);
    assert.equal(jobA.idHex, first);
    assert.equal(jobA.attempt, 1);
    assert.ok(jobA.leaseUntilMs > Date.now());
    const queueB = b.jobs('drop', kind, { leaseSecs: 60 });
    const pendingB = nextWithin(queueB);
    a.connection.ws.terminate(); // the connection drops (not closed by the client)
    const jobB = await pendingB;
    assert.equal(jobB.idHex, first);
    assert.equal(jobB.attempt, 2);
    await assert.rejects(jobA.complete('late'), LeaseLostError);
    await jobB.complete('from b');
    // A joined the queue again on its new connection: with B holding one of two new jobs
    // (max_in_flight 1), A gets the other.
    const second = (await requester.publish({ kind, content: 'two' })).idHex;
    const third = (await requester.publish({ kind, content: 'three' })).idHex;
    const gotB = await nextWithin(queueB);
    const gotA = await nextWithin(queueA);
    assert.deepEqual(new Set([gotA.idHex, gotB.idHex]), new Set([second, third]));
    await Promise.all([gotA.complete('a'), gotB.complete('b')]);
    const results = await resultsByJob(requester, kind + 1000);
    assert.deepEqual([first, second, third].map((id) => results.get(id)), [1, 1, 1]);
    await queueA.return();
    await queueB.return();
    for (const client of [requester, a, b]) client.close();
  });

  it('work() extends the lease while a slow handler runs (leaseSecs 1, ~2.5 s handler)', async () => {
    const kind = 5002;
    const requester = await connect(relay.url, alice);
    const slow = await connect(relay.url, bob);
    const spy = await connect(relay.url, carol);
    const stop = new AbortController();
    const attempts = [];
    const working = slow.work(
      'slow',
      kind,
      async (job) => {
        attempts.push(job.attempt);
        await sleep(2500);
        return 'slow result';
      },
      { leaseSecs: 1, signal: stop.signal, maxJobs: 1 },
    );
    const id = (await requester.publish({ kind, content: 'x' })).idHex;
    await until(() => attempts.length === 1, 5000, 'the slow worker to start');
    const spyQueue = spy.jobs('slow', kind, { leaseSecs: 1 });
    const offered = [];
    const spying = (async () => {
      for await (const job of spyQueue) offered.push(job);
    })();
    const results = await until(async () => (await resultsByJob(requester, kind + 1000)).get(id), 10000, 'the result');
    assert.equal(results, 1);
    assert.equal(await working, 1);
    await sleep(300);
    assert.deepEqual(offered.map((job) => job.idHex), [], 'the job was never re-offered');
    assert.deepEqual(attempts, [1]);
    await spyQueue.return();
    await spying;
    for (const client of [requester, slow, spy]) client.close();
  });

  it('a throwing handler NACKs the job and it is offered again', async () => {
    const kind = 5003;
    const requester = await connect(relay.url, alice);
    const worker = await connect(relay.url, bob);
    const stop = new AbortController();
    const seen = [];
    const errors = [];
    const working = worker.work(
      'flaky',
      kind,
      async (job) => {
        seen.push(job.attempt);
        if (job.attempt === 1) throw new Error('first try fails');
        return 'second try';
      },
      { signal: stop.signal, retryDelaySecs: () => 0, onError: (error) => errors.push(error) },
    );
    const id = (await requester.publish({ kind, content: 'x' })).idHex;
    await until(async () => (await resultsByJob(requester, kind + 1000)).get(id), 10000, 'the result');
    stop.abort();
    assert.equal(await working, 2);
    assert.deepEqual(seen, [1, 2]);
    assert.equal(errors.length, 1);
    assert.match(errors[0].message, /first try fails/);
    requester.close();
    worker.close();
  });

  it('request() resolves the first result of a worker', async () => {
    const kind = 5004;
    const worker = await connect(relay.url, bob);
    const client = await connect(relay.url, alice);
    const stop = new AbortController();
    const working = worker.work('echo', kind, async (job) => `echo:${job.text}`, { signal: stop.signal });
    const result = await client.request({ kind, content: 'ping', tags: [['topic', 't']] }, { timeoutMs: 10000 });
    assert.equal(result.kind, kind + 1000);
    assert.equal(result.text, 'echo:ping');
    assert.equal(result.pubkeyHex, bob.publicHex);
    const again = await client.request({ kind, content: 'pong' });
    assert.equal(again.text, 'echo:pong');
    stop.abort();
    assert.equal(await working, 2);
    // Nobody serves kind 5005: a short timeout rejects.
    await assert.rejects(client.request({ kind: 5005, content: 'x' }, { timeoutMs: 300 }), RequestTimeoutError);
    worker.close();
    client.close();
  });

  it('a retried completing publish (409) counts as success; ACK of a done job is 412', async () => {
    const kind = 5007;
    const requester = await connect(relay.url, alice);
    const worker = await connect(relay.url, bob);
    const queue = worker.jobs('retry', kind);
    const id = (await requester.publish({ kind, content: 'x' })).idHex;
    const job = await nextWithin(queue);
    const result = signEvent(bob, { kind: kind + 1000, content: 'r', tags: [['e', id]] });
    const ack = { sub_id: job.subId, job: job.id };
    const first = await worker.publishEvent(result, { ack });
    assert.equal(first.duplicate, false);
    const retry = await worker.publishEvent(result, { ack });
    assert.equal(retry.duplicate, true);
    await assert.rejects(job.ack(), LeaseLostError);
    assert.equal((await resultsByJob(requester, kind + 1000)).get(id), 1);
    await queue.return();
    requester.close();
    worker.close();
  });

  it('a completion in flight when the connection drops is asked again: stored = success, else LeaseLostError', async (t) => {
    const kind = 5008;
    const requester = await connect(relay.url, alice);
    const worker = await connect(relay.url, bob, { backoffBaseMs: 50 });
    const queue = worker.jobs('inflight', kind);
    const id = (await requester.publish({ kind, content: 'x' })).idHex;
    const job = await nextWithin(queue);
    const ws = worker.connection.ws;
    const send = ws.send.bind(ws);
    ws.send = (data) => send(data, () => ws.terminate()); // the PUBLISH leaves, then the connection drops
    let outcome;
    try {
      const answer = await job.complete('result');
      outcome = answer.duplicate ? 'stored before the drop (409 on the retry)' : 'answered before the drop';
    } catch (error) {
      assert.ok(error instanceof LeaseLostError, `unexpected ${error}`);
      outcome = 'not stored';
    }
    const stored = (await resultsByJob(requester, kind + 1000)).get(id) ?? 0;
    t.diagnostic(outcome);
    assert.equal(stored, outcome === 'not stored' ? 0 : 1, outcome);
    assert.notEqual(worker.connection?.ws, ws, 'a new connection was made');
    // The relay stores the result and answers OK, but the connection drops before the OK
    // is read: the retry on the next connection gets 409, which is success.
    // (Another queue: the first job may be offered again after a 'not stored'.)
    const queue2 = worker.jobs('inflight', kind + 1);
    const id2 = (await requester.publish({ kind: kind + 1, content: 'y' })).idHex;
    const job2 = await nextWithin(queue2);
    assert.equal(job2.idHex, id2);
    const connection = worker.connection;
    const onFrame = connection.onFrame.bind(connection);
    connection.onFrame = () => {
      connection.onFrame = onFrame;
      connection.ws.terminate(); // the OK is lost
    };
    const answer = await job2.complete('result 2');
    assert.equal(answer.duplicate, true);
    assert.equal((await resultsByJob(requester, kind + 1001)).get(id2), 1);
    await queue2.return();
    await queue.return();
    requester.close();
    worker.close();
  });

  it('a late complete after the lease lapsed and the job went to another rejects with LeaseLostError', async () => {
    const kind = 5006;
    const requester = await connect(relay.url, alice);
    const a = await connect(relay.url, bob);
    const b = await connect(relay.url, carol);
    const queueA = a.jobs('late', kind, { leaseSecs: 1 });
    const id = (await requester.publish({ kind, content: 'x' })).idHex;
    const jobA = await nextWithin(queueA);
    const queueB = b.jobs('late', kind, { leaseSecs: 5 });
    const jobB = await nextWithin(queueB, 10000); // after A's lease lapsed
    assert.equal(jobB.idHex, id);
    assert.equal(jobB.attempt, 2);
    await assert.rejects(jobA.complete('too late'), (error) => {
      assert.ok(error instanceof LeaseLostError);
      assert.equal(error.code, 412);
      return true;
    });
    await assert.rejects(jobA.extend(), LeaseLostError);
    const answer = await jobB.complete('in time');
    assert.equal(answer.duplicate, false);
    const results = await resultsByJob(requester, kind + 1000);
    assert.equal(results.get(id), 1);
    const stored = await requester.query([{ kinds: [kind + 1000], tags: { e: [id] } }]);
    assert.equal(stored[0].text, 'in time');
    // A's queue is intact after the refusals: it still gets jobs.
    const next = (await requester.publish({ kind, content: 'y' })).idHex;
    const jobA2 = await nextWithin(queueA);
    assert.equal(jobA2.idHex, next);
    const until2 = await jobA2.extend(30);
    assert.ok(until2 > Date.now() + 20000);
    await jobA2.ack();
    await queueA.return();
    await queueB.return();
    for (const client of [requester, a, b]) client.close();
  });
});
