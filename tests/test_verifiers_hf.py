"""Hugging Face reward models as verifiers, on tiny local models (no downloads): each family's
input text and score positions (against the model cards' reference code, and with weights forced
so that the expected probabilities are exact), batching and padding invariance, prefix
consistency, token and FLOPs accounting, format detection and bad input, and best-of-N / beam
search end to end."""

from __future__ import annotations

import json
import math
import shutil

import pytest

pytest.importorskip("transformers")

import torch  # noqa: E402

from ponder.errors import ConfigError  # noqa: E402
from ponder.strategies import Budget, make_strategy  # noqa: E402
from ponder.verifiers.base import Verifier  # noqa: E402
from ponder.verifiers.formats import qwen_messages, rlhflow_messages, shepherd_text, split_steps  # noqa: E402
from ponder.verifiers.hf import QwenPRM, RLHFlowPRM, SequenceORM, ShepherdPRM, load_hf_verifier  # noqa: E402
from ponder.verifiers.judge import HFJudgeVerifier, answer_token_ids  # noqa: E402
from ponder.verifiers.spec import load_verifier  # noqa: E402
from stubs import PROMPT, StepStub, one_marked_per_call  # noqa: E402
from tiny_prm import (  # noqa: E402
    final_hidden,
    isolate_tokens,
    judge_model,
    orm_model,
    qwen_model,
    rlhflow_model,
    save,
    shepherd_model,
)

QUESTION = "Q:84+72-31\n"
SOLUTIONS = ["84+72=57\n57-31=26\nA:26", "84+72=57\n", "84+72=56\n56-31=25\n\nA:25", "1\n2\n3\n4\nA:4", "x"]


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("prms")
    out = {}
    for name, build in (
        ("shepherd", shepherd_model),
        ("qwen", qwen_model),
        ("orm", orm_model),
        ("judge", judge_model),
    ):
        model, tok = build()
        out[name] = save(model, tok, root / name)
    return out


# --- formats ------------------------------------------------------------------------------------


def test_steps_are_the_non_blank_pieces_between_delimiters():
    assert split_steps("a\n\n b \n\nc\n") == ["a", "b", "c"]
    assert split_steps("a\n\nb", "\n\n") == ["a", "b"]
    assert split_steps("\n\n") == []


def test_shepherd_text_is_the_model_cards_format():
    text, spans = shepherd_text("What is 1+1?", ["1+1=2", "The answer is: 2"])
    assert text == "What is 1+1? 1+1=2 ки\nThe answer is: 2 ки"
    assert [text[a:b] for a, b in spans] == ["ки", "ки"]


def test_qwen_messages_put_a_separator_after_every_step_and_nowhere_else():
    messages = qwen_messages("Q<extra_0>", ["a", "b<extra_0>c"])
    assert messages[1]["content"] == "Q"
    assert messages[2] == {"role": "assistant", "content": "a<extra_0>bc<extra_0>"}


# --- Math-Shepherd ------------------------------------------------------------------------------


def shepherd_reference(model, tok, question: str, steps: list[str]) -> list[float]:
    """The model card's code: tags by id, P(+) of the softmax over {+, -}."""
    good, bad = tok.convert_tokens_to_ids("+"), tok.convert_tokens_to_ids("-")
    tag = tok.convert_tokens_to_ids("ки")
    output = "\n".join(f"{s} ки" for s in steps)
    ids = torch.tensor([tok.encode(f"{question} {output}")])
    with torch.no_grad():
        scores = model(ids).logits[:, :, [good, bad]].softmax(dim=-1)[:, :, 0]
    return scores[ids == tag].tolist()


def test_shepherd_scores_match_the_model_card_reference():
    model, tok = shepherd_model()
    prm = ShepherdPRM(model, tok)
    for solution in SOLUTIONS[:4]:
        got = prm.score([QUESTION], [solution])[0]
        want = shepherd_reference(model, tok, QUESTION.strip(), split_steps(solution))
        assert got.step_scores == pytest.approx(want, abs=1e-6)
        assert got.outcome is None


