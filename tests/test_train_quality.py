"""The embedded model on held-out synthetic clips, measured again and held to the numbers its card states
(`examples/tiny-lapa-dinov3/eval_results.json`, written by `examples/tiny_lapa_dinov3_numbers.py`)."""

import json
import runpy

import pytest
from conftest import REPO_ROOT
from transformers import AutoModel

SCRIPT = runpy.run_path(str(REPO_ROOT / "examples" / "tiny_lapa_dinov3_numbers.py"))
MODEL = SCRIPT["MODEL"]  # examples/tiny-lapa-dinov3, what `lary demo` runs
CARD = json.loads(SCRIPT["RESULTS"].read_text())
# The measurement is deterministic; the tolerances only absorb float differences between builds and thread counts,
# which can flip the few pairs the probe is unsure of (one test pair is 0.11 points at stride 1).
ACCURACY_POINTS = 0.03
PERPLEXITY = 0.3
MSE = 0.01


@pytest.fixture(scope="module")
def measured() -> dict:
    model = AutoModel.from_pretrained(str(MODEL))
    return SCRIPT["measure"](model)


@pytest.mark.parametrize("stride", ["stride_1", "stride_2"])
@pytest.mark.parametrize("representation", ["continuous_latent_actions", "action_indices", "latent_actions"])
def test_a_linear_probe_reads_the_direction_as_the_card_states(measured, representation, stride):
    card = CARD["probe_accuracy"][stride][representation]
    assert measured["probe_accuracy"][stride][representation] == pytest.approx(card, abs=ACCURACY_POINTS)
    assert card > 0.85  # chance: 1/8


@pytest.mark.parametrize("stride", ["stride_1", "stride_2"])
def test_codebook_use_is_as_the_card_states(measured, stride):
    card = CARD["codebook"][stride]
    assert measured["codebook"][stride]["codebook_usage"] == card["codebook_usage"] == 1.0
    assert measured["codebook"][stride]["perplexity"] == pytest.approx(card["perplexity"], abs=PERPLEXITY)


def test_the_decoder_relies_on_the_action_as_the_card_states(measured):
    mse = measured["decoder_mse"]
    for name, card in CARD["decoder_mse"].items():
        assert mse[name] == pytest.approx(card, abs=MSE), name
    assert mse["prediction"] < mse["other_pair_actions"] < mse["copy_first_frame"]


def test_the_card_states_the_recorded_numbers():
    readme = " ".join((MODEL / "README.md").read_text().split())
    for line in SCRIPT["card_lines"](CARD):
        assert line in readme
    assert SCRIPT["training_numbers"](MODEL / "log.jsonl") == CARD["training"]
