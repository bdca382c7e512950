"""The fake Consul against the real ``consul.Consul`` client (py-consul), over loopback HTTP.

Tests elsewhere trust the fake to behave as Consul's KV API documents; these
prove it does for what the control plane relies on: indexes, check-and-set,
listings, blocking queries, and an agent that goes away and comes back.
"""

from __future__ import annotations

import base64
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import consul
import pytest
import requests
from consul.exceptions import BadRequest, ClientError, ConsulException

from tests.fakes.consul import LEADER, NO_LEADER, FakeConsul

pytestmark = pytest.mark.timeout(30)

BINARY = bytes(range(256))  # not UTF-8: proves values travel as bytes, base64 in JSON


@pytest.fixture
def fake() -> Iterator[FakeConsul]:
    with FakeConsul() as server:
        yield server


@pytest.fixture
def client(fake: FakeConsul) -> consul.Consul:
    return consul.Consul(host="127.0.0.1", port=fake.port)


@pytest.fixture
def pool() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(max_workers=2) as executor:
        yield executor


def _put_later(fake: FakeConsul, key: str, value: bytes, delay_s: float) -> threading.Thread:
    """Another writer, through its own client, after the blocking read has started waiting."""

    def write() -> None:
        time.sleep(delay_s)
        consul.Consul(host="127.0.0.1", port=fake.port).kv.put(key, value)

    thread = threading.Thread(target=write, daemon=True)
    thread.start()
    return thread


def _timed(waiting: Future[Any], started: float) -> tuple[Any, float]:
    """The blocking read's answer and how long after ``started`` it came."""
    result = waiting.result(timeout=10)
    return result, time.monotonic() - started


# ---- values and indexes ------------------------------------------------------------


def test_put_then_get_round_trips_bytes_flags_and_indexes(client: consul.Consul) -> None:
    assert client.kv.put("targets/a", BINARY, flags=42) is True

    index, entry = client.kv.get("targets/a")

    assert entry is not None
    assert entry["Key"] == "targets/a"
    assert entry["Value"] == BINARY
    assert entry["Flags"] == 42
    assert entry["LockIndex"] == 0
    assert "Session" not in entry
    assert entry["CreateIndex"] == entry["ModifyIndex"] > 0
    assert int(index) == entry["ModifyIndex"]  # X-Consul-Index of an existing key is its ModifyIndex


def test_empty_value_reads_back_as_none_like_consul(client: consul.Consul) -> None:
    assert client.kv.put("folder/", None) is True
    assert client.kv.put("empty", b"") is True

    assert client.kv.get("folder/")[1]["Value"] is None
    assert client.kv.get("empty")[1]["Value"] is None


def test_writes_move_modify_index_and_keep_create_index(client: consul.Consul) -> None:
    client.kv.put("k", b"one")
    _, first = client.kv.get("k")
    client.kv.put("k", b"two")
    index, second = client.kv.get("k")

    assert second["Value"] == b"two"
    assert second["CreateIndex"] == first["CreateIndex"]
    assert second["ModifyIndex"] > first["ModifyIndex"]
    assert int(index) == second["ModifyIndex"]


def test_rewriting_the_same_value_keeps_the_index(client: consul.Consul) -> None:
    # Consul skips a write that changes nothing (DirEntry.Equal), so watchers are not woken
    client.kv.put("k", b"same", flags=1)
    _, before = client.kv.get("k")
    assert client.kv.put("k", b"same", flags=1) is True
    _, after = client.kv.get("k")
    assert after["ModifyIndex"] == before["ModifyIndex"]

    client.kv.put("k", b"same", flags=2)  # flags are part of the entry: this one is a change
    assert client.kv.get("k")[1]["ModifyIndex"] > before["ModifyIndex"]


def test_missing_key_is_none_with_the_kv_index(fake: FakeConsul, client: consul.Consul) -> None:
    assert client.kv.get("nothing") == ("1", None)  # an empty store still answers a non-zero index

    client.kv.put("other", b"x")
    index, entry = client.kv.get("nothing")

    assert entry is None
    assert int(index) == fake.index == client.kv.get("other")[1]["ModifyIndex"]


# ---- check-and-set -----------------------------------------------------------------


def test_cas_zero_creates_only_if_absent(client: consul.Consul) -> None:
    assert client.kv.put("lease", b"first", cas=0) is True
    assert client.kv.put("lease", b"second", cas=0) is False
    assert client.kv.get("lease")[1]["Value"] == b"first"


