"""Training LAPA-DINOv3-style latent action models: `lary train`."""

from lary.training.trainer import TrainingArguments, build_model, train

__all__ = ["TrainingArguments", "build_model", "train"]
