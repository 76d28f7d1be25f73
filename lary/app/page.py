"""The Gradio page of `lary app` and the Hub Space: a video in, its latent actions out as pictures, a "what if" panel
for chosen codes, and the rows to download.

Handlers turn bad input (`LaryError`, and what an upload can get wrong) into a message in the page; anything else
is logged and shown as a short apology, and the page keeps serving. Every handler that runs the model shares one
queue (`concurrency_id`), so requests take turns on the one model in memory.
"""

from __future__ import annotations

import functools
import html
import logging
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import gradio as gr

from lary.app import plots
from lary.app.analysis import Analysis, Analyzer, WhatIf, parse_codes, write_downloads
from lary.app.limits import MEGABYTE, Limits
from lary.app.sessions import SessionStore
from lary.errors import LaryError
from lary.hub import EMBEDDED_MODEL_NOTE, is_embedded_model
from lary.synthetic import DIRECTIONS, make_clip, write_video

logger = logging.getLogger(__name__)

TITLE = "LAPA-DINOv3 latent actions"
REPOSITORY_URL = "https://huggingface.co/AGI-Eval/LAPA-DINOv3"
MAX_STRIDE = 30
SESSION_SECONDS = 3600  # a visitor's last analysis is kept at most this long after its last use (`SessionStore`)
# Visitors whose page state (a key, and the components a request updated) gradio keeps, the oldest dropped first
STATE_SESSIONS = 1000
DOWNLOAD_SECONDS = 3600  # download files are deleted after this long
# Example clips (`lary.synthetic`): a shape moving one way on a still background, the motion known. At 128 pixels
# and 10-12 pixels a frame they are close to the embedded model's training clips (64 pixels, 6-10) once resized, and
# the shape stays in view for the 10 frames.
EXAMPLE_DIRECTIONS = (0, 2, 5, 6)
EXAMPLE_FRAMES, EXAMPLE_SIZE, EXAMPLE_SPEED, EXAMPLE_FPS = 10, 128, (10.0, 12.0), 8


def readable_errors(handler: Callable) -> Callable:
    """A handler whose failures reach the page as one readable message (`gr.Error`), never a traceback."""

    @functools.wraps(handler)
    def wrapped(*args, **kwargs):
        try:
            return handler(*args, **kwargs)
        except gr.Error:
            raise
        except LaryError as error:
            logger.info("refused: %s", error)
            message = html.escape(str(error), quote=False)  # gr.Error shows HTML
            raise gr.Error(message, title="Cannot do that", print_exception=False) from None
        except MemoryError:
            logger.exception("out of memory in %s", handler.__name__)
            raise gr.Error("Out of memory: try fewer frames or a smaller video.", print_exception=False) from None
        except Exception:
            logger.exception("unexpected error in %s", handler.__name__)
            raise gr.Error("Something went wrong on our side (it is logged). Try another video or other settings.",
                           print_exception=False) from None

    return wrapped


def example_clips(folder: Path) -> list[tuple[Path, str]]:
    """The example videos (H.264 .mp4 that browsers play) and their labels, written to `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    clips = []
    for direction in EXAMPLE_DIRECTIONS:
        name = DIRECTIONS[direction]
        clip = make_clip(direction, num_frames=EXAMPLE_FRAMES, size=EXAMPLE_SIZE, speed=EXAMPLE_SPEED, seed=direction)
        path = write_video(clip.frames, folder / f"moving_{name}.mp4", fps=EXAMPLE_FPS, pix_fmt="yuv420p")
        clips.append((path, f"moving {name}"))
    return clips


def _download_folder(root: Path) -> Path:
    """A new folder for one request's downloads; those of requests older than `DOWNLOAD_SECONDS` are deleted."""
    root.mkdir(parents=True, exist_ok=True)
    for old in root.iterdir():
        if time.time() - old.stat().st_mtime > DOWNLOAD_SECONDS:
            shutil.rmtree(old, ignore_errors=True)
    folder = root / uuid.uuid4().hex
    folder.mkdir()
    return folder


