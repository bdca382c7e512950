"""One face-swap job: source face + target image or video -> output.

Models are loaded and verified first, then the source face is found, then the
target is read: a bad model or a faceless source fails before any target
frame is decoded. Videos run as a three-stage pipeline (decoder thread,
swapping in the caller's thread, encoder thread) so decoding, swapping and
encoding overlap on a small machine, and are cut into segments of
``segment_frames`` frames committed to the checkpoint as they finish.
"""

from __future__ import annotations

import json
import queue
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from faceswap.access import Access
from faceswap.align import warp_face
from faceswap.blend import BlendConfig, paste_back
from faceswap.checkpoint import CheckpointStore, Manifest, open_checkpoint
from faceswap.detector import DetectorConfig, YuNetDetector
from faceswap.errors import BadInput, NoFaceFound, Preempted
from faceswap.fetcher import FetchRules
from faceswap.media import (
    IMAGE_SUFFIXES,
    VIDEO_OUTPUT_SUFFIXES,
    MediaInfo,
    media_kind,
    probe,
    read_image,
    write_image,
)
from faceswap.models import ModelStore, sha256_file
from faceswap.runtime import ExecutionConfig, create_session
from faceswap.swappers import SWAPPERS, Swapper, build_swapper
from faceswap.types import BGRImage, Face
from faceswap.uris import Location, fetch, parse_uri, write_atomically
from faceswap.video import (
    ENCODERS,
    Decoder,
    SegmentEncoder,
    available_encoders,
    concat_segments,
    to_coded,
    to_display,
)

__all__ = ["STAGES", "EventSink", "FaceSwapper", "SwapOptions", "SwapResult", "run_swap"]

STAGES = ("decode", "detect", "align", "swap", "paste", "encode")
#: raw frames buffered between stages, in bytes; at 8K (100 MB a frame) that is two frames each
QUEUE_BYTES = 256 << 20
DETECTOR_MODEL = "yunet_2023mar"
EventSink = Callable[[str, dict[str, Any]], None]