def test_shepherd_reads_only_its_own_tags_not_tag_like_text():
    model, tok = shepherd_model()
    prm = ShepherdPRM(model, tok)
    question = "Q: кит ки 1+2"  # tokenizes to the tag token twice
    enc = prm.encode(question, "1+2=3\nкит 3")
    assert sum(t == prm.tag_id for t in enc.ids) == 5  # 2 in the question, 1 in a step, 2 tags
    assert len(enc.positions) == 2
    # Everything before ponder's first tag is the question: the reference code over the tags
    # that follow it reads the same positions.
    want = shepherd_reference(model, tok, question, ["1+2=3", "кит 3"])
    assert prm.score([question], ["1+2=3\nкит 3"])[0].step_scores == pytest.approx(want[-3:][::2], abs=1e-6)


def test_shepherd_forced_logits_give_the_exact_probability_at_each_tag():
    model, tok = shepherd_model()
    isolate_tokens(model)
    prm = ShepherdPRM(model, tok)
    h = final_hidden(model, prm.tag_id)
    with torch.no_grad():
        model.lm_head.weight[prm.good_id] = 2.0 * h / h.dot(h)  # logit(+) = 2 at the tag
        model.lm_head.weight[prm.bad_id] = 0.0  # logit(-) = 0
    scores = prm.score([QUESTION], ["84+72=57\n57-31=26\nA:26"])[0].step_scores
    assert scores == pytest.approx([sigmoid(2.0)] * 3, abs=1e-5)
    # The token before each tag (a space) gives another probability: positions matter.
    space = tok.convert_tokens_to_ids(" ")
    hs = final_hidden(model, space)
    with torch.no_grad():
        logits = torch.stack([model.lm_head.weight[prm.good_id], model.lm_head.weight[prm.bad_id]]) @ hs
    assert abs(float(torch.softmax(logits, -1)[0]) - sigmoid(2.0)) > 1e-3


def test_hf_scores_do_not_depend_on_batching_padding_or_order():
    for build, cls in ((shepherd_model, ShepherdPRM), (qwen_model, QwenPRM), (orm_model, SequenceORM)):
        model, tok = build()
        batched = cls(model, tok, batch_size=8).score([QUESTION] * 5, SOLUTIONS)
        single = cls(model, tok, batch_size=1).score([QUESTION] * 5, SOLUTIONS)
        reversed_ = cls(model, tok, batch_size=3).score([QUESTION] * 5, SOLUTIONS[::-1])[::-1]
        for a, b, c in zip(batched, single, reversed_):
            assert a.step_scores == pytest.approx(b.step_scores, abs=1e-5)
            assert a.step_scores == pytest.approx(c.step_scores, abs=1e-5)
            assert a.tokens == b.tokens == c.tokens


def test_prm_step_scores_of_a_prefix_are_those_of_the_full_solution():
    for build, cls in ((shepherd_model, ShepherdPRM), (qwen_model, QwenPRM)):
        model, tok = build()
        prm = cls(model, tok)
        full, prefix = prm.score([QUESTION] * 2, ["84+72=57\n57-31=26\nA:26", "84+72=57\n57-31=26\n"])
        assert len(full.step_scores) == 3 and len(prefix.step_scores) == 2
        assert prefix.step_scores == pytest.approx(full.step_scores[:2], abs=1e-5)


def test_tokens_and_flops_accounting():
    for build, cls in ((shepherd_model, ShepherdPRM), (qwen_model, QwenPRM), (orm_model, SequenceORM)):
        model, tok = build()
        v = cls(model, tok)
        assert isinstance(v, Verifier)
        embedding = model.get_input_embeddings().weight.numel()
        assert v.num_params == sum(p.numel() for p in model.parameters()) - embedding
        for s, score in zip(SOLUTIONS, v.score([QUESTION] * 5, SOLUTIONS)):
            assert score.tokens == v.count_tokens(QUESTION, s) == len(v.encode(QUESTION, s).ids)
    prm = ShepherdPRM(*shepherd_model())
    empty = prm.score([QUESTION], ["\n\n"])[0]
    assert empty.step_scores == [] and empty.tokens == 0


# --- Qwen2.5-Math-PRM ---------------------------------------------------------------------------


def test_qwen_scores_match_the_model_card_reference():
    model, tok = qwen_model()
    prm = QwenPRM(model, tok)
    steps = ["84+72=57", "57-31=26", "A:26"]
    messages = [
        {"role": "system", "content": prm.system},
        {"role": "user", "content": QUESTION.strip()},
        {"role": "assistant", "content": "<extra_0>".join(steps) + "<extra_0>"},
    ]
    text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=False)
    ids = torch.tensor([tok.encode(text)])
    with torch.no_grad():
        probs = torch.softmax(model(ids).logits, dim=-1)
    want = probs[0][ids[0] == tok.convert_tokens_to_ids("<extra_0>")][:, 1].tolist()
    assert prm.render(QUESTION, "\n".join(steps)) == text
    assert prm.score([QUESTION], ["\n".join(steps)])[0].step_scores == pytest.approx(want, abs=1e-6)


