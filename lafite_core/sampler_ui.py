"""The ipywidgets front end of the sampler (notebooks/05_sample.ipynb): type a prompt, get images.

`SamplerUI` holds the widgets and their callbacks; the notebook only builds and displays it, and
tests drive the callbacks from Python (set `ui.prompt.value`, call `ui.on_generate()`, read
`ui.image.value`). Enter in a prompt box runs its button; a button is disabled while it works. The
status line sits beside Generate: errors (an empty prompt, a missing or incompatible checkpoint)
appear there instead of a traceback, and the grid left from an earlier request is labelled as such.
A prompt the encoder reads differently from how it was typed (cut at its context, or mostly words
its tokenizer has no whole token for) gets a notice under the prompt. Under it, the words the encoder
was trained on (for a Shapes encoder) and example prompts, each a button that types and draws it. Grids are shown in a box of
capped height that scrolls. Loaded generators are kept, so only the first Generate with a new
checkpoint pays for loading it.
"""

from __future__ import annotations

import html
import json
import time
import warnings
from contextlib import contextmanager
from pathlib import Path

import ipywidgets as widgets
from IPython.display import display

from lafite_core.assets import resolve_asset
from lafite_core.grids import image_grid
from lafite_core.sampler import Sampler, available_generators, png_bytes, slug

COLUMNS = 4  # images per row in the shown grids
GRID_HEIGHT = "520px"  # a taller grid scrolls inside its box, so the controls stay in view


