"""Which containers ffmpeg may read, and how it is told to read them.

ffmpeg follows what a file says: an HLS playlist or an ffconcat list names
other files (``/etc/passwd``, another tenant's video) and the demuxer opens
them; an image-sequence pattern in a name reads its neighbours; protocols
such as ``subfile:``, ``concat:`` or ``http:`` reach past the file. Content
sniffing picks those demuxers for a file called ``target.mp4``. So every
ffmpeg/ffprobe run on an input here:

1. refuses by magic bytes first (playlists, manifests, text),
2. only ever speaks the ``file`` and ``pipe`` protocols
   (``-protocol_whitelist``),
3. may only pick a demuxer of an allow-list (``-format_whitelist``: the
   refusal happens before the demuxer reads its header, so a playlist's
   entries are never opened, not even by the probe), and
4. decodes with the demuxer the probe found forced (``-f``), so nothing is
   chosen by sniffing twice.

Images are sniffed by their magic bytes and probed with their single-image
demuxer forced (``png_pipe``...), never ``image2``, which expands patterns.
MPEG-TS is allowed only for the segments the pipeline wrote itself.
"""

from __future__ import annotations

import re
import stat
from pathlib import Path

from faceswap.errors import UnsupportedMedia

__all__ = [
    "IMAGE_DEMUXERS",
    "PROTOCOLS",
    "SEGMENT_DEMUXER",
    "VIDEO_DEMUXERS",
    "check_content",
    "describe_demuxer",
    "image_demuxer",
    "input_args",
    "kind_in_words",
    "refused_demuxer",
    "sniff",
    "video_container",
]

#: the only protocols an input may use: a local file, or our own pipes
PROTOCOLS = "file,pipe"
#: video containers accepted from users (mov covers mp4/m4v/3gp; matroska covers webm)
VIDEO_DEMUXERS = ("mov", "matroska", "avi")
#: the pipeline's own checkpoint segments (docs/adr/0001), never a user's input
SEGMENT_DEMUXER = "mpegts"
#: single-image demuxers by magic bytes; ``image2`` (file-name patterns) is never used
IMAGE_DEMUXERS = {"png": "png_pipe", "jpeg": "jpeg_pipe", "webp": "webp_pipe"}

_SNIFF_BYTES = 4096
_TEXT_CONTROLS = re.compile(rb"[\x00-\x08\x0b\x0e-\x1f\x7f]")
#: content that names other files or URLs; refused whatever the file is called
_REFERENCING = (
    (b"#EXTM3U", "an HLS playlist"),
    (b"#EXTINF", "an M3U playlist"),
    (b"ffconcat", "an ffconcat list"),
    (b"<?xml", "an XML document (such as a DASH manifest)"),
    (b"<MPD", "a DASH manifest"),
    (b"[playlist]", "a PLS playlist"),
)
_DESCRIPTIONS = {
    "hls": "an HLS playlist",
    "concat": "an ffconcat list",
    "dash": "a DASH manifest",
    "image2": "an image sequence pattern",
    "tty": "a text file",
    "mpegts": "an MPEG-TS stream",
    "png_pipe": "a PNG image",
    "jpeg_pipe": "a JPEG image",
    "webp_pipe": "a WebP image",
    "lavfi": "a filter graph",
}
_REFUSED = re.compile(r"^\[([A-Za-z0-9_,]+) @ 0x[0-9a-f]+\] Format not on whitelist", re.MULTILINE)


def _head(path: Path) -> bytes:
    with path.open("rb") as handle:
        return handle.read(_SNIFF_BYTES)


def _looks_like_text(head: bytes) -> bool:
    if not head or _TEXT_CONTROLS.search(head):
        return False
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:  # a multi-byte character cut at the end of the window is still text
        return exc.start >= len(head) - 3 and exc.reason == "unexpected end of data"
    return True


def image_demuxer(head: bytes) -> str | None:
    """The single-image demuxer for these first bytes, or None when they are no PNG, JPEG or WebP."""
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return IMAGE_DEMUXERS["png"]
    if head.startswith(b"\xff\xd8\xff"):
        return IMAGE_DEMUXERS["jpeg"]
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return IMAGE_DEMUXERS["webp"]
    return None


