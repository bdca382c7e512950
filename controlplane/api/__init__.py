"""The REST API (FastAPI): tasks, receipts, worker callbacks, health and metrics."""
