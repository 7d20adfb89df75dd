"""The supervisor of one host: its services, its worker processes, its record and heartbeat,
its stop.

- :mod:`~tmi_cluster.supervisor.supervisor`: :class:`~tmi_cluster.supervisor.supervisor.Supervisor`,
  its lifecycle, orders and signals;
- :mod:`~tmi_cluster.supervisor.processes`: its worker processes: spawn, watch, restart,
  replace, drain, stop;
- :mod:`~tmi_cluster.supervisor.chores`: the periodic chores (purge, target resync, figures,
  memory);
- :mod:`~tmi_cluster.supervisor.claims`: its id among the live, and the database of its
  cluster;
- :mod:`~tmi_cluster.supervisor.handover`: a stopping supervisor's channels handed over;
- :mod:`~tmi_cluster.supervisor.chat`: where its workers read chat (Twitch, a server, or the
  built-in simulator it runs).
"""
