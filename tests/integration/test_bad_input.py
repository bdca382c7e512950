"""Bad input through the CLI: one ``error:`` line, the documented exit code, nothing written.

Each case runs ``fusionctl swap`` in a subprocess with its own TMPDIR (so the
job's scratch directory is checked too) and an output directory holding an
unrelated file, which must come through untouched. Cases that fail late (after
the source face is found) also start with a file already at the output path,
which must not be replaced.
"""

from __future__ import annotations

import json
import socket
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pytest

from faceswap.media import probe
from tests.support.no_metadata import subprocess_env
from tests.support.standin_models import write_model_dir

pytestmark = pytest.mark.slow

EXIT_USAGE, EXIT_BAD_INPUT, EXIT_MODEL = 2, 65, 69
UNRELATED = b"someone else's file\n"
PREVIOUS = b"the previous, good result\n"
CLI_TIMEOUT_S = 120


# --------------------------------------------------------------------------- media


def _ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", *args], check=True, capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory, astronaut_path: Path) -> dict[str, Path]:
    """Every broken input the cases need, made once."""
    root = tmp_path_factory.mktemp("bad-media")
    made: dict[str, Path] = {"astronaut": astronaut_path}

    def path(name: str) -> Path:
        made[name.replace(".", "_")] = root / name
        return root / name

    gradient = np.tile(np.linspace(40, 200, 300, dtype=np.uint8), (200, 1))
    assert cv2.imwrite(str(path("faceless.png")), cv2.merge([gradient, gradient, gradient]))
    assert cv2.imwrite(str(path("wide.png")), np.zeros((100, 8200, 3), np.uint8))
    assert cv2.imwrite(str(path("huge.png")), np.zeros((9000, 9000), np.uint8))
    path("random.mp4").write_bytes(np.random.default_rng(7).integers(0, 256, 64_000, dtype=np.uint8).tobytes())
    path("empty.png").write_bytes(b"")
    path("empty.mp4").write_bytes(b"")
    path("notes.txt").write_text("not a picture\n", encoding="utf-8")
    path("text.mp4").write_text("not a video either\n", encoding="utf-8")
    _ffmpeg("-f", "lavfi", "-i", "sine=frequency=440:duration=1", "-f", "wav", str(path("sound.mp4")))
    _ffmpeg("-i", str(astronaut_path), "-frames:v", "1", str(path("astronaut.gif")))
    # 40 intra frames of the astronaut, so half the bytes is about half the frames. Cut in
    # half, the "moov last" file cannot even be probed; the "faststart" one probes fine
    # and fails while decoding.
    for name, flags in (("clip.mp4", []), ("clip-faststart.mp4", ["-movflags", "+faststart"])):
        _ffmpeg(
            "-loop",
            "1",
            "-framerate",
            "10",
            "-i",
            str(astronaut_path),
            "-vf",
            "scale=320:240",
            "-frames:v",
            "40",
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-g",
            "1",
            "-pix_fmt",
            "yuv420p",
            *flags,
            str(path(name)),
        )
        data = (root / name).read_bytes()
        path(f"half-{name}").write_bytes(data[: len(data) // 2])
    return made


@pytest.fixture(scope="module")
def wrong_shape_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An inswapper that takes 256x256 faces, with a manifest that truthfully says so."""
    return write_model_dir(tmp_path_factory.mktemp("wrong-shape-models"), swapper_shape=(1, 3, 256, 256))


@pytest.fixture(scope="module")
def closed_port() -> int:
    with socket.socket() as sock:  # free a moment ago, closed now
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --------------------------------------------------------------------------- running


@dataclass
class Job:
    done: subprocess.CompletedProcess[str]
    out_dir: Path
    output: Path
    scratch: Path

    @property
    def error_lines(self) -> list[str]:
        return [line for line in self.done.stderr.splitlines() if line.startswith("error:")]


@pytest.fixture
def swap(fusionctl: list[str], tmp_path: Path) -> Callable[..., Job]:
    """Run ``fusionctl swap`` with an output in a directory that already holds an unrelated file."""

    def run(
        source: str | Path,
        target: str | Path,
        output_name: str,
        *extra: str,
        previous: bool = False,
        directory_at_output: bool = False,
    ) -> Job:
        out_dir = tmp_path / "out"
        out_dir.mkdir()
        (out_dir / "unrelated.txt").write_bytes(UNRELATED)
        output = out_dir / output_name
        if previous:
            output.write_bytes(PREVIOUS)
        if directory_at_output:
            output.mkdir()
        scratch = tmp_path / "scratch"
        scratch.mkdir()
        env = subprocess_env(TMPDIR=str(scratch))
        done = subprocess.run(
            [*fusionctl, "swap", "--source", str(source), "--target", str(target), "--output", str(output), *extra],
            capture_output=True,
            text=True,
            timeout=CLI_TIMEOUT_S,
            env=env,
            stdin=subprocess.DEVNULL,
            check=False,
        )
        return Job(done, out_dir, output, scratch)

    return run


def assert_nothing_written(job: Job, *, previous: bool) -> None:
    expected = {"unrelated.txt"} | ({job.output.name} if previous else set())
    left = {p.name for p in job.out_dir.iterdir()}
    assert left == expected, f"leftovers in the output directory: {sorted(left - expected)}"
    assert (job.out_dir / "unrelated.txt").read_bytes() == UNRELATED
    if previous and job.output.is_file():
        assert job.output.read_bytes() == PREVIOUS, "a failed job replaced the existing output"
    assert list(job.scratch.iterdir()) == [], "the job left scratch files behind"


def assert_fails(job: Job, code: int, *needles: str, previous: bool = False) -> str:
    """The exit code, one ``error:`` line naming the problem (and last), no traceback, no output."""
    stderr = job.done.stderr
    assert job.done.returncode == code, f"exit {job.done.returncode}, stderr:\n{stderr}"
    assert "Traceback" not in stderr, stderr
    assert len(job.error_lines) == 1, f"want exactly one error line, stderr:\n{stderr}"
    line = job.error_lines[0]
    assert stderr.rstrip("\n").splitlines()[-1] == line, f"the error line is not the last one:\n{stderr}"
    for needle in needles:
        assert needle.lower() in line.lower(), f"{needle!r} not in {line!r}"
    assert job.done.stdout == ""
    assert_nothing_written(job, previous=previous)
    return line


# --------------------------------------------------------------------------- cases


def test_source_without_a_face(swap: Callable[..., Job], media: dict[str, Path]) -> None:
    job = swap(media["faceless_png"], media["astronaut"], "result.png")
    assert_fails(job, EXIT_BAD_INPUT, "source", "no face")


def test_target_without_a_face(swap: Callable[..., Job], media: dict[str, Path], source_face_path: Path) -> None:
    job = swap(source_face_path, media["faceless_png"], "result.png", previous=True)
    assert_fails(job, EXIT_BAD_INPUT, "target", "no face", previous=True)


@pytest.mark.parametrize("previous", [False, True])
def test_corrupt_video(
    swap: Callable[..., Job], media: dict[str, Path], source_face_path: Path, previous: bool
) -> None:
    job = swap(source_face_path, media["random_mp4"], "result.mp4", previous=previous)
    assert_fails(job, EXIT_BAD_INPUT, "target", "random.mp4", previous=previous)


def test_truncated_video_failing_at_probe(
    swap: Callable[..., Job], media: dict[str, Path], source_face_path: Path
) -> None:
    job = swap(source_face_path, media["half-clip_mp4"], "result.mp4")
    assert_fails(job, EXIT_BAD_INPUT, "target", "half-clip.mp4")


@pytest.mark.parametrize("previous", [False, True])
def test_truncated_video_failing_mid_decode(
    swap: Callable[..., Job], media: dict[str, Path], source_face_path: Path, tmp_path: Path, previous: bool
) -> None:
    truncated = media["half-clip-faststart_mp4"]
    info = probe(truncated, field="target")  # probing succeeds: the damage is only found while decoding
    assert info.frames == 40
    checkpoint = tmp_path / "checkpoint"
    job = swap(
        source_face_path,
        truncated,
        "result.mp4",
        "--segment-frames",
        "4",
        "--preset",
        "ultrafast",
        "--checkpoint",
        str(checkpoint),
        previous=previous,
    )
    assert_fails(job, EXIT_BAD_INPUT, "target", "truncated", previous=previous)
    assert "segment_committed" in job.done.stderr, "the failure should come after some segments were done"
    manifest = json.loads((checkpoint / "manifest.json").read_text(encoding="utf-8"))
    assert 0 < len(manifest["segments"]) < 10


@pytest.mark.parametrize(
    ("target", "output_name", "needles"),
    [
        ("sound_mp4", "result.mp4", ("target", "a wav file is not a video")),  # WAV audio under an .mp4 name
        ("text_mp4", "result.mp4", ("target", "text.mp4", "a text file is not a video")),
        ("notes_txt", "result.png", ("target", "unsupported file type", ".txt")),
    ],
)
def test_unsupported_target_format(
    swap: Callable[..., Job],
    media: dict[str, Path],
    source_face_path: Path,
    target: str,
    output_name: str,
    needles: tuple[str, ...],
) -> None:
    job = swap(source_face_path, media[target], output_name)
    assert_fails(job, EXIT_BAD_INPUT, *needles)


@pytest.mark.parametrize(
    ("source", "needles"),
    [
        ("astronaut_gif", ("source", "unsupported file type", ".gif")),
        ("notes_txt", ("source", "notes.txt")),
        ("clip_mp4", ("source", "is a video")),
    ],
)
def test_unsupported_source_format(
    swap: Callable[..., Job], media: dict[str, Path], source: str, needles: tuple[str, ...]
) -> None:
    job = swap(media[source], media["astronaut"], "result.png")
    assert_fails(job, EXIT_BAD_INPUT, *needles)


@pytest.mark.parametrize(
    ("role", "name", "output_name"),
    [("target", "empty_png", "result.png"), ("target", "empty_mp4", "result.mp4"), ("source", "empty_png", "r.png")],
)
def test_zero_byte_file(
    swap: Callable[..., Job], media: dict[str, Path], source_face_path: Path, role: str, name: str, output_name: str
) -> None:
    files = {"source": source_face_path, "target": media["astronaut"], role: media[name]}
    job = swap(files["source"], files["target"], output_name)
    assert_fails(job, EXIT_BAD_INPUT, role, "empty", "0 bytes")


@pytest.mark.parametrize(
    ("role", "name", "size"),
    [("target", "wide_png", "8200x100"), ("target", "huge_png", "9000x9000"), ("source", "huge_png", "9000x9000")],
)
def test_frames_above_8k(
    swap: Callable[..., Job], media: dict[str, Path], source_face_path: Path, role: str, name: str, size: str
) -> None:
    files = {"source": source_face_path, "target": media["astronaut"], role: media[name]}
    job = swap(files["source"], files["target"], "result.png", previous=role == "target")
    assert_fails(job, EXIT_BAD_INPUT, role, size, "above the 8K limit", previous=role == "target")


def test_nonexistent_path(swap: Callable[..., Job], source_face_path: Path, tmp_path: Path) -> None:
    job = swap(source_face_path, tmp_path / "nowhere" / "target.png", "result.png")
    assert_fails(job, EXIT_BAD_INPUT, "target", "does not exist")


def test_directory_as_input(swap: Callable[..., Job], source_face_path: Path, tmp_path: Path) -> None:
    folder = tmp_path / "folder.png"
    folder.mkdir()
    job = swap(source_face_path, folder, "result.png")
    assert_fails(job, EXIT_BAD_INPUT, "target", "not a regular file")


def test_unsupported_scheme(swap: Callable[..., Job], media: dict[str, Path]) -> None:
    job = swap("ftp://example.com/face.png", media["astronaut"], "result.png")
    assert_fails(job, EXIT_BAD_INPUT, "source", "unsupported URI scheme", "ftp")


def test_remote_file_uri(swap: Callable[..., Job], media: dict[str, Path]) -> None:
    job = swap("file://remotehost/face.png", media["astronaut"], "result.png")
    assert_fails(job, EXIT_BAD_INPUT, "source", "local path")


def test_unreachable_http_url(swap: Callable[..., Job], media: dict[str, Path], closed_port: int) -> None:
    url = f"http://127.0.0.1:{closed_port}/face.png"
    job = swap(url, media["astronaut"], "result.png")
    assert_fails(job, EXIT_BAD_INPUT, "source", "cannot read", url)


def test_missing_model(swap: Callable[..., Job], media: dict[str, Path], source_face_path: Path) -> None:
    job = swap(source_face_path, media["astronaut"], "result.png", "--swapper", "inswapper_128")
    assert_fails(job, EXIT_MODEL, "inswapper_128")


@pytest.mark.parametrize("previous", [False, True])
def test_model_with_the_wrong_shapes(
    swap: Callable[..., Job], media: dict[str, Path], wrong_shape_models: Path, previous: bool
) -> None:
    # a faceless source and a corrupt target would each fail with 65: a 69 shows the
    # model was checked before either was read
    job = swap(
        media["faceless_png"],
        media["random_mp4"],
        "result.mp4",
        "--swapper",
        "inswapper_128",
        "--model-dir",
        str(wrong_shape_models),
        previous=previous,
    )
    assert_fails(job, EXIT_MODEL, "inswapper_128", "[1, 3, 128, 128]", previous=previous)
    assert "source_ready" not in job.done.stderr


def test_model_with_a_wrong_checksum(
    swap: Callable[..., Job], media: dict[str, Path], wrong_shape_models: Path, tmp_path: Path
) -> None:
    model_dir = tmp_path / "models"
    model_dir.mkdir()
    manifest = json.loads((wrong_shape_models / "manifest.json").read_text(encoding="utf-8"))
    for entry in manifest["models"]:
        (model_dir / entry["file"]).write_bytes((wrong_shape_models / entry["file"]).read_bytes())
    manifest["models"][0]["sha256"] = "0" * 64
    (model_dir / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    job = swap(
        media["faceless_png"],
        media["astronaut"],
        "result.png",
        "--swapper",
        "inswapper_128",
        "--model-dir",
        str(model_dir),
    )
    assert_fails(job, EXIT_MODEL, "checksum mismatch", "inswapper_128")


@pytest.mark.parametrize("selector", ["nonsense", "index:", "index:-1", "largest:2"])
def test_bad_face_selector(
    swap: Callable[..., Job], media: dict[str, Path], source_face_path: Path, selector: str
) -> None:
    job = swap(source_face_path, media["astronaut"], "result.png", "--face-selector", selector)
    assert_fails(job, EXIT_BAD_INPUT, "face_selector")


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("--quality", "99"),
        ("--segment-frames", "0"),
        ("--swapper", "nonsense"),
        ("--encoder", "mpeg1"),
        ("--decoder", "vdpau"),
        ("--blur", "2"),
        ("--cpu-threads", "-1"),
    ],
)
def test_option_out_of_range_is_a_usage_error(
    swap: Callable[..., Job], media: dict[str, Path], source_face_path: Path, option: str, value: str
) -> None:
    job = swap(source_face_path, media["astronaut"], "result.png", option, value)
    assert job.done.returncode == EXIT_USAGE, job.done.stderr
    assert option in job.done.stderr
    assert "Traceback" not in job.done.stderr
    assert_nothing_written(job, previous=False)


def test_missing_required_option_is_a_usage_error(fusionctl: list[str], tmp_path: Path) -> None:
    done = subprocess.run(
        [*fusionctl, "swap", "--source", "a.png", "--output", str(tmp_path / "o.png")],
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_S,
        check=False,
    )
    assert done.returncode == EXIT_USAGE
    assert "--target" in done.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("target", "output_name", "needles"),
    [
        ("astronaut", "result.mp4", ("output", "image", ".png")),
        ("astronaut", "result", ("output", "image")),
        ("clip_mp4", "result.png", ("output", "video", ".mp4")),
    ],
)
def test_output_suffix_wrong_for_the_input(
    swap: Callable[..., Job],
    media: dict[str, Path],
    source_face_path: Path,
    target: str,
    output_name: str,
    needles: tuple[str, ...],
) -> None:
    job = swap(source_face_path, media[target], output_name, previous=True)
    assert_fails(job, EXIT_BAD_INPUT, *needles, previous=True)


def test_http_output_is_refused(
    fusionctl: list[str], media: dict[str, Path], source_face_path: Path, tmp_path: Path
) -> None:
    done = subprocess.run(
        [
            *fusionctl,
            "swap",
            "--source",
            str(source_face_path),
            "--target",
            str(media["astronaut"]),
            "--output",
            "https://example.com/upload/result.png",
        ],
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_S,
        check=False,
    )
    assert done.returncode == EXIT_BAD_INPUT, done.stderr
    error_lines = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 1, done.stderr
    assert "output" in error_lines[0]


def test_output_path_is_a_directory(swap: Callable[..., Job], media: dict[str, Path], source_face_path: Path) -> None:
    job = swap(source_face_path, media["astronaut"], "taken.png", directory_at_output=True)
    line = assert_fails(job, EXIT_BAD_INPUT, "output", "is a directory", previous=True)
    assert "taken.png" in line
    assert job.output.is_dir()
    assert list(job.output.iterdir()) == []


def test_a_good_job_succeeds_in_the_same_setup(
    swap: Callable[..., Job], media: dict[str, Path], source_face_path: Path
) -> None:
    """The control: the harness above does see an output when there is one."""
    job = swap(source_face_path, media["astronaut"], "result.png", previous=True)
    assert job.done.returncode == 0, job.done.stderr
    assert job.error_lines == []
    assert job.output.read_bytes() != PREVIOUS
    assert cv2.imread(str(job.output)) is not None
    assert {p.name for p in job.out_dir.iterdir()} == {"unrelated.txt", "result.png"}
    assert list(job.scratch.iterdir()) == []
