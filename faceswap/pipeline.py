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
import shutil
import tempfile
import threading
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from faceswap.access import Access
from faceswap.align import warp_face
from faceswap.blend import BlendConfig, paste_back
from faceswap.checkpoint import CheckpointStore, Manifest, open_checkpoint
from faceswap.decoders import DECODER_CHOICES, choose_decoder
from faceswap.detector import DetectorConfig, YuNetDetector
from faceswap.detector_graph import batched_uint8_model_bytes
from faceswap.encoders import ENCODER_CHOICES, EncoderChoice, choose_encoder
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
from faceswap.runtime import ExecutionConfig, choose_execution_provider, create_session
from faceswap.segments import Encoding, EventSink, SegmentWriter, decoder_ring, read_ahead, segment_name
from faceswap.swappers import SWAPPERS, Swapper, build_swapper
from faceswap.types import BGRImage, Face
from faceswap.uris import Location, fetch, parse_uri, write_atomically
from faceswap.video import Decoder, concat_segments, to_coded, to_display

__all__ = ["STAGES", "EventSink", "FaceSwapper", "SwapOptions", "SwapResult", "run_swap"]

STAGES = ("decode", "detect", "align", "swap", "paste", "encode")
DETECTOR_MODEL = "yunet_2023mar"
#: frames per detector call on a GPU when the job does not say (not yet measured: make bench-gpu)
GPU_DETECT_BATCH = 4
MAX_DETECT_BATCH = 32


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
    #: ``auto``: NVENC where a test encode proves it works, else libx264 (exactly what ``libx264`` gives)
    encoder: str = "auto"
    #: ``auto``: NVDEC where a test decode proves it works and the codec is one it decodes, else the CPU
    decoder: str = "auto"
    #: CRF-style quality for video (0 best .. 51); images use ``image_quality``
    quality: int = 18
    preset: str = "veryfast"
    image_quality: int = 95
    segment_frames: int = 120
    #: frames per detector call; 0 picks: 1 on CPU, :data:`GPU_DETECT_BATCH` on a GPU
    detect_batch: int = 0
    blend: BlendConfig = field(default_factory=BlendConfig)
    detector: DetectorConfig = field(default_factory=DetectorConfig)

    def __post_init__(self) -> None:
        if self.swapper not in SWAPPERS:
            choices = ", ".join(SWAPPERS)
            raise BadInput(f"unknown swapper {self.swapper!r}; choose one of {choices}", field="swapper")
        _ = self.face_index  # validates the selector
        if self.encoder not in ENCODER_CHOICES:
            choices = ", ".join(ENCODER_CHOICES)
            raise BadInput(f"unsupported encoder {self.encoder!r}; choose one of {choices}", field="encoder")
        if self.decoder not in DECODER_CHOICES:
            choices = ", ".join(DECODER_CHOICES)
            raise BadInput(f"unsupported decoder {self.decoder!r}; choose one of {choices}", field="decoder")
        if not 0 <= self.quality <= 51:
            raise BadInput("must be between 0 (best) and 51", field="quality")
        if not 1 <= self.image_quality <= 100:
            raise BadInput("must be between 1 and 100", field="image_quality")
        if not 1 <= self.segment_frames <= 100_000:
            raise BadInput("must be between 1 and 100000", field="segment_frames")
        if not 0 <= self.detect_batch <= MAX_DETECT_BATCH:
            raise BadInput(f"must be between 0 (automatic) and {MAX_DETECT_BATCH}", field="detect_batch")

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
        # the decoder too: either one gives the same frames (faceswap.decoders)
        runtime = ("execution_provider", "cpu_threads", "allow_fallback", "segment_frames", "detect_batch", "decoder")
        for runtime_only in runtime:
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
    #: the provider the models ran on and why it was chosen (``faceswap.gpu_probe``)
    execution_provider: str | None = None
    execution_provider_reason: str | None = None
    #: the video encoder used and why (``auto``'s choice); None for images
    encoder: str | None = None
    encoder_reason: str | None = None
    #: the video decoder used (``cpu`` or ``nvdec``) and why; None for images
    decoder: str | None = None
    decoder_reason: str | None = None

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
            "encoder": self.encoder,
            "encoder_reason": self.encoder_reason,
            "decoder": self.decoder,
            "decoder_reason": self.decoder_reason,
            "timings_s": {stage: round(seconds, 4) for stage, seconds in self.stage_s.items()},
            "execution_provider": self.execution_provider,
            "execution_provider_reason": self.execution_provider_reason,
        }


