"""Data plane (issue 15): resumable uploads through the API, and staging into S3 and Blob stores.

Run with ``make bench-dataplane`` (or ``python -m bench.dataplane``;
``--size-mib 64 --runs 1`` for a quick look). One input file of random
bytes (``--size-mib``, default 1 GiB) under a temporary folder in /tmp
serves both parts; every run sends or copies the same bytes, and each
figure is the median of ``--runs`` runs.

1. **Uploads** (bench/dataplane_uploads.py): the real API in its own
   process on 127.0.0.1; the plain one-request ``PUT`` (baseline), the
   project's tus client uninterrupted, and the tus client with its
   connection broken halfway through the PATCH at the file's middle, then
   resumed from the server's offset. MiB/s, bytes re-sent, the file's
   sha256 checked, the server's peak RSS.
2. **Staging** (bench/dataplane_staging.py): the real ``Stager`` into moto
   S3 and into Azurite, ``shutil.copyfile`` of the same bytes as the
   baseline; MiB/s, this process's peak RSS growth during the copy, and
   the second (idempotent) call's time.

A progress line per step goes to stderr; the table to stdout and, unless
``--no-write``, into docs/performance.md between the ``bench-dataplane``
markers. Every server started here is stopped by PID and the temporary
folder is deleted.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import TypeVar

from bench.dataplane_staging import TENANT, StageRun, copy_baseline, python_peak, stage_input, staging_targets
from bench.dataplane_uploads import UploadRun, upload_server
from bench.memory import MIB
from bench.report import machine, write_section
from controlplane.cli.tasks.upload import CHUNK_BYTES
from controlplane.dataplane.stager import sha256_of_file

T = TypeVar("T")

#: the API's default largest upload (``Settings.max_upload_bytes``), which the bench's server keeps
MAX_SIZE_MIB = 2048
_WRITE_BLOCK = 64 * MIB
HEADING = (
    "## Data plane (`make bench-dataplane`)\n\n"
    "Figures the data-plane issue (15) names: a 1 GiB upload that survives a broken connection (resumed, "
    "nothing re-sent but the lost chunk, the checksum verified), and staging that streams a 1 GiB input "
    "into a target's store in parts, idempotent per attempt.\n\n"
)


@dataclass
class Results:
    """Every run of every measurement, kept for the table's medians and its per-run columns."""

    size: int
    runs: int
    uploads: dict[str, list[UploadRun]] = field(default_factory=dict)
    staging: dict[str, list[StageRun]] = field(default_factory=dict)
    #: seconds for ``sha256_of_file`` of the input, once per staging run
    hashing: list[float] = field(default_factory=list)
    #: store -> tracemalloc's peak during one more, untimed, stage call
    python_peak: dict[str, int] = field(default_factory=dict)
    #: the machine's 1-minute load average when the measurements began and ended (others share it)
    load: list[float] = field(default_factory=list)


def say(message: str) -> None:
    print(f"bench.dataplane: {message}", file=sys.stderr, flush=True)


def mib_s(size: int, seconds: float) -> float:
    return size / MIB / seconds


def settle() -> None:
    """Flush every dirty page before the next measurement, untimed.

    A step that writes 1 GiB without fsync (the plain PUT, copyfile) leaves
    it in the page cache; flushed later, it would land in whichever step the
    kernel chose, and every fsync of the tus chunks could wait behind it.
    """
    os.sync()


def rotated(steps: list[T], run: int) -> list[T]:
    """``steps`` starting at a different one each run: no kind always follows the same other kind."""
    turn = (run - 1) % len(steps)
    return steps[turn:] + steps[:turn]


def write_input(path: Path, size: int) -> None:
    """``size`` random bytes (nothing a transport could compress or deduplicate)."""
    path.parent.mkdir(parents=True)
    with path.open("wb") as handle:
        for start in range(0, size, _WRITE_BLOCK):
            handle.write(os.urandom(min(_WRITE_BLOCK, size - start)))


# ---- the two parts ---------------------------------------------------------------------------------


