"""Reinforcement learning: transferring a policy from a source environment to a changed target
(sim to real), on Gymnasium environments with Stable-Baselines3's algorithms (``pip install
'transferkit[rl]'``; nothing here implements an RL algorithm).

``envs`` / ``physics`` / ``wrappers`` build the environments, ``policy`` the SB3 models and their
tensors, ``train`` one checkpointed training run, ``metrics`` Taylor & Stone's transfer metrics and
the verdict, ``commands`` the ``rl pretrain | fit | evaluate`` run directories, ``report`` the page.
Nothing is imported here, so ``import transferkit`` never loads gymnasium.
"""
