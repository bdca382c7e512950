"""Backends that run the worker image: the local machine, Kubernetes, AWS EC2 Spot, Azure Spot.

``base`` is the one contract every backend implements (launch, status,
cancel, list owned, capacity, quote), keyed by the attempt id; ``bootstrap``
renders names, id-only tags, the spec file and cloud-init for all of them;
``common`` holds what they share (the targets filter, the attempt-id pattern,
the client cache, the base of every settings model) and ``target_settings``
is the one entry to every settings model for the places that load a policy.
``local`` (with ``local_env``, the worker's minimal environment) runs one
worker subprocess per attempt, ``noop`` runs nothing (benches and tests), and
each cloud is a package of the same shape: ``kubernetes``, ``aws`` and
``azure``, each with its settings model, pure builders, status mapping,
errors and provider; ``kubeconfig`` reaches a cluster for the provider and
the capacity signal. Providers import nothing of the control plane but its
domain, and none imports another. docs/providers.md is the reference.
"""
