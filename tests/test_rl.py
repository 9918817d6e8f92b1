"""transferkit.rl: Taylor & Stone metrics on hand-made curves, every strategy run against scratch,
policies as safetensors (identical actions after a round trip, never SB3's pickled zip), resume
after an interruption, divergence caught, entry-point environments in a card refused.
Budgets are tiny (a few hundred CartPole steps, 2 seeds): these check the machinery, not learning."""
from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("stable_baselines3")

import torch

from transferkit.cli import main
from transferkit.errors import UserInputError
from transferkit.rl import commands
from transferkit.rl import train as train_mod
from transferkit.rl.envs import EnvSpec, make_env
from transferkit.rl.metrics import transfer_metrics
from transferkit.rl.policy import build_model, load_tensors, make_algo, model_tensors
from transferkit.rl.train import TrainJob, check_finite, train

TINY = {"n_steps": 64, "batch_size": 32, "n_epochs": 2}
LONG_POLE = EnvSpec("CartPole-v1", {"length": 1.0, "masspole": 0.3})


def test_metrics_on_hand_made_curves():
    steps = [0, 10, 20]
    scratch = np.array([[0.0, 5, 10], [0.0, 5, 10]])
    better = np.array([[5.0, 10, 10], [5.0, 10, 10]])
    m = transfer_metrics(steps, {"finetune": better, "scratch": scratch}, threshold=9.0, n_boot=200)
    assert m["jumpstart"]["finetune"]["gain"] == pytest.approx(5.0)
    # trapezoids / span: (7.5*10 + 10*10) / 20 = 8.75 against (2.5*10 + 7.5*10) / 20 = 5
    assert m["area_under_curve"]["finetune"]["mean"] == pytest.approx(8.75)
    assert m["area_under_curve"]["finetune"]["gain"] == pytest.approx(3.75)
    assert m["asymptotic_return"]["scratch"]["mean"] == pytest.approx(10.0)
    assert m["time_to_threshold"]["finetune"]["mean"] == 10 and m["time_to_threshold"]["scratch"]["mean"] == 20
    assert m["time_to_threshold"]["finetune"]["gain"] == 10  # steps saved
    assert m["transfer_ratio"]["finetune"] == pytest.approx(3.75 / 5.0)  # areas above the lowest return, 0
    assert m["verdicts"]["finetune"]["verdict"] == "helped"
    hurt = transfer_metrics(steps, {"zero-shot": -better, "scratch": scratch}, n_boot=200)
    assert hurt["verdicts"]["zero-shot"]["verdict"] == "hurt"
    assert hurt["time_to_threshold"]["zero-shot"]["gain"] < 0  # never reached: counted as past the budget
    mixed = np.array([[0.0, 9, 12], [0.0, 1, 8]])
    same = transfer_metrics(steps, {"finetune": mixed, "scratch": scratch}, n_boot=200)
    assert same["verdicts"]["finetune"]["verdict"] == "no-difference"
    with pytest.raises(ValueError, match="same number of seeds"):
        transfer_metrics(steps, {"finetune": better[:1], "scratch": scratch})


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    out = tmp_path_factory.mktemp("rl") / "src"
    commands.pretrain(env=EnvSpec("CartPole-v1"), algo=make_algo("ppo", (16, 16), TINY), steps=256, out=out,
                      eval_every=128, eval_episodes=1)
    return out


@pytest.fixture(scope="module")
def randomized_source(tmp_path_factory):
    out = tmp_path_factory.mktemp("rl") / "src-rand"
    commands.pretrain(env=EnvSpec("CartPole-v1", ranges={"length": [0.5, 1.5]}),
                      algo=make_algo("ppo", (16, 16), TINY), steps=128, out=out, eval_every=128, eval_episodes=1)
    return out