def test_qwen_forced_head_gives_the_exact_probability_at_each_separator():
    model, tok = qwen_model()
    isolate_tokens(model)
    prm = QwenPRM(model, tok)
    h = final_hidden(model, prm.sep_id)
    with torch.no_grad():
        model.score.weight.zero_()
        model.score.bias.zero_()
        model.score.weight[1] = 1.5 * h / h.dot(h)  # class-1 logit 1.5 at a separator, class 0: 0
    # A separator written in the text is dropped, so it makes no extra step.
    scores = prm.score([QUESTION], ["84+72=57<extra_0>\n57-31=26\nA:26"])[0].step_scores
    assert scores == pytest.approx([sigmoid(1.5)] * 3, abs=1e-5)


# --- sequence-classification ORM ----------------------------------------------------------------


def test_orm_forced_head_gives_the_exact_outcome_at_the_last_token():
    model, tok = orm_model()
    isolate_tokens(model)
    orm = SequenceORM(model, tok)
    last = tok.convert_tokens_to_ids("6")
    h = final_hidden(model, last)
    with torch.no_grad():
        model.score.weight[0] = 0.7 * h / h.dot(h)
    a, b = orm.score([QUESTION] * 2, ["84+72=57\n57-31=26\nA:26", "84+72=57\n"])
    assert a.outcome == pytest.approx(sigmoid(0.7), abs=1e-5) and a.step_scores == [a.outcome]
    assert abs(b.outcome - sigmoid(0.7)) > 1e-3  # another last token, another score


def test_orm_with_two_labels_reads_the_positive_class_and_more_labels_need_naming():
    model, tok = orm_model(num_labels=2)
    orm = SequenceORM(model, tok)
    ids = torch.tensor([orm.encode(QUESTION, "A:26").ids])
    with torch.no_grad():
        want = torch.softmax(model(ids).logits, -1)[0, 1].item()
    assert orm.score([QUESTION], ["A:26"])[0].outcome == pytest.approx(want, abs=1e-6)
    model3, tok3 = orm_model(num_labels=3)
    with pytest.raises(ConfigError, match="3 labels.*positive_label"):
        SequenceORM(model3, tok3)
    assert SequenceORM(model3, tok3, positive_label="label_2").positive == 2
    with pytest.raises(ConfigError, match="no label 'good'"):
        SequenceORM(model3, tok3, positive_label="good")


# --- loading: detection and bad input -----------------------------------------------------------


def test_format_is_told_apart_from_config_and_tokenizer(dirs):
    assert type(load_hf_verifier(dirs["shepherd"])) is ShepherdPRM
    assert type(load_hf_verifier(dirs["qwen"])) is QwenPRM
    assert type(load_hf_verifier(dirs["orm"])) is SequenceORM
    assert type(load_verifier(f"hf-prm:{dirs['qwen']}?batch_size=2")) is QwenPRM
    assert load_verifier(f"hf-prm+shepherd:{dirs['shepherd']}", batch_size=3).batch_size == 3
    assert type(load_verifier(f"hf-orm:{dirs['orm']}")) is SequenceORM
    half = load_verifier(f"hf-prm:{dirs['qwen']}?dtype=bfloat16")
    assert half.model.dtype == torch.bfloat16 and 0.0 < half.score([QUESTION], ["a"])[0].step_scores[0] < 1.0
    with pytest.raises(ConfigError, match="unknown dtype 'int8'"):
        load_verifier(f"hf-prm:{dirs['qwen']}?dtype=int8")


def test_loaded_and_in_memory_verifiers_agree(dirs):
    model, tok = shepherd_model()
    loaded = load_verifier(f"hf-prm:{dirs['shepherd']}")
    direct = ShepherdPRM(model, tok)
    for a, b in zip(loaded.score([QUESTION] * 3, SOLUTIONS[:3]), direct.score([QUESTION] * 3, SOLUTIONS[:3])):
        assert a.step_scores == pytest.approx(b.step_scores, abs=1e-6)


