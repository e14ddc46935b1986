"""A tiny in-memory stand-in for the cached dataset, and the smallest training config.

Items follow the CachedImageTextSet contract: image [3, R, R] in [-1, 1], image_feature [f],
caption_feature [f], has_caption, index. Images are coloured squares whose features are fixed
random unit vectors, so every run sees the same data without CLIP or a cache on disk.
"""

import torch

from lafite_core.config import (
    EncoderConfig,
    LossConfig,
    NetworkConfig,
    PerturbationTrainingConfig,
    TrainConfig,
)

FEATURE_DIM = 128  # lafite-tiny's embedding size


class TinyImageTextSet(torch.utils.data.Dataset):
    def __init__(self, size: int = 16, resolution: int = 32, feature_dim: int = FEATURE_DIM, captioned_every: int = 1):
        g = torch.Generator().manual_seed(1234)
        self.images = torch.full((size, 3, resolution, resolution), -1.0)
        for i in range(size):
            colour = torch.rand(3, 1, 1, generator=g) * 2 - 1
            top, left = torch.randint(0, resolution // 2, (2,), generator=g).tolist()
            self.images[i, :, top : top + resolution // 2, left : left + resolution // 2] = colour
        image_features = torch.nn.functional.normalize(torch.randn(size, feature_dim, generator=g), dim=1)
        noise = torch.nn.functional.normalize(torch.randn(size, feature_dim, generator=g), dim=1)
        self.image_features = image_features
        self.caption_features = torch.nn.functional.normalize(image_features + 2 * noise, dim=1)
        self.has_caption = torch.arange(size) % captioned_every == 0

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return {
            "image": self.images[i],
            "image_feature": self.image_features[i],
            "caption_feature": self.caption_features[i],
            "has_caption": self.has_caption[i],
            "index": i,
        }


def tiny_config(run_dir, **overrides) -> TrainConfig:
    """32x32, channel_base 512, z = w = 32, batch 4: a few steps take seconds on 2 cores."""
    base = dict(
        encoder=EncoderConfig(name="lafite-tiny", pretrained=None),
        network=NetworkConfig(resolution=32, z_dim=32, w_dim=32, mapping_layers=2, channel_base=512, channel_max=32),
        loss=LossConfig(r1_interval=4, pl_interval=2),
        perturbation_training=PerturbationTrainingConfig(steps=20, batch_size=8),
        run_dir=str(run_dir),
        cache="in-memory",
        batch_size=4,
        total_kimg=0.016,
        tick_kimg=0.008,
        snapshot_ticks=1,
        image_ticks=2,
        keep_last=10,
        progress_prompts=["a red square", "a blue circle"],
        progress_seeds=[0, 1, 2],
        device="cpu",
        seed=0,
    )
    base.update(overrides)
    return TrainConfig(**base)
