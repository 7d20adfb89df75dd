"""A deterministic corpus of realistic Twitch chat lines for the benchmarks.

Long tag sets as Twitch sends them today; a mix of PRIVMSG (with badges, emotes, replies,
actions, cheers, Shared Chat copies, non-ASCII text), USERNOTICE, ROOMSTATE, CLEARCHAT, CLEARMSG
and USERSTATE, in about the proportions of a busy chat.
"""

from __future__ import annotations

import random
import uuid

WORDS = [
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
]
EMOTES = {"Kappa": "25", "PogChamp": "305954156", "LUL": "425618", "monkaS": "emotesv2_3d5f"}


def _tags(tags: dict[str, str]) -> str:
    return "@" + ";".join(f"{k}={v}" for k, v in tags.items())


def _user(rng: random.Random) -> tuple[str, str, str]:
    login = f"user{rng.randrange(100_000)}"
    return login, login.capitalize() if rng.random() < 0.9 else "Ünïcode", str(rng.randrange(10**8))


def _privmsg(rng: random.Random, channel: str, room: str, ts: int) -> str:
    login, display, uid = _user(rng)
    words = [rng.choice(WORDS) for _ in range(rng.randrange(1, 14))]
    text = " ".join(words)
    emotes: dict[str, list[str]] = {}
    pos = 0
    for word in words:
        if word in EMOTES:
            emotes.setdefault(EMOTES[word], []).append(f"{pos}-{pos + len(word) - 1}")
        pos += len(word) + 1
    tags = {
        "badge-info": f"subscriber/{rng.randrange(1, 60)}" if rng.random() < 0.4 else "",
        "badges": "subscriber/12,premium/1" if rng.random() < 0.4 else "",
        "client-nonce": uuid.UUID(int=rng.getrandbits(128)).hex,
        "color": f"#{rng.randrange(0xFFFFFF):06X}",
        "display-name": display,
        "emotes": "/".join(f"{k}:{','.join(v)}" for k, v in emotes.items()),
        "first-msg": "1" if rng.random() < 0.05 else "0",
        "flags": "",
        "id": str(uuid.UUID(int=rng.getrandbits(128))),
        "mod": "1" if rng.random() < 0.05 else "0",
        "returning-chatter": "0",
        "room-id": room,
        "subscriber": "1" if rng.random() < 0.4 else "0",
        "tmi-sent-ts": str(ts),
        "turbo": "0",
        "user-id": uid,
        "user-type": "",
    }
    roll = rng.random()
    if roll < 0.05:
        tags["bits"] = str(rng.choice([1, 100, 500]))
        text = f"Cheer{tags['bits']} " + text
        tags["emotes"] = ""
    elif roll < 0.15:
        tags.update(
            {
                "reply-parent-display-name": "Someone",
                "reply-parent-msg-body": "hi\\sthere",
                "reply-parent-msg-id": str(uuid.UUID(int=rng.getrandbits(128))),
                "reply-parent-user-id": "123",
                "reply-parent-user-login": "someone",
            }
        )
    elif roll < 0.18:
        tags.update(
            {
                "source-room-id": "999",
                "source-id": str(uuid.UUID(int=rng.getrandbits(128))),
                "source-badges": "",
                "source-badge-info": "",
            }
        )
    if rng.random() < 0.03:
        text = f"\x01ACTION {text}\x01"
    return f"{_tags(tags)} :{login}!{login}@{login}.tmi.twitch.tv PRIVMSG #{channel} :{text}"


def _usernotice(rng: random.Random, channel: str, room: str, ts: int) -> str:
    login, display, uid = _user(rng)
    kind = rng.choice(["sub", "resub", "subgift", "raid", "announcement"])
    params = {
        "sub": {
            "msg-param-cumulative-months": "1",
            "msg-param-sub-plan": "1000",
            "msg-param-sub-plan-name": "Channel\\sSubscription",
        },
        "resub": {
            "msg-param-cumulative-months": "14",
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
        "raid": {
            "msg-param-login": login,
            "msg-param-displayName": display,
            "msg-param-viewerCount": "42",
        },
        "announcement": {"msg-param-color": "PRIMARY"},
    }[kind]
    tags = {
        "badge-info": "subscriber/14",
        "badges": "subscriber/12",
        "color": "#1E90FF",
        "display-name": display,
        "emotes": "",
        "flags": "",
        "id": str(uuid.UUID(int=rng.getrandbits(128))),
        "login": login,
        "mod": "0",
        "msg-id": kind,
        **params,
        "room-id": room,
        "subscriber": "1",
        "system-msg": f"{display}\\shas\\ssubscribed\\sfor\\s14\\smonths!",
        "tmi-sent-ts": str(ts),
        "user-id": uid,
        "user-type": "",
    }
    suffix = " :Great stream, keep it up!" if kind in ("resub", "announcement") else ""
    return f"{_tags(tags)} :tmi.twitch.tv USERNOTICE #{channel}{suffix}"


def corpus(size: int = 10_000, seed: int = 7) -> list[str]:
    """``size`` lines, the same for the same seed."""
    rng = random.Random(seed)
    lines = []
    ts = 1_764_000_000_000
    for _ in range(size):
        channel = f"channel{min(int(rng.paretovariate(1.2)), 500)}"
        room = str(10_000 + len(channel))
        ts += rng.randrange(1, 50)
        roll = rng.random()
        if roll < 0.80:
            lines.append(_privmsg(rng, channel, room, ts))
        elif roll < 0.88:
            lines.append(_usernotice(rng, channel, room, ts))
        elif roll < 0.91:
            lines.append(
                f"@emote-only=0;followers-only=-1;r9k=0;room-id={room};slow=0;"
                f"subs-only=0 :tmi.twitch.tv ROOMSTATE #{channel}"
            )
        elif roll < 0.96:
            target = f"user{rng.randrange(100_000)}"
            duration = f"ban-duration={rng.choice([60, 600])};" if rng.random() < 0.8 else ""
            lines.append(
                f"@{duration}room-id={room};target-user-id={rng.randrange(10**8)};"
                f"tmi-sent-ts={ts} :tmi.twitch.tv CLEARCHAT #{channel} :{target}"
            )
        elif roll < 0.98:
            lines.append(
                f"@login=someone;room-id=;target-msg-id={uuid.UUID(int=rng.getrandbits(128))};"
                f"tmi-sent-ts={ts} :tmi.twitch.tv CLEARMSG #{channel} :a\\sdeleted message"
            )
        else:
            lines.append(
                f"@badge-info=;badges=moderator/1;color=#0D4200;display-name=MyBot;"
                f"emote-sets=0,33,50,237;mod=1;subscriber=0;user-type=mod "
                f":tmi.twitch.tv USERSTATE #{channel}"
            )
    return lines
