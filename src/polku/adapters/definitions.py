"""What every ``Catalog`` adapter says the same way: journeys are the definitions of
kind ``journey``. An adapter implements the generic ``*_definition`` methods and
inherits the journey ones from here."""

from __future__ import annotations

from polku.ports import DefinitionKind, JourneyStatus, StoredJourney


class JourneyDefinitions:
    async def deploy_definition(
        self, kind: DefinitionKind, workspace: str, item_id: str, body: str, deployed_at: str
    ) -> tuple[int, bool]:
        raise NotImplementedError

    async def definition(
        self, kind: DefinitionKind, workspace: str, item_id: str, version: int | None = None
    ) -> StoredJourney:
        raise NotImplementedError

    async def definitions(self, kind: DefinitionKind, workspace: str) -> list[StoredJourney]:
        raise NotImplementedError

    async def set_definition_status(
        self, kind: DefinitionKind, workspace: str, item_id: str, status: JourneyStatus, updated_at: str
    ) -> StoredJourney:
        raise NotImplementedError

    async def deploy_journey(self, workspace: str, journey_id: str, body: str, deployed_at: str) -> tuple[int, bool]:
        return await self.deploy_definition("journey", workspace, journey_id, body, deployed_at)

    async def journey(self, workspace: str, journey_id: str, version: int | None = None) -> StoredJourney:
        return await self.definition("journey", workspace, journey_id, version)

    async def journeys(self, workspace: str) -> list[StoredJourney]:
        return await self.definitions("journey", workspace)

    async def set_journey_status(
        self, workspace: str, journey_id: str, status: JourneyStatus, updated_at: str
    ) -> StoredJourney:
        return await self.set_definition_status("journey", workspace, journey_id, status, updated_at)
