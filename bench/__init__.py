"""The benchmarks behind docs/performance.md: ``make bench`` runs them all, one per ``make bench-*`` target.

``core`` (per-stage timings and fps of the face-swap core on CPU), ``api``
with ``api_server`` (submit and placement throughput on SQLite and
PostgreSQL), ``policy`` (``plan()`` throughput), ``simulate`` (``policy
simulate`` over 100,000 decisions), ``signals`` with ``signal_backends``
(what polling costs), ``providers`` (launch overhead and failover latency per
backend) and ``ha`` (what fencing costs). ``report`` writes each table into
the page between its markers. Not part of the installed package.
"""
