"""Tiny transformers models built locally (no downloads): a byte-level BPE tokenizer trained on a
few arithmetic solutions with the ``tokenizers`` library, and a randomly initialised Llama or GPT-2,
saved the way ``save_pretrained`` lays out a hub model."""

from __future__ import annotations

import random
from pathlib import Path

CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + "
    "'<|im_end|>' + '\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def corpus(n: int = 300) -> list[str]:
    from ponder.tasks import make_split

    rng = random.Random(0)
    problems = make_split("train", levels=[1, 2], n_per_level=n // 2, seed=0)
    texts = [p.prompt + p.solution for p in problems]
    texts += [f"The answer is {rng.randrange(1000)}.\n" for _ in range(50)]
    return texts


def build_tokenizer(out_dir: Path, chat: bool = True):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=320,
        special_tokens=SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus(), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|endoftext|>",
        eos_token="<|im_end|>" if chat else "<|endoftext|>",
        pad_token="<|endoftext|>",
    )
    if chat:
        fast.chat_template = CHATML
    fast.save_pretrained(out_dir)
    return fast


def build_model(out_dir: Path, arch: str = "llama", chat: bool = True, seed: int = 0) -> Path:
    """A tiny model and tokenizer saved in ``out_dir``; returns ``out_dir``."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    out_dir.mkdir(parents=True, exist_ok=True)
    tok = build_tokenizer(out_dir, chat=chat)
    torch.manual_seed(seed)
    common = dict(
        vocab_size=len(tok),
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    if arch == "llama":
        config = LlamaConfig(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=256,
            **common,
        )
        model = LlamaForCausalLM(config)
    elif arch == "gpt2":
        config = GPT2Config(n_embd=32, n_layer=2, n_head=4, n_positions=256, **common)
        model = GPT2LMHeadModel(config)
    else:
        raise ValueError(arch)
    # Larger weights than the default initialisation: varied, context-dependent text with clear
    # margins between the top tokens, so greedy decoding is stable under batching.
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0.0, 0.3)
        # Make the step delimiter and the end token common, so that steps end within a few tokens
        # and some samples finish (a search over them has steps to take).
        head = model.get_output_embeddings().weight
        head[tok.convert_tokens_to_ids("Ċ")] *= 3.0
        head[tok.eos_token_id] *= 2.0
    model.save_pretrained(out_dir)
    return out_dir
