"""``fusionctl``: the command line of FusionPlane, and the entry point of everything it runs.

``main`` is the click group; each family of commands has its own module:
``serve`` (runs the control plane ``controlplane.runtime`` builds), ``tasks``
(``submit``, ``tasks list/show/cancel/logs/watch``, ``explain``), ``plan``
(offline dry runs), ``policy``, ``signals``, ``tokens``, ``db``, ``models``,
``swap`` and ``demo`` (the face swap here, no server) and ``worker`` (``worker
run``, the container's entry point). ``client`` is the HTTP client of the
commands that talk to a running control plane, ``common`` and ``columns``
what the commands share (error reporting, output format, aligned tables). docs/cli.md is the reference.
"""
