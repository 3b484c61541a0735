import { Key, connect, END_OF_STORED, AxonError, openDm } from "axon-client";
async function main() {
  const key = Key.generate();
  const relay = await connect("ws://127.0.0.1:8080", key);
  const { id, seq } = await relay.publish({ kind: 1000, content: "hi", tags: [["topic", "hello"]] });
  const events = await relay.query([{ kinds: [1000] }]);
  for await (const item of relay.subscribe([{ kinds: [1000] }], { afterSeq: 3, resume: true })) { if (item !== END_OF_STORED) console.log(item.idHex); }
  await relay.sendDm(key.publicHex, new Uint8Array([1])); openDm(key, events[0]);
  relay.close();
  try {} catch (e) { if (e instanceof AxonError) console.log(e.code, e.retryAfterMs); }
}
main();
