"""The simulator's Send Chat Message (``POST /helix/chat/messages``), as Twitch's: the message is
said in the channel (to its IRC members and to its EventSub subscribers), with the Chat Bot
badge when an app token sends it under the broadcaster's ``channel:bot`` or the sender's
moderator status.

Rules, each answered as Twitch does:

- the token: the sender's user token with ``user:write:chat``, or an app token of a client the
  sender granted ``user:bot`` and ``user:write:chat``, where the broadcaster granted
  ``channel:bot`` or the sender moderates (else 401/403);
- the body: ``broadcaster_id``, ``sender_id``, ``message`` (1 to 500 characters), optional
  ``reply_parent_message_id`` (else 400); an unknown broadcaster is 404 (``is_sent`` is for
  Twitch's own refusals below);
- refusals with ``is_sent: false`` and a ``drop_reason`` (``{"code", "message"}``): a suspended
  channel (``channel_suspended``), a banned sender (``user_banned``), the same text again within
  30 s (``msg_duplicate``), under a second since the sender's last message in the channel
  (``msg_ratelimit``);
- the sender's budget, shared with IRC (20 per 30 s, 100 as a moderator): beyond it, 429.

Beside it, Get Moderated Channels (``GET /helix/moderation/channels?user_id=``): the channels
the user moderates, with the user's own token and ``user:read:moderated_channels``, in pages
(``first``, ``after``).
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tmi_cluster.irc import parse, serialize
from tmi_cluster.simulator.conduits import RefusedError
from tmi_cluster.simulator.peers import Delivery, _Account, _Channel, user_id

if TYPE_CHECKING:
    from tmi_cluster.simulator.server import ChatSimulator

__all__ = ["BADGE", "chat_routes", "send_chat"]

#: The badge the Chat Bot's messages wear.
BADGE = "bot-badge/1"


def _account(sim: ChatSimulator, login: str) -> _Account:
    """The sender's account (made for an API-only bot, with Twitch's budgets)."""
    account = sim._accounts.get(login)
    if account is None:  # no IRC login (no token): only the API sends as it
        account = sim._accounts[login] = _Account.fresh(login, "", set(), sim.limits)
    return account


def _dropped(code: str, message: str) -> dict[str, Any]:
    return {
        "data": [
            {"message_id": "", "is_sent": False, "drop_reason": {"code": code, "message": message}}
        ]
    }


def _check(
    sim: ChatSimulator, holder: Any, client_id: str, body: dict[str, Any]
) -> tuple[str, str, str]:
    """The sender's login, the channel's and the text; RefusedError as Twitch answers."""
    broadcaster, sender = str(body.get("broadcaster_id", "")), str(body.get("sender_id", ""))
    text = body.get("message")
    if not broadcaster or not sender or not isinstance(text, str) or not text.strip():
        raise RefusedError(400, "broadcaster_id, sender_id and message are required")
    if len(text) > sim.limits.max_message_chars:
        raise RefusedError(400, f"message is over {sim.limits.max_message_chars} characters")
    login, channel = sim._login_of(sender), sim._login_of(broadcaster)
    if channel is None or channel not in sim._channels:
        raise RefusedError(404, "the broadcaster does not exist")
    if login is None:
        raise RefusedError(400, "the sender does not exist")
    if holder.login:  # a user token: the sender's own, with user:write:chat
        if holder.login != login or "user:write:chat" not in holder.scopes:
            raise RefusedError(401, "the token is not the sender's with user:write:chat")
    elif not (
        sim.oauth.authorized(client_id, login, "user:bot")
        and sim.oauth.authorized(client_id, login, "user:write:chat")
    ):
        raise RefusedError(403, "the sender has not granted user:bot and user:write:chat")
    return login, channel, text


def _refusal(
    sim: ChatSimulator, channel: _Channel, login: str, text: str, now: float
) -> dict[str, Any] | None:
    """Twitch's ``is_sent: false`` answer for this message, or None."""
    if channel.suspended:
        return _dropped("channel_suspended", "The channel is suspended.")
    if login in channel.banned:
        return _dropped("user_banned", "You are banned from this channel.")
    if now - channel.last_message.get(login, -1e9) < sim.limits.channel_interval_s:
        return _dropped("msg_ratelimit", "You are sending messages too quickly.")
    previous_at, previous_text = channel.previous.get(login, (-1e9, ""))
    if text == previous_text and now - previous_at < sim.limits.duplicate_window_s:
        return _dropped("msg_duplicate", "Your message is identical to the one you sent.")
    return None


