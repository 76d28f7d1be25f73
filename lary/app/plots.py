"""The page's pictures, as PIL images: the timeline, the code histogram, the codebook usage and the "what if" panel.

Figures are drawn with matplotlib's object API on the Agg canvas (no pyplot), so requests on several threads never
share a global figure.
"""

from __future__ import annotations

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from PIL import Image

from lary.app.analysis import Analysis, WhatIf

STRIP_FRAMES = 10  # thumbnails above the timeline
WIDTH = 10.0  # inches, at 100 dpi: 1000 pixels, the page's width
HEATMAP_WIDTH = 0.86 * WIDTH  # what is left beside the axis labels and the colour bar
MAX_STRIP_HEIGHT = 2.2
MAX_LABELLED_CELLS = 800  # write the code in each timeline cell up to this many cells


def code_colours(codebook_size: int) -> ListedColormap:
    """One distinct colour per code (tab10 / tab20; a continuous map past 20 codes)."""
    if codebook_size <= 20:
        base = colormaps["tab10" if codebook_size <= 10 else "tab20"]
        return ListedColormap([base(code) for code in range(codebook_size)])
    return ListedColormap(colormaps["viridis"](np.linspace(0, 1, codebook_size)))


def _image(figure: Figure) -> Image.Image:
    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    return Image.fromarray(np.asarray(canvas.buffer_rgba())[..., :3].copy())


def _pair_labels(analysis: Analysis) -> list[str]:
    return [f"{a}→{b}" for a, b in map(analysis.frame_numbers, range(analysis.pairs))]


