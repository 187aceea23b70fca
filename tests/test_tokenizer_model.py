"""The character tokenizer and the embedded transformer: shapes, KV cache, save/load."""

from __future__ import annotations

import json
import re
import string

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import TINY, tiny_model
from ponder.errors import ConfigError, WeightsError
from ponder.training.model import KVCache, ModelConfig, TinyTransformer, load_model, save_model
from ponder.training.tokenizer import CHARS, SPECIALS, CharTokenizer

PRINTABLE = "".join(chr(c) for c in range(32, 127)) + "\n"

# --- tokenizer ----------------------------------------------------------------------------------


def test_vocabulary_is_specials_then_printable_ascii_and_newline(tokenizer):
    assert tokenizer.vocab_size == len(SPECIALS) + len(CHARS) == 3 + 95 + 1
    assert (tokenizer.pad_id, tokenizer.bos_id, tokenizer.eos_id) == (0, 1, 2)
    assert set(CHARS) == set(PRINTABLE)
    assert ModelConfig().vocab_size == tokenizer.vocab_size


@settings(deadline=None)
@given(st.text(alphabet=PRINTABLE))
def test_encode_decode_roundtrip(text):
    tok = CharTokenizer()
    ids = tok.encode(text)
    assert len(ids) == len(text)  # one token per character
    assert all(len(SPECIALS) <= i < tok.vocab_size for i in ids)
    assert tok.decode(ids) == text
    with_bos = tok.encode(text, bos=True)
    assert with_bos == [tok.bos_id, *ids]
    assert tok.decode(with_bos) == text


def test_roundtrip_of_a_whole_solution(tokenizer):
    text = "Q:84+72-31\n84+72=57\n57-31=26\nA:26" + string.punctuation
    assert tokenizer.decode(tokenizer.encode(text)) == text
    # Special tokens never show up in decoded text.
    assert tokenizer.decode([tokenizer.pad_id, *tokenizer.encode("ab"), tokenizer.eos_id]) == "ab"
    assert tokenizer.token_of("\n") == tokenizer.encode("\n")[0]


@pytest.mark.parametrize(("text", "bad"), [("café", "é"), ("tab\there", "\t"), ("x→y", "→")])
def test_unknown_characters_are_named(tokenizer, text, bad):
    with pytest.raises(ConfigError, match=re.escape(repr(bad))):
        tokenizer.encode(text)


# --- model --------------------------------------------------------------------------------------


def test_config_is_validated():
    with pytest.raises(ConfigError, match="head must be 'lm' or 'reward', got 'value'"):
        ModelConfig(head="value")
    with pytest.raises(ConfigError, match="d_model 30 is not divisible by n_head 4"):
        ModelConfig(d_model=30, n_head=4)


@pytest.mark.parametrize(("head", "width"), [("lm", 99), ("reward", 2)])
def test_forward_shapes(head, width):
    model = tiny_model(head)
    x = torch.randint(3, 99, (3, 17))
    with torch.no_grad():
        out = model(x)
    assert out.shape == (3, 17, width)
    assert torch.isfinite(out).all()


def test_a_default_config_model_embeds_every_character(tokenizer):
    model = TinyTransformer(ModelConfig(d_model=16, n_layer=1, n_head=2))
    ids = torch.tensor([tokenizer.encode(PRINTABLE, bos=True) + [tokenizer.eos_id, tokenizer.pad_id]])
    with torch.no_grad():
        assert model(ids).shape == (1, ids.shape[1], tokenizer.vocab_size)


def test_lm_head_is_tied_and_reward_head_is_not():
    lm, reward = tiny_model("lm"), tiny_model("reward")
    assert lm.out.weight is lm.tok_emb.weight
    # Tied weights count once; the reward model leaves its embedding out of FLOPs accounting.
    assert lm.num_params() == sum(p.numel() for p in lm.parameters())
    assert reward.num_params() == sum(p.numel() for p in reward.parameters()) - reward.tok_emb.weight.numel()


def test_attention_is_causal():
    model = tiny_model("lm")
    x = torch.randint(3, 99, (1, 12))
    y = x.clone()
    y[0, 8:] = torch.randint(3, 99, (4,))
    with torch.no_grad():
        a, b = model(x), model(y)
    torch.testing.assert_close(a[:, :8], b[:, :8], atol=1e-5, rtol=0)
    assert not torch.allclose(a[:, 8:], b[:, 8:])


def test_positions_past_the_context_are_refused():
    model = tiny_model("lm", max_seq_len=16)
    with pytest.raises(ConfigError, match="position 16 is past the model's context of 16"):
        model(torch.randint(3, 99, (1, 17)))


@pytest.mark.parametrize("head", ["lm", "reward"])
@pytest.mark.parametrize("prefill", [1, 7])
def test_kv_cache_decoding_matches_a_full_forward(head, prefill):
    model = tiny_model(head, seed=3)
    x = torch.randint(3, 99, (2, 20))
    with torch.no_grad():
        full = model(x)
        cache = KVCache(model.config, batch=2, max_len=20, dtype=torch.float32)
        pieces = [model(x[:, :prefill], cache=cache)]
        for t in range(prefill, 20):
            pieces.append(model(x[:, t : t + 1], cache=cache))
    assert cache.length == 20
    torch.testing.assert_close(torch.cat(pieces, dim=1), full, atol=1e-4, rtol=0)


