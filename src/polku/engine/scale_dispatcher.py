"""A dispatcher of the scale-out deployment (docs/scale-out.md, "Dispatchers"): the
delivery loop of the embedded dispatcher (``polku.engine.dispatch_loop``) over the
workers' outbox in PostgreSQL, its ledger shared with the other dispatchers
(``polku.adapters.postgres.deliveries``: claims with a lease instead of a lock
file), the workspaces' channels from the PostgreSQL catalog, and the result events
published to the NATS stream. Run as many as you like.

Beside the loop, a keeper renews the claims of the deliveries under way every third
of the lease, and writes the result events that a dispatcher which died had
recorded but not written. A failure of PostgreSQL pauses the loop for a second; the
claims it held lapse if it lasts, and the deliveries are taken up again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import socket
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Final

from polku.adapters.postgres.catalog_reads import CatalogReads
from polku.adapters.postgres.deliveries import CLAIM_S, PostgresDeliveryLedger
from polku.adapters.postgres.tracks import migrate_all
from polku.core.errors import StoreUnavailable
from polku.engine.dispatch_loop import BATCH_SIZE, DispatchLoop, wall_clock_ms
from polku.engine.scale_worker import ScaleOut

log = logging.getLogger("polku.dispatcher")
POLL_S: Final = 0.05
"""Nothing nudges a scale-out dispatcher: it looks for new messages this often."""
ANNOUNCE_EVERY_S: Final = 5.0
STORE_RETRY_S: Final = 1.0


def dispatcher_id() -> str:
    return f"dispatcher:{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


class ScaleDispatcher(DispatchLoop):
    def __init__(
        self,
        deployment: ScaleOut,
        *,
        owner: str | None = None,
        clock: Callable[[], int] = wall_clock_ms,
        rng: random.Random | None = None,
        environ: Mapping[str, str] | None = None,
        poll_s: float = POLL_S,
        batch_size: int = BATCH_SIZE,
        claim_s: float = CLAIM_S,
    ) -> None:
        self.deployment = deployment
        self.owner = owner or dispatcher_id()
        self.claim_s = claim_s
        self.deliveries = PostgresDeliveryLedger(
            deployment.store_url, owner=self.owner, schema=deployment.schema, batch_size=batch_size, claim_s=claim_s
        )
        self.catalog = CatalogReads(self.deliveries.pool)
        event_log = deployment.event_log(max_size=2)
        super().__init__(
            self.deliveries,
            event_log,
            self._configs,
            clock=clock,
            rng=rng,
            environ=environ,
            poll_s=poll_s,
            batch_size=batch_size,
            record_for_s=claim_s,
        )

    async def _configs(self) -> dict[str, bytes]:
        return await asyncio.to_thread(self.catalog.configs)

    async def start(self) -> None:
        # The ledger reads the workers' outbox and the catalog's workspaces: their
        # tables must exist even before any worker has run.
        await migrate_all(self.deployment.store_url, schema=self.deployment.schema)
        await self.deliveries.open()
        await super().start()

    async def run(self, stop: asyncio.Event) -> None:
        keeper = asyncio.create_task(self._keep(stop), name=f"polku-claims-{self.owner}")
        try:
            while not stop.is_set():
                try:
                    await super().run(stop)
                except StoreUnavailable as error:
                    log.warning("dispatcher %s: %s; trying again in %.0f s", self.owner, error, STORE_RETRY_S)
                    await asyncio.sleep(STORE_RETRY_S)
        finally:
            keeper.cancel()
            await asyncio.gather(keeper, return_exceptions=True)

    async def _keep(self, stop: asyncio.Event) -> None:
        """Renew the claims under way; announce what dead dispatchers left."""
        next_announce = time.monotonic() + ANNOUNCE_EVERY_S
        while not stop.is_set():
            await asyncio.sleep(self.claim_s / 3)
            try:
                await self.deliveries.keep_claims(set(self._inflight))
                if time.monotonic() >= next_announce:
                    next_announce = time.monotonic() + ANNOUNCE_EVERY_S
                    await self.announce_unannounced()
            except StoreUnavailable as error:
                log.warning("dispatcher %s could not renew its claims: %s", self.owner, error)
            except Exception:  # the keeper must outlive any one failure: claims would lapse
                log.exception("dispatcher %s: the claim keeper failed; going on", self.owner)


async def run_scale_dispatcher(
    deployment: ScaleOut, *, stop: asyncio.Event | None = None, claim_s: float = CLAIM_S
) -> None:
    """Deliver the scale-out deployment's outbox until ``stop`` is set (forever
    without one), beside any number of other dispatchers."""
    dispatcher = ScaleDispatcher(deployment, claim_s=claim_s)
    try:
        await dispatcher.start()
        log.info("dispatcher started", extra={"dispatcher": dispatcher.owner, "schema": deployment.schema})
        await dispatcher.run(stop or asyncio.Event())
    finally:
        with contextlib.suppress(Exception):
            await dispatcher.close()