def _queue_depth(frame_bytes: int, most: int) -> int:
    return max(2, min(most, QUEUE_BYTES // max(frame_bytes, 1)))


def _check_stop(stop: threading.Event) -> None:
    if stop.is_set():
        raise Preempted("stopped by SIGTERM before any work needed checkpointing", field="worker")


def _ignore(_event: str, _fields: dict[str, Any]) -> None:
    return None


@dataclass(frozen=True)
class SwapOptions:
    """Everything that shapes a job's output (and so its checkpoint fingerprint)."""

    swapper: str = "classic"
    #: ``all``, ``largest``, or ``index:N`` (faces numbered left to right from 0)
    face_selector: str = "all"
    execution_provider: str = "auto"
    cpu_threads: int = 0
    allow_fallback: bool = False
    encoder: str = "libx264"
    #: CRF-style quality for video (0 best .. 51); images use ``image_quality``
    quality: int = 18
    preset: str = "veryfast"
    image_quality: int = 95
    segment_frames: int = 120
    blend: BlendConfig = field(default_factory=BlendConfig)
    detector: DetectorConfig = field(default_factory=DetectorConfig)

    def __post_init__(self) -> None:
        if self.swapper not in SWAPPERS:
            choices = ", ".join(SWAPPERS)
            raise BadInput(f"unknown swapper {self.swapper!r}; choose one of {choices}", field="swapper")
        _ = self.face_index  # validates the selector
        if self.encoder not in ENCODERS:
            choices = ", ".join(ENCODERS)
            raise BadInput(f"unsupported encoder {self.encoder!r}; choose one of {choices}", field="encoder")
        if not 0 <= self.quality <= 51:
            raise BadInput("must be between 0 (best) and 51", field="quality")
        if not 1 <= self.image_quality <= 100:
            raise BadInput("must be between 1 and 100", field="image_quality")
        if not 1 <= self.segment_frames <= 100_000:
            raise BadInput("must be between 1 and 100000", field="segment_frames")

    @property
    def face_index(self) -> int | None:
        if self.face_selector in ("all", "largest"):
            return None
        prefix, _, number = self.face_selector.partition(":")
        if prefix != "index" or not number.isdigit():
            raise BadInput("must be all, largest or index:N", field="face_selector")
        return int(number)

    def fingerprint(self) -> dict[str, Any]:
        values = asdict(self)
        for runtime_only in ("execution_provider", "cpu_threads", "allow_fallback", "segment_frames"):
            values.pop(runtime_only)
        return values


@dataclass
class SwapResult:
    kind: str
    output: str
    frames: int = 0
    frames_swapped: int = 0
    faces_swapped: int = 0
    segments_done: int = 0
    segments_skipped: int = 0
    wall_s: float = 0.0
    stage_s: dict[str, float] = field(default_factory=lambda: dict.fromkeys(STAGES, 0.0))

    @property
    def fps(self) -> float:
        return self.frames_swapped / self.wall_s if self.wall_s > 0 else 0.0

    def summary(self) -> dict[str, Any]:
        """The JSON-ready result that ``fusionctl swap --json`` prints and the worker reports."""
        return {
            "output": self.output,
            "kind": self.kind,
            "frames": self.frames,
            "frames_swapped": self.frames_swapped,
            "faces_swapped": self.faces_swapped,
            "segments_done": self.segments_done,
            "segments_skipped": self.segments_skipped,
            "fps": round(self.fps, 2),
            "wall_s": round(self.wall_s, 3),
            "timings_s": {stage: round(seconds, 4) for stage, seconds in self.stage_s.items()},
        }


class _Timer:
    def __init__(self, totals: dict[str, float], stage: str) -> None:
        self.totals, self.stage = totals, stage

    def __enter__(self) -> None:
        self.start = time.perf_counter()

    def __exit__(self, *_: object) -> None:
        self.totals[self.stage] += time.perf_counter() - self.start


class FaceSwapper:
    """Loaded models for one job; ``swap_frame`` works on any BGR frame."""

    def __init__(self, options: SwapOptions, *, models: ModelStore | None = None) -> None:
        self.options = options
        store = models or ModelStore()
        execution = ExecutionConfig(
            provider=options.execution_provider,
            cpu_threads=options.cpu_threads,
            allow_fallback=options.allow_fallback,
        )
        detector_path = store.verified_path(DETECTOR_MODEL, role="detector")
        self.detector = YuNetDetector(create_session(detector_path, execution), options.detector)
        self.swapper: Swapper = build_swapper(options.swapper, models=store, execution=execution)
        self.stage_s = dict.fromkeys(STAGES, 0.0)

    def source_face(self, image: BGRImage) -> Any:
        faces = self.detector.detect(image)
        if not faces:
            raise NoFaceFound("no face found in the source image", field="source")
        largest = max(faces, key=lambda f: f.area)
        return self.swapper.prepare_source(image, largest)

    def select(self, faces: list[Face]) -> list[Face]:
        if not faces or self.options.face_selector == "all":
            return faces
        if self.options.face_selector == "largest":
            return [max(faces, key=lambda f: f.area)]
        index = self.options.face_index
        ordered = sorted(faces, key=lambda f: f.box[0])
        return [ordered[index]] if index is not None and index < len(ordered) else []

    def swap_frame(self, frame: BGRImage, source: Any) -> int:
        """Swap the selected faces of ``frame`` in place; returns how many were swapped."""
        with _Timer(self.stage_s, "detect"):
            faces = self.select(self.detector.detect(frame))
        for face in faces:
            with _Timer(self.stage_s, "align"):
                crop, matrix = warp_face(frame, face.landmarks, self.swapper.template, self.swapper.crop_size)
            with _Timer(self.stage_s, "swap"):
                swapped = self.swapper.swap(crop, source)
            with _Timer(self.stage_s, "paste"):
                paste_back(frame, swapped, matrix, self.options.blend, self.swapper.face_mask)
        return len(faces)


class _SegmentWriter(threading.Thread):
    """Encodes frames into segment files and commits each finished segment."""

    def __init__(
        self,
        *,
        store: CheckpointStore,
        manifest: Manifest,
        workdir: Path,
        info: MediaInfo,
        options: SwapOptions,
        emit: EventSink,
        stage_s: dict[str, float],
    ) -> None:
        super().__init__(name="segment-writer", daemon=True)
        self.store, self.manifest, self.workdir, self.info = store, manifest, workdir, info
        self.options, self.emit, self.stage_s = options, emit, stage_s
        depth = _queue_depth(info.width * info.height * 3, 8)
        self.inbox: queue.Queue[tuple[str, int, BGRImage | None]] = queue.Queue(maxsize=depth)
        self.error: BaseException | None = None
        self.committed = 0
        self._encoder: SegmentEncoder | None = None
        self._segment = -1

    def submit(self, segment: int, frame: BGRImage) -> None:
        self._put(("frame", segment, frame))

    def _put(self, item: tuple[str, int, BGRImage | None]) -> None:
        while True:
            if self.error is not None:
                raise self.error
            try:
                self.inbox.put(item, timeout=0.2)
                return
            except queue.Full:
                continue

    def finish(self, *, abort: bool) -> None:
        """Commit the last segment (or, on ``abort``, drop the unfinished one) and stop."""
        if self.is_alive():
            try:
                self._put(("abort" if abort else "end", -1, None))
            except BaseException:
                if not abort:
                    raise
            self.join()
        if self.error is not None and not abort:
            raise self.error

    def run(self) -> None:
        try:
            while True:
                kind, segment, frame = self.inbox.get()
                if kind == "abort":
                    if self._encoder is not None:
                        self._encoder.abort()
                    return
                if kind == "end":
                    self._commit()
                    return
                assert frame is not None
                if segment != self._segment:
                    self._commit()
                    self._start(segment)
                assert self._encoder is not None
                start = time.perf_counter()
                self._encoder.write(frame)
                self.stage_s["encode"] += time.perf_counter() - start
        except BaseException as exc:  # surfaced to the swapping thread by submit()/finish()
            self.error = exc
            if self._encoder is not None:
                self._encoder.abort()

    def _start(self, segment: int) -> None:
        width, height = self.info.width, self.info.height
        self._segment = segment
        self._encoder = SegmentEncoder(
            self.workdir / _segment_name(segment),
            width=width,
            height=height,
            fps=self.info.fps,
            encoder=self.options.encoder,
            quality=self.options.quality,
            preset=self.options.preset,
        )

    def _commit(self) -> None:
        if self._encoder is None:
            return
        encoder, self._encoder = self._encoder, None
        start = time.perf_counter()
        encoder.finish()
        self.stage_s["encode"] += time.perf_counter() - start
        name = _segment_name(self._segment)
        self.store.put_segment(name, encoder.path)
        self.manifest.segments[self._segment] = {
            "file": name,
            "frames": encoder.frames,
            "sha256": sha256_file(encoder.path),
        }
        self.store.write_manifest(self.manifest)
        self.committed += 1
        self.emit("segment_committed", {"segment": self._segment, "frames": encoder.frames})


def _segment_name(index: int) -> str:
    return f"segment-{index:06d}.ts"


def _verify_segments(store: CheckpointStore, manifest: Manifest, workdir: Path, emit: EventSink) -> None:
    """Fetch committed segments and drop any that are missing or fail their sha256: they are redone."""
    bad = []
    for segment, entry in sorted(manifest.segments.items()):
        local = workdir / _segment_name(segment)
        if entry.get("file") != _segment_name(segment):  # a manifest names our own files only, never a path
            bad.append(segment)
            continue
        try:
            store.get_segment(entry["file"], local)
        except (OSError, BadInput):
            bad.append(segment)
            continue
        if sha256_file(local) != entry.get("sha256"):
            local.unlink(missing_ok=True)
            bad.append(segment)
    for segment in bad:
        del manifest.segments[segment]
        emit("segment_invalid", {"segment": segment, "reason": "missing or checksum mismatch; redoing it"})
    if bad:
        store.write_manifest(manifest)


def _frames(decoder: Decoder, stage_s: dict[str, float], stop: threading.Event) -> Iterator[BGRImage]:
    """Frames read ahead on a thread, so decoding overlaps swapping."""
    ready: queue.Queue[BGRImage | BaseException | None] = queue.Queue(maxsize=_queue_depth(decoder.frame_bytes, 4))

    def pump() -> None:
        try:
            for frame in decoder:
                while not stop.is_set():
                    try:
                        ready.put(frame, timeout=0.2)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            ready.put(None)
        except BaseException as exc:
            ready.put(exc)

    reader = threading.Thread(target=pump, name="decoder", daemon=True)
    reader.start()
    while True:
        start = time.perf_counter()
        item = ready.get()
        stage_s["decode"] += time.perf_counter() - start
        if item is None:
            return
        if isinstance(item, BaseException):
            raise item
        yield item


def run_swap(
    *,
    source: str,
    target: str,
    output: str,
    options: SwapOptions | None = None,
    checkpoint: str | None = None,
    models: ModelStore | None = None,
    stop: threading.Event | None = None,
    on_event: EventSink = _ignore,
    access: Access | None = None,
    fetch_rules: FetchRules | None = None,
) -> SwapResult:
    """Run one job end to end; raises a :class:`FaceSwapError` subclass on failure.

    ``stop`` is set by the SIGTERM handler: the job stops within a frame or
    two, commits what is finished, and raises :class:`Preempted`.
    ``access`` is the tenant's grant (s3 prefixes, web hosts): every URI is
    checked against it before anything is read or written; None (an
    operator's own run) sets no tenant limit. ``fetch_rules`` guard http(s)
    inputs (internal addresses, size cap, timeouts) either way.
    """
    options = options or SwapOptions()
    stop = stop or threading.Event()
    started = time.perf_counter()
    source_loc = parse_uri(source, field="source")
    target_loc = parse_uri(target, field="target")
    output_loc = parse_uri(output, field="output")
    if output_loc.scheme in ("http", "https"):
        raise BadInput("outputs can be written to a path, file:// or s3:// only", field="output")
    if access is not None:  # before any model, input or output is touched
        access.check(source, field="source")
        access.check(target, field="target")
        access.check(output, field="output", write=True)
        if checkpoint:
            access.check_checkpoint(checkpoint)
    web_hosts = access.web_hosts if access is not None else None
    kind = media_kind(Path(target_loc.name), field="target")
    wanted = IMAGE_SUFFIXES if kind == "image" else VIDEO_OUTPUT_SUFFIXES
    if output_loc.suffix not in wanted:
        raise BadInput(f"a {kind} output must end in one of {', '.join(wanted)}", field="output")
    if kind == "video" and options.encoder not in available_encoders():
        raise BadInput(f"this ffmpeg has no {options.encoder} encoder", field="encoder")
    engine = FaceSwapper(options, models=models)  # models verified before any frame is read
    _check_stop(stop)
    workdir = Path(tempfile.mkdtemp(prefix="fusionplane-job-"))
    try:
        source_path = fetch(source_loc, workdir, field="source", rules=fetch_rules, web_hosts=web_hosts)
        source_image, _ = read_image(source_path, field="source")
        prepared = engine.source_face(source_image)
        on_event("source_ready", {"source": source})
        _check_stop(stop)
        target_path = fetch(target_loc, workdir, field="target", rules=fetch_rules, web_hosts=web_hosts)
        _check_stop(stop)
        if kind == "image":
            result = _swap_image(engine, prepared, target_path, output_loc, options)
        else:
            result = _swap_video(
                engine,
                prepared,
                target_path,
                output_loc,
                options,
                source_digest=sha256_file(source_path),
                checkpoint=checkpoint,
                workdir=workdir,
                stop=stop,
                emit=on_event,
            )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    result.wall_s = time.perf_counter() - started
    result.stage_s.update({k: v for k, v in engine.stage_s.items() if k not in ("decode", "encode")})
    return result


def _swap_image(engine: FaceSwapper, prepared: Any, target: Path, output: Location, options: SwapOptions) -> SwapResult:
    image, alpha = read_image(target, field="target")
    swapped = engine.swap_frame(image, prepared)
    if swapped == 0:
        raise NoFaceFound("no face found in the target image", field="target")
    with write_atomically(output) as tmp:
        write_image(tmp, image, alpha, suffix=output.suffix, quality=options.image_quality)
    return SwapResult(kind="image", output=output.raw, frames=1, frames_swapped=1, faces_swapped=swapped)


def _swap_video(
    engine: FaceSwapper,
    prepared: Any,
    target: Path,
    output: Location,
    options: SwapOptions,
    *,
    source_digest: str,
    checkpoint: str | None,
    workdir: Path,
    stop: threading.Event,
    emit: EventSink,
) -> SwapResult:
    info = probe(target, field="target")
    if not info.is_video:
        raise BadInput(f"{target.name} is not a video", field="target")
    store = open_checkpoint(checkpoint) if checkpoint else open_checkpoint(str(workdir / "checkpoint"))
    fingerprint = {
        "source_sha256": source_digest,
        "target": {
            "bytes": target.stat().st_size,
            "codec": info.codec,
            "size": [info.width, info.height],
            "frames": info.frames,
            "fps": str(info.fps),
        },
        "options": options.fingerprint(),
        "swapper": engine.swapper.identity,
    }
    manifest = store.read_manifest()
    if (
        manifest is None
        or manifest.fingerprint != json.loads(json.dumps(fingerprint))
        or manifest.segment_frames != options.segment_frames
    ):
        if manifest is not None:
            emit("checkpoint_reset", {"reason": "the checkpoint belongs to another job or options"})
        manifest = Manifest(fingerprint=fingerprint, segment_frames=options.segment_frames)
        store.write_manifest(manifest)
    _verify_segments(store, manifest, workdir, emit)
    done = set(manifest.segments)
    result = SwapResult(kind="video", output=output.raw, segments_skipped=len(done))
    for segment in sorted(done):
        emit("segment_skipped", {"segment": segment, "frames": manifest.segments[segment]["frames"]})
    size = options.segment_frames
    stage_s = result.stage_s
    writer = _SegmentWriter(
        store=store, manifest=manifest, workdir=workdir, info=info, options=options, emit=emit, stage_s=stage_s
    )
    writer.start()
    decoder = Decoder(target, info)
    total = info.frames
    loop_start = time.perf_counter()
    index = -1
    try:
        for index, frame in enumerate(_frames(decoder, stage_s, stop)):
            if stop.is_set():
                raise Preempted("stopped by SIGTERM; finished segments are checkpointed", field="worker")
            segment = index // size
            if segment in done:
                continue
            upright = to_display(frame, info.rotation)
            swapped = engine.swap_frame(upright, prepared)  # each decoded frame has its own buffer
            result.faces_swapped += swapped
            result.frames_swapped += 1
            writer.submit(segment, to_coded(upright, info.rotation) if info.rotation else upright)
            elapsed = time.perf_counter() - loop_start
            fps = result.frames_swapped / elapsed if elapsed > 0 else 0.0
            remaining = max(total - index - 1, 0)
            emit(
                "progress",
                {"frames": index + 1, "total": total, "fps": fps, "eta_s": remaining / fps if fps > 0 else None},
            )
        if stop.is_set():
            raise Preempted("stopped by SIGTERM; finished segments are checkpointed", field="worker")
    except BaseException:
        stop.set()
        decoder.close()
        writer.finish(abort=True)
        raise
    writer.finish(abort=False)
    decoder.close()
    result.frames = index + 1
    result.segments_done = writer.committed
    if result.frames == 0:
        raise BadInput("the video has no frames", field="target")
    segments = sorted(manifest.segments)
    expected = list(range((result.frames + size - 1) // size))
    if segments != expected:
        raise BadInput(f"checkpoint is missing segments {sorted(set(expected) - set(segments))}", field="checkpoint")
    files = []
    for segment in segments:
        local = workdir / _segment_name(segment)
        if not local.exists():
            store.get_segment(manifest.segments[segment]["file"], local)
        files.append(local)
    start = time.perf_counter()
    with write_atomically(output) as tmp:
        concat_segments(files, source=target, info=info, output=tmp, container=output.suffix, workdir=workdir)
    stage_s["encode"] += time.perf_counter() - start
    emit("output_written", {"output": output.raw, "frames": result.frames})
    return result
