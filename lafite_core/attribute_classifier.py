"""An independent judge of Captioned Shapes images: a small CNN that reads every attribute.

Caption accuracy asks "does the image generated for 'a small red star in the top left corner'
show a small red star in the top left corner?". Asking the tiny CLIP that conditioned the
generator would let the model grade its own homework (a generator can learn features that fool
the encoder it was trained against), so the judge here is a separate network trained with plain
supervision on rendered Shapes and their *true* labels: one softmax head per attribute (shape,
colour, size, position, background) on a shared 32 px convolutional trunk.

It is trained on every attribute combination, held-out pairs included (see `training_images`), and
measured on images it never saw: the first items of `test` (seen combinations) and of `heldout`
(the zero-shot shape-colour pairs), which are also the images evaluation uses. Images of any size
are resized to 32 px first. Training adds pixel noise and a light blur so that the judge does not
depend on the crisp edges of renders: generated images are blurrier and noisier than renders.

    python -m lafite_core.attribute_classifier --out lafite_core/assets/attribute-classifier.safetensors

reproduces the shipped weights (see lafite_core/assets/attribute-classifier.md).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from lafite_core.data.shapes import ATTRIBUTE_NAMES, VOCABULARIES, ShapesDataset
from lafite_core.params import run_main

INPUT_SIZE = 32
FORMAT = "lafite-attribute-classifier-v1"
HELDOUT_RESERVE = 10000  # heldout items 0..9999 are never trained on (see training_images)


class AttributeClassifier(nn.Module):
    """[N, 3, H, W] images in [-1, 1] -> one logit vector per attribute.

    Four 3x3 conv layers (three with stride 2: 32 -> 4 px) and one hidden FC layer. No global
    pooling: position is an attribute, so the head sees where things are."""

    def __init__(self, vocabularies: dict[str, tuple[str, ...]] = VOCABULARIES, width: int = 16, hidden: int = 128):
        super().__init__()
        self.vocabularies = {name: tuple(values) for name, values in vocabularies.items()}
        self.width, self.hidden = width, hidden
        channels = [3, width, 2 * width, 4 * width, 4 * width]
        layers = []
        for i in range(4):
            stride = 1 if i == 0 else 2  # 32 -> 32 -> 16 -> 8 -> 4 px
            layers += [
                nn.Conv2d(channels[i], channels[i + 1], 3, stride=stride, padding=1, bias=False),
                nn.BatchNorm2d(channels[i + 1]),
                nn.ReLU(),
            ]
        self.trunk = nn.Sequential(*layers, nn.Flatten(), nn.Linear(channels[-1] * 4 * 4, hidden), nn.ReLU())
        self.heads = nn.ModuleDict({name: nn.Linear(hidden, len(values)) for name, values in self.vocabularies.items()})

    @property
    def attribute_names(self) -> list[str]:
        return list(self.vocabularies)

    def forward(self, images: Tensor) -> dict[str, Tensor]:
        x = to_input(images)
        h = self.trunk(x)
        return {name: head(h) for name, head in self.heads.items()}

    @torch.no_grad()
    def predict(self, images: Tensor) -> Tensor:
        """[N, k] index of the predicted value of each attribute (order: `attribute_names`)."""
        logits = self(images)
        return torch.stack([logits[name].argmax(dim=1) for name in self.vocabularies], dim=1)


def to_input(images: Tensor) -> Tensor:
    """Float [-1, 1] (or uint8 0..255) images of any size -> float [-1, 1] at INPUT_SIZE px."""
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"expected images [N, 3, H, W], got shape {tuple(images.shape)}")
    x = images.float() / 127.5 - 1 if images.dtype == torch.uint8 else images.float()
    if tuple(x.shape[-2:]) != (INPUT_SIZE, INPUT_SIZE):
        # antialias: shrinking a 256 px image must average pixels, not pick every 8th one
        x = F.interpolate(x, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", align_corners=False, antialias=True)
    return x


# ------------------------------------------------------------------------------------------ data
def render_items(
    split: str, start: int, stop: int, seed: int = 0, resolution: int = INPUT_SIZE
) -> tuple[Tensor, Tensor]:
    """Items start..stop-1 of a Shapes split: uint8 images [N, 3, R, R] and labels [N, k]."""
    ds = ShapesDataset(resolution=resolution, size=stop, seed=seed, split=split)
    images = np.stack([ds[i].image for i in range(start, stop)])
    labels = [
        [VOCABULARIES[name].index(ds.attributes(i)[name]) for name in ATTRIBUTE_NAMES] for i in range(start, stop)
    ]
    return torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(), torch.tensor(labels, dtype=torch.long)


def training_images(size: int, seed: int = 0) -> tuple[Tensor, Tensor]:
    """`size` labelled renders covering every attribute combination, none of them an evaluation image.

    Zero-shot is a property of the generator, not of the judge: a judge that never saw an orange
    circle learns "orange means square" from the training pairs and fails on exactly the images
    that matter. So 1/8 of the images (about the share of held-out pairs among all shape-colour
    pairs) come from the `heldout` split past its first HELDOUT_RESERVE items, the rest from
    `train`; `test` and heldout[:HELDOUT_RESERVE] stay unseen for measuring accuracy."""
    n_heldout = size // 8
    seen = render_items("train", 0, size - n_heldout, seed)
    held = render_items("heldout", HELDOUT_RESERVE, HELDOUT_RESERVE + n_heldout, seed)
    return torch.cat([seen[0], held[0]]), torch.cat([seen[1], held[1]])


def degrade(x: Tensor, generator: torch.Generator) -> Tensor:
    """Training-time corruption of [-1, 1] images: a random blur strength and Gaussian pixel noise,
    both per image, so the judge reads the blurry, noisy images a generator makes."""
    n = x.shape[0]
    blurred = F.avg_pool2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
    mix = torch.rand(n, 1, 1, 1, generator=generator) * 0.7
    noise_std = torch.rand(n, 1, 1, 1, generator=generator) * 0.15
    return (1 - mix) * x + mix * blurred + noise_std * torch.randn(x.shape, generator=generator)


# -------------------------------------------------------------------------------------- training
def classifier_loss(model: AttributeClassifier, images: Tensor, labels: Tensor) -> Tensor:
    """Sum over attributes of the cross-entropy of each head."""
    logits = model(images)
    return sum(F.cross_entropy(logits[name], labels[:, j]) for j, name in enumerate(model.attribute_names))


def train_attribute_classifier(
    train_size: int = 24000,
    steps: int = 1500,
    batch_size: int = 64,
    lr: float = 3e-3,
    seed: int = 0,
    dataset_seed: int = 0,
    log_every: int = 250,
) -> tuple[AttributeClassifier, list[dict]]:
    """Fit a fresh classifier on `training_images(train_size)`, degraded on the fly.

    Adam with a cosine learning-rate decay; returns the model (eval mode) and the loss history
    (mean loss per `log_every` steps)."""
    torch.manual_seed(seed)
    images, labels = training_images(train_size, dataset_seed)
    model = AttributeClassifier()
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
    g = torch.Generator().manual_seed(seed)
    history, running = [], []
    model.train()
    for step in range(1, steps + 1):
        idx = torch.randint(0, len(images), (batch_size,), generator=g)
        x = degrade(images[idx].float() / 127.5 - 1, g)
        loss = classifier_loss(model, x, labels[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        schedule.step()
        running.append(loss.item())
        if step % log_every == 0 or step == steps:
            history.append({"step": step, "loss": float(np.mean(running))})
            running = []
    return model.eval(), history


@torch.no_grad()
def attribute_accuracy(
    model: AttributeClassifier, images: Tensor, labels: Tensor, batch_size: int = 512
) -> dict[str, float]:
    """Per-attribute accuracy and `all` (every attribute right) on labelled images."""
    predicted = torch.cat([model.predict(images[i : i + batch_size]) for i in range(0, len(images), batch_size)])
    correct = predicted == labels
    out = {name: float(correct[:, j].float().mean()) for j, name in enumerate(model.attribute_names)}
    out["all"] = float(correct.all(dim=1).float().mean())
    return out


# ------------------------------------------------------------------------------------------ files
def save_attribute_classifier(model: AttributeClassifier, path: str | Path, extra: dict | None = None) -> Path:
    """Weights as safetensors; architecture and vocabularies in the file's metadata (no pickle)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "format": FORMAT,
        "vocabularies": json.dumps(model.vocabularies),
        "width": str(model.width),
        "hidden": str(model.hidden),
        "input_size": str(INPUT_SIZE),
    }
    meta.update({k: json.dumps(v) for k, v in (extra or {}).items()})
    save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, str(path), metadata=meta)
    return path


