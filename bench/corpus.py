"""The benchmarks' corpus: realistic Twitch chat lines from the simulator's own generator.

``tmi_cluster.simulator.traffic`` prepares lines with the tags Twitch sends today (badges,
emotes with correct ranges, replies, cheers, Shared Chat copies, ``/me``, non-ASCII text) and
USERNOTICE, CLEARCHAT, CLEARMSG and ROOMSTATE lines, over channels with a Zipf-like skew. A fixed
seed and timestamp make the corpus the same on every run.
"""

from __future__ import annotations

from tmi_cluster.simulator.traffic import Traffic

_FIRST_MS = 1_764_000_000_000


def corpus(size: int = 10_000, seed: int = 7) -> list[str]:
    """``size`` lines (without CR LF), the same for the same seed."""
    traffic = Traffic({f"channel{i}": str(10_000 + i) for i in range(1, 501)}, seed=seed)
    return [
        traffic.next(now_ms=_FIRST_MS + 17 * n).data.decode().rstrip("\r\n") for n in range(size)
    ]
