"""Where policies come from and which one is in force: files, Consul KV, and the hot reload.

The I/O half of placement policies, kept out of the pure
:mod:`controlplane.policy`: ``sources`` reads and writes policy files
(``load_policy_file``, ``FilePolicySource``), ``consul_source`` reads
Consul KV, ``active`` builds the :class:`PolicySet` of a base document and
its tenant overlays and holds the one in force (:class:`ActivePolicy`), and
``watch`` is the thread that reloads it (``PolicyWatcher``). The control
plane's start-up wires them together.

Public surface::

    load_policy_file(path) -> Policy        # one file, validated
    loads_policy(text) -> Policy
    build_policy_set(documents) -> PolicySet  # base + per-tenant overlays
    ActivePolicy                            # the policy in force (watch.PolicyWatcher reloads it)
"""

from controlplane.policy_sources.active import ActivePolicy, PolicyDocuments, PolicySet, build_policy_set
from controlplane.policy_sources.sources import DEFAULT_POLICY_PATH, MAX_POLICY_BYTES, load_policy_file, loads_policy

__all__ = [
    "DEFAULT_POLICY_PATH",
    "MAX_POLICY_BYTES",
    "ActivePolicy",
    "PolicyDocuments",
    "PolicySet",
    "build_policy_set",
    "load_policy_file",
    "loads_policy",
]
