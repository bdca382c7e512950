"""FusionPlane's control plane: deciding where a face-swap task runs, launching it there, following it to an end.

Its packages, bottom to top (the ``layers`` import contract in setup.cfg):
``domain`` (the frozen values and the error taxonomy every layer shares),
``policy`` (the policy language and the pure ``plan()``), ``signals`` (live
signal pollers), ``store`` (the only SQL), ``policy_sources`` (where policies
come from, with hot reload), ``scheduler`` (acting on plans: place, follow,
fail over, release, reconcile, lead), ``api`` (the REST service) and
``worker`` (the in-container agent), ``runtime`` (the running control plane
built from ``Settings``), and ``cli`` (``fusionctl``, the entry point of
everything). ``config``, ``jsonlog`` and ``metrics`` sit outside the
layers and serve all of them. docs/architecture.md is the map.
"""

__version__ = "0.1.0"
