"""Challenges: the ordered actions a liveness session asks for (the sessions themselves live in
the database: :mod:`facegate.liveness.sessions`)."""
from __future__ import annotations

import random

from facegate.liveness.actions import ACTIONS


def draw_challenge(rng: random.Random, length: int | None = None) -> list[str]:
    """2-3 distinct actions in random order; never both turns back to back."""
    length = length or rng.choice((2, 3))
    while True:
        actions = rng.sample(ACTIONS, length)
        if not any({a, b} == {"turn_left", "turn_right"} for a, b in zip(actions, actions[1:])):
            return actions
