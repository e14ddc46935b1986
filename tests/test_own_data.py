"""The README's own-data walkthrough (embed -> train -> evaluate with params/examples/), run as
written on small fixtures in each dataset's real layout: an image folder with sidecar captions,
MS-COCO 2017 and CUB-200-2011 (AttnGAN's birds/ layout). Only `--set` values are added: the
fixture's root, output folders inside tmp_path, and sizes a test can afford."""

from __future__ import annotations

import json
import pickle
import re
import shlex
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lafite_core import cli

REPO = Path(__file__).resolve().parents[1]
COLOURS = {"red": (220, 30, 30), "green": (30, 200, 60), "blue": (40, 60, 220), "yellow": (230, 220, 40)}
WALKTHROUGH = re.compile(
    r"^lafite (embed|train|evaluate) +--params params/examples/(\S+)-(?:embed|train|evaluate)\.yaml"
)

pytestmark = pytest.mark.slow  # each walkthrough, embedding to evaluation


def walkthrough() -> dict[str, list[list[str]]]:
    """dataset -> the README's three command lines for it (as argv lists, in order)."""
    found: dict[str, list[list[str]]] = {}
    for line in (REPO / "README.md").read_text().splitlines():
        match = WALKTHROUGH.match(line.strip())
        if match:
            found.setdefault(match.group(2), []).append(shlex.split(line.split("  #")[0])[1:])
    return found


def picture(path: Path, colour: str, size=(40, 32)) -> None:
    """A coloured disc on grey, so the images are not all alike."""
    array = np.full((size[1], size[0], 3), 128, dtype=np.uint8)
    yy, xx = np.mgrid[: size[1], : size[0]]
    array[(yy - size[1] / 2) ** 2 + (xx - size[0] / 2) ** 2 < 100] = COLOURS[colour]
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, format="JPEG" if path.suffix == ".jpg" else "PNG")


def captions_for(colour: str, k: int) -> list[str]:
    return [f"a {colour} disc on a gray background", f"a round {colour} thing number {k}"]


def make_folder(root: Path, count: int = 8) -> Path:
    for k in range(count):
        colour = list(COLOURS)[k % 4]
        picture(root / f"set{k % 2}" / f"img{k}.png", colour)
        (root / f"set{k % 2}" / f"img{k}.txt").write_text("\n".join(captions_for(colour, k)))
    return root


def make_coco2017(root: Path, count: int = 8) -> Path:
    for split in ("train", "val"):
        images, annotations = [], []
        for k in range(count):
            colour, image_id = list(COLOURS)[k % 4], 100 + k
            name = f"{image_id:012d}.jpg"  # 2017 names carry no split prefix
            picture(root / f"{split}2017" / name, colour)
            images.append({"id": image_id, "file_name": name, "width": 40, "height": 32})
            for n, caption in enumerate(captions_for(colour, k)):
                annotations.append({"id": 10 * image_id + n, "image_id": image_id, "caption": caption})
        path = root / "annotations" / f"captions_{split}2017.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"info": {}, "licenses": [], "images": images, "annotations": annotations}))
    return root


