"""fusionctl's book of unfinished uploads (controlplane/cli/tasks/upload.py): private, atomic, forgiving."""

from __future__ import annotations

import os
from pathlib import Path

from controlplane.cli.tasks.upload import LocalFile, UploadBook


def test_entries_are_kept_private_and_forgotten(tmp_path: Path) -> None:
    book = UploadBook(tmp_path / "state" / "fusionplane" / "uploads.json")
    book.put("k1", "/v1/uploads/upl_1")
    book.put("k2", "/v1/uploads/upl_2")
    assert (book.get("k1"), book.get("k2"), book.get("k3")) == ("/v1/uploads/upl_1", "/v1/uploads/upl_2", None)
    assert book.path.stat().st_mode & 0o777 == 0o600  # upload URLs are the tenant's business
    assert book.path.parent.stat().st_mode & 0o777 == 0o700
    book.forget("k1")
    book.forget("never there")
    assert (book.get("k1"), book.get("k2")) == (None, "/v1/uploads/upl_2")
    assert [p.name for p in book.path.parent.iterdir()] == ["uploads.json"]  # no temporary file left


def test_a_damaged_book_costs_only_a_fresh_upload(tmp_path: Path) -> None:
    book = UploadBook(tmp_path / "uploads.json")
    for damage in ("{not json", "[1, 2]", ""):
        book.path.write_text(damage)
        assert book.get("anything") is None
        book.put("k", "/v1/uploads/upl_1")
        assert book.get("k") == "/v1/uploads/upl_1"


def test_the_resume_key_changes_with_the_server_size_and_mtime(tmp_path: Path) -> None:
    path = tmp_path / "clip.mp4"
    path.write_bytes(b"12345")
    first = LocalFile.of(path)
    assert first.key("http://a") != first.key("http://b")
    os.utime(path, ns=(first.mtime_ns + 10**9, first.mtime_ns + 10**9))
    assert LocalFile.of(path).key("http://a") != first.key("http://a")
    path.write_bytes(b"123456")
    assert LocalFile.of(path).size == 6
    assert LocalFile.of(tmp_path / "." / "clip.mp4").path == first.path  # the real path, however it was named