class _Timer:
    def __init__(self, totals: dict[str, float], stage: str) -> None:
        self.totals, self.stage = totals, stage

    def __enter__(self) -> None:
        self.start = time.perf_counter()

    def __exit__(self, *_: object) -> None:
        self.totals[self.stage] += time.perf_counter() - self.start


class FaceSwapper:
    """Loaded models for one job; ``swap_frame`` works on any BGR frame.

    The sessions come from the process's cache (``faceswap.runtime``): a
    second job in the same process with the same models builds nothing.
    """

    def __init__(self, options: SwapOptions, *, models: ModelStore | None = None) -> None:
        self.options = options
        store = models or ModelStore()
        execution = ExecutionConfig(
            provider=options.execution_provider,
            cpu_threads=options.cpu_threads,
            allow_fallback=options.allow_fallback,
        )
        #: which provider runs the models, and why (reported with the job's progress and result)
        self.execution = choose_execution_provider(execution.provider)
        #: frames detected per call: a GPU takes a batch at once; on CPUs a batch is slower than one by one
        self.detect_batch = options.detect_batch or (1 if self.execution.provider == "cpu" else GPU_DETECT_BATCH)
        detector_path = store.verified_path(DETECTOR_MODEL, role="detector")
        # uint8 frames in, cast on the device (faceswap.detector_graph): 0.66x the time per frame on one
        # CPU core, and a quarter of the bytes to copy to a GPU
        session = create_session(detector_path, execution, rewrite=batched_uint8_model_bytes)
        self.detector = YuNetDetector(session, options.detector)
        if self.detect_batch > 1:
            self.detector.warm(self.detect_batch)  # TensorRT builds its engine for the batch shape now
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
        return self.swap_frames([frame], source)[0]

    def swap_frames(self, frames: list[BGRImage], source: Any) -> list[int]:
        """``swap_frame`` for several frames, their faces detected in one call."""
        with _Timer(self.stage_s, "detect"):
            found = self.detector.detect_many(frames)
        return [self._swap_faces(frame, self.select(faces), source) for frame, faces in zip(frames, found, strict=True)]

    def _swap_faces(self, frame: BGRImage, faces: list[Face], source: Any) -> int:
        for face in faces:
            with _Timer(self.stage_s, "align"):
                crop, matrix = warp_face(frame, face.landmarks, self.swapper.template, self.swapper.crop_size)
            with _Timer(self.stage_s, "swap"):
                swapped = self.swapper.swap(crop, source)
            with _Timer(self.stage_s, "paste"):
                paste_back(frame, swapped, matrix, self.options.blend, self.swapper.face_mask)
        return len(faces)


