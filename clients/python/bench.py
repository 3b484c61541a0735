"""Benchmark of the Python client against a local relay: acknowledged publishes per
second (pipelined, signing included) and deliveries per second (stored replay and live
fan-out). A measurement script, not a test.

    python bench.py --spawn                      # starts target/release/axon (or $AXON_BIN)
    python bench.py --url ws://127.0.0.1:8080 --key bench.key
    python bench.py --spawn --events 20000 --runs 5 --in-flight 1000

Prints one line per run and the median of each figure.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, Iterator, List, Optional

import axon

REPO = Path(__file__).resolve().parents[2]
CPU_US: Dict[str, float] = {}  # client CPU time per publish, by run tag


def relay_binary() -> str:
    for candidate in (os.environ.get("AXON_BIN"), str(REPO / "target" / "release" / "axon"),
                      str(REPO / "target" / "debug" / "axon")):
        if candidate and Path(candidate).is_file():
            return candidate
    raise SystemExit("no relay binary: cargo build --release, or set AXON_BIN")


@contextlib.contextmanager
def spawned_relay(keys: List[axon.Key]) -> Iterator[str]:
    with tempfile.TemporaryDirectory() as directory:
        config = Path(directory) / "relay.yaml"
        config.write_text(
            f'addr: "127.0.0.1:0"\ndb: "{directory}/axon.db"\nrelay_url: "ws://bench.invalid/"\n'
            f"allowlist: [{', '.join(repr(k.public_hex) for k in keys)}]\n"
            "limits:\n  outbound_queue: 65536\n"
        )
        binary = relay_binary()
        print(f"relay: {binary}", file=sys.stderr)
        proc = subprocess.Popen([binary, "relay", "--config", str(config)], stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL)
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline().decode().strip()
            if not line.startswith("listening on "):
                raise SystemExit(f"the relay did not start: {line!r}")
            yield "ws://" + line.split()[-1]
        finally:
            proc.terminate()
            proc.wait(15)


async def publish_many(url: str, key: axon.Key, count: int, in_flight: int, tag: str) -> float:
    """Signs and publishes `count` events with at most `in_flight` awaiting their OK;
    returns acknowledged publishes per second."""
    async with axon.connect(url, key) as relay:
        window = asyncio.Semaphore(in_flight)
        payload = b"x" * 100

        async def one(i: int) -> None:
            try:
                await relay.publish(1000, payload + str(i).encode(), [("topic", tag)])
            finally:
                window.release()

        started, cpu = time.perf_counter(), time.process_time()
        tasks = []
        for i in range(count):
            await window.acquire()
            tasks.append(asyncio.ensure_future(one(i)))
        await asyncio.gather(*tasks)
        CPU_US[tag] = (time.process_time() - cpu) / count * 1e6
        return count / (time.perf_counter() - started)


async def replay(url: str, key: axon.Key, tag: str, count: int) -> float:
    """Stored deliveries per second: a replay (after_seq=0) of `count` stored events."""
    async with axon.connect(url, key) as relay:
        started = time.perf_counter()
        received = 0
        async for item in relay.subscribe([{"tags": {"topic": [tag]}}], after_seq=0):
            if item is axon.END_OF_STORED:
                break
            received += 1
        elapsed = time.perf_counter() - started
        assert received == count, (received, count)
        return count / elapsed


def _publisher_process(url: str, seed: bytes, count: int, in_flight: int, tag: str) -> None:
    asyncio.run(publish_many(url, axon.Key.from_seed(seed), count, in_flight, tag))


async def live(url: str, key: axon.Key, publisher: axon.Key, count: int, in_flight: int, tag: str) -> float:
    """Live deliveries per second to one subscriber while another process publishes."""
    async with axon.connect(url, key) as relay:
        sub = relay.subscribe([{"tags": {"topic": [tag]}, "limit": 0}])
        assert await sub.next(10) is axon.END_OF_STORED
        proc = multiprocessing.get_context("spawn").Process(
            target=_publisher_process, args=(url, publisher.seed, count, in_flight, tag)
        )
        proc.start()
        first: Optional[float] = None
        received = 0
        while received < count:
            item = await sub.next(60)
            if first is None:
                first = time.perf_counter()
            received += 1
        elapsed = time.perf_counter() - (first or time.perf_counter())
        proc.join(30)
        await sub.close()
        return (count - 1) / elapsed if elapsed > 0 else float("nan")


async def run_once(url: str, key: axon.Key, publisher: axon.Key, events: int, in_flight: int, run: int) -> Dict[str, float]:
    tag = f"bench-{os.getpid()}-{run}-{time.time_ns()}"
    acks = await publish_many(url, key, events, in_flight, tag)
    cpu = time.process_time()
    stored = await replay(url, key, tag, events)
    stored_cpu = (time.process_time() - cpu) / events * 1e6
    fanout = await live(url, key, publisher, events, in_flight, tag + "-live")
    return {
        "publish_acks_per_s": acks,
        "client_cpu_us_per_publish": CPU_US[tag],
        "stored_deliveries_per_s": stored,
        "client_cpu_us_per_delivery": stored_cpu,
        "live_deliveries_per_s": fanout,
    }


async def main_async(args: argparse.Namespace) -> None:
    key = axon.Key.load(args.key) if args.key else axon.Key.generate()
    publisher = axon.Key.generate() if not args.key else key
    results: List[Dict[str, float]] = []

    async def go(url: str) -> None:
        for run in range(args.runs):
            figures = await run_once(url, key, publisher, args.events, args.in_flight, run)
            results.append(figures)
            print(f"run {run + 1}: " + ", ".join(f"{k} {v:,.0f}" for k, v in figures.items()), flush=True)

    if args.spawn:
        with spawned_relay([key, publisher]) as url:
            await go(url)
    else:
        await go(args.url)
    print(f"median of {args.runs} runs, {args.events} events each, {args.in_flight} in flight:")
    for name in results[0]:
        print(f"  {name}: {statistics.median(r[name] for r in results):,.0f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--spawn", action="store_true", help="start a local relay (target/release/axon or $AXON_BIN)")
    parser.add_argument("--url", default="ws://127.0.0.1:8080")
    parser.add_argument("--key", help="key file allowed on --url (with --spawn a fresh key is used)")
    parser.add_argument("--events", type=int, default=20000)
    parser.add_argument("--in-flight", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=3)
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
