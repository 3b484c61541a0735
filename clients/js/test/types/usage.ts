import { Key, connect, END_OF_STORED, AxonError, openDm, Job, LeaseLostError, RequestTimeoutError } from "axon-client";
async function main() {
  const key = Key.generate();
  const relay = await connect("ws://127.0.0.1:8080", key);
  const { id, seq } = await relay.publish({ kind: 1000, content: "hi", tags: [["topic", "hello"]] });
  const events = await relay.query([{ kinds: [1000] }]);
  for await (const item of relay.subscribe([{ kinds: [1000] }], { afterSeq: 3, resume: true })) { if (item !== END_OF_STORED) console.log(item.idHex); }
  await relay.sendDm(key.publicHex, new Uint8Array([1])); openDm(key, events[0]);
  for await (const job of relay.jobs("summarize", [5000], { maxInFlight: 4, leaseSecs: 30, filters: { authors: [key.publicHex] } })) {
    const until: number = await job.extend(60);
    try { const r = await job.complete(`len ${job.event.content.length} ${job.attempt} ${job.leaseUntilMs} ${until}`, { tags: [["topic", "x"]] }); console.log(r.duplicate); }
    catch (e) { if (e instanceof LeaseLostError) await job.fail(5); else await job.ack(); }
    break;
  }
  const stop = new AbortController();
  const handled: number = await relay.work("summarize", 5000, async (job: Job) => job.text.toUpperCase(), { concurrency: 2, signal: stop.signal, onError: (e, job) => console.log(e, job.idHex) });
  try { const result = await relay.request({ kind: 5000, content: "in" }, { timeoutMs: 5000 }); console.log(result.text, handled); }
  catch (e) { if (e instanceof RequestTimeoutError) console.log(e.code); }
  relay.close();
  try {} catch (e) { if (e instanceof AxonError) console.log(e.code, e.retryAfterMs); }
}
main();
