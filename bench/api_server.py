"""The API alone, for the submit and upload benchmarks: ``python -m bench.api_server --port P --database-url U``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from controlplane.api.app import create_app
from controlplane.api.auth import TokenRegistry
from controlplane.api.serving import run_api
from controlplane.config import Settings
from controlplane.store import Store, make_engine, upgrade

#: what the submit benchmark's requests name (bench/api.py ``submit_requests``)
BENCH_GRANT = {"s3_read": ["s3://bench-faces/", "s3://bench-media/"], "s3_write": ["s3://bench-out/"]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--tokens-file", type=Path, required=True)
    parser.add_argument("--workdir", type=Path, required=True)
    args = parser.parse_args()
    # the bench tenant may read the bench buckets and write its outputs: without a grant every
    # s3:// submit is refused (deny by default) and the bench would time 422s, not admissions
    storage = args.workdir / "storage.json"
    storage.write_text(json.dumps({"version": 1, "tenants": {"bench": BENCH_GRANT}}))
    engine = make_engine(args.database_url)
    upgrade(engine=engine)
    settings = Settings(
        var_dir=args.workdir,
        tokens_file=args.tokens_file,
        output_root=args.workdir / "outputs",
        input_roots=(args.workdir / "inputs",),
        port=args.port,
        storage_file=storage,
    )
    asgi, _ = create_app(settings=settings, store=Store(engine), tokens=TokenRegistry.load(args.tokens_file))
    run_api(asgi, host="127.0.0.1", port=args.port)


if __name__ == "__main__":
    main()