def test_bad_model_directories_are_named(dirs, tmp_path):
    with pytest.raises(ConfigError, match="model directory not found: .*nowhere"):
        load_verifier(f"hf-prm:{tmp_path / 'nowhere'}")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="no config.json in .*empty"):
        load_verifier(f"hf-prm:{tmp_path / 'empty'}")
    broken = tmp_path / "broken"
    shutil.copytree(dirs["shepherd"], broken)
    for f in broken.glob("*.safetensors"):
        f.unlink()
    with pytest.raises(ConfigError, match="no weights"):
        load_verifier(f"hf-prm:{broken}")
    (broken / "config.json").write_text("{not json")
    with pytest.raises(ConfigError, match="cannot read .*config.json"):
        load_verifier(f"hf-prm:{broken}")
    with pytest.raises(ConfigError, match="names no directory"):
        load_verifier("hf-prm:")


def test_unknown_or_wrong_step_formats_are_refused_before_loading_weights(dirs, monkeypatch):
    import transformers

    def no_weights(*args, **kwargs):
        raise AssertionError("weights were loaded before the format was checked")

    for auto in (
        "AutoModelForCausalLM",
        "AutoModelForTokenClassification",
        "AutoModelForSequenceClassification",
    ):
        monkeypatch.setattr(getattr(transformers, auto), "from_pretrained", no_weights)
    # A causal LM with no step tag in its vocabulary: no known PRM format.
    with pytest.raises(
        ConfigError, match=r"cannot tell the step format .*judge.*LlamaForCausalLM.*hf-prm\+shepherd"
    ):
        load_verifier(f"hf-prm:{dirs['judge']}")
    with pytest.raises(ConfigError, match="separator '<extra_0>' is not a token"):
        load_verifier(f"hf-prm+qwen:{dirs['shepherd']}")
    with pytest.raises(ConfigError, match="step tag 'ки' is not one token"):
        load_verifier(f"hf-prm+shepherd:{dirs['qwen']}")
    with pytest.raises(ConfigError, match=r"unknown hf-prm variant \+mistral"):
        load_verifier(f"hf-prm+mistral:{dirs['qwen']}")
    with pytest.raises(ConfigError, match="unknown option 'batch'.*batch_size"):
        load_verifier(f"hf-prm:{dirs['qwen']}?batch=2")
    with pytest.raises(ConfigError, match="bad value for option 'batch_size'"):
        load_verifier(f"hf-prm:{dirs['qwen']}?batch_size=two")


def test_a_model_with_its_own_code_needs_trust_remote_code(dirs, tmp_path):
    custom = tmp_path / "custom"
    shutil.copytree(dirs["qwen"], custom)
    config = json.loads((custom / "config.json").read_text())
    config["auto_map"] = {"AutoModel": "modeling_prm.ProcessRewardModel"}
    (custom / "config.json").write_text(json.dumps(config))
    with pytest.raises(ConfigError, match="runs its own code .*trust_remote_code=1"):
        load_verifier(f"hf-prm:{custom}")


CUSTOM_PRM = """
import torch
from transformers import Qwen2Model, Qwen2PreTrainedModel


class ProcessRewardModel(Qwen2PreTrainedModel):
    # Like Qwen2.5-Math-PRM's own code: a base model, a two-layer head, a tuple returned.
    def __init__(self, config):
        super().__init__(config)
        self.model = Qwen2Model(config)
        self.score = torch.nn.Sequential(
            torch.nn.Linear(config.hidden_size, config.hidden_size),
            torch.nn.ReLU(),
            torch.nn.Linear(config.hidden_size, 2),
        )
        self.post_init()

    def forward(self, input_ids=None, attention_mask=None, **kwargs):
        hidden = self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return (self.score(hidden),)
"""


def test_a_prm_with_its_own_code_loads_with_trust_remote_code(dirs, tmp_path, monkeypatch):
    import transformers.dynamic_module_utils as dynamic

    monkeypatch.setattr(dynamic, "HF_MODULES_CACHE", str(tmp_path / "modules"))  # not the user's cache
    custom = tmp_path / "custom_prm"
    shutil.copytree(dirs["qwen"], custom)
    (custom / "modeling_prm.py").write_text(CUSTOM_PRM)
    config = json.loads((custom / "config.json").read_text())
    config.update(
        architectures=["ProcessRewardModel"], auto_map={"AutoModel": "modeling_prm.ProcessRewardModel"}
    )
    (custom / "config.json").write_text(json.dumps(config))
    prm = load_verifier(f"hf-prm:{custom}?trust_remote_code=1")
    assert type(prm) is QwenPRM and type(prm.model).__name__ == "ProcessRewardModel"
    enc = prm.encode(QUESTION, "84+72=57\nA:57")
    with torch.no_grad():
        probs = torch.softmax(prm.model(input_ids=torch.tensor([enc.ids]))[0], -1)[0, list(enc.positions), 1]
    assert prm.score([QUESTION], ["84+72=57\nA:57"])[0].step_scores == pytest.approx(probs.tolist(), abs=1e-6)


