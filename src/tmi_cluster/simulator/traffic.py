"""Realistic chat traffic, cheap enough to generate tens of thousands of lines per second.

A :class:`Traffic` prepares a few thousand message *templates* once (tags as Twitch sends them
today, emotes with correct code-point ranges, replies, ``/me`` actions, cheers, subs, gifts,
raids, announcements, timeouts, bans, deletions, room mode changes, Shared Chat copies,
non-ASCII text) and stamps each line with a unique ``id`` and the current ``tmi-sent-ts`` when
it is sent. Channels are picked with a Zipf-like skew: a few busy channels, a long tail.
"""

from __future__ import annotations

import itertools
import random
import secrets
import time
from dataclasses import dataclass

__all__ = ["GeneratedLine", "Traffic"]

_WORDS = [
    "Kappa",
    "PogChamp",
    "LUL",
    "hello",
    "gg",
    "nice",
    "what",
    "is",
    "this",
    "stream",
    "clip",
    "it",
    "wow",
    "héllo",
    "добрый",
    "こんにちは",
    "🎉",
    "lets",
    "go",
    "monkaS",
    "👋",
    "sí",
]
_EMOTES = {"Kappa": "25", "PogChamp": "305954156", "LUL": "425618", "monkaS": "emotesv2_3d5f"}
_TEMPLATES = 4096


@dataclass(frozen=True, slots=True)
class GeneratedLine:
    """One line generated for a channel: its message id (None for lines without one)."""

    channel: str
    message_id: str | None
    data: bytes
    command: str = "PRIVMSG"


@dataclass(frozen=True, slots=True)
class _Template:
    # The line is: b"@" + head + b"id=<id>;" + middle + b"tmi-sent-ts=<ts>" + tail(channel)
    head: bytes
    middle: bytes
    tail: bytes
    has_id: bool
    command: str


def _tags(tags: dict[str, str]) -> str:
    return ";".join(f"{key}={value}" for key, value in tags.items())


