"""transformers' own common model tests (`ModelTesterMixin`, `ConfigTester`) on LAPA-DINOv3.

The installed transformers has no tests; its source distribution (sdist) has the two common files. This module takes
them from the sdist's `tests/` folder that `python tests/transformers_sdist.py` fetches once (`.ci/run` does), or from
`TRANSFORMERS_TESTS`; it never downloads. Without the folder it skips with the reason (in CI it fails instead). About
15 s.

The common files import modules the distribution does not ship (the export and generation mixins, the config
test's common keyword arguments); they are stood in for by empty ones here, which drops nothing these tests use for a
model that neither generates nor exports. The tests that cannot apply to a frame-pair model are skipped below, each
naming our test that checks what it meant to check.
"""

from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile
import unittest
from pathlib import Path

import pytest
import transformers_sdist

COMMON_FILES = ("test_modeling_common.py", "test_configuration_common.py")
STAND_INS = {
    "exporters/test_export.py": "class ExportTesterMixin:\n    pass\n",
    "generation/test_utils.py": "class GenerationTesterMixin:\n    pass\n",
    "utils/test_configuration_utils.py": "config_common_kwargs = {}\n",
}

pytest.importorskip("parameterized", reason="transformers' common tests need `parameterized` (the test extra)")


def _unavailable(reason: str) -> None:
    if os.environ.get("CI"):
        raise RuntimeError(reason)
    pytest.skip(reason, allow_module_level=True)


source = transformers_sdist.tests_folder()
if not source.is_dir():
    _unavailable(f"{source} is absent: fetch transformers' common tests once with `python tests/transformers_sdist.py`")


def _common_tests_package(source: Path) -> str:
    """The two common files as the package `transformers_common_tests` in a temporary folder, with the stand-ins."""
    root = Path(tempfile.mkdtemp(prefix="transformers_common_"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    package = root / "transformers_common_tests"
    package.mkdir()
    for name in COMMON_FILES:
        if not (source / name).is_file():
            raise FileNotFoundError(f"TRANSFORMERS_TESTS={source}: no {name} (the tests/ folder of transformers' sdist)")
        shutil.copyfile(source / name, package / name)
    for name, text in {"__init__.py": "", **STAND_INS}.items():
        (package / name).parent.mkdir(parents=True, exist_ok=True)
        (package / name).write_text(text)
        (package / name).with_name("__init__.py").touch()
    sys.path.insert(0, str(root))
    return package.name


_package = _common_tests_package(source)
configuration_common = __import__(f"{_package}.test_configuration_common", fromlist=["ConfigTester"])
modeling_common = __import__(f"{_package}.test_modeling_common", fromlist=["ModelTesterMixin"])

from lary import LapaDinov3Config, LapaDinov3Model  # noqa: E402


class LapaDinov3ModelTester:
    """A tiny LAPA-DINOv3 and its frame pairs. The common tests' "layers" are the latent action encoder's (spatial,
    then temporal), whose `hidden_states` are the model's; the backbone's are a second kind of hidden state."""

    def __init__(self, parent, batch_size: int = 3, image_size: int = 112, patch_size: int = 16, hidden_size: int = 32,
                 encoder_layers: int = 2, num_attention_heads: int = 4):
        self.parent = parent
        self.batch_size = batch_size
        self.image_size = image_size
        self.patch_size = patch_size
        self.hidden_size = hidden_size
        self.num_hidden_layers = encoder_layers  # the attention layers the common tests count
        self.expected_num_hidden_layers = encoder_layers + 1  # the encoder's input, then each layer
        self.num_hidden_states_types = 2  # hidden_states and backbone_hidden_states
        self.num_attention_heads = num_attention_heads
        self.seq_length = (image_size // patch_size) ** 2
        self.is_training = True

    def get_config(self) -> LapaDinov3Config:
        return LapaDinov3Config(
            backbone_config={"hidden_size": self.hidden_size, "intermediate_size": 64, "num_hidden_layers": 2,
                             "num_attention_heads": self.num_attention_heads, "num_register_tokens": 2,
                             "image_size": self.image_size, "patch_size": self.patch_size},
            quant_dim=8, codebook_size=8, code_seq_len=4, spatial_depth=self.num_hidden_layers // 2,
            temporal_depth=self.num_hidden_layers // 2, decoder_depth=2, dim_head=8, heads=self.num_attention_heads,
        )

    def prepare_config_and_inputs_for_common(self):
        shape = [self.batch_size, 2, 3, self.image_size, self.image_size]
        return self.get_config(), {"pixel_values": modeling_common.floats_tensor(shape)}


class LapaDinov3ModelTest(modeling_common.ModelTesterMixin, unittest.TestCase):
    all_model_classes = (LapaDinov3Model,)
    test_resize_embeddings = False

    def setUp(self):
        self.model_tester = LapaDinov3ModelTester(self)
        self.config_tester = configuration_common.ConfigTester(self, config_class=LapaDinov3Config, has_text_modality=False)

    def test_config(self):
        self.config_tester.run_common_tests()

    @unittest.skip("The input embeddings are DINOv3's patch embedding, a Conv2d: "
                   "test_model_conventions.py::test_input_embeddings_are_the_backbone_patch_embeddings")
    def test_model_get_set_embeddings(self):
        pass

    @unittest.skip("outputs[0] is the integer action_indices, hidden_states[0] the frozen backbone's output, the records "
                   "reshaped views: test_model_conventions.py::test_gradients_reach_every_layer_and_attention_weight")
    def test_retain_grad_hidden_states_attentions(self):
        pass

    @unittest.skip("The first checkpointing layer is the frozen DINOv3's, which runs without gradients: "
                   "test_model_conventions.py::test_gradient_checkpointing_gives_the_same_loss_and_gradients")
    def test_training_gradient_checkpointing(self):
        pass

    test_training_gradient_checkpointing_use_reentrant_false = test_training_gradient_checkpointing
    test_training_gradient_checkpointing_use_reentrant_true = test_training_gradient_checkpointing
