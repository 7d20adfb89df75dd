"""The coordinator: one supervisor of the cluster, under a lease, makes the assignment of
channels to worker processes follow what is wanted, and decides the cluster's size.

- :mod:`~tmi_cluster.coordinator.coordinator`: :class:`Coordinator`, its loop and its passes;
- :mod:`~tmi_cluster.coordinator.planner`: the plan of one pass, a pure function of a snapshot;
- :mod:`~tmi_cluster.coordinator.failures`: failed joins, retried after a delay their reason
  demands, or given up;
- :mod:`~tmi_cluster.coordinator.sizing`: the cluster's size, each supervisor's target;
- :mod:`~tmi_cluster.coordinator.autoscale`: the scale decision, a pure function;
- :mod:`~tmi_cluster.coordinator.cleanup`: the channel manager's stale cleanup, once per period
  for the whole cluster.
"""