def bench_uploads(results: Results, *, source: Path, sha256: str, workdir: Path) -> None:
    """Each run: plain PUT, tus, tus cut at half (the first one rotating); one server for all of them."""
    workdir.mkdir()
    with upload_server(workdir, source=source, sha256=sha256) as server:
        say(f"uploads: API server pid {server.pid} at {server.url}")
        steps: list[tuple[str, str, Callable[[], UploadRun]]] = [
            ("put", "plain PUT", server.plain_put),
            ("tus", "tus", lambda: server.tus(cut=False)),
            ("tus_cut", "tus, cut at half", lambda: server.tus(cut=True)),
        ]
        for run in range(1, results.runs + 1):
            for kind, label, step in rotated(steps, run):
                settle()
                say(f"uploads run {run}/{results.runs}: {label}, {results.size // MIB} MiB ...")
                measured = step()
                results.uploads.setdefault(kind, []).append(measured)
                say(
                    f"  {mib_s(measured.size, measured.seconds):.0f} MiB/s, re-sent {measured.resent / MIB:.1f} MiB, "
                    f"server peak {measured.server_peak / MIB:.0f} MiB, sha256 ok: {measured.verified}"
                )


def bench_staging(results: Results, *, source: Path, sha256: str, workdir: Path) -> None:
    """Each run: copyfile and the stager into each store (the first one rotating); a small warm-up first, so that
    building the SDK clients is not in the first run's figures."""
    inputs = source.parents[2]
    warm = source.parent / "warm-up.bin"
    warm.write_bytes(os.urandom(MIB))
    recorded = {source: sha256}
    with staging_targets(inputs=inputs, outputs=workdir / "outputs", recorded=recorded.get) as (targets, stagers):
        for target in targets:
            say(f"staging: warm-up into {target.name} ({target.storage.root})")
            stage_input(stagers, target, warm)
        for run in range(1, results.runs + 1):
            say(f"staging run {run}/{results.runs}: sha256 of the input ...")
            started = time.perf_counter()
            sha256_of_file(source)
            results.hashing.append(time.perf_counter() - started)
            steps = [("shutil.copyfile", lambda: copy_baseline(source, workdir))]
            steps += [(f"Stager into {t.name}", lambda t=t: stage_input(stagers, t, source)) for t in targets]
            for name, step in rotated(steps, run):
                settle()
                say(f"staging run {run}/{results.runs}: {name} ...")
                measured = step()
                results.staging.setdefault(measured.store, []).append(measured)
                say(
                    f"  {mib_s(measured.size, measured.seconds):.0f} MiB/s, peak RSS growth "
                    f"{measured.peak_growth / MIB:.1f} MiB, next attempt {measured.again_s:.2f} s"
                )
        for target in targets:
            say(f"staging: once more into {target.name} under tracemalloc (untimed) ...")
            results.python_peak[target.name] = python_peak(stagers, target, source)
            say(f"  Python's peak allocations {results.python_peak[target.name] / MIB:.1f} MiB")


# ---- the table -------------------------------------------------------------------------------------


def _median(values: Sequence[float]) -> float:
    return statistics.median(values)


def _rates(runs: Sequence[UploadRun | StageRun]) -> str:
    return ", ".join(f"{mib_s(run.size, run.seconds):.0f}" for run in runs)


def _rate(runs: Sequence[UploadRun | StageRun]) -> float:
    return _median([mib_s(run.size, run.seconds) for run in runs])


def upload_table(results: Results) -> list[str]:
    uploads = results.uploads
    base = _rate(uploads["put"])
    lines = [
        f"**Uploads** of {results.size // MIB} MiB through the API on 127.0.0.1 (one uvicorn worker, SQLite; the "
        "client in the bench's process on the same cores). MiB/s over the whole upload as the client sees it; "
        "server RSS = the API process's resident memory before the upload / its peak during it (`VmHWM`, reset "
        "before each upload).",
        "",
        "| upload | MiB/s | s | ratio to plain PUT | bytes re-sent | server RSS before / peak, MiB "
        "| whole file's sha256 | runs, MiB/s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    rows = [
        ("put", "plain `PUT /v1/uploads/{filename}`, one streamed body (baseline)"),
        ("tus", "tus, `upload_resumable` as `fusionctl submit` runs it (8 MiB PATCHes)"),
        ("tus_cut", "tus, connection broken halfway through the PATCH at the middle, then resumed"),
    ]
    for kind, label in rows:
        runs = uploads[kind]
        rate = _rate(runs)
        seconds = _median([run.seconds for run in runs])
        checked = "checked by the server, then by the bench" if kind != "put" else "checked by the bench"
        ok = "yes" if all(run.verified for run in runs) else "**NO**"
        lines.append(
            f"| {label} | **{rate:.0f}** | {seconds:.2f} | {rate / base:.2f} | {_resent(runs)} "
            f"| {_median([r.server_rss / MIB for r in runs]):.0f} / {_median([r.server_peak / MIB for r in runs]):.0f} "
            f"| {ok} ({checked}) | {_rates(runs)} |"
        )
    cut = uploads["tus_cut"]
    resume = [(run.size - run.resumed_from) / MIB / run.resume_s for run in cut]
    lines.append(
        f"| of which the resume: HEAD, then PATCHes from the server's offset | **{_median(resume):.0f}** "
        f"| {_median([run.resume_s for run in cut]):.2f} | {_median(resume) / base:.2f} | | | "
        f"| {', '.join(f'{value:.0f}' for value in resume)} |"
    )
    return lines