class SamplerUI:
    """Prompt box, checkpoint menu, seed, number of images, truncation psi, Generate, the grid,
    interpolation towards a second prompt with a slider, and Save."""

    def __init__(
        self,
        checkpoint: str | None = None,
        prompt: str = "a red circle",
        seed: int = 0,
        n: int = 8,
        psi: float = 1.0,
        scale: int = 4,
        device: str = "cpu",
        runs_dir: str = "results/runs",
        out_dir: str = "results/runs/sample",
        compile: bool = False,
    ):
        self.device, self.runs_dir, self.out_dir, self.scale = device, runs_dir, Path(out_dir), scale
        self.compile = compile
        self._samplers: dict[str, Sampler] = {}
        self.last: dict[str, tuple] = {}  # "grid" / "interpolation" -> (picture, settings)

        style = {"description_width": "110px"}
        wide = widgets.Layout(width="460px")
        self.prompt = widgets.Text(
            value=prompt, description="Prompt", placeholder="a red circle", style=style, layout=wide
        )
        self.generate_button = widgets.Button(description="Generate", button_style="primary", icon="play")
        self.checkpoint = widgets.Dropdown(description="Checkpoint", style=style, layout=wide)
        self.refresh_button = widgets.Button(description="Rescan", tooltip=f"look for new runs in {runs_dir}")
        self.seed = widgets.IntText(value=seed, description="Seed", style=style, layout=widgets.Layout(width="220px"))
        self.n = widgets.BoundedIntText(
            value=n, min=1, max=64, description="Images", style=style, layout=widgets.Layout(width="220px")
        )
        self.psi = widgets.FloatSlider(
            value=psi, min=0.0, max=1.5, step=0.05, description="Truncation psi", style=style, continuous_update=False
        )
        self.image = widgets.Image(format="png", layout=widgets.Layout(display="none"))
        self.caption = widgets.HTML(value="")  # what the shown grid is: its prompt and settings
        self.notice = widgets.HTML(value="")  # how the encoder reads the prompt, when that differs
        self.vocabulary = widgets.HTML(value="")  # the words a closed-vocabulary encoder knows
        self.examples = widgets.HBox(layout=widgets.Layout(flex_flow="row wrap"))  # one button per prompt
        self.prompt_b = widgets.Text(
            value="", description="To prompt", placeholder="a blue square", style=style, layout=wide
        )
        self.t = widgets.FloatSlider(
            value=0.5, min=0.0, max=1.0, step=0.05, description="Mix", style=style, continuous_update=False
        )
        self.interpolate_button = widgets.Button(description="Interpolate", icon="arrows-h")
        self.interp_image = widgets.Image(format="png", layout=widgets.Layout(display="none"))
        self.save_button = widgets.Button(description="Save", icon="save", tooltip=f"write the grids to {out_dir}")
        self.status = widgets.HTML(value="")

        self.refresh(checkpoint)
        with warnings.catch_warnings():
            # on_submit is the one event for Enter (even with the text unchanged); its replacement,
            # observing value with continuous_update off, also fires on leaving the box and not on a repeat.
            warnings.simplefilter("ignore", DeprecationWarning)
            self.prompt.on_submit(self.on_generate)
            self.prompt_b.on_submit(self.on_interpolate)
        self.generate_button.on_click(self.on_generate)
        self.refresh_button.on_click(lambda _: self.refresh(self.checkpoint.value))
        self.checkpoint.observe(lambda _: self._show_vocabulary(), names="value")
        self.interpolate_button.on_click(self.on_interpolate)
        self.t.observe(self.on_interpolate, names="value")
        self.save_button.on_click(self.on_save)
        self.widget = widgets.VBox(
            [
                widgets.HBox([self.prompt, self.generate_button, self.status]),
                self.notice,
                self.vocabulary,
                self.examples,
                widgets.HBox([self.checkpoint, self.refresh_button]),
                widgets.HBox([self.seed, self.n, self.psi]),
                self.caption,
                _scrolling(self.image),
                widgets.HTML("<b>Interpolation</b> from the prompt above (Mix 0) to a second prompt (Mix 1)"),
                widgets.HBox([self.prompt_b, self.interpolate_button]),
                self.t,
                _scrolling(self.interp_image),
                self.save_button,
            ]
        )
        self._preload()

    @classmethod
    def from_config(cls, cfg) -> "SamplerUI":
        """A UI preset from a SampleConfig (its first prompt, if any, fills the prompt box)."""
        return cls(
            checkpoint=cfg.checkpoint,
            prompt=cfg.prompts[0] if cfg.prompts else "a red circle",
            seed=cfg.seed,
            n=cfg.n,
            psi=cfg.psi,
            scale=cfg.scale,
            device=cfg.device,
            runs_dir=cfg.runs_dir,
            out_dir=cfg.out_dir,
            compile=cfg.compile,
        )

    def _ipython_display_(self):
        display(self.widget)

    # ------------------------------------------------------------------------------ state
    def refresh(self, selected: str | None = None) -> None:
        """Fill the checkpoint menu: shipped generators, runs under runs_dir, and `selected`
        (matched to a listed entry when it names the same file or folder)."""
        options = available_generators(self.runs_dir)
        if selected:
            same = [source for source in options.values() if _same_path(source, selected)]
            if same:
                selected = same[0]
            else:
                options = {f"given: {selected}": selected, **options}
        self.checkpoint.options = list(options.items())
        if options:
            self.checkpoint.value = selected if selected else next(iter(options.values()))

    def _preload(self) -> None:
        """Load the selected generator and run it once now (the first call of a network pays for
        setting up its kernels), so the first Generate answers as fast as the next ones."""
        started = time.perf_counter()
        try:
            self.sampler().generate("a shape", n=self.n.value, seed=self.seed.value)
        except (ValueError, FileNotFoundError) as err:
            self._say(str(err), error=True)
            return
        self._show_vocabulary()
        self._say(f"generator loaded in {time.perf_counter() - started:.1f} s; press Generate")

    def sampler(self) -> Sampler:
        source = self.checkpoint.value
        if not source:
            raise FileNotFoundError(
                "no generator found: train one (notebooks/02_train) or restore the shipped "
                "lafite_core/assets/demo-generator.safetensors"
            )
        if source not in self._samplers:
            self._samplers[source] = Sampler.load(source, self.device, compile=self.compile)
        return self._samplers[source]

    def settings(self) -> dict:
        return {
            "prompt": self.prompt.value.strip(),
            "checkpoint": self.checkpoint.value,
            "seed": self.seed.value,
            "n": self.n.value,
            "psi": self.psi.value,
        }

    def _show(self, kind: str, target: widgets.Image, images, settings: dict, started: float) -> None:
        picture = image_grid(images, COLUMNS, scale=self.scale)
        target.value = png_bytes(picture)
        target.layout.display = None
        self.last[kind] = (picture, settings)
        if kind == "grid":
            self.caption.value = f"<b>{_escape(settings['prompt'])}</b> · {_describe(settings)}"
        self._say(f"{len(images)} images in {time.perf_counter() - started:.2f} s")

    def _failed(self, err: Exception) -> None:
        """Report the error; a grid still shown is from an earlier request, and its label says so."""
        self._say(str(err), error=True)
        if self.image.value and "earlier request" not in self.caption.value:
            self.caption.value = (
                "<span style='color:#b00020'>shown below: an earlier request, not the one that failed</span> · "
                + self.caption.value
            )

    def _check_prompts(self, *prompts: str) -> None:
        """The notice line: how the encoder reads the prompts, when that differs from what was typed."""
        typed = [p for p in prompts if p.strip()]
        try:
            notes = self.sampler().notices(typed) if typed else []
        except (ValueError, FileNotFoundError):
            notes = []  # the request itself reports these
        self.notice.value = "".join(f"<div style='color:#8a5a00'>&#9888; {_escape(n)}</div>" for n in notes)

    def _show_vocabulary(self) -> None:
        """The selected generator's encoder: its vocabulary (when closed) and example prompt buttons."""
        try:
            sampler = self.sampler()
        except (ValueError, FileNotFoundError):
            self.vocabulary.value, self.examples.children = "", ()
            return
        groups = sampler.vocabulary or {}
        self.vocabulary.value = (
            "<b>The encoder knows</b> " + " · ".join(f"{name}: {', '.join(words)}" for name, words in groups.items())
            if groups
            else ""
        )
        self.examples.children = [self._example_button(p) for p in sampler.example_prompts()]

    def _example_button(self, prompt: str) -> widgets.Button:
        button = widgets.Button(description=prompt, tooltip=prompt, layout=widgets.Layout(width="auto"))
        button.on_click(lambda _: self.use_prompt(prompt))
        return button

    def use_prompt(self, prompt: str) -> None:
        """Type `prompt` into the prompt box and draw it (an example button's click)."""
        self.prompt.value = prompt
        self.on_generate()

    @contextmanager
    def _busy(self, button: widgets.Button):
        """The button is disabled (and says so) while its request runs."""
        label = button.description
        button.disabled, button.description = True, "Working..."
        try:
            yield
        finally:
            button.disabled, button.description = False, label

    def _say(self, text: str, error: bool = False) -> None:
        colour = "#b00020" if error else "#444"
        self.status.value = f"<span style='color:{colour}'>{text}</span>"

    # ------------------------------------------------------------------------------ callbacks
    def on_generate(self, _=None) -> None:
        """n images of the prompt with seeds seed..seed+n-1 into the grid."""
        if self.generate_button.disabled:
            return  # Enter pressed while a grid is being made
        started = time.perf_counter()
        settings = self.settings()
        with self._busy(self.generate_button):
            self._check_prompts(settings["prompt"])
            try:
                images = self.sampler().generate(
                    settings["prompt"], n=settings["n"], seed=settings["seed"], psi=settings["psi"]
                )
            except (ValueError, FileNotFoundError) as err:
                self._failed(err)
                return
            self._show("grid", self.image, images, settings, started)

    def on_interpolate(self, _=None) -> None:
        """n images (the grid's latents) at the condition Mix of the way from prompt to second prompt."""
        started = time.perf_counter()
        settings = {**self.settings(), "prompt_b": self.prompt_b.value.strip(), "t": self.t.value}
        if not settings["prompt_b"]:
            self._say("type a second prompt ('To prompt') to interpolate towards", error=True)
            return
        with self._busy(self.interpolate_button):
            self._check_prompts(settings["prompt"], settings["prompt_b"])
            try:
                images = self.sampler().interpolate(
                    settings["prompt"],
                    settings["prompt_b"],
                    settings["t"],
                    n=settings["n"],
                    seed=settings["seed"],
                    psi=settings["psi"],
                )
            except (ValueError, FileNotFoundError) as err:
                self._say(str(err), error=True)
                return
            self._show("interpolation", self.interp_image, images, settings, started)

    def on_save(self, _=None) -> list[Path]:
        """Write the shown grids as PNGs with their settings as JSON next to them; returns the PNGs."""
        if not self.last:
            self._say("nothing to save yet: press Generate first", error=True)
            return []
        self.out_dir.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        written = []
        for kind, (picture, settings) in self.last.items():
            path = self.out_dir / f"{stamp}-{kind}-{slug(settings['prompt'])}-seed{settings['seed']}.png"
            picture.save(path, format="PNG")
            path.with_suffix(".json").write_text(json.dumps(settings, indent=2))
            written.append(path)
        self._say("saved " + ", ".join(str(p) for p in written))
        return written


def _same_path(a: str, b: str) -> bool:
    return Path(resolve_asset(a)).resolve() == Path(resolve_asset(b)).resolve()


def _scrolling(image: widgets.Image) -> widgets.Box:
    """The image in a box of at most GRID_HEIGHT that scrolls (64 images make a grid 4,000 px tall)."""
    return widgets.Box([image], layout=widgets.Layout(max_height=GRID_HEIGHT, overflow="auto"))


def _describe(settings: dict) -> str:
    return f"seeds {settings['seed']}..{settings['seed'] + settings['n'] - 1} · psi {settings['psi']:g}"


def _escape(text: str) -> str:
    return html.escape(text, quote=False)
