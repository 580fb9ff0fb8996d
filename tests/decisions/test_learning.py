"""Learning in a simulated world with hidden acceptance rates (a test harness, not
product code): Thompson sampling converges on the best action, and the global
holdout measures the uplift of the whole decisioning within its interval."""

from __future__ import annotations

import random

from polku.core.action_spec import compile_catalogue, parse_catalogue
from polku.core.decisions import Request, decide
from polku.core.journey_stats import uplift_interval
from polku.core.policy import Policy, PolicyConfig

TRUE_RATES = {"a-plain": 0.02, "b-banner": 0.05, "c-video": 0.08, "d-offer": 0.13, "e-quiz": 0.03}
CATALOGUE = "holdout: 0.15\ndefault_action: a-plain\nactions:\n" + "".join(
    f"  - {{id: {action}, channels: [web], treatments: {{web: {{title: {action}}}}}}}\n" for action in TRUE_RATES
)
DECISIONS = 8000
IMPRESSIONS_TO_LEARN = 4000
"""The stated number: after this many impressions the best action is chosen in ≥ 90 %."""


def test_thompson_sampling_converges_and_the_holdout_measures_the_uplift() -> None:
    catalogue = compile_catalogue(parse_catalogue(CATALOGUE), version=1)
    policy = Policy(PolicyConfig())
    world = random.Random(2026)
    stats: dict[tuple[str, str], tuple[int, int]] = {}
    chosen: list[str] = []
    arms = {"treatment": [0, 0], "holdout": [0, 0]}
    expected_treatment = 0.0
    for number in range(DECISIONS):
        customer = f"c{world.randrange(20_000)}"
        found = decide(
            catalogue,
            workspace="w",
            customer_id=customer,
            decision_id=f"d{number}",
            request=Request("web", limit=1),
            view={"traits": {}, "segments": [], "attributes": {}},
            policy=policy,
            sent=[],
            account_sent={},
            memory={},
            stats=stats,
            now_ms=1_790_000_000_000,
        )
        (top,) = found.ranked
        accepted = world.random() < TRUE_RATES[top.id]
        offers, accepts = stats.get((top.id, "*"), (0, 0))
        stats[(top.id, "*")] = (offers + 1, accepts + int(accepted))
        arm = arms["holdout" if found.holdout else "treatment"]
        arm[0] += 1
        arm[1] += int(accepted)
        if found.holdout:
            assert top.id == "a-plain"
        else:
            chosen.append(top.id)
            expected_treatment += TRUE_RATES[top.id]
    # Convergence: after the stated number of impressions, the best action ≥ 90 %.
    after = chosen[IMPRESSIONS_TO_LEARN:]
    best_share = after.count("d-offer") / len(after)
    assert best_share >= 0.9, best_share
    # Poor actions fade: the worst is offered rarely once learned.
    assert after.count("a-plain") / len(after) < 0.03
    # The holdout measures the uplift: the true difference lies in the interval.
    treated, holdout = arms["treatment"], arms["holdout"]
    assert 0.1 < holdout[0] / DECISIONS < 0.2
    interval = uplift_interval(treated[1], treated[0], holdout[1], holdout[0])
    assert interval is not None
    true_uplift = expected_treatment / treated[0] - TRUE_RATES["a-plain"]
    _, low, high = interval
    assert low <= true_uplift <= high, (low, true_uplift, high)
    assert low > 0  # the decisioning is measurably better than the default