def _verify_segments(store: CheckpointStore, manifest: Manifest, workdir: Path, emit: EventSink) -> None:
    """Fetch committed segments and drop any that are missing or fail their sha256: they are redone."""
    bad = []
    for segment, entry in sorted(manifest.segments.items()):
        local = workdir / segment_name(segment)
        if entry.get("file") != segment_name(segment):  # a manifest names our own files only, never a path
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
    blob_endpoints: Mapping[str, str] | None = None,
    s3_endpoints: Mapping[str, str] | None = None,
) -> SwapResult:
    """Run one job end to end; raises a :class:`FaceSwapError` subclass on failure.

    ``stop`` is set by the SIGTERM handler: the job stops within a frame or
    two, commits what is finished, and raises :class:`Preempted`.
    ``access`` is the tenant's grant (s3 prefixes, web hosts): every URI is
    checked against it before anything is read or written; None (an
    operator's own run) sets no tenant limit. ``fetch_rules`` guard http(s)
    inputs (internal addresses, size cap, timeouts) either way.
    ``blob_endpoints`` names the Blob endpoint of a storage account that is
    not at its default address (Azurite, sovereign clouds); ``s3_endpoints``
    the endpoint of a bucket on an S3-compatible store (an in-cluster MinIO).
    """
    options = options or SwapOptions()
    stop = stop or threading.Event()
    started = time.perf_counter()
    source_loc = parse_uri(source, field="source", blob_endpoints=blob_endpoints, s3_endpoints=s3_endpoints)
    target_loc = parse_uri(target, field="target", blob_endpoints=blob_endpoints, s3_endpoints=s3_endpoints)
    output_loc = parse_uri(output, field="output", blob_endpoints=blob_endpoints, s3_endpoints=s3_endpoints)
    if output_loc.scheme in ("http", "https"):
        raise BadInput("outputs can be written to a path, file://, s3:// or az:// only", field="output")
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
    # before any model is loaded: a missing encoder fails fast; auto's test encode runs once per process
    encoder = choose_encoder(options.encoder) if kind == "video" else None
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
            assert encoder is not None
            result = _swap_video(
                engine,
                prepared,
                target_path,
                output_loc,
                options,
                encoder=encoder,
                source_digest=sha256_file(source_path),
                checkpoint=checkpoint,
                blob_endpoints=blob_endpoints,
                s3_endpoints=s3_endpoints,
                workdir=workdir,
                stop=stop,
                emit=on_event,
            )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    result.wall_s = time.perf_counter() - started
    result.stage_s.update({k: v for k, v in engine.stage_s.items() if k not in ("decode", "encode")})
    result.execution_provider = engine.execution.provider
    result.execution_provider_reason = engine.execution.reason
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
    encoder: EncoderChoice,
    source_digest: str,
    checkpoint: str | None,
    blob_endpoints: Mapping[str, str] | None,
    s3_endpoints: Mapping[str, str] | None = None,
    workdir: Path,
    stop: threading.Event,
    emit: EventSink,
) -> SwapResult:
    """Swap every frame not already checkpointed, segment by segment, then join the segments into ``output``."""
    info = probe(target, field="target")
    if not info.is_video:
        raise BadInput(f"{target.name} is not a video", field="target")
    store = open_checkpoint(
        checkpoint or str(workdir / "checkpoint"), blob_endpoints=blob_endpoints, s3_endpoints=s3_endpoints
    )
    emit("encoder_chosen", {"encoder": encoder.encoder, "reason": encoder.reason})
    decoding = choose_decoder(options.decoder, info.codec)
    emit("decoder_chosen", {"decoder": decoding.decoder, "reason": decoding.reason})
    fingerprint = _video_fingerprint(engine, target, info, options, source_digest, encoder.encoder)
    manifest = _resume_manifest(store, fingerprint, options, emit)
    _verify_segments(store, manifest, workdir, emit)
    done = set(manifest.segments)
    result = SwapResult(
        kind="video",
        output=output.raw,
        segments_skipped=len(done),
        encoder=encoder.encoder,
        encoder_reason=encoder.reason,
        decoder=decoding.decoder,
        decoder_reason=decoding.reason,
    )
    for segment in sorted(done):
        emit("segment_skipped", {"segment": segment, "frames": manifest.segments[segment]["frames"]})
    encoding = Encoding(encoder=encoder.encoder, quality=options.quality, preset=options.preset)
    writer = SegmentWriter(
        store=store, manifest=manifest, workdir=workdir, info=info, encoding=encoding, emit=emit, stage_s=result.stage_s
    )
    writer.start()
    ring = decoder_ring(info.width * info.height * 3, held=engine.detect_batch)
    decoder = Decoder(target, info, ring=ring, decoder=decoding.decoder)
    try:
        result.frames = _swap_frames(engine, prepared, decoder, writer, info, options, done, result, stop, emit)
    except BaseException:
        stop.set()
        decoder.close()
        writer.finish(abort=True)
        raise
    writer.finish(abort=False)
    decoder.close()
    result.segments_done = writer.committed
    if result.frames == 0:
        raise BadInput("the video has no frames", field="target")
    files = _segment_files(store, manifest, result.frames, options.segment_frames, workdir)
    start = time.perf_counter()
    with write_atomically(output) as tmp:
        concat_segments(files, source=target, info=info, output=tmp, container=output.suffix, workdir=workdir)
    result.stage_s["encode"] += time.perf_counter() - start
    emit("output_written", {"output": output.raw, "frames": result.frames})
    return result


