"""FusionPlane's control plane: REST, CLI, scheduler, policy engine and the worker agent."""

__version__ = "0.1.0"
