"""The whole embedded-model recipe, one resumable command: policy -> rollout labels -> verifier ->
step checker -> reviser -> order-diverse policy and its any-order step checker -> measurement and
model card -> (optionally) install into the package.

Each stage resumes from its own checkpoints, and a finished stage is skipped, so rerunning the
command after an interruption continues where it stopped. Stage wall times are kept in
``recipe.json`` for the model card.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from ponder.training.prm_data import RolloutConfig
from ponder.training.train_checker import CheckerTrainConfig
from ponder.training.train_policy import PolicyTrainConfig
from ponder.training.train_reviser import ReviserTrainConfig
from ponder.training.train_verifier import VerifierTrainConfig


@dataclass
class RecipeConfig:
    out_dir: str = "runs/embedded"
    seed: int = 0
    policy_steps: int = PolicyTrainConfig.steps
    rollout_problems: int = RolloutConfig.n_problems
    verifier_epochs: int = VerifierTrainConfig.epochs
    # The step checker (the default verifier): the policy's samples of these many train problems,
    # every slip corrected, and a fine-tune of a policy copy on them.
    checker_problems: int = 2500
    checker_samples_per_problem: int = 8
    checker_steps: int = CheckerTrainConfig.steps
    # The reviser: a policy copy fine-tuned on the same samples, its wrong ones shown in context.
    reviser_steps: int = ReviserTrainConfig.steps
    # The order-diverse policy (majority vote's): the policy's recipe on solutions in random orders,
    # trained all its steps (the policy's early stop comes long before it learns the longer chains).
    orders_policy: bool = True
    # ... and its step checker: the same recipe as the checker's, steps in any order.
    orders_checker_steps: int = 5000
    # Where the policies and the checkers train ("cpu" or "cuda"); everything else runs on the CPU.
    device: str = "cpu"
    card_greedy_per_level: int = 200
    card_sampled_per_level: int = 40
    install: bool = False


def _stage(state: dict, state_file: Path, name: str, fn, log) -> None:
    if state.get(name, {}).get("done"):
        log(f"[{name}] already done ({state[name]['seconds'] / 60:.1f} min), skipping")
        return
    t0 = time.perf_counter()
    fn()
    prior = state.get(name, {}).get("seconds", 0.0)
    state[name] = {"done": True, "seconds": prior + time.perf_counter() - t0}
    state_file.write_text(json.dumps(state, indent=1))


def _last_stop_reason(history: list[dict], cfg: PolicyTrainConfig) -> str | None:
    from ponder.training.train_policy import stop_reason

    return stop_reason(history[-1]["dev_greedy"], cfg) if history else None


def run_recipe(cfg: RecipeConfig, log=print) -> Path:
    from ponder.backends.embedded import EmbeddedGenerator
    from ponder.training.card import measure, measure_voting, write_card
    from ponder.training.model import load_model
    from ponder.training.prm_data import generate_labels
    from ponder.training.train_checker import train_checker
    from ponder.training.train_policy import train_policy
    from ponder.training.train_reviser import train_reviser
    from ponder.training.train_verifier import train_verifier
    from ponder.verifiers.embedded import EmbeddedVerifier
    from ponder.verifiers.likelihood import CheckerLMVerifier

    root = Path(cfg.out_dir)
    root.mkdir(parents=True, exist_ok=True)
    state_file = root / "recipe.json"
    state = json.loads(state_file.read_text()) if state_file.exists() else {}
    policy_cfg = PolicyTrainConfig(
        out_dir=str(root / "policy"), steps=cfg.policy_steps, seed=cfg.seed, device=cfg.device
    )
    orders_cfg = PolicyTrainConfig(
        out_dir=str(root / "orders"),
        steps=cfg.policy_steps,
        seed=cfg.seed,
        device=cfg.device,
        order_shuffle=1.0,
        stop_accuracy=None,
        cap_accuracy=None,
    )
    rollout_cfg = RolloutConfig(
        out_file=str(root / "verifier" / "labels.jsonl"), n_problems=cfg.rollout_problems, seed=cfg.seed
    )
    verifier_cfg = VerifierTrainConfig(
        labels=rollout_cfg.out_file,
        init_from=str(root / "policy" / "policy.safetensors"),
        out_dir=str(root / "verifier"),
        epochs=cfg.verifier_epochs,
        seed=cfg.seed,
    )
    checker_samples_cfg = RolloutConfig(
        out_file=str(root / "checker" / "samples.jsonl"),
        n_problems=cfg.checker_problems,
        samples_per_problem=cfg.checker_samples_per_problem,
        label="checked",
        seed=cfg.seed,
    )
    checker_cfg = CheckerTrainConfig(
        samples=checker_samples_cfg.out_file,
        init_from=str(root / "policy" / "policy.safetensors"),
        out_dir=str(root / "checker"),
        steps=cfg.checker_steps,
        seed=cfg.seed,
        device=cfg.device,
    )
    reviser_cfg = ReviserTrainConfig(
        samples=checker_samples_cfg.out_file,
        init_from=str(root / "policy" / "policy.safetensors"),
        out_dir=str(root / "reviser"),
        steps=cfg.reviser_steps,
        seed=cfg.seed,
    )
    policy_file = root / "policy" / "policy.safetensors"
    reviser_file = root / "reviser" / "reviser.safetensors"
    verifier_file = root / "verifier" / "verifier.safetensors"
    checker_file = root / "checker" / "checker.safetensors"
    orders_file = root / "orders" / "policy_orders.safetensors"

    _stage(state, state_file, "policy", lambda: train_policy(policy_cfg, log=log), log)
    _stage(
        state,
        state_file,
        "rollouts",
        lambda: generate_labels(EmbeddedGenerator.load(policy_file), rollout_cfg, log=log),
        log,
    )
    _stage(state, state_file, "verifier", lambda: train_verifier(verifier_cfg, log=log), log)
    _stage(
        state,
        state_file,
        "checker_samples",
        lambda: generate_labels(EmbeddedGenerator.load(policy_file), checker_samples_cfg, log=log),
        log,
    )
    _stage(state, state_file, "checker", lambda: train_checker(checker_cfg, log=log), log)
    _stage(state, state_file, "reviser", lambda: train_reviser(reviser_cfg, log=log), log)

    def orders() -> None:
        trained = train_policy(orders_cfg, log=log)
        if trained is not None:
            shutil.copy2(trained, orders_file)

    orders_samples_cfg = RolloutConfig(
        out_file=str(root / "orders_checker" / "samples.jsonl"),
        n_problems=cfg.checker_problems,
        samples_per_problem=cfg.checker_samples_per_problem,
        label="checked",
        any_order=True,
        seed=cfg.seed,
    )
    orders_checker_cfg = CheckerTrainConfig(
        samples=orders_samples_cfg.out_file,
        init_from=str(orders_file),
        out_dir=str(root / "orders_checker"),
        steps=cfg.orders_checker_steps,
        seed=cfg.seed,
        any_order=True,
        device=cfg.device,
    )
    orders_checker_file = root / "orders_checker" / "checker_orders.safetensors"

    def orders_checker() -> None:
        shutil.copy2(train_checker(orders_checker_cfg, log=log), orders_checker_file)

    if cfg.orders_policy:
        _stage(state, state_file, "orders", orders, log)
        _stage(
            state,
            state_file,
            "orders_checker_samples",
            lambda: generate_labels(EmbeddedGenerator.load(orders_file), orders_samples_cfg, log=log),
            log,
        )
        _stage(state, state_file, "orders_checker", orders_checker, log)

    def card() -> None:
        generator = EmbeddedGenerator.load(policy_file)
        verifier = EmbeddedVerifier.load(verifier_file)
        checker = CheckerLMVerifier.load(checker_file)
        metrics = measure(
            generator,
            verifier,
            cfg.card_greedy_per_level,
            cfg.card_sampled_per_level,
            cfg.seed,
            checker=checker,
        )
        _, policy_meta = load_model(policy_file)
        _, verifier_meta = load_model(verifier_file)
        _, checker_meta = load_model(checker_file)
        _, reviser_meta = load_model(reviser_file)
        pc, vc = generator.model.config, verifier.model.config
        info = {
            "command": "ponder train all" + (" --install" if cfg.install else ""),
            "seed": cfg.seed,
            "cores": os.cpu_count(),
            "policy_params": generator.num_params,
            "verifier_params": verifier.num_params,
            "policy_shape": f"{pc.n_layer} x {pc.d_model} x {pc.n_head}",
            "verifier_shape": f"{vc.n_layer} x {vc.d_model} x {vc.n_head}",
            "policy_bytes": policy_file.stat().st_size,
            "verifier_bytes": verifier_file.stat().st_size,
            "policy_steps": policy_cfg.steps,
            "policy_batch": policy_cfg.batch_size,
            # Training loops time themselves (across resumes); the stage timer covers the rest.
            "policy_seconds": policy_meta.get("train_seconds", state["policy"]["seconds"]),
            "rollout_problems": rollout_cfg.n_problems,
            "samples_per_problem": rollout_cfg.samples_per_problem,
            "rollouts_per_step": rollout_cfg.rollouts_per_step,
            "rollout_label": rollout_cfg.label,
            "verifier_extra_layers": verifier_cfg.extra_layers,
            "rollout_seconds": state["rollouts"]["seconds"],
            "verifier_epochs": verifier_cfg.epochs,
            "verifier_seconds": verifier_meta.get("train_seconds", state["verifier"]["seconds"]),
            "checker_params": checker.num_params,
            "checker_shape": f"{checker.model.config.n_layer} x {checker.model.config.d_model} x "
            f"{checker.model.config.n_head}",
            "checker_bytes": checker_file.stat().st_size,
            "checker_problems": checker_samples_cfg.n_problems,
            "checker_samples_per_problem": checker_samples_cfg.samples_per_problem,
            "checker_sample_seconds": state["checker_samples"]["seconds"],
            "checker_steps": checker_cfg.steps,
            "checker_seconds": checker_meta.get("train_seconds", state["checker"]["seconds"]),
            "reviser_params": generator.num_params,  # a fine-tuned copy of the policy
            "reviser_shape": f"{pc.n_layer} x {pc.d_model} x {pc.n_head}",
            "reviser_bytes": reviser_file.stat().st_size,
            "reviser_lr": reviser_cfg.lr,
            "reviser_steps": reviser_cfg.steps,
            "reviser_seconds": reviser_meta.get("train_seconds", state["reviser"]["seconds"]),
            "policy_train_history": policy_meta.get("history", []),
            "policy_stop_reason": _last_stop_reason(policy_meta.get("history", []), policy_cfg),
            "python": sys.version.split()[0],
        }
        if cfg.orders_policy:
            orders_generator = EmbeddedGenerator.load(orders_file)
            oc = orders_generator.model.config
            _, orders_meta = load_model(orders_file)
            info |= {
                "orders_params": orders_generator.num_params,
                "orders_shape": f"{oc.n_layer} x {oc.d_model} x {oc.n_head}",
                "orders_bytes": orders_file.stat().st_size,
                "orders_steps": orders_cfg.steps,
                "orders_device": orders_cfg.device,
                "orders_command": "ponder train policy --order-shuffle 1.0 --no-early-stop",
                "orders_seconds": orders_meta.get("train_seconds", state["orders"]["seconds"]),
                "orders_checker_params": orders_generator.num_params,  # a fine-tuned copy of it
                "orders_checker_shape": f"{oc.n_layer} x {oc.d_model} x {oc.n_head}",
                "orders_checker_bytes": orders_checker_file.stat().st_size,
                "orders_checker_steps": orders_checker_cfg.steps,
                "orders_checker_device": orders_checker_cfg.device,
                "orders_checker_seconds": load_model(orders_checker_file)[1].get(
                    "train_seconds", state["orders_checker"]["seconds"]
                ),
                "orders_checker_sample_seconds": state["orders_checker_samples"]["seconds"],
                "orders_quality": measure_voting(
                    orders_generator, cfg.card_greedy_per_level, cfg.card_sampled_per_level, cfg.seed
                ),
            }
        info["total_seconds"] = sum(
            info[k]
            for k in (
                "policy_seconds",
                "rollout_seconds",
                "verifier_seconds",
                "checker_sample_seconds",
                "checker_seconds",
                "reviser_seconds",
                *(
                    ("orders_seconds", "orders_checker_sample_seconds", "orders_checker_seconds")
                    if cfg.orders_policy
                    else ()
                ),
            )
        )
        write_card(root / "MODEL_CARD.md", metrics, info)
        log((root / "MODEL_CARD.md").read_text())

    _stage(state, state_file, "card", card, log)
    if cfg.install:
        from ponder.training.weights import WEIGHTS_DIR

        models = (policy_file, verifier_file, checker_file, reviser_file) + (
            (orders_file, orders_checker_file) if cfg.orders_policy else ()
        )
        files = (*models, root / "MODEL_CARD.md", root / "card.json")
        for f in files:
            shutil.copy2(f, WEIGHTS_DIR / f.name)
        log(f"installed the embedded models into {WEIGHTS_DIR}")
    return root
