"""`lary.LatentActionTokens`: latent action codes as special tokens of real 🤗 tokenizers (WordLevel and BPE, built
offline with `tokenizers`), found again after a save and a load, and a small causal LM's embeddings resized to them."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers, trainers
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from lary import LapaDinov3Config, LatentActionTokens
from lary.errors import LaryError
from lary.hub import default_model

TEXTS = ["what action should the robot take to move the cube left", "insert the peg into the socket"]
SPECIALS = {"unk_token": "[UNK]", "pad_token": "[PAD]", "bos_token": "<s>", "eos_token": "</s>"}


def word_level_tokenizer() -> PreTrainedTokenizerFast:
    words = sorted({word for text in TEXTS for word in text.split()})
    vocab = {token: i for i, token in enumerate([*SPECIALS.values(), *words])}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, **SPECIALS)


def bpe_tokenizer() -> PreTrainedTokenizerFast:
    tokenizer = Tokenizer(models.BPE(unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel()
    tokenizer.train_from_iterator(TEXTS * 4, trainers.BpeTrainer(vocab_size=120, special_tokens=list(SPECIALS.values())))
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, **SPECIALS)


@pytest.fixture
def config() -> LapaDinov3Config:
    """The embedded model's: 8 codes, 4 per action."""
    return LapaDinov3Config.from_pretrained(default_model())


@pytest.mark.parametrize("build", [word_level_tokenizer, bpe_tokenizer])
def test_codes_become_tokens_and_come_back_after_a_save_and_a_load(tmp_path, config, build):
    tokenizer = build()
    base = len(tokenizer)
    tokens = LatentActionTokens.add_to(tokenizer, config)
    assert len(tokenizer) == base + 8 and tokens.codebook_size == 8 and tokens.code_seq_len == 4
    assert tokens.ids.tolist() == tokenizer.convert_tokens_to_ids([f"<ACT_{k}>" for k in range(8)])
    assert LatentActionTokens.add_to(tokenizer, config).ids.tolist() == tokens.ids.tolist()  # added once
    assert len(tokenizer) == base + 8

    codes = np.array([[3, 1, 7, 0], [0, 0, 5, 2]])
    ids = tokens.encode(codes)
    assert ids.shape == (2, 4) and ids.dtype == np.int64
    np.testing.assert_array_equal(tokens.decode(ids), codes)
    np.testing.assert_array_equal(tokens.decode(ids.ravel()), codes.ravel())
    # written as text (a chat template), each code is one token, never split or normalised
    text = tokenizer("move the cube " + "".join(tokens.tokens[c] for c in codes[0]), add_special_tokens=False).input_ids
    assert text[-4:] == ids[0].tolist()
    assert tokenizer.convert_ids_to_tokens(ids[0].tolist()) == ["<ACT_3>", "<ACT_1>", "<ACT_7>", "<ACT_0>"]

    tokenizer.save_pretrained(tmp_path / "tok")
    loaded = AutoTokenizer.from_pretrained(tmp_path / "tok")
    again = LatentActionTokens.from_tokenizer(loaded)
    # the code length travels with the tokenizer (tokenizer_config.json), so encode still refuses partial actions
    assert again.ids.tolist() == tokens.ids.tolist() and again.code_seq_len == 4 and again == tokens
    assert LatentActionTokens.from_tokenizer(loaded, config).code_seq_len == 4
    with pytest.raises(LaryError, match=r"as 4 codes \(code_seq_len\)"):
        again.encode(np.zeros((2, 15), dtype=np.int64))
    loaded.save_pretrained(tmp_path / "tok2")  # and through a second save of the loaded tokenizer
    assert LatentActionTokens.from_tokenizer(AutoTokenizer.from_pretrained(tmp_path / "tok2")).code_seq_len == 4
    np.testing.assert_array_equal(again.decode(loaded("".join(tokens.tokens[c] for c in codes[1]),
                                                      add_special_tokens=False).input_ids), codes[1])


def test_tensors_stay_tensors_and_a_mask_finds_the_action_tokens(config):
    tokenizer = word_level_tokenizer()
    tokens = LatentActionTokens.add_to(tokenizer, config)
    codes = torch.tensor([[3, 1, 7, 0]])
    ids = tokens.encode(codes)
    assert isinstance(ids, torch.Tensor) and ids.dtype == torch.int64
    assert torch.equal(tokens.decode(ids), codes)
    sequence = torch.cat([torch.tensor(tokenizer("insert the peg").input_ids), ids[0]])
    mask = tokens.is_action(sequence)
    assert mask.tolist() == [False] * (len(sequence) - 4) + [True] * 4
    assert torch.equal(tokens.decode(sequence[mask]), codes[0])


