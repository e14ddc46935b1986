"""How much of the caption a pseudo text feature still carries, per perturbation (paper Sec. 4.4).

The generator learns from pseudo text features h' and is driven by real caption features t at
inference, so h' should sit where t would, and still name its own image. On the cached features of a
captioned dataset, for each perturbation this prints:

- cos(h', h): how far the perturbation moves the image feature;
- cos(h', t): to the item's own captions, and to another item's (the gap is what conditioning can use);
- caption retrieval: how often h' is nearest to its own first caption among all distinct first
  captions of the sample (on Captioned Shapes: the exact attribute combination, 1 of ~900).

    python benchmarks/pseudo_text_alignment.py                               # the embedded default's cache
    python benchmarks/pseudo_text_alignment.py --learned results/runs/<id>/out/train/learned_perturbation.safetensors
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
import torch.nn.functional as F

from lafite_core.config import PerturbationConfig
from lafite_core.data.cache import load_cache
from lafite_core.perturbations import build_perturbation

CASES = {  # the cases of params/ablation.yaml (calibrated and centred read the shipped geometry file)
    "none": PerturbationConfig(kind="none"),
    "gaussian-xi0.5": PerturbationConfig(kind="gaussian", xi=0.5),
    "gaussian-xi1": PerturbationConfig(kind="gaussian", xi=1.0),
    "gaussian-xi2": PerturbationConfig(kind="gaussian", xi=2.0),
    "official": PerturbationConfig(kind="official"),
    "calibrated": PerturbationConfig(kind="calibrated"),
    "centred (no noise)": PerturbationConfig(kind="centred", target_cosine=1.0),
    "centred": PerturbationConfig(kind="centred"),
}


def features(cache, items: int, seed: int) -> tuple[torch.Tensor, ...]:
    """Image features [n, f], all their caption features [m, f] with owners [m], the features of the
    sample's distinct first captions [d, f], and which of those is each item's own [n]."""
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(len(cache), size=min(items, len(cache)), replace=False))
    rows = np.array([r for r in rows if len(cache.caption_rows(r))])
    if len(rows) == 0:
        raise ValueError(f"cache {cache.folder} has no captioned items: alignment needs captions")
    caption_rows = [cache.caption_rows(r) for r in rows]
    owners = np.concatenate([np.full(len(c), k) for k, c in enumerate(caption_rows)])
    firsts = [cache.captions[c[0]] for c in caption_rows]
    row_of_text = {text: c[0] for text, c in zip(firsts, caption_rows)}  # one cache row per distinct text
    distinct = sorted(row_of_text)
    position = {text: k for k, text in enumerate(distinct)}
    which = np.array([position[text] for text in firsts])
    first_of_distinct = np.array([row_of_text[text] for text in distinct])

    def load(array, index):
        return F.normalize(torch.tensor(np.asarray(array[index], dtype=np.float32)), dim=-1)

    return (
        load(cache.image_features, rows),
        load(cache.caption_features, np.concatenate(caption_rows)),
        torch.from_numpy(owners),
        load(cache.caption_features, first_of_distinct),
        torch.from_numpy(which),
    )


def alignment(
    pseudo: torch.Tensor,
    images: torch.Tensor,
    captions: torch.Tensor,
    owners: torch.Tensor,
    distinct_firsts: torch.Tensor,
    which: torch.Tensor,
    seed: int,
) -> dict[str, float]:
    other = (
        owners + 1 + torch.randint(len(images) - 1, owners.shape, generator=torch.Generator().manual_seed(seed))
    ) % len(images)  # another item for every caption
    own = (pseudo[owners] * captions).sum(-1)
    not_own = (pseudo[other] * captions).sum(-1)
    nearest = (pseudo @ distinct_firsts.T).argmax(dim=1)
    return {
        "cos(h', h)": float((pseudo * images).sum(-1).mean()),
        "cos(h', own t)": float(own.mean()),
        "cos(h', other t)": float(not_own.mean()),
        "gap": float((own - not_own).mean()),
        "caption retrieval": float((nearest == which).float().mean()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cache", default="results/cache/shapes-32-lafite-tiny")
    parser.add_argument("--items", type=int, default=4096)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--learned", nargs="*", default=[], help="learned-perturbation weight files")
    args = parser.parse_args()
    cache = load_cache(args.cache)
    images, captions, owners, distinct_firsts, which = features(cache, args.items, args.seed)
    cases = dict(CASES)
    for i, path in enumerate(args.learned):
        cases[f"learned-{i}" if len(args.learned) > 1 else "learned"] = PerturbationConfig(
            kind="learned", learned_weights=path
        )
    print(
        f"{args.cache}: {len(images)} items, {len(captions)} captions, {len(distinct_firsts)} distinct first captions"
    )
    rows = []
    for name, cfg in cases.items():
        perturbation = build_perturbation(cfg, cache.feature_dim)
        with torch.no_grad():
            pseudo = perturbation(images, source="image", generator=torch.Generator().manual_seed(args.seed))
        rows.append(
            {"perturbation": name, **alignment(pseudo, images, captions, owners, distinct_firsts, which, args.seed)}
        )
    columns = list(rows[0])
    print("| " + " | ".join(columns) + " |\n|" + "---|" * len(columns))
    for row in rows:
        print("| " + " | ".join(row[c] if isinstance(row[c], str) else f"{row[c]:.3f}" for c in columns) + " |")


if __name__ == "__main__":
    main()
