"""Live signals: the pollers that tell the planner what the world looks like, and one snapshot per batch.

``hub`` runs every source on its own schedule (timeout, jitter, backoff),
keeps each latest value through failures and ages it into stale by its TTL,
and copies them into one ``SignalSnapshot`` on demand. The sources
(``base`` is what they implement): ``prometheus`` (GPU utilisation and
memory), ``aws_spot`` and ``azure_spot`` (spot prices), ``kubernetes_capacity``
(free GPUs), ``queue`` (queue depth), ``breaker`` (spot circuit breakers) and
``budget`` (cloud spend today), the last three fed by functions the caller
injects so this layer never imports the store. ``snapshot_json`` writes a
snapshot as JSON and reads it back. docs/signals.md is the reference.
"""
