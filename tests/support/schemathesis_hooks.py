"""schemathesis hooks for the API's contract test (named by schemathesis.toml): how to send a tus chunk."""

from __future__ import annotations

import schemathesis

# a tus PATCH body is raw bytes, sent as application/octet-stream bodies are
schemathesis.serializer.alias("application/offset+octet-stream", "application/octet-stream")
