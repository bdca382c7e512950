"""Live signal pollers (Prometheus, spot prices, free capacity) producing SignalSnapshots."""
