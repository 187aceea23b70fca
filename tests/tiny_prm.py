"""Tiny reward models built locally (no downloads), one per Hugging Face verifier family.

The tokenizer is character-level (a ``tokenizers`` BPE with no merges), with each family's special
pieces added as whole tokens: the Math-Shepherd step tag ``ки``, Qwen's ``<extra_0>`` separator and
ChatML markers, and ``Yes`` / ``No`` for judges. Weights are random; :func:`isolate_tokens` zeroes
every layer's output projections, so the hidden state at a position is a function of that
position's token alone, and a test can then set the head to give exactly known logits there.
"""

from __future__ import annotations

import string
from pathlib import Path

CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + "
    "'<|im_end|>' + '\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
# Llama 3's chat layout (its default system header left out): what RLHFlow's PRMs read.
LLAMA3_CHAT = (
    "{{ '<|begin_of_text|>' }}{% for message in messages %}{{ '<|start_header_id|>' + message['role'] + "
    "'<|end_header_id|>\n\n' + message['content'] + '<|eot_id|>' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)
CHARS = list(string.ascii_letters + string.digits + string.punctuation + " \n") + ["к", "и", "т"]


def build_tokenizer(specials: list[str], added: list[str] = (), bos: bool = False, chat: bool = False):
    """A character-level fast tokenizer with ``specials`` (special tokens) and ``added`` (ordinary
    whole-word tokens such as the step tag)."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, processors
    from transformers import PreTrainedTokenizerFast

    base = ["<pad>", "<unk>", "<s>", "</s>"]
    vocab = {tok: i for i, tok in enumerate(base + CHARS)}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    tok.decoder = decoders.Fuse()
    tok.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in specials])
    tok.add_tokens([AddedToken(a, special=False, normalized=False) for a in added])
    if bos:
        tok.post_processor = processors.TemplateProcessing(
            single="<s> $A", pair="<s> $A $B", special_tokens=[("<s>", vocab["<s>"])]
        )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>", bos_token="<s>", eos_token="</s>"
    )
    if chat:
        fast.chat_template = CHATML
    return fast


def _tiny_config(kind: str, vocab: int, **extra):
    from transformers import LlamaConfig, Qwen2Config

    common = dict(
        vocab_size=vocab,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=512,
        pad_token_id=0,
        bos_token_id=2,
        eos_token_id=3,
        tie_word_embeddings=False,
        **extra,
    )
    return Qwen2Config(**common) if kind == "qwen" else LlamaConfig(**common)


def isolate_tokens(model) -> None:
    """Zero the attention and MLP output projections: the residual stream (so the hidden state)
    at each position is then its own token's embedding."""
    import torch

    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()


def final_hidden(model, token_id: int):
    """The final hidden state of ``token_id`` in a model after :func:`isolate_tokens`."""
    import torch

    with torch.no_grad():
        x = model.model.embed_tokens.weight[token_id].float()
        norm = model.model.norm
        eps = getattr(norm, "variance_epsilon", 1e-6)
        return norm.weight * (x / torch.sqrt(x.pow(2).mean() + eps))


def save(model, tokenizer, out_dir: Path) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir


def shepherd_model(seed: int = 0):
    import torch
    from transformers import LlamaForCausalLM

    tok = build_tokenizer(["<s>"], added=["ки"], bos=True)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(_tiny_config("llama", len(tok))).eval()
    return model, tok


def qwen_model(seed: int = 0):
    import torch
    from transformers import Qwen2ForTokenClassification

    tok = build_tokenizer(["<|im_start|>", "<|im_end|>", "<extra_0>"], chat=True)
    torch.manual_seed(seed)
    config = _tiny_config("qwen", len(tok), num_labels=2)
    return Qwen2ForTokenClassification(config).eval(), tok


def orm_model(seed: int = 0, num_labels: int = 1):
    import torch
    from transformers import LlamaForSequenceClassification

    tok = build_tokenizer([], bos=True)
    torch.manual_seed(seed)
    config = _tiny_config("llama", len(tok), num_labels=num_labels)
    return LlamaForSequenceClassification(config).eval(), tok


def judge_model(seed: int = 0):
    import torch
    from transformers import LlamaForCausalLM

    tok = build_tokenizer(["<|im_start|>", "<|im_end|>"], added=["Yes", "No"], chat=True)
    torch.manual_seed(seed)
    return LlamaForCausalLM(_tiny_config("llama", len(tok))).eval(), tok


def rlhflow_model(seed: int = 0):
    """A causal LM with Llama 3's chat layout, as RLHFlow's Llama3.1-8B-PRM reads steps."""
    import torch
    from transformers import LlamaForCausalLM

    specials = ["<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]
    tok = build_tokenizer(specials)
    tok.chat_template = LLAMA3_CHAT
    torch.manual_seed(seed)
    return LlamaForCausalLM(_tiny_config("llama", len(tok))).eval(), tok
