"""The embedded model on held-out synthetic clips: codebook usage (the issue's probe target is not met yet)."""

from transformers import AutoModel

from lary.demo import EMBEDDED_MODEL
from lary.synthetic import make_clips
from lary.training.probe import codebook_usage, latent_actions


def test_embedded_model_uses_more_than_half_of_its_codebook():
    model = AutoModel.from_pretrained(str(EMBEDDED_MODEL), trust_remote_code=True)
    _, labels, indices = latent_actions(model, make_clips(64, seed=2000))
    assert len(labels) == 64 * 7
    assert codebook_usage(indices, model.config.codebook_size) > 0.5