def test_cas_with_modify_index_lets_one_of_two_writers_win(client: consul.Consul) -> None:
    client.kv.put("plan", b"v1")
    seen = client.kv.get("plan")[1]["ModifyIndex"]

    assert client.kv.put("plan", b"writer-a", cas=seen) is True
    assert client.kv.put("plan", b"writer-b", cas=seen) is False  # its index is stale now
    assert client.kv.put("nobody-here", b"x", cas=seen) is False  # non-zero cas on a missing key

    _, entry = client.kv.get("plan")
    assert entry["Value"] == b"writer-a"
    assert entry["ModifyIndex"] > seen


# ---- listings ----------------------------------------------------------------------


def test_recurse_lists_the_prefix_in_key_order(client: consul.Consul) -> None:
    for key in ("jobs/b", "jobs/a", "jobs/a/1", "jobsx", "other"):
        client.kv.put(key, key.encode())

    index, entries = client.kv.get("jobs/", recurse=True)

    assert [e["Key"] for e in entries] == ["jobs/a", "jobs/a/1", "jobs/b"]
    assert [e["Value"] for e in entries] == [b"jobs/a", b"jobs/a/1", b"jobs/b"]
    assert int(index) == max(e["ModifyIndex"] for e in entries)
    assert client.kv.get("nope/", recurse=True)[1] is None  # Consul: 404 for an empty listing


def test_keys_lists_names_and_folds_at_the_separator(client: consul.Consul) -> None:
    for key in ("jobs/a", "jobs/a/1", "jobs/a/2", "jobs/b/1", "jobs/c"):
        client.kv.put(key, b"x")

    assert client.kv.get("jobs/", keys=True)[1] == ["jobs/a", "jobs/a/1", "jobs/a/2", "jobs/b/1", "jobs/c"]
    assert client.kv.get("jobs/", keys=True, separator="/")[1] == ["jobs/a", "jobs/a/", "jobs/b/", "jobs/c"]
    assert client.kv.get("", keys=True, separator="/")[1] == ["jobs/"]
    assert client.kv.get("nope/", keys=True)[1] is None


def test_keys_of_an_empty_root_is_an_empty_list(client: consul.Consul) -> None:
    index, names = client.kv.get("", keys=True)
    assert names == []
    assert index == "1"


# ---- deletes -----------------------------------------------------------------------


def test_delete_removes_one_key_and_moves_the_listing_index(client: consul.Consul) -> None:
    client.kv.put("jobs/a", b"1")
    client.kv.put("jobs/b", b"2")
    before, _ = client.kv.get("jobs/", recurse=True)

    assert client.kv.delete("jobs/a") is True

    assert client.kv.get("jobs/a")[1] is None
    after, entries = client.kv.get("jobs/", recurse=True)
    assert [e["Key"] for e in entries] == ["jobs/b"]
    assert int(after) > int(before)  # the tombstone's index: watchers of the prefix see the delete
    assert client.kv.delete("jobs/a") is True  # deleting what is gone is not an error


def test_recursive_delete_takes_only_the_prefix(client: consul.Consul) -> None:
    for key in ("jobs/a", "jobs/b/c", "jobsx", "other"):
        client.kv.put(key, b"x")

    assert client.kv.delete("jobs/", recurse=True) is True

    assert client.kv.get("jobs/", recurse=True)[1] is None
    assert client.kv.get("", keys=True)[1] == ["jobsx", "other"]


def test_delete_with_cas_needs_the_current_modify_index(client: consul.Consul) -> None:
    client.kv.put("lease", b"mine")
    current = client.kv.get("lease")[1]["ModifyIndex"]

    assert client.kv.delete("lease", cas=current - 1) is False
    assert client.kv.get("lease")[1]["Value"] == b"mine"
    assert client.kv.delete("lease", cas=0) is False  # unlike PUT, cas=0 never deletes

    assert client.kv.delete("lease", cas=current) is True
    assert client.kv.get("lease")[1] is None


# ---- blocking queries --------------------------------------------------------------


def test_blocking_get_returns_as_soon_as_another_client_writes(
    fake: FakeConsul, client: consul.Consul, pool: ThreadPoolExecutor
) -> None:
    client.kv.put("config", b"old")
    index, _ = client.kv.get("config")

    started = time.monotonic()
    waiting = pool.submit(client.kv.get, "config", index=index, wait="2s")
    writer = _put_later(fake, "config", b"new", delay_s=0.2)
    (new_index, entry), elapsed = _timed(waiting, started)
    writer.join(timeout=5)

    assert entry["Value"] == b"new"
    assert int(new_index) == entry["ModifyIndex"] > int(index)
    assert 0.15 < elapsed < 1.0  # it did wait for the write, and did not sit out the 2 s