def test_kv_cache_chunked_prefill_matches_a_full_forward():
    model = tiny_model("lm", seed=4)
    x = torch.randint(3, 99, (2, 20))
    with torch.no_grad():
        full = model(x)
        cache = KVCache(model.config, batch=2, max_len=20, dtype=torch.float32)
        pieces = [model(x[:, :6], cache=cache), model(x[:, 6:13], cache=cache), model(x[:, 13:], cache=cache)]
    torch.testing.assert_close(torch.cat(pieces, dim=1), full, atol=1e-4, rtol=0)


def test_kv_cache_rows_can_be_copied_and_dropped():
    model = tiny_model("lm", seed=5)
    x = torch.randint(3, 99, (2, 10))
    nxt = torch.randint(3, 99, (4, 1))
    with torch.no_grad():
        cache = KVCache(model.config, batch=2, max_len=10, dtype=torch.float32)
        model(x, cache=cache)
        rows = torch.tensor([0, 0, 1, 1])
        wide = cache.expand_rows(rows, max_len=11)
        assert (wide.batch, wide.max_len, wide.length) == (4, 11, 10)
        stepped = model(nxt, cache=wide)[:, -1]
        expected = model(torch.cat([x[rows], nxt], dim=1))[:, -1]
        torch.testing.assert_close(stepped, expected, atol=1e-4, rtol=0)
        wide.select_rows(torch.tensor([1, 3]))
        assert wide.batch == 2
    assert wide.nbytes() == 2 * wide.k.numel() * 4


# --- save / load --------------------------------------------------------------------------------


@pytest.mark.parametrize("head", ["lm", "reward"])
def test_save_load_roundtrip(tmp_path, head):
    model = tiny_model(head, seed=6)
    path = tmp_path / "sub" / "model.safetensors"
    save_model(model, path, metadata={"step": 12, "note": "tiny"})
    assert path.is_file()
    loaded, meta = load_model(path)
    assert loaded.config == model.config
    assert meta == {"step": 12, "note": "tiny"}
    assert not loaded.training
    if head == "lm":
        assert loaded.out.weight is loaded.tok_emb.weight
    x = torch.randint(3, 99, (2, 15))
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), atol=1e-2, rtol=0)
    # fp16 on disk: about 2 bytes per parameter.
    assert path.stat().st_size < 2.5 * sum(p.numel() for p in model.parameters()) + 10_000


def test_save_without_metadata_loads_empty_metadata(tmp_path):
    path = tmp_path / "m.safetensors"
    save_model(tiny_model("lm"), path)
    assert load_model(path)[1] == {}


def test_load_missing_file_names_the_path(tmp_path):
    path = tmp_path / "nope.safetensors"
    with pytest.raises(WeightsError, match=re.escape(str(path)) + ".*does not exist"):
        load_model(path)


def test_load_corrupted_file_names_the_path(tmp_path):
    path = tmp_path / "garbage.safetensors"
    path.write_bytes(
        torch.randint(0, 256, (4096,), generator=torch.Generator().manual_seed(0)).byte().numpy().tobytes()
    )
    with pytest.raises(WeightsError, match=re.escape(str(path)) + ".*corrupted"):
        load_model(path)


def test_load_truncated_file_names_the_path(tmp_path):
    path = tmp_path / "cut.safetensors"
    save_model(tiny_model("lm"), path)
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(WeightsError, match=re.escape(str(path))):
        load_model(path)


def test_load_safetensors_without_ponder_config_names_the_path(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(3)}, str(path))
    with pytest.raises(WeightsError, match=re.escape(str(path)) + ".*no ponder model config"):
        load_model(path)


def test_load_invalid_or_mismatched_config_names_the_path(tmp_path):
    from safetensors.torch import save_file

    model = tiny_model("lm")
    state = {k: v.to(torch.float16).contiguous() for k, v in model.state_dict().items() if k != "out.weight"}

    bad = tmp_path / "bad_config.safetensors"
    save_file(state, str(bad), metadata={"config": json.dumps({"d_model": 32, "colour": "red"})})
    with pytest.raises(WeightsError, match=re.escape(str(bad)) + ".*invalid model config"):
        load_model(bad)

    other = tmp_path / "other_shape.safetensors"
    config = json.dumps(TINY | {"vocab_size": 99, "d_model": 64, "head": "lm"})
    save_file(state, str(other), metadata={"config": config})
    with pytest.raises(WeightsError, match=re.escape(str(other)) + ".*does not match its config"):
        load_model(other)


def test_a_fresh_model_differs_from_a_loaded_one(tmp_path):
    # Guards the roundtrip test above: two seeds give clearly different logits.
    a, b = tiny_model("lm", seed=0), tiny_model("lm", seed=1)
    x = torch.randint(3, 99, (1, 10))
    with torch.no_grad():
        assert (a(x) - b(x)).abs().max() > 1e-2
    assert isinstance(a, TinyTransformer)
