"""How a solution becomes steps, and the text each reward-model family reads them in.

Shared by the local (transformers) and the remote (vLLM) verifiers, so both send a model the
same text. A solution's steps are its non-blank pieces between step delimiters (ponder's
delimiter is a newline; blank lines, so also ``"\\n\\n"``-separated steps, make no extra steps).

- **Math-Shepherd** (``peiyi9979/math-shepherd-mistral-7b-prm`` and PRMs trained like it): the
  question, a space, then the steps joined by newlines, each step followed by `` ки`` (the step
  tag). The step's score is P("+") / (P("+") + P("-")) of the next-token distribution at the tag.
- **Qwen2.5-Math-PRM**: a chat (system, user = question, assistant = the steps), every step
  followed by the ``<extra_0>`` separator token. A two-class token-classification head; the
  step's score is softmax class 1 at its separator.
- **RLHFlow** (``RLHFlow/Llama3.1-8B-PRM-Deepseek-Data``, ``-Mistral-Data``): Math-Shepherd's
  "+" / "-" labels in a chat, rendered by the model's chat template: each step is a user turn
  (the first is the question, a space, and the first step) answered "+" by the assistant. The
  step's score is P("+") / (P("+") + P("-")) of the next token where that "+" is written.
"""

from __future__ import annotations

from ponder.tasks.arithmetic import STEP_DELIMITER

SHEPHERD_TAG = "ки"
SHEPHERD_GOOD = "+"
SHEPHERD_BAD = "-"
QWEN_SEPARATOR = "<extra_0>"
QWEN_SYSTEM = "Please reason step by step, and put your final answer within \\boxed{}."


def split_steps(solution: str, delimiter: str = STEP_DELIMITER) -> list[str]:
    """The solution's steps: non-blank pieces between delimiters, stripped, in order."""
    if not delimiter:
        raise ValueError("the step delimiter must be a non-empty string")
    return [piece.strip() for piece in solution.split(delimiter) if piece.strip()]


def question_text(prompt: str) -> str:
    """The question a reward model reads: the policy's prompt without surrounding whitespace."""
    return prompt.strip()


def shepherd_text(
    question: str, steps: list[str], tag: str = SHEPHERD_TAG
) -> tuple[str, list[tuple[int, int]]]:
    """Math-Shepherd input text and the character span of each step's tag in it.

    ``question + " " + "step1 ки\\nstep2 ки..."``, exactly as the model card builds it.
    """
    text = question + " "
    spans: list[tuple[int, int]] = []
    for i, step in enumerate(steps):
        if i:
            text += "\n"
        text += step + " "
        spans.append((len(text), len(text) + len(tag)))
        text += tag
    return text, spans


def qwen_messages(
    question: str, steps: list[str], separator: str = QWEN_SEPARATOR, system: str = QWEN_SYSTEM
) -> list[dict[str, str]]:
    """The Qwen2.5-Math-PRM chat: the separator after every step. A separator written inside the
    text itself is removed first, so that only ponder's separators are scored."""
    clean = [s.replace(separator, "") for s in steps]
    return [
        {"role": "system", "content": system.replace(separator, "")},
        {"role": "user", "content": question.replace(separator, "")},
        {"role": "assistant", "content": "".join(s + separator for s in clean)},
    ]


def rlhflow_messages(question: str, steps: list[str], good: str = SHEPHERD_GOOD) -> list[dict[str, str]]:
    """RLHFlow's PRM chat: step k a user turn (the first after the question and a space), each
    answered ``good`` by the assistant, as RLHFlow's own evaluation code builds it."""
    messages: list[dict[str, str]] = []
    for i, step in enumerate(steps):
        messages.append({"role": "user", "content": f"{question} {step}" if i == 0 else step})
        messages.append({"role": "assistant", "content": good})
    return messages


def render_chatml(messages: list[dict[str, str]]) -> str:
    """ChatML, the chat format of the Qwen2.5 family (used when a tokenizer carries no template)."""
    return "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages)
