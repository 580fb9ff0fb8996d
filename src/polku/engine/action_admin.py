"""The action catalogue in the catalog (docs/decisions.md): check, deploy (each a new
version), and what the model has learned — the JSON the API and the CLI share."""

from __future__ import annotations

from typing import Any

from polku.adapters.sqlite import survey_store
from polku.core.action_spec import Catalogue, compile_catalogue, parse_catalogue
from polku.core.decisions import OVERALL
from polku.core.errors import ConfigError
from polku.core.journey_stats import uplift_interval, wilson_interval
from polku.core.yaml_source import located
from polku.engine.decision_feedback import HOLDOUT_ARM, TREATMENT_ARM
from polku.engine.decision_service import CATALOGUE_ID
from polku.ports import Catalog, SqlReads


async def check_catalogue(
    catalog: Catalog, workspace: str, body: bytes | str, filename: str = "actions.yaml"
) -> Catalogue:
    """Parse and compile against the workspace (its segments). Raises ``ConfigError``."""
    from polku.core.yaml_source import load_with_lines

    config = (await catalog.workspace(workspace)).config
    spec = parse_catalogue(body, filename=filename)
    try:
        return compile_catalogue(spec, version=1, segments=config.segments.keys())
    except ConfigError as error:
        _, lines = load_with_lines(body, filename)
        raise located(filename, lines, str(error.details.get("field") or ""), error.message) from None


async def deploy_catalogue(catalog: Catalog, workspace: str, body: bytes | str, now: str) -> tuple[int, bool]:
    """Check, then store as the next version (a document that is not UTF-8 text is
    refused by the check, before anything is stored)."""
    await check_catalogue(catalog, workspace, body)
    text = body.decode() if isinstance(body, bytes) else body
    return await catalog.deploy_definition("actions", workspace, CATALOGUE_ID, text, now)


def learned(connection: SqlReads, workspace: str, catalogue: Catalogue | None) -> dict[str, Any]:
    """Per action and learning group: offers, acceptances, rejections, the posterior
    mean propensity and its 95 % interval; and the global holdout's uplift."""
    stats = survey_store.action_stats(connection, workspace)
    alpha, beta = catalogue.prior if catalogue is not None else (1.0, 1.0)
    actions: dict[str, dict[str, Any]] = {}
    names = [action.id for action in catalogue.actions] if catalogue is not None else []
    for action_id in [*names, *sorted({action for action, _ in stats} - set(names))]:
        groups = []
        for (action, group), (offers, accepts, rejects) in sorted(stats.items()):
            if action != action_id:
                continue
            low, high = wilson_interval(accepts, offers) if offers else (0.0, 1.0)
            groups.append(
                {
                    "group": group,
                    "offers": offers,
                    "accepted": accepts,
                    "rejected": rejects,
                    "propensity": round((alpha + accepts) / (alpha + beta + offers), 4),
                    "acceptance_rate_ci95": [round(low, 4), round(high, 4)],
                }
            )
        actions[action_id] = {"groups": groups or [{"group": OVERALL, "offers": 0, "accepted": 0, "rejected": 0,
                                                     "propensity": round(alpha / (alpha + beta), 4)}]}  # fmt: skip
    arms = survey_store.decision_stats(connection, workspace)
    treated, treated_conversions = arms.get(TREATMENT_ARM, (0, 0))
    control, control_conversions = arms.get(HOLDOUT_ARM, (0, 0))
    uplift = uplift_interval(treated_conversions, treated, control_conversions, control)
    return {
        "catalogue_version": catalogue.version if catalogue is not None else None,
        "holdout_share": catalogue.spec.holdout if catalogue is not None else None,
        "actions": actions,
        "holdout": {
            "treatment": {"decisions": treated, "converted": treated_conversions},
            "holdout": {"decisions": control, "converted": control_conversions},
            "uplift": None
            if uplift is None
            else {"absolute": round(uplift[0], 4), "ci95": [round(uplift[1], 4), round(uplift[2], 4)]},
        },
    }