def test_policy_round_trip_gives_identical_actions(source):
    assert not list(source.glob("*.zip")) and not list(source.glob("*.pkl"))  # no SB3 zip, no pickle
    rd, card, algo, tensors = commands.read_policy(source)
    assert card["algorithm"] == "ppo" and card["net_arch"] == [16, 16] and card["seeds"] == [0]
    assert card["env"]["env"] == "CartPole-v1" and "stable-baselines3" in card["versions"]
    a = build_model(algo, make_env(EnvSpec("CartPole-v1"), seed=1), seed=1, env_name="CartPole-v1")
    b = build_model(algo, make_env(EnvSpec("CartPole-v1"), seed=2), seed=2, env_name="CartPole-v1")
    load_tensors(a, "ppo", tensors, "src")
    load_tensors(b, "ppo", {k: v.clone() for k, v in model_tensors(a, "ppo").items()}, "copy")
    obs = np.random.default_rng(0).normal(size=(64, 4)).astype(np.float32)
    assert np.array_equal(a.predict(obs, deterministic=True)[0], b.predict(obs, deterministic=True)[0])
    weights = source / "strategy.safetensors"
    blob = weights.read_bytes()
    weights.write_bytes(blob[:-4] + b"\0\0\0\0")
    try:
        with pytest.raises(UserInputError, match="sha256"):
            commands.read_policy(source)
    finally:
        weights.write_bytes(blob)


def test_fit_runs_every_strategy_against_scratch(tmp_path, source, randomized_source):
    out = tmp_path / "fit"
    m = commands.fit(source=source, randomized_source=randomized_source, env=LONG_POLE, seeds=[0, 1], steps=128,
                     out=out, eval_every=64, eval_episodes=1,
                     strategies=["finetune", "zero-shot", "frozen-features", "randomized-source"])
    written = json.loads((out / "metrics.json").read_text())
    for key in ("jumpstart", "asymptotic_return", "area_under_curve", "time_to_threshold"):
        assert set(written["rl"][key]) == {"finetune", "zero-shot", "frozen-features", "randomized-source",
                                           "scratch"}
        assert written["rl"][key]["scratch"]["gain"] == 0.0
    assert written["verdict"]["verdict"] in ("helped", "no-difference", "hurt")
    assert written["verdict"] == m["rl"]["verdicts"]["finetune"]
    assert len(written["rl"]["steps"]) == len(written["rl"]["curves"]["scratch"]["mean"]) >= 3
    zs = np.array(written["rl"]["curves"]["zero-shot"]["per_seed"])
    assert np.all(zs == zs[:, :1])  # the source policy never changes: flat curve
    html = (out / "report.html").read_text()
    assert "data:image/png;base64," in html and "randomized-source" in html
    card = json.loads((out / "model_card.json").read_text())
    assert card["strategy"]["name"] == "finetune" and card["lineage"]["run"] == str(source)
    assert card["randomized_lineage"]["run"] == str(randomized_source)
    assert not (out / "checkpoints").exists()  # pruned once the run is written
    assert main(["rl", "evaluate", str(out), "--episodes", "2"]) == 0


def test_randomized_source_needs_ranges_and_spaces_must_match(tmp_path, source):
    with pytest.raises(UserInputError, match="pre-trained over ranges"):
        commands.fit(source=source, env=LONG_POLE, strategies=["randomized-source"], steps=64, seeds=[0],
                     out=tmp_path / "x")
    with pytest.raises(UserInputError, match="same observation and action spaces"):
        commands.fit(source=source, env=EnvSpec("Acrobot-v1"), strategies=["finetune"], steps=64, seeds=[0],
                     out=tmp_path / "y")
    with pytest.raises(UserInputError, match="unknown --strategy"):
        commands.fit(source=source, env=LONG_POLE, strategies=["magic"], steps=64, seeds=[0], out=tmp_path / "z")


def test_frozen_features_keep_the_source_layers(source):
    _, _, algo, tensors = commands.read_policy(source)
    r = train(TrainJob(algo, LONG_POLE, steps=128, seed=0, eval_every=128, eval_episodes=1, init=tensors,
                       freeze=True))
    kept = [k for k in tensors if k.startswith("mlp_extractor.")]
    assert kept and all(torch.equal(r.tensors[k], tensors[k]) for k in kept)
    assert not torch.equal(r.tensors["action_net.weight"], tensors["action_net.weight"])


