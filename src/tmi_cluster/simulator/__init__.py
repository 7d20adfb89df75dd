"""A Twitch-compatible chat server, for tests, demos and benchmarks: ``tmi-cluster simulate``.

Use :class:`ChatSimulator` as an async context manager (``docs/simulator.md``)::

    async with ChatSimulator(channels=["alpha", "beta"], rate=100) as sim:
        ...  # connect to 127.0.0.1:sim.port
"""

from __future__ import annotations

from tmi_cluster.simulator.limits import Limits
from tmi_cluster.simulator.server import (
    AccountStats,
    ChatSimulator,
    ConnectionInfo,
    Delivery,
    Violation,
)

__all__ = ["AccountStats", "ChatSimulator", "ConnectionInfo", "Delivery", "Limits", "Violation"]