def _intro(analyzer: Analyzer) -> str:
    config = analyzer.model.config
    size = analyzer.processor.size
    model = Path(analyzer.name).name if Path(analyzer.name).is_dir() else analyzer.name  # not the server's folders
    return f"""# {TITLE}

Drop in a video (or pick an example clip below) to see its **latent actions**: for every pair of frames
`(t, t + stride)`, [LAPA-DINOv3]({REPOSITORY_URL}) encodes both frames with a frozen DINOv3 ViT and quantizes what
changed into {config.code_seq_len} discrete codes (a codebook of {config.codebook_size}). Its decoder predicts the
next frame's DINOv3 features from the first frame and the codes: try other codes in the *what if* panel.

Model: `{model}` ({size}x{size} input, on {analyzer.device.type}). Limits: {analyzer.limits.describe()}.
Run it on your machine: `pip install -e ".[app]"` in a checkout of lary, then `lary app`.{_embedded_note(analyzer)}"""


def _embedded_note(analyzer: Analyzer) -> str:
    """A warning when the page runs the embedded tiny model (`lary app` without --model), which is no DINOv3."""
    if not is_embedded_model(analyzer.name):
        return ""
    note = EMBEDDED_MODEL_NOTE.replace("--model AGI-Eval/LAPA-DINOv3", "`lary app --model AGI-Eval/LAPA-DINOv3`")
    return f"\n\n> **Note:** this page runs {note}."


def _summary(analysis: Analysis) -> str:
    clip = analysis.clip
    first, last = int(clip.frame_indices[0]), int(clip.frame_indices[-1])
    used = len(set(analysis.action_indices.reshape(-1).tolist()))
    name = html.escape(clip.name, quote=False)
    lines = [
        f"**{name}**: {clip.width}x{clip.height}, {clip.fps:g} fps, {clip.num_frames} frames. "
        f"Frames {first} to {last}, stride {analysis.stride}: **{analysis.pairs} pairs** of "
        f"{analysis.action_indices.shape[1]} codes, {used} of {analysis.codebook_size} codes used, "
        f"in {analysis.seconds:.1f} s."
    ]
    if clip.note:
        lines.append(f"Note: {html.escape(clip.note, quote=False)}.")
    return "\n\n".join(lines)


def _what_if_summary(result: WhatIf) -> str:
    first, second = result.frames
    return (
        f"Feature MSE to the real frame {second} (lower is closer):\n\n"
        f"| prediction from frame {first} | MSE |\n|---|---|\n"
        f"| with codes `{' '.join(map(str, result.codes))}` | {result.mse:.4f} |\n"
        f"| with the pair's own codes | {result.own_codes_mse:.4f} |\n"
        f"| copying frame {first} (nothing moves) | {result.copy_mse:.4f} |"
    )


def _codes_text(analysis: Analysis, pair: int) -> str:
    return " ".join(map(str, analysis.action_indices[pair].tolist()))


def _picture(label: str, elem_id: str) -> gr.Image:
    """An output figure. It carries its title, which a label box would cover: the label is for screen readers."""
    return gr.Image(label=label, format="png", interactive=False, show_label=False, buttons=["download", "fullscreen"],
                    elem_id=elem_id)