def send_chat(
    sim: ChatSimulator, holder: Any, client_id: str, body: dict[str, Any]
) -> dict[str, Any]:
    """``POST /helix/chat/messages`` by the token ``holder`` (see the module)."""
    login, name, text = _check(sim, holder, client_id, body)
    channel = sim._channels[name]
    account = _account(sim, login)
    moderator = name in account.moderator_in or login == name
    if not holder.login and not (sim.oauth.authorized(client_id, name, "channel:bot") or moderator):
        raise RefusedError(
            403, "with an app token, the broadcaster grants channel:bot or the sender moderates"
        )
    now = time.monotonic()
    refused = _refusal(sim, channel, login, text, now)
    if refused is not None:
        return refused
    window = account.moderator_messages if moderator else account.messages
    if not window.take(now):
        raise RefusedError(429, "too many messages")
    if not moderator:
        account.moderator_messages.take(now)
    channel.last_message[login] = now
    channel.previous[login] = (now, text)
    stats = sim.account(login)
    stats.messages += 1
    if sim.record:
        stats.said.append((name, text))
    badge = not holder.login and (sim.oauth.authorized(client_id, name, "channel:bot") or moderator)
    badges = [BADGE] if badge else []
    badges += ["moderator/1"] if moderator else []
    message_id = sim._traffic.new_id()
    tags = {
        "badge-info": "",
        "badges": ",".join(badges),
        "color": "",
        "display-name": login,
        "emotes": "",
        "first-msg": "0",
        "id": message_id,
        "mod": "1" if moderator else "0",
        "room-id": channel.room_id,
        "subscriber": "0",
        "tmi-sent-ts": str(int(time.time() * 1000)),
        "user-id": user_id(login),
    }
    parent = body.get("reply_parent_message_id")
    if isinstance(parent, str) and parent:
        tags["reply-parent-msg-id"] = parent
    line = serialize(
        "PRIVMSG", [f"#{name}", text], tags=tags, source=f"{login}!{login}@{login}.tmi.twitch.tv"
    )
    data = line.encode() + b"\r\n"
    if sim.record:
        sim._deliveries[name].append(Delivery(message_id, channel.joined(), now))
    for member in channel.members.values():
        member.write(data if member.full else member.shape(data, "PRIVMSG"))
    if sim.conduits.subscribed:
        sim.conduits.deliver(parse(line))
    sim._touch()
    return {"data": [{"message_id": message_id, "is_sent": True, "drop_reason": None}]}


def chat_routes(sim: ChatSimulator) -> list[Route]:
    """The route of Send Chat Message, for the control app."""

    async def send(request: Request) -> Response:
        try:
            holder, client_id = sim.oauth.request_holder(
                request.headers.get("authorization", ""), request.headers.get("client-id", "")
            )
            try:
                body = json.loads(await request.body() or b"{}")
            except ValueError:
                raise RefusedError(400, "the body is not JSON") from None
            if not isinstance(body, dict):
                raise RefusedError(400, "the body must be a JSON object")
            return JSONResponse(send_chat(sim, holder, client_id, body))
        except RefusedError as refused:
            return JSONResponse(refused.body(), status_code=refused.status)

    async def moderated(request: Request) -> Response:
        try:
            holder, _ = sim.oauth.request_holder(
                request.headers.get("authorization", ""), request.headers.get("client-id", "")
            )
            return JSONResponse(moderated_channels(sim, holder, request.query_params))
        except RefusedError as refused:
            return JSONResponse(refused.body(), status_code=refused.status)

    return [
        Route("/helix/chat/messages", send, methods=["POST"]),
        Route("/helix/moderation/channels", moderated, methods=["GET"]),
    ]


def moderated_channels(sim: ChatSimulator, holder: Any, query: Any) -> dict[str, Any]:
    """``GET /helix/moderation/channels?user_id=`` (Get Moderated Channels): the user's own
    token with ``user:read:moderated_channels``; pages of ``first`` (at most 100) with a
    cursor ``after``."""
    user = str(query.get("user_id", ""))
    if not user:
        raise RefusedError(400, 'Missing required parameter "user_id"')
    login = sim._login_of(user)
    if login is None or not holder.login or login != holder.login:
        raise RefusedError(401, "the token is not the user's own")
    if "user:read:moderated_channels" not in holder.scopes:
        raise RefusedError(401, "missing scope user:read:moderated_channels")
    try:
        first = int(query.get("first", "20"))
        start = int(query.get("after") or "0")
    except ValueError:
        raise RefusedError(400, "first and after are numbers here") from None
    if not 1 <= first <= 100:
        raise RefusedError(400, "first is 1 to 100")
    account = _account(sim, login)
    names = sorted(n for n in account.moderator_in if n in sim._channels)
    page = names[start : start + first]
    data = [
        {"broadcaster_id": user_id(n), "broadcaster_login": n, "broadcaster_name": n} for n in page
    ]
    more = start + first < len(names)
    return {"data": data, "pagination": {"cursor": str(start + first)} if more else {}}