def test_resume_after_interruption_continues(tmp_path, monkeypatch):
    job = TrainJob(make_algo("ppo", (16, 16), TINY), EnvSpec("CartPole-v1"), steps=256, seed=0, eval_every=64,
                   eval_episodes=1, checkpoint_dir=tmp_path / "ck")
    real, calls = train_mod.save_checkpoint, []

    def killed_after_two(*args, **kwargs):
        if len(calls) == 2:
            raise KeyboardInterrupt  # the process dies after its second checkpoint (step 0, then step 64)
        calls.append(kwargs["step"])
        return real(*args, **kwargs)

    monkeypatch.setattr(train_mod, "save_checkpoint", killed_after_two)
    with pytest.raises(KeyboardInterrupt):
        train(job)
    monkeypatch.setattr(train_mod, "save_checkpoint", real)
    assert calls == [0, 64]
    resumed = train(job)
    assert resumed.resumed_from == 64
    assert resumed.steps[:2] == [0, 64] and resumed.steps[-1] == 256 and resumed.model.num_timesteps == 256
    again = train(job)  # a finished run's last checkpoint is marked done: nothing is trained again
    assert again.resumed_from == 256 and again.returns == resumed.returns


@pytest.mark.parametrize("algo, env, hyper", [
    ("dqn", "CartPole-v1", {"learning_starts": 50, "buffer_size": 500}),
    ("sac", "Pendulum-v1", {"learning_starts": 50, "buffer_size": 500, "batch_size": 32}),
])
def test_off_policy_algorithms_train_checkpoint_and_resume(tmp_path, algo, env, hyper):
    job = TrainJob(make_algo(algo, (16, 16), hyper), EnvSpec(env), steps=120, seed=0, eval_every=60,
                   eval_episodes=1, checkpoint_dir=tmp_path / "ck")
    r = train(job)
    assert r.steps == [0, 60, 120]
    again = train(job)
    assert again.resumed_from == 120
    assert all(torch.equal(r.tensors[k], again.tensors[k]) for k in r.tensors)
    if algo == "sac":
        assert "_algo.log_ent_coef" in r.tensors


def test_divergence_and_bad_settings_are_caught():
    algo = make_algo("ppo", (8,))
    model = build_model(algo, make_env(EnvSpec("CartPole-v1"), seed=0), seed=0, env_name="CartPole-v1")
    with torch.no_grad():
        next(model.policy.parameters())[0, 0] = float("nan")
    with pytest.raises(UserInputError, match="diverged at step 17"):
        check_finite(model, "ppo", 17)
    with pytest.raises(UserInputError, match="needs Discrete actions"):
        build_model(make_algo("dqn"), make_env(EnvSpec("Pendulum-v1"), seed=0), seed=0, env_name="Pendulum-v1")
    with pytest.raises(UserInputError, match="no hyper-parameter 'learning_rat'"):
        make_algo("ppo", None, {"learning_rat": 1e-3})
    with pytest.raises(UserInputError, match="unknown --algo"):
        make_algo("a3c")


def test_card_never_enables_code(tmp_path, monkeypatch):
    (tmp_path / "tk_card_env.py").write_text(
        "from gymnasium.envs.classic_control import CartPoleEnv\n\nclass Mine(CartPoleEnv):\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    out = tmp_path / "mine"
    assert main(["rl", "pretrain", "--env", "tk_card_env:Mine", "--steps", "0", "--out", str(out)]) == 2
    assert main(["rl", "pretrain", "--env", "tk_card_env:Mine", "--allow-code", "--steps", "0",
                 "--eval-episodes", "1", "--out", str(out), "--net-arch", "8"]) == 0
    with pytest.raises(UserInputError, match="entry point"):
        commands.evaluate_run(out, episodes=1)
    assert commands.evaluate_run(out, episodes=1, allow_code=True)["episodes"] == 1