def build_app(analyzer: Analyzer) -> gr.Blocks:
    """The page, with the model loaded (once, here) and the example clips written."""
    analyzer.load()
    config = analyzer.model.config
    work = tempfile.TemporaryDirectory(prefix="lary-app-")  # examples and downloads; removed when the app is
    examples = example_clips(Path(work.name) / "examples")
    downloads = Path(work.name) / "downloads"
    sessions = SessionStore(analyzer.limits.max_held_mb * MEGABYTE, SESSION_SECONDS)

    @readable_errors
    def extract(
        held: str | None, video: str | None, stride: int, first: int | None, last: int | None, progress=gr.Progress()
    ):
        if not video:
            raise LaryError("upload a video, or pick one of the example clips, first")
        analysis = analyzer.analyse(video, stride, first, last, progress=lambda f, m: progress(f, desc=m))
        progress(1.0, desc="drawing")
        files = write_downloads(analysis, _download_folder(downloads))
        pairs = gr.Slider(maximum=analysis.pairs - 1, value=0, interactive=analysis.pairs > 1)
        return (
            sessions.put(analysis, replaces=held),
            _summary(analysis),
            plots.timeline(analysis),
            plots.code_histogram(analysis),
            plots.codebook_usage(analysis),
            [str(path) for path in files],
            pairs,
            _codes_text(analysis, 0),
            pairs,
        )

    @readable_errors
    def what_if(held: str | None, pair: int, codes: str):
        analysis = sessions.get(held)
        result = analyzer.what_if(analysis, pair, parse_codes(codes, config.code_seq_len, analysis.codebook_size))
        return plots.what_if(result), _what_if_summary(result)

    @readable_errors
    def take_codes(held: str | None, pair: int) -> str:
        return _codes_text(sessions.get(held), int(pair))  # the slider keeps `pair` within the clip's pairs

    with gr.Blocks(title=TITLE, analytics_enabled=False, delete_cache=(1800, SESSION_SECONDS)) as blocks:
        blocks.lary_workdir, blocks.lary_sessions = work, sessions  # live as long as the page
        gr.Markdown(_intro(analyzer))
        state = gr.State(None, time_to_live=SESSION_SECONDS)  # the key of the visitor's analysis in `sessions`
        with gr.Row():
            with gr.Column(scale=2, min_width=320):
                video = gr.Video(label="Video", sources=["upload"], elem_id="video")
                stride = gr.Slider(1, MAX_STRIDE, value=1, step=1, label="Stride",
                                   info="pairs of frames (t, t + stride)")
                with gr.Row():
                    first = gr.Number(0, precision=0, minimum=0, label="First frame")
                    last = gr.Number(0, precision=0, minimum=0, label="Last frame",
                                     info=f"0: up to {analyzer.limits.max_frames} frames")
                run = gr.Button("Extract latent actions", variant="primary", elem_id="extract")
                gr.Examples(
                    [[str(path)] for path, _ in examples], inputs=[video], cache_examples=False,
                    example_labels=[label for _, label in examples], label="Example clips: one shape, known motion",
                )
            with gr.Column(scale=5):
                summary = gr.Markdown("Upload a video or pick an example, then press *Extract latent actions*.")
                timeline = _picture("Timeline: frames, and each pair's codes (tokens x time)", "timeline")
                with gr.Row():
                    histogram = _picture("Code histogram", "histogram")
                    usage = _picture("Codebook usage", "usage")
                files = gr.File(label="Download: one row per pair, the columns of `lary extract` (Parquet, JSON)",
                                file_count="multiple", interactive=False, elem_id="downloads")

        gr.Markdown(
            "## What if?\nPick a pair (its first frame and its real next frame) and a code sequence: the decoder "
            "predicts the next frame's DINOv3 features from the first frame and those codes. Real and predicted "
            "features are shown in the same colours (one PCA of both, to RGB)."
        )
        with gr.Row():
            pair = gr.Slider(0, 1, value=0, step=1, label="Pair", info="first frame and real next frame")
            codes = gr.Textbox(label=f"Codes: {config.code_seq_len} numbers from 0 to {config.codebook_size - 1}",
                               placeholder=" ".join(["0"] * config.code_seq_len), elem_id="codes")
        with gr.Row():
            source = gr.Slider(0, 1, value=0, step=1, label="Take the codes of pair")
            take = gr.Button("Take its codes")
            predict = gr.Button("Predict the next frame's features", variant="primary")
        what_if_image = _picture("What if", "what-if")
        what_if_text = gr.Markdown()

        model_queue = {"concurrency_id": "model", "concurrency_limit": 1}
        what_if_io = {"fn": what_if, "inputs": [state, pair, codes], "outputs": [what_if_image, what_if_text]}
        predict.click(**what_if_io, api_name="what_if", **model_queue)  # first: the public one gets the name
        run.click(
            extract, [state, video, stride, first, last],
            [state, summary, timeline, histogram, usage, files, pair, codes, source],
            api_name="extract", **model_queue,
        ).success(**what_if_io, api_visibility="private", **model_queue)
        pair.release(**what_if_io, api_visibility="private", **model_queue)
        take.click(take_codes, [state, source], codes, api_name="take_codes")
    blocks.queue(max_size=32)
    return blocks


def launch(blocks: gr.Blocks, limits: Limits, **kwargs):
    """`blocks.launch` with the upload size limit (gradio refuses bigger uploads before they arrive) and at most
    `STATE_SESSIONS` visitors' page state."""
    return blocks.launch(max_file_size=limits.max_file_mb * MEGABYTE, state_session_capacity=STATE_SESSIONS, **kwargs)