def _resent(runs: Sequence[UploadRun]) -> str:
    resent = _median([run.resent for run in runs]) / MIB
    return "0" if resent == 0 else f"{resent:.1f} MiB"


def upload_notes(results: Results) -> list[str]:
    tus, cut = results.uploads["tus"], results.uploads["tus_cut"]
    first = cut[0]
    return [
        "",
        f"The cut: the client sends the PATCH's headers (`Content-Length` {_chunk_of(first)}) and "
        f"{first.lost / MIB:.1f} MiB of its body, then closes the socket; the server, which was promised that "
        f"chunk's sha256, drops its partial bytes. The client's own retry sleeps "
        f"{_median([run.backoff_s for run in cut]):.1f} s (not counted above), HEAD answers "
        f"`Upload-Offset: {first.resumed_from}` ({first.resumed_from / MIB:.0f} MiB; "
        f"{_same([r.resumed_from for r in cut])}), and the PATCHes go on from there: re-sent = what the broken "
        f"PATCH carried ({_median([r.lost for r in cut]) / MIB:.1f} MiB), nothing beyond it "
        f"({_median([r.resent - r.lost for r in cut]) / MIB:.1f} MiB).",
        "",
        _tus_breakdown(tus),
    ]


def _tus_breakdown(tus: Sequence[UploadRun]) -> str:
    """Where the uninterrupted tus upload's time goes, from the client's exchanges (medians)."""
    total = _median([run.seconds for run in tus])
    before = _median([run.before_first_patch_s for run in tus])
    patches = _median([run.patches_s for run in tus])
    last = _median([run.last_patch_s for run in tus])
    count = math.ceil(tus[0].size / CHUNK_BYTES)
    between = total - before - patches - last
    return (
        f"Where the uninterrupted tus upload's {total:.2f} s go (medians, from the client's exchanges): "
        f"{before:.2f} s before the first PATCH (the client hashes the whole file for `Upload-Metadata`, then "
        f"POST); {patches:.2f} s in {count - 1} PATCH round trips of 8 MiB (the server hashes each chunk and "
        f"fsyncs it before it answers); {last:.2f} s in the last PATCH (the server also hashes the whole file, "
        f"then renames it); {between:.2f} s in the client between PATCHes (reading and hashing the next chunk). "
        "One chunk is in flight at a time, so the client's and the server's work do not overlap."
    )


def _chunk_of(run: UploadRun) -> str:
    return f"{2 * run.lost / MIB:.0f} MiB"


def _same(values: list[int]) -> str:
    distinct = set(values)
    return "the same offset each time" if len(distinct) == 1 else f"offsets {sorted(distinct)}"


