"""A model mirror for the model-cache fill tests: stand-in models served over loopback HTTPS and moto S3."""

from __future__ import annotations

import contextlib
import hashlib
import json
import ssl
from collections.abc import Iterator, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from tests.support.loopback import serving
from tests.support.standin_models import write_model_dir
from tests.support.tls import write_certificates

__all__ = ["MIRROR_HOST", "Mirror", "fill_manifest", "https_mirror", "standin_files"]

#: the name the mirror's certificate holds; tests resolve it to 127.0.0.1 and allow it as internal
MIRROR_HOST = "models.example.test"


class Mirror(ThreadingHTTPServer):
    """Serves ``files`` (URL path -> bytes) and records every path asked for."""

    daemon_threads = True

    def __init__(self, files: Mapping[str, bytes]) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.files = dict(files)
        self.requests: list[str] = []

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def url(self, path: str) -> str:
        return f"https://{MIRROR_HOST}:{self.port}/{path.lstrip('/')}"


class _Handler(BaseHTTPRequestHandler):
    server: Mirror

    def do_GET(self) -> None:
        self.server.requests.append(self.path)
        body = self.server.files.get(self.path)
        if body is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextlib.contextmanager
def https_mirror(
    tmp_path: Path, files: Mapping[str, bytes], *, dns_names: tuple[str, ...] = (MIRROR_HOST,)
) -> Iterator[tuple[Mirror, ssl.SSLContext, Path]]:
    """The mirror over TLS for ``dns_names``; yields it, a context trusting its CA, and the CA's file."""
    ca, cert, key = write_certificates(tmp_path / "tls", dns_names=dns_names, ips=())
    server = Mirror(files)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    with serving(server):
        yield server, ssl.create_default_context(cafile=str(ca)), ca


def standin_files(tmp_path: Path) -> tuple[list[dict[str, Any]], dict[str, bytes]]:
    """The stand-in models' manifest entries and their bytes by file name (built once in ``tmp_path``)."""
    built = write_model_dir(tmp_path / "standins")
    entries = json.loads((built / "manifest.json").read_text())["models"]
    return entries, {entry["file"]: (built / entry["file"]).read_bytes() for entry in entries}


def fill_manifest(path: Path, entries: list[dict[str, Any]], sources: Mapping[str, str]) -> Path:
    """A fill manifest at ``path``: ``entries`` each with ``source`` = ``sources[entry name]``."""
    models = [{**entry, "source": sources[entry["name"]]} for entry in entries]
    path.write_text(json.dumps({"models": models}, indent=2), encoding="utf-8")
    return path


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
