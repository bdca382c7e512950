"""The REST API (FastAPI): routers that live with what they serve, composed by ``app.create_app``.

``tasks`` (submit, list, show, cancel, the receipt, events, the output, the
worker log; ``submissions`` group-commits concurrent submits), ``upload_routes``
and ``uploads`` (a tenant's local inputs), ``callbacks`` (the worker's
heartbeat, progress, complete and fail, on per-attempt tokens), ``health``
(``/healthz``, ``/readyz``, ``/metrics``), ``policies``, ``signals`` and
``planning`` (dry runs, shown by ``plan_view``). Bodies are validated field by
field in ``schemas`` (remote inputs in ``remote_uris``, dry-run task files in
``task_file``), capped before parsing by ``limits``, and every error has the
one JSON shape of ``errors``, naming the field. Callers are authenticated by
hashed tokens from a followed file (``auth``, ``tokens_file``, ``deps``);
``views`` is the stable JSON of tasks, attempts, events and receipts, and
``serving`` runs the app under uvicorn. docs/api.md is the reference.
"""
