"""Every number that `tiny-lapa-dinov3/README.md` states, computed from the embedded model and its `log.jsonl`.

Prints the card's "What it does" lines; `--write` also saves the numbers to `tiny-lapa-dinov3/eval_results.json`,
which `tests/test_train_quality.py` holds the model and the card to. About a minute on 2 CPU cores.

    python examples/tiny_lapa_dinov3_numbers.py [--write]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from transformers import AutoModel

from lary.synthetic import make_clips
from lary.training.probe import codebook_use, decoder_errors, direction_probe
from lary.training.report import read_log

MODEL = Path(__file__).resolve().parent / "tiny-lapa-dinov3"
RESULTS = MODEL / "eval_results.json"
# Seeds unlike the training data's (synthetic:1024:1): the probe is fit on one set of clips, scored on another.
FIT_CLIPS, TEST_CLIPS = (256, 1000), (128, 2000)
STRIDES = (1, 2)


def measure(model) -> dict:
    """Probe accuracies and codebook use at each stride, and decoder errors, on held-out clips."""
    fit, test = make_clips(FIT_CLIPS[0], seed=FIT_CLIPS[1]), make_clips(TEST_CLIPS[0], seed=TEST_CLIPS[1])
    numbers = {"probe_accuracy": {}, "codebook": {}, "codebook_size": model.config.codebook_size}
    for stride in STRIDES:
        accuracy, indices = direction_probe(model, fit, test, stride)
        numbers["probe_accuracy"][f"stride_{stride}"] = accuracy
        numbers["codebook"][f"stride_{stride}"] = codebook_use(indices, model.config.codebook_size)
    numbers["decoder_mse"] = decoder_errors(model, test)
    return numbers


def training_numbers(log_path: Path) -> dict:
    """First and last logged loss, and the last perplexity, of the training run."""
    records = read_log(log_path)
    first, last = records[0], records[-1]
    return {"first_step": first["step"], "first_loss": first["loss"], "last_step": last["step"],
            "last_loss": last["loss"], "last_perplexity": last["perplexity"]}


def card_lines(numbers: dict) -> list[str]:
    """The card's "What it does" bullets, in its words."""
    acc, codebook, mse, run = numbers["probe_accuracy"], numbers["codebook"], numbers["decoder_mse"], numbers["training"]

    def pct(name: str) -> str:
        return f"{acc['stride_1'][name]:.0%} ({acc['stride_2'][name]:.0%})"

    size = numbers["codebook_size"]
    used = round(codebook["stride_1"]["codebook_usage"] * size)
    in_use = "All" if used == size else f"{used} of the"
    return [
        f"- A linear probe predicts the motion direction (chance 12.5%) of consecutive frames (frames two apart) with "
        f"{pct('continuous_latent_actions')} accuracy from the continuous latent actions, "
        f"{pct('action_indices')} from the one-hot codes and {pct('latent_actions')} from the `latent_actions` vectors.",
        f"- {in_use} {size} codebook entries are in use on held-out pairs (perplexity "
        f"{codebook['stride_1']['perplexity']:.1f} for consecutive frames, {codebook['stride_2']['perplexity']:.1f} two "
        f"apart; {run['last_perplexity']:.1f} at the last training step).",
        f"- Feature MSE fell from {run['first_loss']:.2f} (step {run['first_step']:,}) to {run['last_loss']:.2f} "
        f"(step {run['last_step']:,}) in training. On held-out pairs the decoder's prediction is at "
        f"{mse['prediction']:.2f}, copying the first frame's features would be at {mse['copy_first_frame']:.2f}, and "
        f"decoding with another pair's latent actions at {mse['other_pair_actions']:.2f}: the decoder relies on the "
        f"action.",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--write", action="store_true", help=f"save the numbers to {RESULTS}")
    args = parser.parse_args()

    # the embedded model, as `lary demo` loads it
    model = AutoModel.from_pretrained(str(MODEL))  # `import lary` registered the classes
    # held-out measurements, then the training run's own log
    numbers = {**measure(model), "training": training_numbers(MODEL / "log.jsonl")}
    print("\n".join(card_lines(numbers)))
    if args.write:
        RESULTS.write_text(json.dumps(numbers, indent=2) + "\n")
        print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
