"""Talking to a Twitch chat server: the layer under the workers, usable on its own.

- :mod:`~tmi_cluster.chat.transport`: the byte streams (TCP/TLS, WebSocket) behind one
  interface;
- :mod:`~tmi_cluster.chat.session`: one physical link: login, framing, PING, its channels;
- :mod:`~tmi_cluster.chat.connection`: one Twitch connection that stays up (reconnects,
  RECONNECT hand-over, every join confirmed or failed);
- :mod:`~tmi_cluster.chat.pool`: a worker's connections and the truth about its channels;
- :mod:`~tmi_cluster.chat.sender`: saying things within Twitch's rules;
- :mod:`~tmi_cluster.chat.ratelimit`: Twitch's limits as sliding windows.

Nothing here knows settings, Redis or SQL: the worker (:mod:`tmi_cluster.worker`) builds these
parts from the settings, and shares the windows through the bus.
"""