# --- end to end ---------------------------------------------------------------------------------


def _check_accounting(result, verifier):
    c = result.compute
    assert c.verifier_tokens > 0
    assert c.verifier_flops == pytest.approx(2.0 * verifier.num_params * c.verifier_tokens)


def test_best_of_n_with_each_hf_verifier(dirs):
    stub = StepStub(one_marked_per_call(2))
    for name, aggregation in (("shepherd", "min"), ("qwen", "last"), ("orm", "orm")):
        verifier = load_verifier(f"hf-prm:{dirs[name]}")
        result = make_strategy("best_of_n", aggregation=aggregation).run(
            PROMPT, stub, verifier, Budget(samples=6), 0
        )
        assert len(result.candidates) == 6
        direct = verifier.score([PROMPT] * 6, [c.text for c in result.candidates])
        for cand, s in zip(result.candidates, direct):
            want = s.outcome if aggregation == "orm" else s.aggregate(aggregation)
            assert cand.score == pytest.approx(want, abs=1e-6)
        best = max(result.candidates, key=lambda c: c.score)
        assert result.answer == best.answer
        _check_accounting(result, verifier)
        assert result.compute.verifier_tokens == sum(
            verifier.count_tokens(PROMPT, c.text) for c in result.candidates
        )


def test_beam_search_with_hf_prms_within_a_token_budget(dirs):
    for name in ("shepherd", "qwen"):
        verifier = load_verifier(f"hf-prm:{dirs[name]}")
        stub = StepStub(one_marked_per_call(3))
        budget = Budget(tokens=6000)
        result = make_strategy("beam_search", n=4, beam_width=2).run(PROMPT, stub, verifier, budget, 1)
        assert result.compute.policy_tokens + result.compute.verifier_tokens <= 6000
        answered = [c for c in result.candidates if c.answer is not None and not c.partial]
        assert answered, "the search should reach answers"
        for c in result.candidates:
            if c.score is not None:
                assert c.score == pytest.approx(
                    verifier.score([PROMPT], [c.text])[0].aggregate("last"), abs=1e-5
                )
        assert result.answer == max(answered, key=lambda c: c.score).answer
        _check_accounting(result, verifier)


# --- transformers judge -------------------------------------------------------------------------


def test_hf_judge_forced_logits_give_the_exact_yes_probability(dirs):
    model, tok = judge_model()
    isolate_tokens(model)
    judge = HFJudgeVerifier(model, tok, yes_words=("Yes",), no_words=("No",))
    newline = tok.convert_tokens_to_ids("\n")  # the last token of the chat's assistant header
    h = final_hidden(model, newline)
    yes, no = tok.convert_tokens_to_ids("Yes"), tok.convert_tokens_to_ids("No")
    with torch.no_grad():
        model.lm_head.weight[yes] = 1.2 * h / h.dot(h)
        model.lm_head.weight[no] = -0.3 * h / h.dot(h)
    out = judge.score([QUESTION] * 2, ["84+72=57\nA:57", ""])
    assert (
        out[0].step_scores == pytest.approx([sigmoid(1.5)], abs=1e-5)
        and out[0].outcome == out[0].step_scores[0]
    )
    assert out[0].tokens == judge.count_tokens(QUESTION, "84+72=57\nA:57") > 0
    assert out[1].step_scores == [] and out[1].tokens == 0
    steps = HFJudgeVerifier(model, tok, mode="steps", yes_words=("Yes",), no_words=("No",))
    s = steps.score([QUESTION], ["84+72=57\n57-31=26\nA:26"])[0]
    assert s.step_scores == pytest.approx([sigmoid(1.5)] * 3, abs=1e-5) and s.outcome is None
    assert s.tokens == steps.count_tokens(QUESTION, "84+72=57\n57-31=26\nA:26")
    loaded = load_verifier(f"hf-judge+steps:{dirs['judge']}")
    assert isinstance(loaded, HFJudgeVerifier) and loaded.mode == "steps"
    with pytest.raises(ConfigError, match="cannot tell yes from no"):
        answer_token_ids(tok, ("Yes",), ("Yes!",))  # both start with the token "Yes"


