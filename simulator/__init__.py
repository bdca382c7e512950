"""The launch-day simulator (docs/simulator.md).

The product's scheduler and store under a virtual clock, in a world made of spot traces.
"""
