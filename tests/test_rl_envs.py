"""transferkit.rl.envs: --env-param physics and wrappers applied and validated, domain randomisation,
entry points refused without --allow-code, misbehaving environments stopped with the step named."""
from __future__ import annotations

import textwrap

import numpy as np
import pytest

pytest.importorskip("gymnasium")

from transferkit.errors import UserInputError
from transferkit.rl.envs import EnvSpec, make_env, parse_params, parse_ranges


def test_physics_params_are_applied_with_derived_quantities():
    env = make_env(EnvSpec("CartPole-v1", {"length": 1.0, "masspole": 0.3}), seed=0)
    u = env.unwrapped
    assert (u.length, u.masspole) == (1.0, 0.3)
    assert u.polemass_length == pytest.approx(0.3) and u.total_mass == pytest.approx(1.3)
    assert make_env(EnvSpec("Acrobot-v1", {"link_mass_1": 2.0}), seed=0).unwrapped.LINK_MASS_1 == 2.0
    assert make_env(EnvSpec("Pendulum-v1", {"gravity": 5.0}), seed=0).unwrapped.g == 5.0
    assert make_env(EnvSpec("MountainCar-v0", {"gravity": 0.003}), seed=0).unwrapped.gravity == 0.003


def test_heavier_pole_changes_the_dynamics():
    def trajectory(params):
        env = make_env(EnvSpec("CartPole-v1", params), seed=3)
        env.reset(seed=3)
        return np.array([env.step(1)[0] for _ in range(5)])

    assert not np.allclose(trajectory({}), trajectory({"length": 1.5, "masspole": 0.5}))


def test_unknown_and_bad_params_are_refused_clearly():
    with pytest.raises(UserInputError, match=r"no parameter 'lenght' \(did you mean 'length'\?\)") as e:
        make_env(EnvSpec("CartPole-v1", {"lenght": 1.0}), seed=0)
    assert "masspole" in e.value.hint and "reverse_actions" in e.value.hint
    with pytest.raises(UserInputError, match="must be positive"):
        make_env(EnvSpec("CartPole-v1", {"masspole": -1.0}), seed=0)
    with pytest.raises(UserInputError, match="probability"):
        make_env(EnvSpec("CartPole-v1", {"action_noise": 2.0}), seed=0)
    with pytest.raises(UserInputError, match="not KEY=VALUE"):
        parse_params(["length"])
    with pytest.raises(UserInputError, match="not a number"):
        parse_params(["length=long"])
    with pytest.raises(UserInputError, match="low end"):
        parse_ranges(["length=2:1"])
    with pytest.raises(UserInputError, match="did you mean CartPole-v1"):
        make_env(EnvSpec("CartPole-v9"), seed=0)


def test_reversed_actions_and_noise():
    env = make_env(EnvSpec("CartPole-v1", {"reverse_actions": 1}), seed=0)
    shift = env.env  # GuardWrapper(ShiftWrapper(...))
    assert shift._act(0) == 1 and shift._act(1) == 0
    pend = make_env(EnvSpec("Pendulum-v1", {"reverse_actions": 1}), seed=0).env
    assert pend._act(np.array([1.5], dtype=np.float32))[0] == pytest.approx(-1.5)
    noisy = make_env(EnvSpec("CartPole-v1", {"action_noise": 1.0, "obs_noise": 0.5}), seed=0).env
    assert {noisy._act(0) for _ in range(50)} == {0, 1}  # every action replaced by a random one
    clean, _ = make_env(EnvSpec("CartPole-v1"), seed=4).reset(seed=4)
    obs, _ = make_env(EnvSpec("CartPole-v1", {"obs_noise": 0.5}), seed=4).reset(seed=4)
    assert np.abs(obs - clean).max() > 0.05


def test_ranges_are_sampled_at_every_reset():
    env = make_env(EnvSpec("CartPole-v1", ranges={"length": [0.5, 1.5]}), seed=0)
    seen = []
    for _ in range(6):
        env.reset()
        seen.append(env.unwrapped.length)
        assert env.unwrapped.polemass_length == pytest.approx(env.unwrapped.masspole * seen[-1])
    assert all(0.5 <= v <= 1.5 for v in seen) and len(set(seen)) == 6


USER_ENV = textwrap.dedent('''
    import gymnasium as gym
    import numpy as np
    from gymnasium import spaces

    class Toy(gym.Env):
        observation_space = spaces.Box(-10, 10, shape=(2,), dtype=np.float32)
        action_space = spaces.Discrete(2)
        mode = "ok"
        def reset(self, seed=None, options=None):
            super().reset(seed=seed)
            self.t = 0
            return np.zeros(2, dtype=np.float32), {}
        def step(self, action):
            self.t += 1
            obs = np.full(2, 0.1 * self.t, dtype=np.float32)
            if self.mode == "nan" and self.t == 3:
                obs[0] = np.nan
            if self.mode == "raise" and self.t == 2:
                raise RuntimeError("sensor unplugged")
            if self.mode == "shape":
                obs = np.zeros(3, dtype=np.float32)
            reward = float("nan") if self.mode == "reward" and self.t == 4 else 1.0
            return obs, reward, self.t >= 5, False, {}

    class NaNToy(Toy):
        mode = "nan"
    class RaiseToy(Toy):
        mode = "raise"
    class ShapeToy(Toy):
        mode = "shape"
    class RewardToy(Toy):
        mode = "reward"
    class DictToy(Toy):
        observation_space = spaces.Dict({"a": spaces.Discrete(2)})
''')


@pytest.fixture
def user_envs(tmp_path, monkeypatch):
    (tmp_path / "tk_user_envs.py").write_text(USER_ENV)
    monkeypatch.syspath_prepend(str(tmp_path))
    return "tk_user_envs"


def test_entry_point_needs_allow_code(user_envs):
    with pytest.raises(UserInputError, match="entry point") as e:
        make_env(EnvSpec(f"{user_envs}:Toy"), seed=0)
    assert "--allow-code" in e.value.hint
    env = make_env(EnvSpec(f"{user_envs}:Toy"), seed=0, allow_code=True)
    assert env.step(0)[1] == 1.0
    with pytest.raises(UserInputError, match="cannot import"):
        make_env(EnvSpec(f"{user_envs}:Missing"), seed=0, allow_code=True)


@pytest.mark.parametrize("cls, pattern", [
    ("NaNToy", r"at step 3 \(episode 1\): step\(\) returned a non-finite observation"),
    ("RaiseToy", r"at step 2 \(episode 1\): step\(\) raised RuntimeError: sensor unplugged"),
    ("ShapeToy", r"at step 1 .*shape \(3,\), but its observation space says \(2,\)"),
    ("RewardToy", r"at step 4 \(episode 1\): step\(\) returned the reward nan"),
])
def test_misbehaving_env_names_the_step(user_envs, cls, pattern):
    env = make_env(EnvSpec(f"{user_envs}:{cls}"), seed=0, allow_code=True)
    with pytest.raises(UserInputError, match=pattern):
        for _ in range(5):
            env.step(0)


def test_unusable_spaces_are_refused(user_envs):
    with pytest.raises(UserInputError, match="flat Box"):
        make_env(EnvSpec(f"{user_envs}:DictToy"), seed=0, allow_code=True)
