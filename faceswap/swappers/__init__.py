"""Swappers chosen by name: ``classic`` (no model) and ``inswapper_128``.

``base`` is what every swapper offers the pipeline; ``classic`` pastes the
source face aligned onto the target's landmarks and recoloured to its skin
tone; ``inswapper`` is the FaceFusion-compatible inswapper_128 fed by an
ArcFace recognizer. ``build_swapper`` returns one ready to use, its model
files verified first.
"""

from __future__ import annotations

from faceswap.errors import BadInput
from faceswap.models import ModelStore
from faceswap.runtime import ExecutionConfig, create_session
from faceswap.swappers.base import Swapper
from faceswap.swappers.classic import ClassicSwapper
from faceswap.swappers.inswapper import InswapperSwapper, read_emap

__all__ = ["SWAPPERS", "Swapper", "build_swapper"]

SWAPPERS = ("classic", "inswapper_128")

#: manifest names the inswapper path loads unless told otherwise
INSWAPPER_MODEL = "inswapper_128"
RECOGNIZER_MODEL = "arcface_w600k_r50"


def build_swapper(
    name: str,
    *,
    models: ModelStore,
    execution: ExecutionConfig,
    recognizer: str = RECOGNIZER_MODEL,
) -> Swapper:
    """A ready swapper; models are verified (checksum, signature) before this returns."""
    if name == "classic":
        return ClassicSwapper()
    if name == "inswapper_128":
        swapper_entry = models.get(INSWAPPER_MODEL, role="swapper")
        recognizer_entry = models.get(recognizer, role="recognizer")
        swapper_path, recognizer_path = swapper_entry.verify(), recognizer_entry.verify()
        return InswapperSwapper(
            swapper=create_session(swapper_path, execution),
            recognizer=create_session(recognizer_path, execution),
            emap=read_emap(swapper_path),
            identity=f"inswapper_128/{swapper_entry.sha256[:16]}/{recognizer_entry.sha256[:16]}",
        )
    raise BadInput(f"unknown swapper {name!r}; choose one of {', '.join(SWAPPERS)}", field="swapper")
