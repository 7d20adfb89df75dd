"""``python -m tmi_cluster.cli``: the ``tmi-cluster`` command (``run`` starts itself again
this way when it is over ``memory_limit``)."""

from tmi_cluster.cli import main

if __name__ == "__main__":  # pragma: no cover
    main()
