"""The parameters ``--env-param`` changes: physics per classic-control environment (friendly
name -> attribute of the unwrapped environment) and the wrapper parameters any environment takes.

Physics: CartPole ``gravity, masscart, masspole, length`` (half the pole's length, as Gymnasium
defines it), ``force_mag, tau``; Acrobot ``link_mass_1/2, link_length_1/2, link_com_pos_1/2,
link_moi``; MountainCar ``gravity, force``; MountainCarContinuous ``power``; Pendulum ``gravity, mass,
length, dt``.  An environment not listed here may set any numeric attribute its unwrapped instance
already has (a user's own environment: its own names).
"""
from __future__ import annotations

from typing import Any

#: Friendly physics parameter -> attribute of the unwrapped environment, per environment class name.
PHYSICS: dict[str, dict[str, str]] = {
    "CartPoleEnv": {"gravity": "gravity", "masscart": "masscart", "masspole": "masspole", "length": "length",
                    "force_mag": "force_mag", "tau": "tau"},
    "AcrobotEnv": {"link_mass_1": "LINK_MASS_1", "link_mass_2": "LINK_MASS_2", "link_length_1": "LINK_LENGTH_1",
                   "link_length_2": "LINK_LENGTH_2", "link_com_pos_1": "LINK_COM_POS_1",
                   "link_com_pos_2": "LINK_COM_POS_2", "link_moi": "LINK_MOI"},
    "MountainCarEnv": {"gravity": "gravity", "force": "force"},
    "Continuous_MountainCarEnv": {"power": "power"},
    "PendulumEnv": {"gravity": "g", "mass": "m", "length": "l", "dt": "dt"},
}
#: Parameters any environment takes (applied by :class:`ShiftWrapper`, not by the environment):
#: ``action_noise``: Discrete: probability that the action is replaced by a random one; Box: std of
#: Gaussian noise added, in units of half the action range.  ``obs_noise``: std of Gaussian noise added
#: to every observation.  ``reverse_actions``: 1 maps Discrete action a to n-1-a and a Box action to
#: its mirror image in the action range (the "unrelated" shift where a source policy misleads).
WRAPPER_PARAMS = ("action_noise", "obs_noise", "reverse_actions")


def known_params(unwrapped: Any) -> dict[str, str]:
    """Friendly name -> attribute for this environment (the generic numeric attributes for others)."""
    table = PHYSICS.get(type(unwrapped).__name__)
    if table is not None:
        return dict(table)
    return {k: k for k, v in vars(unwrapped).items()
            if not k.startswith("_") and isinstance(v, (int, float)) and not isinstance(v, bool)}


def apply_physics(unwrapped: Any, values: dict[str, float]) -> None:
    table = known_params(unwrapped)
    for name, value in values.items():
        setattr(unwrapped, table[name], float(value))
    if type(unwrapped).__name__ == "CartPoleEnv":  # derived in __init__, read by step()
        unwrapped.total_mass = unwrapped.masspole + unwrapped.masscart
        unwrapped.polemass_length = unwrapped.masspole * unwrapped.length
