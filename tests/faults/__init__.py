"""Fault storms: the control plane killed over and over while thousands of tasks run on every backend."""