def _video_fingerprint(
    engine: FaceSwapper, target: Path, info: MediaInfo, options: SwapOptions, source_digest: str, encoder: str
) -> dict[str, Any]:
    """What a checkpoint must have been made from to be resumed: the inputs, the options and the swapper.

    The encoder is the one actually used, not ``auto``: segments of two encoders are never joined, and a
    checkpoint made with ``libx264`` resumes under ``auto`` wherever ``auto`` picks libx264.
    """
    return {
        "source_sha256": source_digest,
        "target": {
            "bytes": target.stat().st_size,
            "codec": info.codec,
            "size": [info.width, info.height],
            "frames": info.frames,
            "fps": str(info.fps),
        },
        "options": {**options.fingerprint(), "encoder": encoder},
        "swapper": engine.swapper.identity,
    }


def _resume_manifest(
    store: CheckpointStore, fingerprint: dict[str, Any], options: SwapOptions, emit: EventSink
) -> Manifest:
    """The checkpoint's manifest when it is this job's; otherwise a fresh one (the old segments are ignored)."""
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
    return manifest


def _swap_frames(
    engine: FaceSwapper,
    prepared: Any,
    decoder: Decoder,
    writer: SegmentWriter,
    info: MediaInfo,
    options: SwapOptions,
    done: set[int],
    result: SwapResult,
    stop: threading.Event,
    emit: EventSink,
) -> int:
    """Decode, swap and hand each frame of an unfinished segment to the writer; returns the frames decoded."""
    size = options.segment_frames
    total = info.frames
    loop_start = time.perf_counter()
    index = -1
    # frames wait here until a detection batch is full (one frame at a time on CPU)
    batch: list[tuple[int, int, BGRImage]] = []

    def swap_batch() -> None:
        # in place: a frame's ring buffer is not reused until the writer has piped it (segments.decoder_ring)
        counts = engine.swap_frames([upright for _, _, upright in batch], prepared)
        for (at, segment, upright), swapped in zip(batch, counts, strict=True):
            result.faces_swapped += swapped
            result.frames_swapped += 1
            writer.submit(segment, to_coded(upright, info.rotation) if info.rotation else upright)
            elapsed = time.perf_counter() - loop_start
            fps = result.frames_swapped / elapsed if elapsed > 0 else 0.0
            remaining = max(total - at - 1, 0)
            report: dict[str, Any] = {
                "frames": at + 1,
                "total": total,
                "fps": fps,
                "eta_s": remaining / fps if fps > 0 else None,
            }
            if result.frames_swapped == 1:  # the first report says what the frames run on
                report.update(engine.execution.fields())
            emit("progress", report)
        batch.clear()

    for index, frame in enumerate(read_ahead(decoder, result.stage_s, stop)):
        if stop.is_set():
            raise Preempted("stopped by SIGTERM; finished segments are checkpointed", field="worker")
        segment = index // size
        if segment in done:
            continue
        batch.append((index, segment, to_display(frame, info.rotation)))
        if len(batch) >= engine.detect_batch:
            swap_batch()
    if stop.is_set():
        raise Preempted("stopped by SIGTERM; finished segments are checkpointed", field="worker")
    if batch:
        swap_batch()
    return index + 1


def _segment_files(store: CheckpointStore, manifest: Manifest, frames: int, size: int, workdir: Path) -> list[Path]:
    """Every segment of the video, in order, fetched from the checkpoint when not on disk."""
    segments = sorted(manifest.segments)
    expected = list(range((frames + size - 1) // size))
    if segments != expected:
        raise BadInput(f"checkpoint is missing segments {sorted(set(expected) - set(segments))}", field="checkpoint")
    files = []
    for segment in segments:
        local = workdir / segment_name(segment)
        if not local.exists():
            store.get_segment(manifest.segments[segment]["file"], local)
        files.append(local)
    return files
