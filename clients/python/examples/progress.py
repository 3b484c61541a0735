"""A publisher that streams progress with ephemeral events (kind 3000: delivered live,
never stored), then stores the result (kind 6000).

    python examples/progress.py --demo                   # one command: local relay + a watcher
    python examples/progress.py --url ws://127.0.0.1:8080 --key worker.key --job job-7
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os

import axon

KIND_PROGRESS = 3000
KIND_RESULT = 6000


async def work(url: str, key: axon.Key, job: str, steps: int = 10) -> None:
    async with axon.connect(url, key) as relay:
        for step in range(1, steps + 1):
            await asyncio.sleep(0.05)  # the actual work
            percent = step * 100 // steps
            await relay.publish(
                kind=KIND_PROGRESS,
                content=json.dumps({"job": job, "percent": percent}).encode(),
                tags=[("job", job)],
                expires_in=60,
            )
        result = await relay.publish(kind=KIND_RESULT, content=b'{"answer": 42}', tags=[("job", job)])
        print(f"worker: result stored with seq {result.seq}")


async def watch(url: str, key: axon.Key, job: str, ready: "asyncio.Event | None" = None) -> None:
    async with axon.connect(url, key) as relay:
        async for item in relay.subscribe([{"kinds": [KIND_PROGRESS, KIND_RESULT], "tags": {"job": [job]}}]):
            if item is axon.END_OF_STORED:
                print("watcher: waiting for progress…")
                if ready is not None:
                    ready.set()
            elif isinstance(item, axon.Event) and item.kind == KIND_PROGRESS:
                print(f"watcher: {json.loads(item.content)['percent']:3d}%  (ephemeral, seq {item.seq})")
            elif isinstance(item, axon.Event):
                print(f"watcher: result {item.content.decode()} (stored, seq {item.seq})")
                return


async def demo() -> None:
    from _local import local_relay

    worker_key, watcher_key = axon.Key.generate(), axon.Key.generate()
    with local_relay(allow=[worker_key, watcher_key]) as url:
        ready = asyncio.Event()
        watcher = asyncio.create_task(watch(url, watcher_key, "job-7", ready))
        await asyncio.wait_for(ready.wait(), 10)
        await work(url, worker_key, "job-7")
        await asyncio.wait_for(watcher, 10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--demo", action="store_true", help="start a local relay and watch the progress")
    parser.add_argument("--url", default=os.environ.get("AXON_URL", "ws://127.0.0.1:8080"))
    parser.add_argument("--key", default=os.environ.get("AXON_KEY", "worker.key"), help="key file (created if missing)")
    parser.add_argument("--job", default="job-7")
    parser.add_argument("--watch", action="store_true", help="watch a job's progress instead of doing it")
    args = parser.parse_args()
    if args.demo:
        asyncio.run(demo())
        return
    if not os.path.exists(args.key):
        axon.Key.generate().save(args.key)
        print(f"wrote a new key to {args.key}; allow it on the relay: axon allow {axon.Key.load(args.key).public_hex}")
    key = axon.Key.load(args.key)
    asyncio.run(watch(args.url, key, args.job) if args.watch else work(args.url, key, args.job))


if __name__ == "__main__":
    main()