def test_blocking_get_answers_unchanged_when_the_wait_ends(client: consul.Consul) -> None:
    client.kv.put("config", b"same")
    index, _ = client.kv.get("config")

    started = time.monotonic()
    new_index, entry = client.kv.get("config", index=index, wait="300ms")
    elapsed = time.monotonic() - started

    assert (new_index, entry["Value"]) == (index, b"same")
    assert 0.28 < elapsed < 1.5


def test_blocking_get_with_an_old_index_answers_at_once(client: consul.Consul) -> None:
    client.kv.put("config", b"v1")
    old, _ = client.kv.get("config")
    client.kv.put("config", b"v2")

    started = time.monotonic()
    new_index, entry = client.kv.get("config", index=old, wait="2s")

    assert time.monotonic() - started < 0.5
    assert entry["Value"] == b"v2"
    assert int(new_index) > int(old)


def test_blocking_get_of_a_missing_key_wakes_when_it_is_created(
    fake: FakeConsul, client: consul.Consul, pool: ThreadPoolExecutor
) -> None:
    index, entry = client.kv.get("later")
    assert entry is None

    started = time.monotonic()
    waiting = pool.submit(client.kv.get, "later", index=index, wait="2s")
    _put_later(fake, "later", b"here", delay_s=0.2).join(timeout=5)
    (new_index, entry), elapsed = _timed(waiting, started)

    assert entry["Value"] == b"here"
    assert int(new_index) > int(index)
    assert elapsed < 1.0


def test_blocking_listing_wakes_on_a_delete_under_its_prefix(client: consul.Consul, pool: ThreadPoolExecutor) -> None:
    client.kv.put("jobs/a", b"1")
    client.kv.put("jobs/b", b"2")
    index, _ = client.kv.get("jobs/", recurse=True)

    waiting = pool.submit(client.kv.get, "jobs/", recurse=True, index=index, wait="2s")
    time.sleep(0.2)
    started = time.monotonic()
    consul.Consul(host="127.0.0.1", port=client.http.port).kv.delete("jobs/a")
    (new_index, entries), elapsed = _timed(waiting, started)

    assert [e["Key"] for e in entries] == ["jobs/b"]
    assert int(new_index) > int(index)
    assert elapsed < 1.0


# ---- outages -----------------------------------------------------------------------


def test_stopped_consul_raises_connection_error_and_comes_back_with_its_data(
    fake: FakeConsul, client: consul.Consul
) -> None:
    client.kv.put("config", b"kept")
    index, _ = client.kv.get("config")  # leaves a keep-alive connection in the client's pool
    port = fake.port

    fake.stop()
    with pytest.raises(requests.exceptions.ConnectionError):
        client.kv.get("config")

    fake.start()
    assert fake.port == port
    new_index, entry = client.kv.get("config")
    assert (new_index, entry["Value"]) == (index, b"kept")
    assert client.kv.put("config", b"after", cas=int(index)) is True  # indexes carried over too


def test_stop_cuts_a_blocked_long_poll_at_once(
    fake: FakeConsul, client: consul.Consul, pool: ThreadPoolExecutor
) -> None:
    client.kv.put("config", b"x")
    index, _ = client.kv.get("config")
    waiting = pool.submit(client.kv.get, "config", index=index, wait="5s")
    time.sleep(0.2)

    started = time.monotonic()
    fake.stop()
    stopped_in = time.monotonic() - started

    with pytest.raises(requests.exceptions.ConnectionError):
        waiting.result(timeout=5)
    assert time.monotonic() - started < 1.0
    assert stopped_in < 1.0


def test_fail_answers_no_leader_until_healed(fake: FakeConsul, client: consul.Consul) -> None:
    client.kv.put("config", b"x")

    fake.fail(times=2)
    for _ in range(2):
        with pytest.raises(ConsulException, match=f"500 {NO_LEADER}"):
            client.kv.get("config")
    assert client.kv.get("config")[1]["Value"] == b"x"

    fake.fail(status=503, message="overloaded")
    with pytest.raises(ConsulException, match="503 overloaded"):
        client.kv.put("config", b"y")
    fake.heal()
    assert client.kv.get("config")[1]["Value"] == b"x"  # the refused write did not happen


# ---- protocol details --------------------------------------------------------------


def test_status_leader_answers_for_health_checks(client: consul.Consul) -> None:
    assert client.status.leader() == LEADER
    assert client.status.peers() == [LEADER]


