"""Count the chat messages of every channel the cluster reads, from any process: the cluster's
event stream, read in a consumer group (run several counters: each message is counted once).

Run: ``python count_messages.py`` (Ctrl-C stops it), with the cluster's settings
(``./tmi-cluster.toml`` or ``TMI_CLUSTER_*`` variables; ``--config`` is not read here).
"""

import asyncio
import contextlib
from collections import Counter

import tmi_cluster
from tmi_cluster.events import MessageEvent


async def count(limit: int | None = None, every_s: float = 10.0) -> Counter[str]:
    """Count messages per channel until ``limit`` messages (None: until cancelled), printing
    the busiest channels every ``every_s`` seconds; the counts."""
    counts: Counter[str] = Counter()
    async with tmi_cluster.Cluster.from_config() as cluster:
        reader = cluster.events(types=["MessageEvent"], group="counter", consumer="counter-1")
        shown = asyncio.get_running_loop().time()
        try:
            async for event in reader:
                if isinstance(event, MessageEvent) and event.channel is not None:
                    counts[event.channel] += 1
                if asyncio.get_running_loop().time() - shown >= every_s:
                    shown = asyncio.get_running_loop().time()
                    print(", ".join(f"#{c}: {n}" for c, n in counts.most_common(5)))
                if limit is not None and counts.total() >= limit:
                    break
        finally:
            await reader.aclose()
    return counts


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C stops it
        asyncio.run(count())
