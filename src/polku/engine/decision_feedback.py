"""The processor's part of next-best-action (docs/decisions.md): what decisions
offered and how customers answered, folded into the learning counters and the
customer's memory (response-based suppression, caps), in the batch's transaction.

- ``Decision Made`` (written by the API for every decision): each action shown is
  an offer in the decision's learning group; marketing offers count against the
  contact policy's caps; the decision is remembered so its outcome counts for the
  group (and the holdout arm) it was made in.
- ``Action Accepted`` / ``Action Rejected`` (from any front end, through ingestion:
  ``{action, decision}``): an acceptance or a rejection of the action; the first
  acceptance of a decision's first action converts the decision.
- ``Chat Handover`` (written by the API when a chat goes to a human): its summary
  becomes an agent note, so the agent view has it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

import msgspec

from polku.core.decisions import MAX_REJECTIONS_KEPT, OVERALL, ActionMemory, DecisionMemory, remember_decision
from polku.core.journey_state import JourneyState, Note, Sent
from polku.engine.runtime import WorkspaceRuntime

if TYPE_CHECKING:
    from polku.engine.processor import Processor

DECISION_EVENT: Final = "Decision Made"
ACCEPTED_EVENT: Final = "Action Accepted"
REJECTED_EVENT: Final = "Action Rejected"
HANDOVER_EVENT: Final = "Chat Handover"
EVENTS: Final = frozenset({DECISION_EVENT, ACCEPTED_EVENT, REJECTED_EVENT, HANDOVER_EVENT})
HOLDOUT_ARM: Final = "holdout"
TREATMENT_ARM: Final = "treatment"


class DecisionFeedback:
    def __init__(self, processor: Processor) -> None:
        self.processor = processor

    def after_event(
        self,
        workspace: str,
        runtime: WorkspaceRuntime,
        customer_id: str,
        name: str,
        channel: str,
        properties: dict[str, Any],
        ts_ms: int,
    ) -> None:
        journeys = self.processor.journeys
        state = journeys.state(workspace, customer_id) or JourneyState()
        changes = self.processor.changes
        if name == DECISION_EVENT:
            decision = str(properties.get("decision") or "")
            group = str(properties.get("group") or OVERALL)
            holdout = properties.get("holdout") is True
            shown = [str(action) for action in properties.get("actions") or [] if isinstance(action, str)][:50]
            purposes = properties.get("purposes") if isinstance(properties.get("purposes"), dict) else {}
            for action in shown:
                _add(changes.action_stats, (workspace, action, group), 0)
                memory = _memory(state, action)
                memory.offered_ms = ts_ms
                state.actions[action] = msgspec.to_builtins(memory)
                purpose = purposes.get(action) if isinstance(purposes, dict) else None
                if isinstance(purpose, str):
                    state.sent = [*runtime.policy.prune(state.sent, ts_ms), Sent(ts_ms, channel, purpose)]
            if decision:
                entry = DecisionMemory(ts_ms=ts_ms, group=group, holdout=holdout, actions=shown)
                decisions = {key: _decision(value) for key, value in state.decisions.items()}
                state.decisions = msgspec.to_builtins(remember_decision(decisions, decision, entry))
                _add(changes.decision_stats, (workspace, HOLDOUT_ARM if holdout else TREATMENT_ARM), 0)
        elif name in (ACCEPTED_EVENT, REJECTED_EVENT):
            answered = properties.get("action")
            if not isinstance(answered, str) or not answered:
                return
            action = answered
            decision_id = properties.get("decision")
            answered_to = (
                _decision(state.decisions[decision_id])
                if isinstance(decision_id, str) and decision_id in state.decisions
                else None
            )
            group = answered_to.group if answered_to is not None else OVERALL
            memory = _memory(state, action)
            if name == ACCEPTED_EVENT:
                _add(changes.action_stats, (workspace, action, group), 1)
                memory.accepted_ms = ts_ms
                if answered_to is not None and not answered_to.converted and answered_to.actions[:1] == [action]:
                    answered_to.converted = True
                    state.decisions = {**state.decisions, str(decision_id): msgspec.to_builtins(answered_to)}
                    arm = HOLDOUT_ARM if answered_to.holdout else TREATMENT_ARM
                    _add(changes.decision_stats, (workspace, arm), 1)
            else:
                _add(changes.action_stats, (workspace, action, group), 2)
                memory.rejected = [*memory.rejected, ts_ms][-MAX_REJECTIONS_KEPT:]
            state.actions[action] = msgspec.to_builtins(memory)
        elif name == HANDOVER_EVENT:
            text = properties.get("summary")
            if isinstance(text, str) and text:
                note = Note(key=f"handover-{ts_ms}", ts_ms=ts_ms, text=text[:4000], journey="", step="handover")
                state.notes = [*state.notes, note][-runtime.notes_keep :]
        journeys.put(workspace, customer_id, state)


def _add(target: dict[Any, list[int]], key: tuple[str, ...], index: int) -> None:
    """One more at ``index`` of a counter row: action stats are [offers, accepts,
    rejects], decision stats [decisions, conversions]."""
    counts = target.setdefault(key, [0, 0, 0] if len(key) == 3 else [0, 0])
    counts[index] += 1


def _memory(state: JourneyState, action: str) -> ActionMemory:
    found = state.actions.get(action)
    return msgspec.convert(found, ActionMemory) if found is not None else ActionMemory()


def _decision(value: Any) -> DecisionMemory:
    return msgspec.convert(value, DecisionMemory)