#: the top-level boxes an ISO base media file (mp4, mov, m4v) starts with, at bytes 4..8
_ISO_BOXES = (b"ftyp", b"moov", b"mdat", b"free", b"skip", b"wide", b"pnot")


def video_container(head: bytes) -> str | None:
    """The video demuxer these first bytes call for (mov, matroska, avi), or None when they are none of them."""
    if head[4:8] in _ISO_BOXES:
        return "mov"
    if head.startswith(b"\x1a\x45\xdf\xa3"):  # EBML: Matroska and WebM
        return "matroska"
    if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        return "avi"
    return None


def check_content(path: Path, *, field: str, wanted: str) -> None:
    """Refuse, from the first 4 KiB alone, a file that cannot be the ``image`` or ``video`` it is meant to be.

    Cheap enough for submission time: a text file called ``face.png`` is
    refused there, with its field named, instead of when a worker decodes it.
    Passing does not promise a decodable file; the worker's probe still decides.
    ``OSError`` (no such file, a folder) is the caller's to word.
    """
    status = path.stat()
    if not stat.S_ISREG(status.st_mode):  # a FIFO or a device would block the read below, or never end
        raise UnsupportedMedia(f"{path.name}: not a regular file", field=field)
    if status.st_size == 0:
        raise UnsupportedMedia(f"{path.name}: the file is empty, not {kind_in_words(wanted)}", field=field)
    image = sniff(path, field=field, wanted=wanted)
    if wanted == "image" and image is None:
        raise UnsupportedMedia(f"{path.name}: its content is not a PNG, JPEG or WebP image", field=field)
    if wanted == "video" and video_container(_head(path)) is None:
        what = "an image, not a video" if image is not None else "not an MP4/MOV, Matroska/WebM or AVI video"
        raise UnsupportedMedia(f"{path.name}: its content is {what}", field=field)


def sniff(path: Path, *, field: str, wanted: str) -> str | None:
    """Refuse playlists, manifests and text by content; an image's demuxer, else None (a video candidate).

    ``wanted`` (``image``, ``video`` or ``media``) only words the message:
    "an HLS playlist is not a video".
    """
    head = _head(path)
    start = head.removeprefix(b"\xef\xbb\xbf").lstrip()
    for magic, what in _REFERENCING:
        if start[: len(magic)].lower() == magic.lower():
            raise UnsupportedMedia(f"{path.name}: {what} is not {kind_in_words(wanted)}", field=field)
    if _looks_like_text(head):
        raise UnsupportedMedia(f"{path.name}: a text file is not {kind_in_words(wanted)}", field=field)
    return image_demuxer(head)


def kind_in_words(kind: str) -> str:
    """``video`` -> "a video", for messages; anything else is "an image or a video"."""
    return {"image": "an image", "video": "a video"}.get(kind, "an image or a video")


def describe_demuxer(name: str) -> str:
    """``hls`` -> "an HLS playlist": what a file is, in words, from ffmpeg's demuxer name."""
    first = name.split(",", 1)[0]
    return _DESCRIPTIONS.get(first, f"a {first} file")


def refused_demuxer(stderr: str) -> str | None:
    """The demuxer ffmpeg detected and the format allow-list refused, from its stderr."""
    found = _REFUSED.search(stderr)
    return found.group(1) if found else None


def input_args(path: Path, *, demuxers: tuple[str, ...], forced: str | None) -> list[str]:
    """ffmpeg/ffprobe options that open ``path`` as a local file with an allowed demuxer only.

    ``forced`` is the demuxer to use without sniffing (``-f``); None lets
    ffmpeg detect one, but only among ``demuxers``. The ``file:`` prefix
    keeps a name with a colon from being read as a protocol.
    """
    args = ["-protocol_whitelist", PROTOCOLS, "-format_whitelist", ",".join(demuxers)]
    if forced is not None:
        args += ["-f", forced]
    return [*args, "-i", f"file:{path.resolve()}"]