def test_what_is_not_a_code_or_an_action_token_is_refused(config):
    tokenizer = word_level_tokenizer()
    tokens = LatentActionTokens.add_to(tokenizer, config)
    word = tokenizer.convert_tokens_to_ids("peg")
    with pytest.raises(LaryError, match=rf"token id {word} at position \(0, 2\) is not a latent action token "
                                        rf"\(<ACT_0>..<ACT_7> are ids {tokens.ids[0]}..{tokens.ids[-1]}\)"):
        tokens.decode([[tokens.ids[1], tokens.ids[2], word, tokens.ids[0]]])
    with pytest.raises(LaryError, match=r"code 8 is outside the codebook \(0..7\)"):
        tokens.encode([[0, 8, 1, 2]])
    with pytest.raises(LaryError, match="code -1 is outside"):
        tokens.encode([[0, -1, 1, 2]])
    with pytest.raises(LaryError, match="must be integers; got float64"):
        tokens.encode([[0.0, 1.0, 1.0, 2.0]])
    with pytest.raises(LaryError, match=r"as 4 codes \(code_seq_len\)"):
        tokens.encode([[0, 1, 2]])
    with pytest.raises(LaryError, match=r"has 0 latent action tokens .* add them with LatentActionTokens.add_to"):
        LatentActionTokens.from_tokenizer(word_level_tokenizer())
    with pytest.raises(LaryError, match="has 8 latent action tokens .*16 of them needed"):
        LatentActionTokens.from_tokenizer(tokenizer, LapaDinov3Config(codebook_size=16))


def test_a_causal_lm_resized_to_the_tokens_trains_on_them_and_saves_with_them(tmp_path, config):
    tokenizer = word_level_tokenizer()
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64,
                                         num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2))
    tokens = LatentActionTokens.add_to(tokenizer, config)
    model.resize_token_embeddings(len(tokenizer))
    assert model.get_input_embeddings().num_embeddings == len(tokenizer) == model.get_output_embeddings().out_features

    prompt = torch.tensor(tokenizer("insert the peg").input_ids)
    action = tokens.encode(torch.tensor([5, 5, 2, 6]))
    input_ids = torch.cat([prompt, action])[None]
    labels = torch.where(tokens.is_action(input_ids), input_ids, -100)
    loss = model(input_ids=input_ids, labels=labels).loss
    loss.backward()
    gradient = model.get_input_embeddings().weight.grad
    assert torch.isfinite(loss) and gradient[action[:-1]].abs().sum() > 0  # the action tokens are inputs too

    model.save_pretrained(tmp_path / "lm")
    tokenizer.save_pretrained(tmp_path / "lm")
    loaded_tokenizer = AutoTokenizer.from_pretrained(tmp_path / "lm")
    loaded = LlamaForCausalLM.from_pretrained(tmp_path / "lm")
    again = LatentActionTokens.from_tokenizer(loaded_tokenizer, config)
    torch.testing.assert_close(loaded.get_input_embeddings().weight[torch.tensor(again.ids)],
                               model.get_input_embeddings().weight[torch.tensor(tokens.ids)])


def test_tokens_compare_and_hash_by_value_and_stay_frozen(config):
    tokens = LatentActionTokens.add_to(word_level_tokenizer(), config)
    same = LatentActionTokens(tokens.ids.copy(), 4)
    assert tokens == same and hash(tokens) == hash(same) and len({tokens, same}) == 1
    assert tokens != LatentActionTokens(tokens.ids, None) and tokens != LatentActionTokens(tokens.ids[::-1].copy(), 4)
    assert tokens != "tokens"
    with pytest.raises(ValueError, match="read-only"):
        tokens.ids[0] = 0


def test_a_tokenizer_s_code_length_must_agree_with_the_config(tmp_path, config):
    tokenizer = word_level_tokenizer()
    LatentActionTokens.add_to(tokenizer, config)
    with pytest.raises(LaryError, match="latent actions are 4 codes each .* config's code_seq_len is 16"):
        LatentActionTokens.from_tokenizer(tokenizer, LapaDinov3Config(codebook_size=8, code_seq_len=16))
    tokenizer.init_kwargs["latent_action_code_seq_len"] = "4"
    with pytest.raises(LaryError, match="latent_action_code_seq_len is '4': a positive integer expected"):
        LatentActionTokens.from_tokenizer(tokenizer)
    plain = word_level_tokenizer()  # tokens added by hand, as before add_to kept the length: unknown, not checked
    plain.add_tokens([f"<ACT_{k}>" for k in range(8)], special_tokens=True)
    assert LatentActionTokens.from_tokenizer(plain).code_seq_len is None