def test_raw_read_and_read_headers(fake: FakeConsul, client: consul.Consul) -> None:
    client.kv.put("blob", BINARY)

    raw = requests.get(f"{fake.url}/v1/kv/blob?raw", timeout=5)
    listed = requests.get(f"{fake.url}/v1/kv/blob", timeout=5)
    missing = requests.get(f"{fake.url}/v1/kv/none", timeout=5)

    assert (raw.status_code, raw.content) == (200, BINARY)
    assert base64.b64decode(listed.json()[0]["Value"]) == BINARY
    assert listed.headers["X-Consul-KnownLeader"] == "true"
    assert listed.headers["X-Consul-LastContact"] == "0"
    assert (missing.status_code, missing.content) == (404, b"")
    assert int(missing.headers["X-Consul-Index"]) == fake.index


@pytest.mark.parametrize(
    ("method", "path", "status", "body"),
    [
        ("GET", "/v1/kv/k?index=abc", 400, "Invalid index"),
        ("GET", "/v1/kv/k?index=1&wait=5", 400, "Invalid wait time"),  # Go durations need a unit
        ("GET", "/v1/kv/", 400, "Missing key name"),
        ("PUT", "/v1/kv/", 400, "Missing key name"),
        ("DELETE", "/v1/kv/k?recurse&cas=1", 400, "Conflicting flags: cas=1&recurse=\n"),
        ("GET", "/v1/kv/k?stale&consistent", 400, "Cannot specify ?stale with ?consistent, conflicting semantics."),
        ("PUT", "/v1/kv/k?flags=-1", 500, 'strconv.ParseUint: parsing "-1": invalid syntax'),
        ("POST", "/v1/kv/k", 405, "method POST not allowed"),
        ("GET", "/v1/kv/k?dc=elsewhere", 500, "No path to datacenter"),
        ("GET", "/v1/agent/nothing-here", 404, ""),
    ],
)
def test_bad_requests_answer_as_consul_does(fake: FakeConsul, method: str, path: str, status: int, body: str) -> None:
    response = requests.request(method, fake.url + path, timeout=5)
    assert (response.status_code, response.text) == (status, body)


def test_client_sees_bad_wait_as_bad_request(client: consul.Consul) -> None:
    client.kv.put("k", b"x")
    with pytest.raises(BadRequest, match="Invalid wait time"):
        client.kv.get("k", index=1, wait="soon")


def test_oversized_value_is_refused_with_413(client: consul.Consul) -> None:
    with pytest.raises(ClientError, match="413 Request body"):
        client.kv.put("big", b"x" * (512 * 1024 + 1))
    assert client.kv.get("big")[1] is None


def test_requests_are_recorded_as_the_client_sent_them(fake: FakeConsul) -> None:
    tokened = consul.Consul(host="127.0.0.1", port=fake.port, token="s3cret")
    tokened.kv.put("k", b"v", cas=0, flags=7)
    tokened.kv.get("k", index=1, wait="1s")

    put, get = fake.requests
    assert (put.method, put.path, put.token, put.body) == ("PUT", "/v1/kv/k", "s3cret", b"v")
    assert put.query == {"cas": ["0"], "flags": ["7"]}
    assert (get.method, get.query) == ("GET", {"index": ["1"], "wait": ["1s"]})


def test_seed_is_seen_by_the_client_and_wakes_watchers(
    fake: FakeConsul, client: consul.Consul, pool: ThreadPoolExecutor
) -> None:
    index, _ = client.kv.get("config")
    waiting = pool.submit(client.kv.get, "config", index=index, wait="2s")
    time.sleep(0.1)

    modify_index = fake.seed("config", b"seeded", flags=3)

    new_index, entry = waiting.result(timeout=5)
    assert (int(new_index), entry["Value"], entry["Flags"]) == (modify_index, b"seeded", 3)
    stored = fake.entry("config")
    assert stored is not None
    assert (stored.value, stored.modify_index) == (b"seeded", modify_index)


def test_wipe_ends_blocked_reads_and_restarts_the_index(
    fake: FakeConsul, client: consul.Consul, pool: ThreadPoolExecutor
) -> None:
    client.kv.put("config", b"x")
    index, _ = client.kv.get("config")
    waiting = pool.submit(client.kv.get, "config", index=index, wait="5s")
    time.sleep(0.2)

    started = time.monotonic()
    fake.wipe()

    assert waiting.result(timeout=5) == ("1", None)  # the index went backwards: clients must start over
    assert time.monotonic() - started < 1.0
