"""An agent that subscribes to a topic and replies to every message on it.

    python examples/agent.py --demo                      # one command: local relay + a question
    python examples/agent.py --url ws://127.0.0.1:8080 --key agent.key --topic hello
"""

from __future__ import annotations

import argparse
import asyncio
import os

import axon


async def run_agent(
    url: str, key: axon.Key, topic: str, max_replies: int = 0, ready: "asyncio.Event | None" = None
) -> None:
    """Replies "echo: <content>" to every kind 1000 message tagged topic=<topic>.

    resume=True: if the connection drops or the relay restarts, the agent reconnects and
    carries on after the last message it saw, without missing or repeating one."""
    replies = 0
    async with axon.connect(url, key) as relay:
        print(f"agent {key.public_hex[:12]}… listening on topic {topic!r}")
        async for item in relay.subscribe([{"kinds": [1000], "tags": {"topic": [topic]}, "limit": 0}]):
            if item is axon.END_OF_STORED and ready is not None:
                ready.set()  # subscribed: live messages reach us from now on
            if not isinstance(item, axon.Event):
                continue
            if item.pubkey == key.public_key or item.tag("reply-to") is not None:
                continue  # never answer ourselves or another agent's reply
            text = item.content.decode(errors="replace")
            result = await relay.publish(
                kind=1000,
                content=f"echo: {text}".encode(),
                tags=[("topic", topic), ("reply-to", item.id_hex)],
            )
            print(f"replied to {item.id_hex[:12]}… ({text!r}) with seq {result.seq}")
            replies += 1
            if max_replies and replies >= max_replies:
                return


async def demo() -> None:
    from _local import local_relay

    agent_key, user_key = axon.Key.generate(), axon.Key.generate()
    with local_relay(allow=[agent_key, user_key]) as url:
        ready = asyncio.Event()
        agent = asyncio.create_task(run_agent(url, agent_key, "hello", max_replies=1, ready=ready))
        await asyncio.wait_for(ready.wait(), 10)
        async with axon.connect(url, user_key) as relay:
            replies = relay.subscribe([{"kinds": [1000], "tags": {"topic": ["hello"]}, "limit": 0}])
            assert await replies.next(10) is axon.END_OF_STORED  # subscribed before asking
            question = await relay.publish(kind=1000, content=b"is anyone there?", tags=[("topic", "hello")])
            print(f"user asked {question.id_hex[:12]}… (seq {question.seq})")
            async for item in replies:
                if isinstance(item, axon.Event) and item.tag("reply-to") == question.id_hex:
                    print(f"user got the reply: {item.content.decode()!r}")
                    break
        await asyncio.wait_for(agent, 10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--demo", action="store_true", help="start a local relay and ask the agent a question")
    parser.add_argument("--url", default=os.environ.get("AXON_URL", "ws://127.0.0.1:8080"))
    parser.add_argument("--key", default=os.environ.get("AXON_KEY", "agent.key"), help="key file (created if missing)")
    parser.add_argument("--topic", default="hello")
    args = parser.parse_args()
    if args.demo:
        asyncio.run(demo())
        return
    if not os.path.exists(args.key):
        axon.Key.generate().save(args.key)
        print(f"wrote a new key to {args.key}; allow it on the relay: axon allow {axon.Key.load(args.key).public_hex}")
    asyncio.run(run_agent(args.url, axon.Key.load(args.key), args.topic))


if __name__ == "__main__":
    main()