def make_cub(root: Path, count: int = 16) -> Path:
    cub, names = root / "CUB_200_2011", []
    for k in range(count):
        colour = list(COLOURS)[k % 4]
        name = f"{k % 2 + 1:03d}.Bird_{k % 2}/Bird_{k % 2}_{k:04d}_{k}"
        picture(cub / "images" / f"{name}.jpg", colour)
        text = root / "text" / f"{name}.txt"
        text.parent.mkdir(parents=True, exist_ok=True)
        text.write_text("\n".join(captions_for(colour, k) * 5))  # CUB has 10 captions per image
        names.append(name)
    (cub / "images.txt").write_text("".join(f"{i + 1} {n}.jpg\n" for i, n in enumerate(names)))
    (cub / "bounding_boxes.txt").write_text("".join(f"{i + 1} 8.0 6.0 24.0 20.0\n" for i in range(count)))
    for split, part in (("train", names[: count // 2]), ("test", names[count // 2 :])):
        (root / split).mkdir(parents=True)
        (root / split / "filenames.pickle").write_bytes(pickle.dumps(part, protocol=2))
    return root


FIXTURES = {"folder": make_folder, "coco2017": make_coco2017, "cub": make_cub}


def tiny(step: str, work: Path) -> list[str]:
    """The --set values a test adds to a walkthrough command: outputs in `work`, sizes it can afford."""
    sets = {
        "embed": {"cache_dir": work / "cache", "output_dir": work / "embed", "batch_size": 8},
        "train": {
            "cache": work / "cache",
            "run_dir": work / "run",
            "total_kimg": 0.004,
            "tick_kimg": 0.004,
            "batch_size": 4,
            "network.z_dim": 32,
            "network.w_dim": 32,
            "network.channel_base": 512,
            "network.channel_max": 32,
            "device": "cpu",
        },
        "evaluate": {
            "checkpoint": work / "run",
            "protocol.num_samples": 4,
            "protocol.batch_size": 4,
            "protocol.reference_size": 4,
            "protocol.kid_subsets": 2,
            "protocol.kid_subset_size": 2,
            "protocol.r_precision_candidates": 4,
            "stats_cache": work / "stats",
            "results_dir": work / "results",
            "output_dir": work / "eval",
            "device": "cpu",
        },
    }[step]
    return [arg for key, value in sets.items() for arg in ("--set", f"{key}={value}")]


def test_readme_has_the_walkthrough_for_a_folder_coco_2017_and_cub():
    steps = {name: [argv[0] for argv in commands] for name, commands in walkthrough().items()}
    for name in FIXTURES:
        assert steps.get(name) == ["embed", "train", "evaluate"], name


@pytest.mark.parametrize("name", list(FIXTURES))
def test_walkthrough_runs_on_a_fixture_through_params_alone(name, tmp_path, capsys):
    root = FIXTURES[name](tmp_path / "data")
    for argv in walkthrough()[name]:
        argv = [re.sub(r"^data\.root=.*", f"data.root={root}", a) for a in argv]
        with pytest.raises(SystemExit) as exit_info:
            cli.main(argv + tiny(argv[0], tmp_path))
        assert exit_info.value.code == 0, capsys.readouterr().err
    rows = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    split = {"folder": "all", "coco2017": "val", "cub": "test"}[name]
    assert 0.0 <= rows[f"{split}/r_precision"] <= 1.0 and np.isfinite(rows[f"{split}/clip_fid"])
    cache_meta = json.loads((tmp_path / "cache" / "meta.json").read_text())
    assert cache_meta["counts"]["items"] == {"folder": 8, "coco2017": 8, "cub": 8}[name]


def test_folder_walkthrough_runs_verbatim_on_200_captioned_images(tmp_path, monkeypatch, capsys):
    """The README's three folder commands as written, in a fresh working directory, on 200 images
    with `img.txt` captions: only data.root and a short training (total_kimg) are added. The
    default protocol sizes itself to the folder, and evaluation prints where its table went."""
    root = make_folder(tmp_path / "my-images", count=200)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params").symlink_to(REPO / "params")
    for argv in walkthrough()["folder"]:
        argv = [f"data.root={root}" if a.startswith("data.root=") else a for a in argv]
        short = ["--set", "total_kimg=0.032"] if argv[0] == "train" else []
        with pytest.raises(SystemExit) as exit_info:
            cli.main(argv + short)
        assert exit_info.value.code == 0, capsys.readouterr().err
    said = capsys.readouterr().out
    assert "note: 200 images: the reference set is the first 100" in said
    assert "table: results/my_images_eval.md" in said
    header = (tmp_path / "results" / "my_images_eval.md").read_text().splitlines()[0]
    assert header.startswith("| subject | eval_split | clip_fid ↓ | clip_kid ↓ |")