def load_attribute_classifier(path: str | Path, device: str | torch.device = "cpu") -> AttributeClassifier:
    """Rebuild a saved classifier (eval mode, no grad) on `device`."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"attribute classifier weights not found: {path} (train them with "
            f"`python -m lafite_core.attribute_classifier --out {path}`)"
        )
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    if meta.get("format") != FORMAT:
        raise ValueError(f"{path} is not a {FORMAT} file (format: {meta.get('format')!r})")
    vocabularies = {k: tuple(v) for k, v in json.loads(meta["vocabularies"]).items()}
    model = AttributeClassifier(vocabularies, width=int(meta["width"]), hidden=int(meta["hidden"]))
    model.load_state_dict(load_file(str(path)))
    return model.to(device).eval().requires_grad_(False)


# ---------------------------------------------------------------------------------- command line
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m lafite_core.attribute_classifier",
        description="Train the Shapes attribute classifier used by caption accuracy.",
    )
    parser.add_argument("--out", required=True, help="where to write the .safetensors weights")
    parser.add_argument("--train-size", type=int, default=24000)
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--eval-size", type=int, default=5000, help=f"first images of test and of heldout (at most {HELDOUT_RESERVE})"
    )
    args = parser.parse_args(argv)
    if args.eval_size > HELDOUT_RESERVE:
        parser.error(f"--eval-size must be at most {HELDOUT_RESERVE}: later heldout items are trained on")

    start = time.time()
    model, history = train_attribute_classifier(args.train_size, args.steps, args.batch_size, args.lr, args.seed)
    accuracy = {
        split: attribute_accuracy(model, *render_items(split, 0, args.eval_size)) for split in ("test", "heldout")
    }
    options = {
        "train_size": args.train_size,
        "steps": args.steps,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "seed": args.seed,
        "eval_size": args.eval_size,
    }
    save_attribute_classifier(model, args.out, {"training": options, "accuracy": accuracy})
    print(
        json.dumps(
            {
                "out": args.out,
                "seconds": round(time.time() - start, 1),
                "options": options,
                "final_loss": history[-1]["loss"],
                "accuracy": accuracy,
            },
            indent=2,
        )
    )
    return 0


if __name__ == "__main__":
    run_main(main)
