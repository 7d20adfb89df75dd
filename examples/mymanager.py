"""Channels the application allows, one login per line in allowed-channels.txt."""

from collections.abc import Sequence
from pathlib import Path


class FileChannelManager:
    auto_cleanup = False  # nothing here is ever stale: no auto join and part

    def __init__(self, settings: object) -> None:
        self.path = Path("allowed-channels.txt")

    def _read(self) -> set[str]:
        return set(self.path.read_text().split()) if self.path.exists() else set()

    def _write(self, logins: set[str]) -> None:
        self.path.write_text("".join(f"{login}\n" for login in sorted(logins)))

    async def authorize(self, channels: Sequence[str], *, reconnect: bool = False) -> None:
        self._write(self._read() | {c.lstrip("#").lower() for c in channels})

    async def revoke(self, channels: Sequence[str]) -> None:
        self._write(self._read() - {c.lstrip("#").lower() for c in channels})

    async def authorized(self, channels: Sequence[str]) -> set[str]:
        allowed = self._read()
        return {c.lstrip("#").lower() for c in channels} & allowed

    async def acknowledged(self, channels: Sequence[str]) -> None:
        pass

    async def stale(self, channels: Sequence[str]) -> set[str]:
        return set()
