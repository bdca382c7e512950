"""Backends that run the worker image: local, Kubernetes, AWS EC2 Spot, Azure Spot.

One module per backend behind the contract in ``providers/base.py`` (added
with the control-plane issue). Providers depend only on controlplane.domain.
"""
