"""MkDocs hook: the ifcbUTOPIA CNN drawn from the model itself at every build.

`model.architectures.build("utopia-b3", ...)` is built (untrained) and walked layer by layer: the diagram (an SVG,
one box per block of layers) and the layer table of `background/utopia-cnn.md` are what Keras reports, so the page
cannot drift from the architecture the code trains and runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from html import escape
from typing import Any

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.structure.files import File, Files
from mkdocs.structure.pages import Page

ARCH, CLASSES, SIZE = "utopia-b3", 10, 128
PAGE, SVG = "background/utopia-cnn.md", "background/utopia-b3.svg"
MARKER = "<!-- layer table -->"
#: Fill colour of a block by the kind of its first layer.
COLOURS = {"InputLayer": "#eceff1", "Rescaling": "#eceff1", "Conv2D": "#b3e5fc", "MaxPooling2D": "#ffe0b2",
           "Flatten": "#eceff1", "Dense": "#c8e6c9"}  # fmt: skip
BOX_W, BOX_H, GAP, MARGIN = 560, 40, 16, 20


@dataclass
class Layer:
    name: str
    kind: str
    shape: tuple[int, ...]
    params: int


@dataclass
class Block:
    """Consecutive layers that share a name prefix (`block3_conv`, `block3_relu`, `block3_bn` → `block3`)."""

    name: str
    layers: list[Layer]


def model_layers() -> list[Layer]:
    """Every layer of the architecture as Keras builds it: name, type, output shape (without the batch), parameters."""
    from model.architectures import build

    model: Any = build(ARCH, CLASSES, SIZE)
    return [
        Layer(layer.name, type(layer).__name__, tuple(layer.output.shape[1:]), layer.count_params())
        for layer in model.layers
    ]


def blocks(layers: list[Layer]) -> list[Block]:
    out: list[Block] = []
    for layer in layers:
        prefix = layer.name.split("_")[0]
        if out and out[-1].name == prefix:
            out[-1].layers.append(layer)
        else:
            out.append(Block(prefix, [layer]))
    return out


def _shape(shape: tuple[int, ...]) -> str:
    return " x ".join(str(n) for n in shape)


def _describe(block: Block) -> str:
    name = block.layers[0].name if len(block.layers) == 1 else block.name
    return f"{name}: " + " → ".join(layer.kind for layer in block.layers)


def svg(layers: list[Layer]) -> str:
    """A top-to-bottom diagram: one box per block (its layer types, output shape, parameters), arrows between."""
    groups = blocks(layers)
    height = 2 * MARGIN + len(groups) * BOX_H + (len(groups) - 1) * GAP
    width = BOX_W + 2 * MARGIN
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
        'font-family="system-ui, sans-serif" font-size="13">',
        '<defs><marker id="arrow" markerWidth="8" markerHeight="8" refX="4" refY="4" orient="auto">'
        '<path d="M0,0 L8,4 L0,8 z" fill="#546e7a"/></marker></defs>',
    ]
    for i, block in enumerate(groups):
        y = MARGIN + i * (BOX_H + GAP)
        colour = COLOURS.get(block.layers[0].kind, "#eceff1")
        params = sum(layer.params for layer in block.layers)
        detail = f"out {_shape(block.layers[-1].shape)}" + (f" · {params:,} parameters" if params else "")
        parts += [
            f'<rect x="{MARGIN}" y="{y}" width="{BOX_W}" height="{BOX_H}" rx="6" fill="{colour}" stroke="#546e7a"/>',
            f'<text x="{MARGIN + 10}" y="{y + 16}" font-weight="600">{escape(_describe(block))}</text>',
            f'<text x="{MARGIN + 10}" y="{y + 32}" fill="#37474f">{escape(detail)}</text>',
        ]
        if i:
            x = MARGIN + BOX_W // 2
            parts.append(f'<line x1="{x}" y1="{y - GAP}" x2="{x}" y2="{y - 3}" stroke="#546e7a" '
                         'marker-end="url(#arrow)"/>')  # fmt: skip
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def table(layers: list[Layer]) -> str:
    """The layer table in Markdown, with the total of parameters."""
    rows = ["| # | layer | type | output shape | parameters |", "|---:|---|---|---|---:|"]
    rows += [f"| {i} | `{layer.name}` | {layer.kind} | {_shape(layer.shape)} | {layer.params:,} |"
             for i, layer in enumerate(layers, start=1)]  # fmt: skip
    total = sum(layer.params for layer in layers)
    summary = f"{len(layers)} layers, {total:,} parameters in all ({CLASSES} classes, input {SIZE} x {SIZE})."
    return "\n".join(rows) + f"\n\n{summary}\n"


_layers: list[Layer] = []


def on_files(files: Files, config: MkDocsConfig) -> Files:
    _layers[:] = model_layers()
    files.append(File.generated(config, SVG, content=svg(_layers)))
    return files


def on_page_markdown(markdown: str, page: Page, config: MkDocsConfig, files: Files) -> str:
    if page.file.src_uri != PAGE:
        return markdown
    if MARKER not in markdown:
        raise ValueError(f"{PAGE} has lost its {MARKER!r} line, where the generated layer table goes")
    return markdown.replace(MARKER, table(_layers))
