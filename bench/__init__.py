"""The benchmarks behind docs/performance.md: ``make bench`` runs them all, one per ``make bench-*`` target.

``core`` (per-stage timings and fps of the face-swap core on CPU), ``api``
with ``api_server`` (submit and placement throughput on SQLite and
PostgreSQL), ``policy`` (``plan()`` throughput), ``simulate`` (``policy
simulate`` over 100,000 decisions), ``signals`` (what polling costs; its
backends in ``signal_backends`` and ``signal_cluster``, its measurements in
``signal_measure``, its table in ``signal_report``), ``providers`` (launch
overhead and failover latency per backend; ``provider_backends`` and
``provider_results`` beside it), ``ha`` (what fencing costs) and ``dataplane`` (1 GiB through tus,
cut and resumed, and staged into S3 and Blob emulators; ``dataplane_uploads`` and
``dataplane_staging`` beside it). ``report`` writes each table into the page between its markers;
``memory`` reads a process's resident memory from /proc. Not part of the installed package.
"""

import os

# before any benchmark imports onnxruntime: no usage telemetry to Microsoft (see faceswap/__init__.py)
os.environ["ORT_DISABLE_TELEMETRY"] = "1"
