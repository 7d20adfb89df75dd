"""A worker: a pool of chat connections and everything after it, and the worker process that
runs one.

- :mod:`~tmi_cluster.worker.worker`: :class:`~tmi_cluster.worker.worker.Worker` (the class a
  worker process runs and an application tests with) and :func:`build_pool`, the one place
  where a worker's parts are built from the settings;
- :mod:`~tmi_cluster.worker.handlers`: the application's handlers: registration and dispatch;
- :mod:`~tmi_cluster.worker.delivery`: exactly once across the cluster during a hand-over;
- :mod:`~tmi_cluster.worker.outbox`: the worker's consumer of the cluster's send commands;
- :mod:`~tmi_cluster.worker.process`: the worker process, the supervisor's child
  (``python -m tmi_cluster.worker.process``): heartbeat, assignment, signals, its stop;
- :mod:`~tmi_cluster.worker.handover`: a channel moving between two worker processes;
- :mod:`~tmi_cluster.worker.watchdog`: a stop deadline that always holds.
"""
