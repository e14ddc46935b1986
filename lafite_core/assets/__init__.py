"""Files the kit ships: the tiny encoder's weights and how they were made.

`TINY_ENCODER_WEIGHTS` is an open_clip state dict for the "lafite-tiny" architecture, trained on
Captioned Shapes by notebooks/00_pretrain_encoder.ipynb (see lafite-tiny-shapes.json next to it
for the command, parameters and measured accuracies). It loads like any CLIP weights file:

    load_encoder(EncoderConfig(name="lafite-tiny", pretrained=str(TINY_ENCODER_WEIGHTS)))

`lafite-tiny-shapes-cliplike.safetensors` is a second encoder of the same architecture whose
geometry is CLIP's (matched image/caption cosine near 0.3 rather than 0.53), trained by
params/pretrain_encoder_cliplike.yaml; its .json and .geometry files sit next to it.

Params files name it by its path in the repository, `lafite_core/assets/lafite-tiny-shapes.safetensors`;
`resolve_asset` maps that to the installed file when the working directory is elsewhere.
"""

from __future__ import annotations

from pathlib import Path

ASSETS_DIR = Path(__file__).resolve().parent
TINY_ENCODER_WEIGHTS = ASSETS_DIR / "lafite-tiny-shapes.safetensors"
TINY_ENCODER_GEOMETRY = ASSETS_DIR / "lafite-tiny-shapes.geometry.safetensors"  # lafite_core/modality.py
DEMO_GENERATOR = ASSETS_DIR / "demo-generator.safetensors"  # the sampler's default generator
REPO_PREFIX = "lafite_core/assets/"


def resolve_asset(path: str | None) -> str | None:
    """An existing path as given; `lafite_core/assets/<file>` -> the shipped file; others unchanged
    (so a missing file still fails where it is opened, with its own name)."""
    if path is None or Path(path).exists():
        return path
    if Path(path).as_posix().startswith(REPO_PREFIX):
        shipped = ASSETS_DIR / Path(path).as_posix()[len(REPO_PREFIX) :]
        if shipped.exists():
            return str(shipped)
    return path
