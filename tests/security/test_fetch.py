"""SSRF through the worker (issue 13 items 4 and 11): hostile URLs, redirects, rebinding, size caps.

The "internal" network is 127.0.0.1: real ``http.server`` servers on
loopback ports play an admin port, a metadata service and a CDN that
redirects. Nothing here leaves the machine: names resolve through a fixed
table handed to the fetcher, never through DNS.
"""

from __future__ import annotations

import json
import ssl
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from controlplane.domain import TaskState
from controlplane.store import Store, make_engine, upgrade
from faceswap import BadInput, run_swap
from faceswap.errors import EXIT_BAD_INPUT
from faceswap.fetcher import FetchRules, download
from faceswap.netguard import (
    AddressRefused,
    AllowedHosts,
    UrlRefused,
    check_addresses,
    check_target,
    parse_web_url,
)
from tests.support.api_fixtures import ACME, ApiServer, stored_rows
from tests.support.loopback import free_port, serving
from tests.support.storage import allow_loopback, fixed_host_resolver, fixed_resolver
from tests.support.tls import write_certificates

PNG = b"\x89PNG\r\n\x1a\n" + b"x" * 100


class Internal(ThreadingHTTPServer):
    """A loopback server that counts what reaches it: ``/file``, ``/to?url=U``, ``/stream?bytes=N``, ``/liar``."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.requests: list[tuple[str, str]] = []  # (path, Host header)
        self.streamed = 0
        self.stream_ended = threading.Event()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    @property
    def port(self) -> int:
        return int(self.server_address[1])


class _Handler(BaseHTTPRequestHandler):
    server: Internal

    def do_GET(self) -> None:
        self.server.requests.append((self.path, self.headers.get("Host", "")))
        parts = urlsplit(self.path)
        query = parse_qs(parts.query)
        if parts.path == "/to":
            self.send_response(302)
            self.send_header("Location", query["url"][0])
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif parts.path == "/stream":
            self._stream(int(query["bytes"][0]))
        elif parts.path == "/liar":
            self.send_response(200)
            self.send_header("Content-Length", str(256 << 20))
            self.end_headers()
            self.wfile.write(b"x" * 1024)
        else:
            self.send_response(200)
            self.send_header("Content-Length", str(len(PNG)))
            self.end_headers()
            self.wfile.write(PNG)

    def _stream(self, total: int) -> None:
        # no Content-Length: the size is known only by reading
        self.send_response(200)
        self.send_header("Connection", "close")
        self.end_headers()
        chunk = b"x" * (64 << 10)
        try:
            while self.server.streamed < total:
                self.wfile.write(chunk)
                self.server.streamed += len(chunk)
        except OSError:
            pass  # the client hung up: what the size cap should do
        finally:
            self.server.stream_ended.set()

    def log_message(self, *_args: object) -> None:
        return


@pytest.fixture
def internal() -> Iterator[Internal]:
    with serving(Internal()) as server:
        yield server


@pytest.fixture
def other() -> Iterator[Internal]:
    with serving(Internal()) as server:
        yield server


# --------------------------------------------------------------------------- the rules, by URL alone

HOSTILE = [
    ("http://127.0.0.1/", "loopback"),
    ("http://127.1/", "loopback"),
    ("http://2130706433/", "loopback"),
    ("http://0177.0.0.1/", "loopback"),
    ("http://0x7f.1/", "loopback"),
    ("http://0x7f000001/", "loopback"),
    ("http://017700000001/", "loopback"),
    ("http://127.0.0.1./", "loopback"),
    ("http://[::1]/", "loopback"),
    ("http://[::ffff:127.0.0.1]/", "loopback (IPv4-mapped)"),
    ("http://[::ffff:7f00:1]/", "loopback (IPv4-mapped)"),
    ("http://[0:0:0:0:0:ffff:169.254.169.254]/", "cloud metadata (IPv4-mapped)"),
    ("http://[::127.0.0.1]/", "loopback (IPv4-compatible)"),
    ("http://[64:ff9b::a9fe:a9fe]/", "cloud metadata (NAT64)"),
    ("http://[2002:a00:1::]/", "private (6to4)"),
    ("http://169.254.169.254/latest/meta-data/", "cloud metadata"),
    ("http://2852039166/", "cloud metadata"),
    ("http://[fd00:ec2::254]/", "cloud metadata"),
    ("http://169.254.1.1/", "link-local"),
    ("http://[fe80::1]/", "link-local"),
    ("http://10.0.0.1/", "private"),
    ("http://172.16.5.4/", "private"),
    ("http://192.168.1.1:8080/", "private"),
    ("http://[fd12:3456::1]/", "private"),
    ("http://100.64.0.1/", "shared address space (CGNAT)"),
    ("http://100.100.100.200/", "cloud metadata"),
    ("http://0.0.0.0/", "unspecified"),
    ("http://0/", "unspecified"),
    ("http://[::]/", "unspecified"),
    ("http://224.0.0.1/", "multicast"),
    ("http://[ff02::1]/", "multicast"),
    ("http://255.255.255.255/", "broadcast"),
    ("http://240.0.0.1/", "reserved"),
    ("http://192.0.2.7/", "documentation"),
    ("http://localhost/", "internal name"),
    ("http://LOCALHOST./", "internal name"),
    ("http://admin.localhost/", "internal name"),
    ("http://metadata.google.internal/computeMetadata/v1/", "internal name"),
    ("http://instance-data/", "internal name"),
    ("http://db.corp.internal/", "internal name"),
    ("http://intranet/", "single-label name"),
]

MALFORMED = [
    ("http://good.example@169.254.169.254/", "user name or password"),
    ("https://user:pw@cdn.example.com/a.png", "user name or password"),
    ("http://169.254.169.254@good.example/", "user name or password"),
    ("http://evil.example\\@169.254.169.254/", "backslashes"),
    ("ftp://cdn.example.com/a.png", "only http"),
    ("file:///etc/passwd", "only http"),
    ("gopher://127.0.0.1:6379/_INFO", "only http"),
    ("http:///a.png", "no host"),
    ("http://[fe80::1%25eth0]/", "zone"),
    ("http://\uff11\uff12\uff17.0.0.1/", "ASCII"),
    ("http://1.2.3.4.5/", "not a valid IPv4"),
    ("http://08.0.0.1/", "octal"),
    ("http://256.0.0.1/", "not a valid IPv4"),
    ("http://cdn.example.com:0/", "port"),
    ("http://cdn.example.com:99999/", "port"),
    ("http://cdn.exa mple.com/", "spaces"),
]


@pytest.mark.parametrize(("url", "rule"), HOSTILE)
def test_internal_addresses_and_names_are_refused_in_every_notation(url: str, rule: str) -> None:
    with pytest.raises(AddressRefused) as info:
        check_target(parse_web_url(url), allowed=AllowedHosts())
    assert info.value.rule == rule
    assert str(info.value) == f"address not allowed: {rule}"


@pytest.mark.parametrize(("url", "why"), MALFORMED)
def test_urls_no_job_may_fetch_are_refused_before_any_lookup(url: str, why: str) -> None:
    with pytest.raises(UrlRefused, match=why):
        parse_web_url(url)


@pytest.mark.parametrize(
    "url",
    ["https://cdn.example.com/a.png?sig=1", "http://8.8.8.8/x", "https://[2606:4700:4700::1111]/", "http://1e100.net/"],
)
def test_public_hosts_pass(url: str) -> None:
    check_target(parse_web_url(url), allowed=AllowedHosts())


def test_a_name_with_any_internal_address_is_refused() -> None:
    target = parse_web_url("https://cdn.example.com/a.png")
    check_addresses(target, [parse_web_url("http://8.8.8.8/").address], allowed=AllowedHosts())  # type: ignore[list-item]
    with pytest.raises(AddressRefused, match="loopback"):
        check_addresses(
            target,
            [parse_web_url("http://8.8.8.8/").address, parse_web_url("http://127.0.0.1/").address],  # type: ignore[list-item]
            allowed=AllowedHosts(),
        )


def test_the_operators_allow_is_one_host_and_port() -> None:
    allowed = AllowedHosts.parse(["127.0.0.1:8123", "minio.corp.internal"])
    check_target(parse_web_url("http://127.0.0.1:8123/x"), allowed=allowed)
    check_target(parse_web_url("http://minio.corp.internal:9000/x"), allowed=allowed)
    for url in ("http://127.0.0.1:8124/x", "http://2130706433:8124/", "http://localhost:8123/x"):
        with pytest.raises(AddressRefused):
            check_target(parse_web_url(url), allowed=allowed)
    with pytest.raises(ValueError, match="allowed host"):
        AllowedHosts.parse(["user@127.0.0.1"])


# --------------------------------------------------------------------------- the fetcher, against loopback servers


def test_the_worker_fetch_refuses_loopback_without_the_allow(internal: Internal, tmp_path: Path) -> None:
    dest = tmp_path / "in.png"
    with pytest.raises(BadInput) as info:
        download(f"{internal.url}/file", dest, field="source", rules=FetchRules())
    assert info.value.field == "source"
    assert info.value.message.endswith("address not allowed: loopback")
    assert internal.requests == []  # refused from the URL alone: nothing probed
    assert not dest.exists()


def test_the_operators_allow_lets_that_server_in(internal: Internal, tmp_path: Path) -> None:
    dest = tmp_path / "in.png"
    download(f"{internal.url}/file", dest, field="source", rules=allow_loopback(internal.url))
    assert dest.read_bytes() == PNG


@pytest.mark.parametrize(
    "where",
    [
        "{other}/file",  # the same host, a port the operator did not allow
        "http://2130706433:{other_port}/file",  # the same, in decimal
        "http://169.254.169.254/latest/meta-data/iam/",
        "http://[::ffff:127.0.0.1]:{other_port}/file",
        "http://localhost:{other_port}/file",
        "file:///etc/passwd",
    ],
)
def test_a_redirect_to_an_internal_address_is_refused_before_connecting(
    internal: Internal, other: Internal, tmp_path: Path, where: str
) -> None:
    location = where.format(other=other.url, other_port=other.port)
    dest = tmp_path / "in.png"
    with pytest.raises(BadInput) as info:
        download(f"{internal.url}/to?url={location}", dest, field="target", rules=allow_loopback(internal.url))
    assert info.value.field == "target"
    assert "not allowed" in info.value.message or "only http" in info.value.message
    assert [path for path, _ in internal.requests] == [f"/to?url={location}"]
    assert other.requests == []
    assert not dest.exists()


def test_an_allowed_redirect_is_followed_and_a_loop_is_cut(internal: Internal, tmp_path: Path) -> None:
    rules = allow_loopback(internal.url)
    dest = tmp_path / "in.png"
    download(f"{internal.url}/to?url=/file", dest, field="source", rules=rules)
    assert dest.read_bytes() == PNG
    dest.unlink()
    url = f"{internal.url}/file"
    for _ in range(6):
        url = f"{internal.url}/to?url={url.replace('?', '%3F').replace('=', '%3D')}"
    with pytest.raises(BadInput, match="more than 5 redirects"):
        download(url, dest, field="source", rules=rules)
    assert not dest.exists()


def test_the_size_cap_stops_a_large_body_mid_stream(internal: Internal, tmp_path: Path) -> None:
    total = 64 << 20
    dest = tmp_path / "big.mp4"
    with pytest.raises(BadInput, match="larger than the 1048576 byte limit") as info:
        download(
            f"{internal.url}/stream?bytes={total}",
            dest,
            field="target",
            rules=allow_loopback(internal.url, max_bytes=1 << 20),
        )
    assert info.value.field == "target"
    assert not dest.exists()  # the partial file is gone
    assert internal.stream_ended.wait(10)
    assert internal.streamed < total // 2, "the download should stop near the cap, not read everything"


def test_a_declared_length_over_the_cap_is_refused_before_writing(internal: Internal, tmp_path: Path) -> None:
    dest = tmp_path / "big.mp4"
    with pytest.raises(BadInput, match="larger than"):
        download(f"{internal.url}/liar", dest, field="target", rules=allow_loopback(internal.url, max_bytes=1 << 20))
    assert not dest.exists()


def test_the_connection_goes_to_the_checked_address_with_the_real_host_name(internal: Internal, tmp_path: Path) -> None:
    # "cdn.example.test" exists only in this resolver: a second lookup by anything else would fail
    rules = FetchRules(
        allowed_internal=AllowedHosts.parse([f"cdn.example.test:{internal.port}"]),
        resolver=fixed_resolver({"cdn.example.test": ["127.0.0.1"]}),
    )
    dest = tmp_path / "in.png"
    download(f"http://cdn.example.test:{internal.port}/file", dest, field="source", rules=rules)
    assert dest.read_bytes() == PNG
    assert internal.requests == [("/file", f"cdn.example.test:{internal.port}")]


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[tuple[Internal, ssl.SSLContext]]:
    """The internal server over TLS with a certificate for ``cdn.example.test`` only (no IP address in it)."""
    ca, cert, key = write_certificates(tmp_path / "tls", dns_names=("cdn.example.test",), ips=())
    server = Internal()
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    with serving(server):
        yield server, ssl.create_default_context(cafile=str(ca))


def test_https_to_the_checked_address_still_verifies_the_certificate_against_the_name(
    tls_server: tuple[Internal, ssl.SSLContext], tmp_path: Path
) -> None:
    server, trust = tls_server
    names = {"cdn.example.test": ["127.0.0.1"], "impostor.example.test": ["127.0.0.1"]}
    rules = FetchRules(
        allowed_internal=AllowedHosts.parse(
            [f"cdn.example.test:{server.port}", f"impostor.example.test:{server.port}"]
        ),
        resolver=fixed_resolver(names),
        tls_verify=trust,
    )
    dest = tmp_path / "in.png"
    download(f"https://cdn.example.test:{server.port}/file", dest, field="source", rules=rules)
    assert dest.read_bytes() == PNG
    assert server.requests == [("/file", f"cdn.example.test:{server.port}")]
    # the same address under a name the certificate does not hold: the handshake fails, nothing is saved
    dest.unlink()
    with pytest.raises(BadInput, match="cannot connect"):
        download(f"https://impostor.example.test:{server.port}/file", dest, field="source", rules=rules)
    assert not dest.exists()
    assert len(server.requests) == 1


def test_a_tenants_web_hosts_hold_on_every_hop_and_star_never_opens_an_internal_host(
    internal: Internal, tmp_path: Path
) -> None:
    cdn = f"cdn.example.test:{internal.port}"
    rules = FetchRules(
        allowed_internal=AllowedHosts.parse([cdn, f"other.example.test:{internal.port}"]),
        resolver=fixed_resolver({"cdn.example.test": ["127.0.0.1"], "other.example.test": ["127.0.0.1"]}),
    )
    dest = tmp_path / "in.png"
    download(f"http://{cdn}/file", dest, field="source", rules=rules, hosts=[cdn])
    assert dest.read_bytes() == PNG
    dest.unlink()
    elsewhere = f"http://other.example.test:{internal.port}/file"
    with pytest.raises(BadInput, match="not in this tenant's allowed web hosts"):
        download(f"http://{cdn}/to?url={elsewhere}", dest, field="source", rules=rules, hosts=[cdn])
    # "*" is any public host: the operator's internal host must be named by the tenant
    with pytest.raises(BadInput, match="address not allowed: loopback"):
        download(elsewhere, dest, field="source", rules=rules, hosts=["*"])
    assert [path for path, _ in internal.requests] == ["/file", f"/to?url={elsewhere}"]
    assert not dest.exists()


def test_a_name_resolving_to_any_internal_address_is_refused_without_connecting(
    internal: Internal, tmp_path: Path
) -> None:
    rules = FetchRules(resolver=fixed_resolver({"mixed.example.com": ["93.184.216.34", "127.0.0.1"]}))
    with pytest.raises(BadInput, match="address not allowed: loopback"):
        download(f"http://mixed.example.com:{internal.port}/file", tmp_path / "x", field="source", rules=rules)
    assert internal.requests == []


def test_connection_failures_read_alike_whatever_the_socket_said(tmp_path: Path) -> None:
    closed = [free_port(), free_port()]
    messages = []
    for port in closed:
        with pytest.raises(BadInput) as info:
            download(
                f"http://127.0.0.1:{port}/x",
                tmp_path / "x",
                field="source",
                rules=allow_loopback(f"http://127.0.0.1:{port}"),
            )
        messages.append(info.value.message.replace(str(port), "PORT"))
    assert messages[0] == messages[1] == "cannot read http://127.0.0.1:PORT/x: cannot connect to 127.0.0.1:PORT"


def test_the_worker_process_refuses_loopback_and_exits_65(
    internal: Internal, fusionctl: list[str], astronaut_path: Path, tmp_path: Path
) -> None:
    spec = {
        "task_id": "task-ssrf",
        "attempt_id": "att-ssrf",
        "source": f"{internal.url}/file",
        "target": str(astronaut_path),
        "output": str(tmp_path / "out" / "o.png"),
    }
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(spec))
    done = subprocess.run(
        [*fusionctl, "worker", "run", "--spec", str(path)], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == EXIT_BAD_INPUT, done.stderr
    failed = [json.loads(line) for line in done.stderr.splitlines() if '"attempt_failed"' in line]
    assert failed
    assert failed[0]["field"] == "source"
    assert failed[0]["error"].endswith("address not allowed: loopback")
    assert internal.requests == []
    assert not (tmp_path / "out").exists()


def test_run_swap_refuses_a_redirect_to_metadata(internal: Internal, astronaut_path: Path, tmp_path: Path) -> None:
    with pytest.raises(BadInput, match="cloud metadata") as info:
        run_swap(
            source=f"{internal.url}/to?url=http://169.254.169.254/latest/meta-data/",
            target=str(astronaut_path),
            output=str(tmp_path / "o.png"),
            fetch_rules=allow_loopback(internal.url),
        )
    assert info.value.field == "source"
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- the same rules at submit time


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    engine = make_engine(f"sqlite:///{tmp_path / 'store.db'}")
    upgrade(engine=engine)
    yield Store(engine)
    engine.dispose()


@pytest.fixture
def api(store: Store, tmp_path: Path) -> Iterator[ApiServer]:
    resolver = fixed_host_resolver({"files.example.com": ["10.1.2.3"], "cdn.example.com": ["93.184.216.34"]})
    with ApiServer.start(store, tmp_path, resolve_host=resolver) as server:
        yield server


@pytest.mark.parametrize(("url", "rule"), [*HOSTILE[::4], ("http://files.example.com/a.png", "private")])
@pytest.mark.parametrize("field", ["source", "target"])
def test_submit_refuses_internal_urls_with_422_naming_the_field(
    api: ApiServer, field: str, url: str, rule: str
) -> None:
    before = stored_rows(api.store)
    body = api.body(**{field: url.rstrip("/") + "/x.png"})
    response = api.client(ACME).post("/v1/tasks", json=body)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert (error["code"], error["field"]) == ("invalid", field)
    assert f"address not allowed: {rule}" in error["message"]
    assert stored_rows(api.store) == before


@pytest.mark.parametrize(("url", "why"), MALFORMED[:3])
def test_submit_refuses_userinfo_urls(api: ApiServer, url: str, why: str) -> None:
    response = api.client(ACME).post("/v1/tasks", json=api.body(source=url))
    assert response.status_code == 422, response.text
    assert response.json()["error"]["field"] == "source"
    assert why in response.json()["error"]["message"]


def test_submit_accepts_public_names_and_names_that_do_not_resolve_now(api: ApiServer) -> None:
    client = api.client(ACME)
    for url in ("https://cdn.example.com/a.png", "https://not-resolvable.example.net/a.png"):
        response = client.post("/v1/tasks", json=api.body(source=url))
        assert response.status_code == 202, response.text
        assert api.store.get_task(response.json()["id"]).state == TaskState.QUEUED
