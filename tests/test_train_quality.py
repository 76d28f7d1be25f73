"""The embedded model on held-out synthetic clips: its latent actions carry the motion, and it uses its codebook."""

import pytest
from transformers import AutoModel

from lary.hub import EMBEDDED_MODEL
from lary.synthetic import make_clips
from lary.training.probe import codebook_usage, latent_actions, linear_probe_accuracy


@pytest.fixture(scope="module")
def model():
    return AutoModel.from_pretrained(str(EMBEDDED_MODEL))


def test_a_linear_probe_reads_the_motion_direction_from_the_latent_actions(model):
    # seeds unlike the training data's (synthetic:1024:1): the probe is fit on one set of clips, scored on another
    train_x, train_y, _ = latent_actions(model, make_clips(256, seed=1000))
    test_x, test_y, _ = latent_actions(model, make_clips(128, seed=2000))
    assert linear_probe_accuracy(train_x, train_y, test_x, test_y) >= 0.9  # chance: 1/8


def test_embedded_model_uses_more_than_half_of_its_codebook(model):
    _, labels, indices = latent_actions(model, make_clips(64, seed=2000))
    assert len(labels) == 64 * 7
    assert codebook_usage(indices, model.config.codebook_size) > 0.5
