"""lafite_core: the small library behind the LAFITE research kit.

One concept per module: encoders (CLIP through open_clip), perturbations (pseudo text
features), ops and networks (conditional StyleGAN2), losses, data, training, metrics, runner.
"""

__version__ = "0.1.0"