class Traffic:
    """Generates lines for a set of channels. ``next()`` is the hot path."""

    def __init__(self, room_ids: dict[str, str], *, seed: int | None = None) -> None:
        self._rng = random.Random(seed)
        self._prefix = secrets.token_hex(4) if seed is None else f"{seed & 0xFFFFFFFF:08x}"
        self._counter = itertools.count(1)
        self._templates = [self._template() for _ in range(_TEMPLATES)]
        self._template_index = 0
        self._tails: dict[tuple[int, str], tuple[bytes, bytes, bytes]] = {}
        self._picks: list[str] = []
        self._pick_index = 0
        self._room_ids: dict[str, str] = {}
        self.set_channels(room_ids)

    def set_channels(self, room_ids: dict[str, str]) -> None:
        """The channels to generate for (name -> room id), the first ones the busiest."""
        self._room_ids = dict(room_ids)
        channels = list(self._room_ids)
        weights = [1.0 / (rank + 1) ** 1.1 for rank in range(len(channels))]
        self._picks = self._rng.choices(channels, weights=weights, k=65_536) if channels else []
        self._pick_index = 0

    def new_id(self) -> str:
        """A unique message id in UUID form."""
        n = next(self._counter)
        prefix = self._prefix
        return (
            f"{prefix}-{n >> 48 & 0xFFFF:04x}-4{n >> 36 & 0xFFF:03x}-8{n >> 24 & 0xFFF:03x}-"
            f"{n & 0xFFFFFF:06x}{prefix[:6]}"
        )

    def pick_channel(self) -> str:
        """A channel, with the skew of real chat."""
        self._pick_index = (self._pick_index + 1) % len(self._picks)
        return self._picks[self._pick_index]

    def next(self, channel: str | None = None, *, now_ms: int | None = None) -> GeneratedLine:
        """The next line for ``channel`` (picked with skew when None)."""
        channel = channel or self.pick_channel()
        self._template_index = (self._template_index + 1) % _TEMPLATES
        template = self._templates[self._template_index]
        stamp = str(now_ms if now_ms is not None else int(time.time() * 1000)).encode()
        key = (self._template_index, channel)
        parts = self._tails.get(key)
        if parts is None:
            parts = self._render(template, channel)
            if len(self._tails) < 200_000:
                self._tails[key] = parts
        head, middle, tail = parts
        if not template.has_id:
            if template.command == "CLEARMSG":  # each deletion of a message of its own
                head += b"target-msg-id=" + self.new_id().encode() + b";"
            data = b"@" + head + b"tmi-sent-ts=" + stamp + tail
            return GeneratedLine(channel, None, data, template.command)
        message_id = self.new_id()
        data = b"".join(
            (b"@", head, b"id=", message_id.encode(), b";", middle, b"tmi-sent-ts=", stamp, tail)
        )
        return GeneratedLine(channel, message_id, data, template.command)

    def _render(self, template: _Template, channel: str) -> tuple[bytes, bytes, bytes]:
        """The template's parts for ``channel``: every placeholder filled, wherever it is."""
        room, name = self._room_ids[channel].encode(), channel.encode()

        def fill(part: bytes) -> bytes:
            return part.replace(b"{room}", room).replace(b"{channel}", name)

        return fill(template.head), fill(template.middle), fill(template.tail)

    # -- templates -----------------------------------------------------------------------

    def _template(self) -> _Template:
        roll = self._rng.random()
        if roll < 0.86:
            return self._privmsg()
        if roll < 0.93:
            return self._usernotice()
        if roll < 0.96:
            return self._clearchat()
        if roll < 0.98:
            return self._clearmsg()
        return self._roomstate()

    def _user(self) -> tuple[str, str, str]:
        login = f"viewer{self._rng.randrange(1_000_000)}"
        display = login.capitalize() if self._rng.random() < 0.9 else "Ünïcode_Ⅻ"
        return login, display, str(self._rng.randrange(10**8))

    def _privmsg(self) -> _Template:
        rng = self._rng
        login, display, user_id = self._user()
        words = [rng.choice(_WORDS) for _ in range(rng.randrange(1, 14))]
        text = " ".join(words)
        emotes: dict[str, list[str]] = {}
        position = 0
        for word in words:
            if word in _EMOTES:
                emotes.setdefault(_EMOTES[word], []).append(
                    f"{position}-{position + len(word) - 1}"
                )
            position += len(word) + 1
        subscriber = rng.random() < 0.4
        head = {
            "badge-info": f"subscriber/{rng.randrange(1, 60)}" if subscriber else "",
            "badges": "subscriber/12,premium/1" if subscriber else "",
            "client-nonce": f"{rng.getrandbits(128):032x}",
            "color": f"#{rng.randrange(0xFFFFFF):06X}",
            "display-name": display,
            "emotes": "/".join(f"{k}:{','.join(v)}" for k, v in emotes.items()),
            "first-msg": "1" if rng.random() < 0.05 else "0",
            "flags": "",
        }
        middle = {
            "mod": "1" if rng.random() < 0.05 else "0",
            "returning-chatter": "0",
            "room-id": "{room}",
            "subscriber": "1" if subscriber else "0",
        }
        if middle["mod"] == "1":  # as on Twitch: a moderator wears the badge
            head["badges"] = ",".join(filter(None, ["moderator/1", head["badges"]]))
        kind = rng.random()
        if kind < 0.04:
            bits = rng.choice([1, 100, 500])
            head["bits"] = str(bits)
            head["emotes"] = ""
            text = f"Cheer{bits} {text}"
        elif kind < 0.12:
            middle.update(
                {
                    "reply-parent-display-name": "Someone",
                    "reply-parent-msg-body": "hi\\sthere",
                    "reply-parent-msg-id": f"{rng.getrandbits(64):016x}",
                    "reply-parent-user-id": "123",
                    "reply-parent-user-login": "someone",
                }
            )
        elif kind < 0.15:
            middle.update(
                {
                    "source-badge-info": "",
                    "source-badges": "",
                    "source-id": f"{rng.getrandbits(64):016x}",
                    "source-room-id": "999",
                }
            )
        if rng.random() < 0.03:
            text = f"\x01ACTION {text}\x01"
        source = f"{login}!{login}@{login}.tmi.twitch.tv"
        tail = f";turbo=0;user-id={user_id};user-type= :{source} PRIVMSG #{{channel}} :{text}\r\n"
        return _Template(
            (_tags(head) + ";").encode(),
            (_tags(middle) + ";").encode(),
            tail.encode(),
            True,
            "PRIVMSG",
        )

    def _usernotice(self) -> _Template:
        rng = self._rng
        login, display, user_id = self._user()
        kind = rng.choice(["sub", "resub", "subgift", "submysterygift", "raid", "announcement"])
        params = {
            "sub": {
                "msg-param-cumulative-months": "1",
                "msg-param-sub-plan": "1000",
                "msg-param-sub-plan-name": "Channel\\sSubscription",
            },
            "resub": {
                "msg-param-cumulative-months": str(rng.randrange(2, 80)),
                "msg-param-streak-months": "3",
                "msg-param-sub-plan": "Prime",
                "msg-param-sub-plan-name": "Prime",
            },
            "subgift": {
                "msg-param-months": "1",
                "msg-param-recipient-user-name": "lucky",
                "msg-param-recipient-display-name": "Lucky",
                "msg-param-recipient-id": "5",
                "msg-param-sub-plan": "1000",
                "msg-param-gift-months": "1",
            },
            "submysterygift": {"msg-param-mass-gift-count": "5", "msg-param-sub-plan": "1000"},
            "raid": {
                "msg-param-login": login,
                "msg-param-displayName": display,
                "msg-param-viewerCount": str(rng.randrange(1, 5000)),
            },
            "announcement": {"msg-param-color": "PRIMARY"},
        }[kind]
        head = {
            "badge-info": "subscriber/14",
            "badges": "subscriber/12",
            "color": "#1E90FF",
            "display-name": display,
            "emotes": "",
            "flags": "",
        }
        middle = {
            "login": login,
            "mod": "0",
            "msg-id": kind,
            **params,
            "room-id": "{room}",
            "subscriber": "1",
            "system-msg": f"{display}\\shas\\ssubscribed\\sfor\\s14\\smonths!",
        }
        suffix = " :Great stream, keep it up! 🎉" if kind in ("resub", "announcement") else ""
        tail = f";user-id={user_id};user-type= :tmi.twitch.tv USERNOTICE #{{channel}}{suffix}\r\n"
        return _Template(
            (_tags(head) + ";").encode(),
            (_tags(middle) + ";").encode(),
            tail.encode(),
            True,
            "USERNOTICE",
        )

    def _clearchat(self) -> _Template:
        login, _, user_id = self._user()
        duration = (
            f"ban-duration={self._rng.choice([60, 600])};" if self._rng.random() < 0.8 else ""
        )
        tail = f";target-user-id={user_id} :tmi.twitch.tv CLEARCHAT #{{channel}} :{login}\r\n"
        return _Template(
            f"{duration}room-id={{room}};".encode(), b"", tail.encode(), False, "CLEARCHAT"
        )

    def _clearmsg(self) -> _Template:
        login, _, _ = self._user()
        tail = " :tmi.twitch.tv CLEARMSG #{channel} :a\\sdeleted message\r\n"
        head = f"login={login};room-id={{room}};"  # target-msg-id: fresh on each line
        return _Template(head.encode(), b"", tail.replace("\\s", " ").encode(), False, "CLEARMSG")

    def _roomstate(self) -> _Template:
        mode = self._rng.choice(
            [
                "emote-only=1",
                "emote-only=0",
                "slow=30",
                "slow=0",
                "followers-only=10",
                "followers-only=-1",
                "subs-only=1",
            ]
        )
        tail = " :tmi.twitch.tv ROOMSTATE #{channel}\r\n"
        return _Template(
            f"{mode};room-id={{room}};".encode(), b"", tail.encode(), False, "ROOMSTATE"
        )