def staging_table(results: Results) -> list[str]:
    staging = results.staging
    base = _rate(staging["copyfile"])
    hash_rate = _median([mib_s(results.size, seconds) for seconds in results.hashing])
    lines = [
        "",
        f"**Staging** {results.size // MIB} MiB with the real `Stager` (as `build_runtime` wires it, for a local input "
        "with no recorded sha256: it hashes the source, then streams it in 8 MiB parts or blocks) into moto S3 "
        "(server mode, own process) and Azurite (Blob, data in memory, own process), both on 127.0.0.1. Peak RSS "
        "growth = how far the bench process's peak resident memory (`VmHWM`, reset before each call) rose above "
        "its size before the call; Python's peak allocations = `tracemalloc`'s peak during one more stage call "
        "per store, after the timed runs and not timed itself (tracing slows every allocation). Next attempt = "
        "the same input staged again for another attempt (found by sha256 and size, not copied).",
        "",
        "| copy | MiB/s | s | ratio to copyfile | peak RSS growth, MiB | Python's peak allocations, MiB "
        "| next attempt, no recorded sha256: s | next attempt, an upload's recorded sha256: ms | runs, MiB/s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name in ["copyfile", *(name for name in staging if name != "copyfile")]:
        runs = staging[name]
        rate = _rate(runs)
        label = "`shutil.copyfile` to a file beside it, no fsync (baseline)" if name == "copyfile" else name
        again = "" if name == "copyfile" else f"{_median([r.again_s for r in runs]):.2f}"
        recorded = "" if name == "copyfile" else f"{_median([r.again_recorded_s for r in runs]) * 1000:.1f}"
        traced = f"{results.python_peak[name] / MIB:.1f}" if name in results.python_peak else ""
        lines.append(
            f"| {label} | **{rate:.0f}** | {_median([r.seconds for r in runs]):.2f} | {rate / base:.2f} "
            f"| {_median([r.peak_growth / MIB for r in runs]):.1f} | {traced} | {again} | {recorded} "
            f"| {_rates(runs)} |"
        )
    lines.append(
        f"| `sha256_of_file` of the input alone (the stager's pre-hash) | {hash_rate:.0f} "
        f"| {_median(results.hashing):.2f} | {hash_rate / base:.2f} | | | | "
        f"| {', '.join(f'{mib_s(results.size, s):.0f}' for s in results.hashing)} |"
    )
    return lines


def markdown(results: Results, *, command: str) -> str:
    lines = [
        f"Measured {date.today().isoformat()} on a {machine()}, Python {sys.version.split()[0]}; input "
        f"{results.size // MIB} MiB of random bytes in a file under /tmp (in the page cache after it is written), "
        f"median of {results.runs} runs; within a run the kinds take turns, in an order rotated from run to run, "
        f"with `sync` (untimed) before each; 1-minute load average {results.load[0]:.1f} at the start, "
        f"{results.load[-1]:.1f} at the end. Command: `{command}`.",
        "",
    ]
    if results.uploads:
        lines += upload_table(results) + upload_notes(results)
    if results.staging:
        lines += staging_table(results)
    return "\n".join(lines)


# ---- command line ----------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=1024, help=f"input size, 1 to {MAX_SIZE_MIB} MiB")
    parser.add_argument("--runs", type=int, default=3, help="runs of every measurement (medians are reported)")
    parser.add_argument("--parts", default="uploads,staging", help="which parts to run (comma-separated)")
    parser.add_argument("--no-write", action="store_true", help="print the table, leave docs/performance.md alone")
    args = parser.parse_args(argv)
    parts = set(args.parts.split(","))
    if not 1 <= args.size_mib <= MAX_SIZE_MIB or args.runs < 1 or not parts <= {"uploads", "staging"}:
        parser.error(f"--size-mib 1..{MAX_SIZE_MIB}, --runs >= 1, --parts of uploads,staging")
    results = Results(size=args.size_mib * MIB, runs=args.runs)
    with tempfile.TemporaryDirectory(prefix="fusionplane-bench-dataplane-", dir="/tmp") as tmp:
        folder = Path(tmp)
        source = folder / "inputs" / TENANT / "upl_bench" / "clip.bin"
        say(f"writing {args.size_mib} MiB of random bytes to {source}")
        write_input(source, results.size)
        sha256 = sha256_of_file(source)
        results.load.append(os.getloadavg()[0])
        if "uploads" in parts:
            bench_uploads(results, source=source, sha256=sha256, workdir=folder / "api")
        if "staging" in parts:
            bench_staging(results, source=source, sha256=sha256, workdir=folder)
        results.load.append(os.getloadavg()[0])
    given = sys.argv[1:] if argv is None else argv
    command = " ".join(["python -m bench.dataplane", *given]) if given else "make bench-dataplane"
    table = markdown(results, command=command)
    print(table)
    if not args.no_write:
        write_section("bench-dataplane", table, heading=HEADING)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
