from __future__ import annotations

import pytest

from faceswap.errors import BadInput
from faceswap.media import media_kind
from faceswap.uris import parse_uri


@pytest.mark.parametrize(
    ("uri", "name", "suffix"),
    [
        ("https://bucket.s3.amazonaws.com/in/clip.mp4?X-Amz-Signature=abc&X-Amz-Expires=60", "clip.mp4", ".mp4"),
        ("http://127.0.0.1:9/a/b/face.JPG#frag", "face.JPG", ".jpg"),
        ("s3://bucket/deep/key/video.mov", "video.mov", ".mov"),
        ("/data/in/photo.webp", "photo.webp", ".webp"),
        ("file:///data/in/my%20photo.png", "my photo.png", ".png"),
    ],
)
def test_names_come_from_the_path_not_the_query(uri: str, name: str, suffix: str) -> None:
    location = parse_uri(uri, field="target")
    assert location.name == name
    assert location.suffix == suffix


def test_a_presigned_video_url_is_a_video() -> None:
    location = parse_uri("https://cdn.example/v/clip.mp4?sig=%2F%3F.png", field="target")
    from pathlib import Path

    assert media_kind(Path(location.name), field="target") == "video"


@pytest.mark.parametrize("uri", ["ftp://host/x.png", "gopher://x/y.png", "s3://bucket", "file://remote/x.png", ""])
def test_unusable_uris_name_the_field(uri: str) -> None:
    with pytest.raises(BadInput) as info:
        parse_uri(uri, field="source")
    assert info.value.field == "source"