# --- RLHFlow (steps as chat turns answered "+") -------------------------------------------------


def rlhflow_reference(model, tok, question: str, steps: list[str]) -> list[float]:
    """RLHFlow's evaluation code (math-rm/prm_evaluate.py): one conversation per step, grown turn by
    turn, and P(+) of the softmax over {+, -} at position -3 (the token before the last "+")."""
    good, bad = tok.encode("+", add_special_tokens=False)[-1], tok.encode("-", add_special_tokens=False)[-1]
    conversation, scores = [], []
    for k, step in enumerate(steps):
        conversation.append({"role": "user", "content": f"{question} {step}" if k == 0 else step})
        conversation.append({"role": "assistant", "content": "+"})
        text = tok.apply_chat_template(conversation, tokenize=False)
        ids = torch.tensor([tok.encode(text, add_special_tokens=False)])
        with torch.no_grad():
            scores.append(model(ids).logits[0, -3, [good, bad]].softmax(dim=-1)[0].item())
    return scores


def test_rlhflow_messages_make_each_step_a_user_turn_answered_plus():
    assert rlhflow_messages("Q?", ["a", "b"]) == [
        {"role": "user", "content": "Q? a"},
        {"role": "assistant", "content": "+"},
        {"role": "user", "content": "b"},
        {"role": "assistant", "content": "+"},
    ]


def test_rlhflow_scores_match_rlhflows_own_code_in_one_pass():
    model, tok = rlhflow_model()
    prm = RLHFlowPRM(model, tok)
    # Steps holding "+" and "-" themselves: only the assistant's labels are read.
    for solution in [*SOLUTIONS[:4], "x + y\n-\n+ 1"]:
        got = prm.score([QUESTION], [solution])[0]
        want = rlhflow_reference(model, tok, QUESTION.strip(), split_steps(solution))
        assert got.step_scores == pytest.approx(want, abs=1e-5) and got.outcome is None
    # A batch (padded on the right) scores each solution as it scores alone.
    for solution, scored in zip(SOLUTIONS[:3], prm.score([QUESTION] * 3, SOLUTIONS[:3])):
        assert scored.step_scores == pytest.approx(prm.score([QUESTION], [solution])[0].step_scores, abs=1e-5)
    assert prm.score([QUESTION], [""])[0].step_scores == []


def test_rlhflow_forced_logits_give_the_exact_probability_before_each_label():
    model, tok = rlhflow_model()
    isolate_tokens(model)
    prm = RLHFlowPRM(model, tok)
    newline = tok.convert_tokens_to_ids("\n")  # the last token of the assistant's header
    h = final_hidden(model, newline)
    with torch.no_grad():
        model.lm_head.weight[prm.good_id] = 1.5 * h / h.dot(h)
        model.lm_head.weight[prm.bad_id] = 0.0
    scores = prm.score([QUESTION], ["84+72=57\n57-31=26\nA:26"])[0].step_scores
    assert scores == pytest.approx([sigmoid(1.5)] * 3, abs=1e-5)


def test_rlhflow_is_named_in_the_spec_and_needs_a_chat_template(tmp_path):
    model, tok = rlhflow_model()
    path = save(model, tok, tmp_path / "rlhflow")
    loaded = load_verifier(f"hf-prm+rlhflow:{path}?batch_size=2")
    assert isinstance(loaded, RLHFlowPRM) and loaded.batch_size == 2
    assert loaded.score([QUESTION], [SOLUTIONS[0]])[0].step_scores == pytest.approx(
        RLHFlowPRM(model, tok).score([QUESTION], [SOLUTIONS[0]])[0].step_scores, abs=1e-5
    )
    config = json.loads((path / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (path / "tokenizer_config.json").write_text(json.dumps(config))
    for name in ("chat_template.jinja", "chat_template.json"):
        (path / name).unlink(missing_ok=True)
    with pytest.raises(ConfigError, match="reads a chat, but the tokenizer has no chat template"):
        load_verifier(f"hf-prm+rlhflow:{path}")
