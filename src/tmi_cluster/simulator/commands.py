"""The simulator's answers to what clients send: CAP, PASS, NICK, JOIN, PART, PRIVMSG, PING.

Each IRC command has its handler (:data:`HANDLERS`), applying Twitch's rules and limits and
recording what happened in the simulator's accounting.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from tmi_cluster.errors import InvalidChannelError, ParseError
from tmi_cluster.irc import Message, escape_tag_value, parse, serialize
from tmi_cluster.logins import normalise_login
from tmi_cluster.simulator.peers import Delivery, _Account, _Channel, _Connection, user_id

if TYPE_CHECKING:
    from tmi_cluster.simulator.server import ChatSimulator

__all__ = ["CAPABILITIES", "HANDLERS", "SERVER", "Commands"]

SERVER = "tmi.twitch.tv"
CAPABILITIES = ("twitch.tv/tags", "twitch.tv/commands", "twitch.tv/membership")
_WELCOME = [
    ("001", "Welcome, GLHF!"),
    ("002", f"Your host is {SERVER}"),
    ("003", "This server is rather new"),
    ("004", "-"),
    ("375", "-"),
    ("372", "You are in a maze of twisty passages, all alike."),
    ("376", ">"),
]
_CAPPED = "Your account has reached the maximum number of channels."
_TOO_QUICK = "Your message was not sent because you are sending messages too quickly."
_DUPLICATE = (
    "Your message was not sent because it is identical to the previous one you sent, "
    "less than 30 seconds ago."
)


class Commands:
    """The command handlers of one simulator."""

    def __init__(self, sim: ChatSimulator) -> None:
        self.sim = sim

    def receive(self, connection: _Connection, raw: bytes) -> None:
        """Handle one line from ``connection`` (without its LF): malformed lines are counted
        and ignored, a NUL closes the connection, an unknown command gets 421."""
        if raw.endswith(b"\r"):
            raw = raw[:-1]
        if b"\0" in raw:
            self.sim._violation(connection, "malformed", "NUL in a line")
            connection.abort()
            return
        if not raw.strip():
            return
        try:
            message = parse(raw)
        except ParseError as exc:
            self.sim._violation(connection, "malformed", exc.reason)
            return
        connection.sent.append(message.raw)
        self.sim._touch()
        handler = HANDLERS.get(message.command.upper())
        if handler is None:
            if connection.login is not None:
                connection.send(
                    f":{SERVER} 421 {connection.login} {message.command[:50]} :Unknown command"
                )
            return
        handler(self, connection, message)

    def _cap(self, connection: _Connection, message: Message) -> None:
        params = message.params
        sub = params[0].upper() if params else ""
        if sub == "LS":
            connection.send(f":{SERVER} CAP * LS :{' '.join(CAPABILITIES)}")
        elif sub == "REQ":
            wanted = params[-1].split() if len(params) > 1 else []
            if wanted and all(cap in CAPABILITIES for cap in wanted):
                connection.capabilities.update(wanted)
                connection.full = {
                    "twitch.tv/tags",
                    "twitch.tv/commands",
                } <= connection.capabilities
                connection.send(f":{SERVER} CAP * ACK :{' '.join(wanted)}")
            else:
                connection.send(f":{SERVER} CAP * NAK :{' '.join(wanted)}")

    def _pass(self, connection: _Connection, message: Message) -> None:
        connection.password = message.params[0] if message.params else ""

    def _nick(self, connection: _Connection, message: Message) -> None:
        if connection.login is not None or not message.params:
            return
        login = message.params[0].lower()
        stats = self.sim.account(login)
        if login.startswith("justinfan") and login[9:].isdigit():
            self._welcome(connection, login)
            return
        password = connection.password
        if password is None or not password.startswith("oauth:"):
            connection.send(f":{SERVER} NOTICE * :Improperly formatted auth")
            connection.abort()
            return
        account = self.sim._accounts.get(login)
        stats.authentications += 1
        now = time.monotonic()
        if account is not None and not account.auths.take(now):
            self.sim._violation_for(stats, "auth_rate", "over the authentication budget")
            connection.send(f":{SERVER} NOTICE * :Login authentication failed")
            connection.abort()
            return
        # an account made by the API alone has no token: no IRC login matches it
        if account is None or not account.token or account.token != password[len("oauth:") :]:
            connection.send(f":{SERVER} NOTICE * :Login authentication failed")
            connection.abort()
            return
        connection.account = account
        self._welcome(connection, login)

    def _welcome(self, connection: _Connection, login: str) -> None:
        connection.login = login
        for numeric, text in _WELCOME:
            connection.send(f":{SERVER} {numeric} {login} :{text}")
        if connection.account is not None and "twitch.tv/commands" in connection.capabilities:
            tags = {
                "badge-info": "",
                "badges": "",
                "color": "",
                "display-name": login,
                "emote-sets": "0",
                "user-id": user_id(login),
                "user-type": "",
            }
            connection.send(self._tagged(connection, "GLOBALUSERSTATE", [], tags))

    def _tagged(
        self,
        connection: _Connection,
        command: str,
        params: list[str],
        tags: dict[str, str],
        source: str = SERVER,
    ) -> str:
        line = serialize(command, params, source=source)
        if "twitch.tv/tags" not in connection.capabilities:
            return line
        return _twitch_tags(tags) + " " + line

    def _join(self, connection: _Connection, message: Message) -> None:
        if connection.login is None or not message.params:
            return
        names = [n.strip().lstrip("#").lower() for n in message.params[0].split(",") if n.strip()]
        now = time.monotonic()
        stats = self.sim.account(connection.login)
        account = connection.account
        window = account.joins if account is not None else connection.anonymous_joins
        if not window.take(now, len(names)):
            self.sim._violation_for(stats, "join_rate", f"{len(names)} JOINs over the budget")
            connection.abort()  # as Twitch does
            return
        stats.joins += len(names)
        for name in names:
            self._join_one(connection, name)

    def _join_one(self, connection: _Connection, name: str) -> None:
        channel = self.sim._channels.get(name)
        if channel is None and self.sim.open_channels:
            with contextlib.suppress(InvalidChannelError):
                self.sim.add_channel(normalise_login(name))
                channel = self.sim._channels.get(name)
        if channel is None or name in connection.channels:
            return  # a channel that does not exist gives silence
        login = connection.login or ""
        if channel.suspended:
            self._notice(
                connection, name, "msg_channel_suspended", "This channel has been suspended."
            )
            return
        if login in channel.banned:
            self._notice(
                connection,
                name,
                "msg_banned",
                f"You are permanently banned from talking in {name}.",
            )
            return
        account = connection.account
        if account is not None:
            counted = {
                c
                for other in self.sim._connections.values()
                if other.account is account
                for c in other.channels
                if c not in account.moderator_in
            }
            if name not in account.moderator_in and len(counted) >= self.sim.limits.channel_cap:
                self.sim._violation_for(self.sim.account(login), "channel_cap", name)
                self._notice(connection, name, "msg_concurrent_channel_limit_reached", _CAPPED)
                return
        connection.channels.add(name)
        channel.members[connection.id] = connection
        channel.snapshot = None
        self.sim._touch()
        connection.send(f":{connection.prefix} JOIN #{name}")
        if "twitch.tv/commands" in connection.capabilities:
            moderator = account is not None and name in account.moderator_in
            connection.send(
                self._tagged(
                    connection,
                    "USERSTATE",
                    [f"#{name}"],
                    {
                        "badge-info": "",
                        "badges": "moderator/1" if moderator else "",
                        "color": "",
                        "display-name": login,
                        "emote-sets": "0",
                        "mod": "1" if moderator else "0",
                        "subscriber": "0",
                        "user-type": "mod" if moderator else "",
                    },
                )
            )
            connection.send(
                self._tagged(
                    connection,
                    "ROOMSTATE",
                    [f"#{name}"],
                    {
                        "emote-only": "0",
                        "followers-only": "-1",
                        "r9k": "0",
                        "room-id": channel.room_id,
                        "slow": "0",
                        "subs-only": "0",
                    },
                )
            )
        connection.send(f":{login}.tmi.twitch.tv 353 {login} = #{name} :{login}")
        connection.send(f":{login}.tmi.twitch.tv 366 {login} #{name} :End of /NAMES list")

    def _notice(self, connection: _Connection, channel: str, msg_id: str, text: str) -> None:
        connection.send(
            self._tagged(connection, "NOTICE", [f"#{channel}", text], {"msg-id": msg_id})
        )

    def _part(self, connection: _Connection, message: Message) -> None:
        if connection.login is None or not message.params:
            return
        for name in (n.strip().lstrip("#").lower() for n in message.params[0].split(",")):
            channel = self.sim._channels.get(name)
            if name in connection.channels and channel is not None:
                connection.channels.discard(name)
                channel.members.pop(connection.id, None)
                channel.snapshot = None
                self.sim._touch()
                connection.send(f":{connection.prefix} PART #{name}")

    def _privmsg(self, connection: _Connection, message: Message) -> None:
        account = connection.account
        if account is None or len(message.params) < 2:
            return  # anonymous logins cannot send; Twitch ignores them
        name = message.params[0].lstrip("#").lower()
        channel = self.sim._channels.get(name)
        if channel is None:
            return
        text = message.params[1]
        moderator = name in account.moderator_in
        if not self._may_send(connection, account, channel, text, moderator):
            return
        stats = self.sim.account(account.login)
        stats.messages += 1
        if self.sim.record:
            stats.said.append((name, text))
        message_id = self.sim._traffic.new_id()
        tags = {
            "badge-info": "",
            "badges": "moderator/1" if moderator else "",
            "color": "",
            "display-name": account.login,
            "emotes": "",
            "first-msg": "0",
            "flags": "",
            "id": message_id,
            "mod": "1" if moderator else "0",
            "returning-chatter": "0",
            "room-id": channel.room_id,
            "subscriber": "0",
            "tmi-sent-ts": str(int(time.time() * 1000)),
            "turbo": "0",
            "user-id": user_id(account.login),
            "user-type": "",
        }
        parent = message.tags.get("reply-parent-msg-id")
        if parent:
            tags["reply-parent-msg-id"] = parent
        line = serialize("PRIVMSG", [f"#{name}", text], source=connection.prefix)
        data = (_twitch_tags(tags) + " " + line).encode() + b"\r\n"
        if self.sim.record:
            self.sim._deliveries[name].append(
                Delivery(message_id, channel.joined(), time.monotonic())
            )
        self.sim._touch()
        for member in channel.members.values():
            if member is not connection:
                member.write(data if member.full else member.shape(data, "PRIVMSG"))
        if self.sim.conduits.subscribed:  # said on IRC, read through EventSub too
            self.sim.conduits.deliver(parse(data.decode("utf-8", "replace").rstrip()))
        connection.send(
            self._tagged(
                connection,
                "USERSTATE",
                [f"#{name}"],
                {
                    "display-name": account.login,
                    "mod": "1" if moderator else "0",
                },
            )
        )

    def _may_send(
        self,
        connection: _Connection,
        account: _Account,
        channel: _Channel,
        text: str,
        moderator: bool,
    ) -> bool:
        """Apply Twitch's message rules; record and answer a refusal as Twitch does."""
        stats = self.sim.account(account.login)
        now = time.monotonic()
        name = channel.name
        if len(text) > self.sim.limits.max_message_chars:
            self.sim._violation_for(stats, "message_too_long", f"{len(text)} characters")
            return False
        if now - channel.last_message.get(account.login, -1e9) < self.sim.limits.channel_interval_s:
            self.sim._violation_for(stats, "channel_rate", name)
            self._notice(connection, name, "msg_ratelimit", _TOO_QUICK)
            return False
        # Twitch compares with the account's previous message in the channel only.
        previous_at, previous_text = channel.previous.get(account.login, (-1e9, ""))
        if text == previous_text and now - previous_at < self.sim.limits.duplicate_window_s:
            self.sim._violation_for(stats, "duplicate", name)
            self._notice(connection, name, "msg_duplicate", _DUPLICATE)
            return False
        window = account.moderator_messages if moderator else account.messages
        if not window.take(now):
            self.sim._violation_for(stats, "message_rate", name)
            return False  # Twitch ignores the account's messages for a while
        if not moderator:
            account.moderator_messages.take(now)  # both buckets count every message
        channel.last_message[account.login] = now
        channel.previous[account.login] = (now, text)
        return True

    def _ping(self, connection: _Connection, message: Message) -> None:
        argument = message.params[-1] if message.params else SERVER
        connection.send(f":{SERVER} PONG {SERVER} :{argument}")

    def _quit(self, connection: _Connection, message: Message) -> None:
        connection.abort()

    def _ignore(self, connection: _Connection, message: Message) -> None:
        return None


def _twitch_tags(tags: dict[str, str]) -> str:
    """Tags as Twitch writes them: every tag with ``=``, even when its value is empty."""
    return "@" + ";".join(f"{key}={escape_tag_value(value)}" for key, value in tags.items())


HANDLERS: dict[str, Callable[[Commands, _Connection, Message], None]] = {
    "CAP": Commands._cap,
    "PASS": Commands._pass,
    "NICK": Commands._nick,
    "USER": Commands._ignore,
    "JOIN": Commands._join,
    "PART": Commands._part,
    "PRIVMSG": Commands._privmsg,
    "PING": Commands._ping,
    "PONG": Commands._ignore,
    "QUIT": Commands._quit,
}
