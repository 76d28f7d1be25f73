"""`lary extract`: sharded, resumable latent-action (or encoder-feature) extraction with accelerate."""

from .command import add_arguments, main

__all__ = ["add_arguments", "main"]
