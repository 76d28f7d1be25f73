"""Latent action codes as tokens of a language model's tokenizer: `<ACT_0>` .. `<ACT_{K-1}>`, one per codebook entry.

    tokens = LatentActionTokens.add_to(tokenizer, labeler.config)      # adds <ACT_0> .. <ACT_7>
    model.resize_token_embeddings(len(tokenizer))
    ids = tokens.encode(labels["action_indices"])                     # (N, n) codes -> (N, n) token ids
    codes = tokens.decode(generated_ids)                               # and back; other tokens are refused
    tokens = LatentActionTokens.from_tokenizer(AutoTokenizer.from_pretrained(saved))

One token per code, shared by the n positions of an action, not one per (position, code): that is what LAPA and
UniVLA do. LAPA's LWM gets a separate latent-action vocabulary of the codebook's size (`delta_vocab_size=8`: its own
embedding table and output head) and writes an action as its 4 codes in order; UniVLA adds `<ACT_0>` .. `<ACT_{C-1}>`
(`C = codebook_size`) to the Prismatic/LLaMA tokenizer as special tokens and writes an action as its 4 codes'
tokens. An action is always n tokens in a fixed order, so the language model knows each token's position from the
sequence itself; per-position tokens would add n times as many rows to the embedding and output matrices (128
instead of 8 for the released model) and give each row 1/n of the training signal.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from lary.errors import LaryError

TOKEN = "<ACT_{}>"
# The tokenizer's init kwarg (its tokenizer_config.json entry) that keeps n through `save_pretrained` and a load
CODE_SEQ_LEN_KEY = "latent_action_code_seq_len"


@dataclass(frozen=True, eq=False)
class LatentActionTokens:
    """The token ids of the codes: `ids[k]` is `<ACT_k>`'s (a read-only array). `code_seq_len` (n, codes per action)
    is known when built from a model's config or from a tokenizer `add_to` wrote it into, and then checked by
    `encode`. Equal (and hashed) by value."""

    ids: np.ndarray
    code_seq_len: int | None = None

    def __post_init__(self):
        ids = np.array(self.ids, dtype=np.int64)
        ids.setflags(write=False)  # frozen: the hash and the lookups below stay true
        order = np.argsort(ids, kind="stable")
        object.__setattr__(self, "ids", ids)
        object.__setattr__(self, "_sorted_ids", ids[order])
        object.__setattr__(self, "_sorted_codes", order)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, LatentActionTokens):
            return NotImplemented
        return self.code_seq_len == other.code_seq_len and np.array_equal(self.ids, other.ids)

    def __hash__(self) -> int:
        return hash((self.ids.tobytes(), self.code_seq_len))

    @property
    def codebook_size(self) -> int:
        return len(self.ids)

    @property
    def tokens(self) -> list[str]:
        return [TOKEN.format(code) for code in range(self.codebook_size)]

    @classmethod
    def add_to(cls, tokenizer, config) -> LatentActionTokens:
        """Add `<ACT_0>` .. `<ACT_{codebook_size-1}>` to a 🤗 tokenizer as special tokens (never split, never
        normalised; those it already has are kept), `config` a `LapaDinov3Config` (or anything with `codebook_size`
        and `code_seq_len`). `code_seq_len` is kept in the tokenizer's init kwargs (`save_pretrained` writes it to
        `tokenizer_config.json`), so `from_tokenizer` finds it after a save and a load. Resize the language model's
        embeddings afterwards: `model.resize_token_embeddings(len(tokenizer))`."""
        tokenizer.add_tokens([TOKEN.format(code) for code in range(config.codebook_size)], special_tokens=True)
        tokenizer.init_kwargs[CODE_SEQ_LEN_KEY] = config.code_seq_len
        return cls.from_tokenizer(tokenizer, config)

    @classmethod
    def from_tokenizer(cls, tokenizer, config=None) -> LatentActionTokens:
        """The latent action tokens of a tokenizer (after `add_to`, a save and a load): `<ACT_0>`, `<ACT_1>`, ... as far
        as they go, or exactly `config.codebook_size` of them when `config` is given. `code_seq_len` is the config's,
        else the one `add_to` kept in the tokenizer; a config that disagrees with the tokenizer is refused."""
        wanted = None if config is None else config.codebook_size
        kept = tokenizer.init_kwargs.get(CODE_SEQ_LEN_KEY)
        if kept is not None and (isinstance(kept, bool) or not isinstance(kept, int) or kept < 1):
            raise LaryError(f"the tokenizer's {CODE_SEQ_LEN_KEY} is {kept!r}: a positive integer expected")
        ids: list[int] = []
        while wanted is None or len(ids) < wanted:
            token = TOKEN.format(len(ids))
            token_id = tokenizer.convert_tokens_to_ids(token)
            if token_id is None or token_id == tokenizer.unk_token_id or tokenizer.convert_ids_to_tokens(token_id) != token:
                break
            ids.append(token_id)
        if not ids or (wanted is not None and len(ids) < wanted):
            needed = f"{wanted} of them" if wanted else "<ACT_0> at least"
            raise LaryError(
                f"the tokenizer has {len(ids)} latent action tokens (<ACT_0>, <ACT_1>, ...; {needed} needed): add them "
                "with LatentActionTokens.add_to(tokenizer, config)"
            )
        if config is not None and kept is not None and kept != config.code_seq_len:
            raise LaryError(f"the tokenizer's latent actions are {kept} codes each ({CODE_SEQ_LEN_KEY}) but the "
                            f"config's code_seq_len is {config.code_seq_len}")
        return cls(np.array(ids, dtype=np.int64), kept if config is None else config.code_seq_len)

    def encode(self, action_indices: Any) -> Any:
        """Codes (a torch tensor, a numpy array or lists; the last axis whole actions of `code_seq_len` codes, e.g.
        (N, n) or flat) -> their token ids, same shape and kind (a tensor stays on its device; lists give numpy)."""
        codes = np.asarray(action_indices.cpu() if isinstance(action_indices, torch.Tensor) else action_indices)
        if codes.size == 0:
            codes = codes.astype(np.int64)
        if not np.issubdtype(codes.dtype, np.integer):
            raise LaryError(f"latent action codes must be integers; got {codes.dtype}")
        bad = np.flatnonzero((codes < 0) | (codes >= self.codebook_size))
        if len(bad):
            raise LaryError(f"latent action code {codes.flat[bad[0]]} is outside the codebook (0..{self.codebook_size - 1})")
        n = self.code_seq_len
        if n is not None and codes.ndim >= 1 and codes.shape[-1] % n:
            raise LaryError(f"codes of shape {codes.shape}: the model writes an action as {n} codes (code_seq_len)")
        ids = self.ids[codes]
        return torch.from_numpy(ids).to(action_indices.device) if isinstance(action_indices, torch.Tensor) else ids

    def is_action(self, ids: Any) -> Any:
        """Which token ids are latent action tokens (a bool mask of the same shape and kind): e.g. the positions of a
        sequence that the action loss is taken on."""
        if isinstance(ids, torch.Tensor):
            return torch.isin(ids, torch.tensor(self.ids, device=ids.device))
        return np.isin(np.asarray(ids), self.ids)

    def decode(self, ids: Any) -> Any:
        """Token ids (any shape and kind, as `encode` gives) -> their codes. Ids of other tokens are refused, naming
        the first one; take the action tokens out of a longer sequence first (`is_action`)."""
        values = np.asarray(ids.cpu() if isinstance(ids, torch.Tensor) else ids, dtype=np.int64)
        position = np.clip(np.searchsorted(self._sorted_ids, values), 0, self.codebook_size - 1)
        found = self._sorted_ids[position] == values
        if not found.all():
            where = np.unravel_index(np.flatnonzero(~found)[0], values.shape) if values.ndim else ()
            raise LaryError(
                f"token id {values[where]} at position {tuple(int(i) for i in where)} is not a latent action token "
                f"(<ACT_0>..<ACT_{self.codebook_size - 1}> are ids {_span(self.ids)})"
            )
        codes = self._sorted_codes[position].astype(np.int64)
        return torch.from_numpy(codes).to(ids.device) if isinstance(ids, torch.Tensor) else codes


def _span(ids: Iterable[int]) -> str:
    ids = list(ids)
    contiguous = ids == list(range(ids[0], ids[0] + len(ids)))
    return f"{ids[0]}..{ids[-1]}" if contiguous else ", ".join(map(str, ids))
