"""Zero-shot attribute classification with caption prompts (CLIP's zero-shot protocol, Radford
et al. 2021, Sec. 3.1.4): an image is assigned the prompt whose text feature is most similar.

Used to check the tiny encoder after pre-training, and later to check what a generator drew
("is the generated image of 'a red star' red? a star?"). Datasets whose items carry attributes
(Captioned Shapes) describe every attribute combination with one caption; the encoder reads all
those captions once and each image is scored against all of them:

- `given_others`: for attribute a, only the captions that agree with the image's true labels on
  every other attribute compete, so exactly one attribute varies between the prompts;
- `best_caption`: the single best caption over every combination is picked and its value of a
  is read off (nothing about the image is given away).

`prompt_accuracy` is the one-prompt-per-class form ("a red shape", "a blue shape", ...).
"""

from __future__ import annotations

import itertools
from typing import Callable, Sequence

import torch
from torch import Tensor

MODES = ("given_others", "best_caption")


def label_indices(attributes: Sequence[dict], vocabularies: dict[str, Sequence[str]]) -> Tensor:
    """[N, k] integer labels: position of each item's value in each attribute's vocabulary."""
    names = list(vocabularies)
    rows = []
    for i, attrs in enumerate(attributes):
        row = []
        for name in names:
            try:
                row.append(list(vocabularies[name]).index(attrs[name]))
            except (KeyError, ValueError):
                raise ValueError(
                    f"item {i}: attribute {name!r} = {attrs.get(name)!r} is not in its "
                    f"vocabulary {list(vocabularies[name])}"
                ) from None
        rows.append(row)
    return torch.tensor(rows, dtype=torch.long).reshape(len(rows), len(names))


@torch.no_grad()
def combination_text_features(
    encode_text: Callable[[list[str]], Tensor],
    vocabularies: dict[str, Sequence[str]],
    caption_fn: Callable[[dict], str],
    batch_size: int = 256,
) -> Tensor:
    """Text features of one caption per attribute combination, shaped [n_1, ..., n_k, f]."""
    names = list(vocabularies)
    combos = [dict(zip(names, values)) for values in itertools.product(*vocabularies.values())]
    captions = [caption_fn(c) for c in combos]
    features = torch.cat(
        [encode_text(captions[i : i + batch_size]).float().cpu() for i in range(0, len(captions), batch_size)]
    )
    return features.reshape(*[len(v) for v in vocabularies.values()], features.shape[-1])


def predict_attributes(
    image_features: Tensor, labels: Tensor, combo_features: Tensor, mode: str = "given_others"
) -> Tensor:
    """[N, k] predicted value index per attribute (see the module docstring for the modes).

    image_features [N, f] and combo_features [n_1, ..., n_k, f] are L2-normalised; labels [N, k]
    are only read in `given_others` mode (for the attributes that are *not* being predicted)."""
    if mode not in MODES:
        raise ValueError(f"zero-shot mode must be one of {', '.join(MODES)}; got {mode!r}")
    sizes = combo_features.shape[:-1]
    k = len(sizes)
    sims = image_features.float().cpu() @ combo_features.reshape(-1, combo_features.shape[-1]).T  # [N, C]
    sims = sims.reshape(-1, *sizes)
    if mode == "best_caption":
        best = sims.reshape(sims.shape[0], -1).argmax(dim=1)
        return torch.stack(torch.unravel_index(best, sizes), dim=1)
    predictions = []
    rows = torch.arange(sims.shape[0])
    for a in range(k):
        # index every attribute but a with the true label; keep a's axis whole
        index = [rows] + [labels[:, j] if j != a else slice(None) for j in range(k)]
        predictions.append(_gather(sims, index, a).argmax(dim=1))
    return torch.stack(predictions, dim=1)


def _gather(sims: Tensor, index: list, keep: int) -> Tensor:
    """sims[rows, l_0, ..., :, ..., l_k] -> [N, n_keep] (advanced indexing around one full axis)."""
    moved = sims.movedim(keep + 1, -1)  # the kept axis last, so advanced indices stay adjacent
    return moved[tuple(index[: keep + 1] + index[keep + 2 :])]


def attribute_accuracy(
    encoder,
    image_features: Tensor,
    attributes: Sequence[dict],
    vocabularies: dict[str, Sequence[str]],
    caption_fn: Callable[[dict], str],
    mode: str = "given_others",
    combo_features: Tensor | None = None,
) -> dict[str, float]:
    """Fraction of images whose each attribute is classified right, per attribute name.

    `encoder` needs `encode_text(list[str])` (a ClipEncoder); `caption_fn` turns an attribute
    dict into a caption that names every attribute (Shapes: `caption_for(attrs, 0)`).
    `combo_features` (from `combination_text_features`) saves re-encoding the captions."""
    if len(attributes) != image_features.shape[0]:
        raise ValueError(f"{image_features.shape[0]} image features but {len(attributes)} attribute dicts")
    labels = label_indices(attributes, vocabularies)
    if combo_features is None:
        combo_features = combination_text_features(encoder.encode_text, vocabularies, caption_fn)
    predicted = predict_attributes(image_features, labels, combo_features, mode)
    correct = (predicted == labels).float().mean(dim=0)
    return {name: float(correct[j]) for j, name in enumerate(vocabularies)}


@torch.no_grad()
def prompt_accuracy(encoder, image_features: Tensor, labels: Sequence[str], prompts: dict[str, str]) -> float:
    """Accuracy of one-prompt-per-class zero-shot classification; `prompts` maps class -> prompt."""
    classes = list(prompts)
    unknown = sorted(set(labels) - set(classes))
    if unknown:
        raise ValueError(f"labels {unknown} have no prompt; prompts cover {classes}")
    text = encoder.encode_text([prompts[c] for c in classes]).float().cpu()
    predicted = (image_features.float().cpu() @ text.T).argmax(dim=1)
    target = torch.tensor([classes.index(label) for label in labels])
    return float((predicted == target).float().mean())


@torch.no_grad()
def matching_cosine(image_features: Tensor, text_features: Tensor) -> float:
    """Mean cosine of matched rows (an image and its own caption); CLIP ViT-B/32 gives about 0.3."""
    return float((image_features.float() * text_features.float()).sum(dim=1).mean())
