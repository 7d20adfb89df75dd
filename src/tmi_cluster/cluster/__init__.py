"""The cluster seen from outside: what an application and the command line do with a running
cluster (or its durable state while it is down).

- :mod:`~tmi_cluster.cluster.client`: :class:`~tmi_cluster.cluster.client.Cluster` and
  ``SyncCluster``, an application's handle (public as ``tmi_cluster.Cluster``);
- :mod:`~tmi_cluster.cluster.admin`: join, part, authorize, channels, scale, terminate as
  library functions (what the CLI's cluster commands call);
- :mod:`~tmi_cluster.cluster.listing`: what ``tmi-cluster list`` and ``health`` show;
- :mod:`~tmi_cluster.cluster.features`: what ``tmi-cluster features`` prints;
- :mod:`~tmi_cluster.cluster.housekeeping`: who is alive, and the purge of the dead.
"""
