"""Placement policies: the JSON model, validation, sources, and the pure plan() function."""