def timeline(analysis: Analysis) -> Image.Image:
    """Frames over the tokens x time heatmap: column p is pair p, row i its i-th code (colour = code). The strip
    splits the columns into equal slots and shows, in each, the first frame of the slot's first pair."""
    codes = analysis.action_indices  # (pairs, n)
    pairs, tokens = codes.shape
    slots = min(pairs, STRIP_FRAMES)
    slot = pairs / slots  # columns per thumbnail
    column = HEATMAP_WIDTH / pairs  # inches
    aspect = analysis.clip.thumbnails[0].shape[0] / analysis.clip.thumbnails[0].shape[1]
    strip_height = min(MAX_STRIP_HEIGHT, 0.94 * slot * column * aspect)
    thumb_width = strip_height / aspect / column  # in columns: the aspect kept
    heat_height = min(4.0, max(1.0, 0.28 * tokens))
    figure = Figure(figsize=(WIDTH, strip_height + heat_height + 1.1), dpi=100, layout="constrained")
    strip_axes, heat_axes = figure.subplots(2, 1, sharex=True, height_ratios=[strip_height, heat_height])

    for index in range(slots):
        centre = -0.5 + (index + 0.5) * slot
        extent = (centre - thumb_width / 2, centre + thumb_width / 2, 0, 1)
        thumbnail = analysis.clip.thumbnails[int(index * slot)]
        strip_axes.imshow(thumbnail, extent=extent, aspect="auto", interpolation="bilinear")
    strip_axes.set(xlim=(-0.5, pairs - 0.5), ylim=(0, 1), yticks=[])
    strip_axes.tick_params(bottom=False)
    for side in strip_axes.spines.values():
        side.set_visible(False)
    strip_axes.set_title(
        f"{analysis.clip.name}: {pairs} pairs (frames t → t+{analysis.stride}), {tokens} latent action codes each",
        fontsize=10, loc="left",
    )

    colours = code_colours(analysis.codebook_size)
    heat = heat_axes.imshow(
        codes.T, cmap=colours, vmin=-0.5, vmax=analysis.codebook_size - 0.5, aspect="auto", interpolation="nearest",
        extent=(-0.5, pairs - 0.5, tokens - 0.5, -0.5),
    )
    if pairs * tokens <= MAX_LABELLED_CELLS and pairs <= 48:
        for (pair, token), code in np.ndenumerate(codes):
            heat_axes.text(pair, token, str(code), ha="center", va="center", fontsize=7, color="white")
    step = max(1, int(np.ceil(pairs / 12)))
    labels = _pair_labels(analysis)
    heat_axes.set_xticks(range(0, pairs, step), [labels[p] for p in range(0, pairs, step)], fontsize=8)
    token_step = max(1, int(np.ceil(tokens / 16)))
    heat_axes.set_yticks(range(0, tokens, token_step))
    heat_axes.set(xlabel="pair (frame → frame)", ylabel="token")
    bar = figure.colorbar(heat, ax=heat_axes, pad=0.01, fraction=0.03)
    bar.set_ticks(range(0, analysis.codebook_size, max(1, analysis.codebook_size // 16)))
    bar.set_label("code")
    return _image(figure)


def code_histogram(analysis: Analysis) -> Image.Image:
    """How often each code occurs, over every token of every pair."""
    size = analysis.codebook_size
    counts = np.bincount(analysis.action_indices.reshape(-1), minlength=size)
    figure = Figure(figsize=(WIDTH / 2, 3.2), dpi=100, layout="constrained")
    axes = figure.subplots()
    colours = code_colours(size)
    axes.bar(range(size), counts, color=[colours(code) for code in range(size)])
    share = counts / max(1, counts.sum())
    if size <= 32:
        for code, (count, part) in enumerate(zip(counts, share)):
            if count:
                axes.text(code, count, f"{100 * part:.0f}%", ha="center", va="bottom", fontsize=7)
    axes.set(xlabel="code", ylabel="tokens")
    axes.set_title(f"Code histogram: {counts.sum()} tokens in {analysis.pairs} pairs", loc="left", fontsize=10)
    axes.set_xticks(range(0, size, max(1, size // 16)))
    axes.margins(y=0.15)
    return _image(figure)


def codebook_usage(analysis: Analysis) -> Image.Image:
    """Token position x code counts, titled with the codes used and the perplexity (the codebook's effective size)."""
    size = analysis.codebook_size
    codes = analysis.action_indices
    usage = np.stack([np.bincount(column, minlength=size) for column in codes.T])  # (n, K)
    share = usage.sum(0) / max(1, usage.sum())
    perplexity = float(np.exp(-(share[share > 0] * np.log(share[share > 0])).sum()))
    figure = Figure(figsize=(WIDTH / 2, 3.2), dpi=100, layout="constrained")
    axes = figure.subplots()
    image = axes.imshow(usage, cmap="Blues", aspect="auto", interpolation="nearest")
    if usage.size <= 400:
        for (token, code), count in np.ndenumerate(usage):
            if count:
                colour = "white" if count > usage.max() / 2 else "black"
                axes.text(code, token, str(count), ha="center", va="center", fontsize=7, color=colour)
    axes.set(xlabel="code", ylabel="token")
    axes.set_title(f"Codebook usage: {int((share > 0).sum())} of {size} codes, perplexity {perplexity:.2f}", loc="left",
                   fontsize=10)
    axes.set_xticks(range(0, size, max(1, size // 16)))
    axes.set_yticks(range(0, len(usage), max(1, len(usage) // 16)))
    figure.colorbar(image, ax=axes, pad=0.01, fraction=0.05, label="pairs")
    return _image(figure)


def pca_rgb(*features: np.ndarray) -> list[np.ndarray]:
    """Patch features (h, w, D) -> colours (h, w, 3) in [0, 1] from one 3-component PCA fit on all of them
    together, so a colour means the same features in every panel."""
    flat = np.concatenate([f.reshape(-1, f.shape[-1]) for f in features]).astype(np.float64)
    centred = flat - flat.mean(0)
    _, _, components = np.linalg.svd(centred, full_matrices=False)
    projected = np.zeros((len(flat), 3))
    projected[:, : min(3, len(components))] = centred @ components[:3].T
    low, high = np.percentile(projected, [1, 99], axis=0)
    colours = np.clip((projected - low) / np.maximum(high - low, 1e-12), 0, 1)
    sizes = np.cumsum([0] + [f.shape[0] * f.shape[1] for f in features])
    return [colours[a:b].reshape(*f.shape[:2], 3) for a, b, f in zip(sizes[:-1], sizes[1:], features)]


def what_if(result: WhatIf) -> Image.Image:
    """The pair's two frames, then the next frame's DINOv3 features and the decoder's prediction for the chosen
    codes, both as PCA colours."""
    real, predicted = pca_rgb(result.real, result.predicted)
    first, second = result.frames
    panels = [
        (result.first_image, f"frame {first}"),
        (result.next_image, f"frame {second} (real)"),
        (real, f"frame {second}: DINOv3 features"),
        (predicted, f"predicted from frame {first}\n+ codes {' '.join(map(str, result.codes))}"),
    ]
    figure = Figure(figsize=(WIDTH, 3.0), dpi=100, layout="constrained")
    for axes, (image, title) in zip(figure.subplots(1, 4), panels):
        axes.imshow(image, interpolation="nearest" if image.dtype != np.uint8 else "bilinear")
        axes.set_title(title, fontsize=9)
        axes.axis("off")
    return _image(figure)
