"""Erasure on the scale-out deployment, as real processes against the real PostgreSQL
and NATS: an API, a worker, a dispatcher and the Parquet consumer. The person of
``test_erasure`` — merged identities, four channels, an account, a refused message,
an email journey, an in-app survey answered, a decision — is erased through the API;
then no row of any table of the deployment's PostgreSQL schema, no message of its
stream and no byte of its Parquet files names them, and another customer is as they
were."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import nats
import psycopg
import pytest
from psycopg import sql
from tests.channels.receivers import smtp_server
from tests.contract.conftest import NATS_URL, fresh_database
from tests.decisions.test_decide_server import CATALOGUE
from tests.integration.scale_processes import api_server, dispatcher, fresh_deployment, worker
from tests.integration.test_erasure import ANN, JOURNEY, YAML, _needles, _person_and_another, _scan
from tests.integration.test_parquet_feed import last_seq, start_consumer, written_through
from tests.journeys.test_journey_e2e import until
from tests.surveys.test_survey_server import IN_APP

from polku.engine.scale_worker import ScaleOut

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def database() -> Iterator[str]:
    with fresh_database() as url:
        yield url


@pytest.fixture
async def deployment(database: str) -> AsyncIterator[ScaleOut]:
    async with fresh_deployment(database, 4) as found:
        yield found


def postgres_text(deployment: ScaleOut) -> dict[str, str]:
    """Every table of the deployment's schema, its rows as text (lower case; binary
    columns with their bytes as they are, so msgpack and JSON bodies read too)."""
    found: dict[str, str] = {}
    with psycopg.connect(deployment.store_url, autocommit=True) as connection:
        columns = connection.execute(
            "SELECT table_name, column_name, data_type FROM information_schema.columns WHERE table_schema = %s",
            (deployment.schema,),
        ).fetchall()
        tables: dict[str, list[sql.Composable]] = {}
        for table, column, kind in columns:
            name = sql.Identifier(column)
            text = sql.SQL("encode({}, 'escape')").format(name) if kind == "bytea" else sql.SQL("{}::text").format(name)
            tables.setdefault(table, []).append(text)
        for table, texts in tables.items():
            query = sql.SQL("SELECT concat_ws(' ', {}) FROM {}").format(
                sql.SQL(", ").join(texts), sql.Identifier(deployment.schema, table)
            )
            found[table] = "\n".join(row[0] for row in connection.execute(query).fetchall()).lower()
    return found


async def stream_text(deployment: ScaleOut) -> str:
    """Every message the stream holds, bodies and headers, as text (lower case)."""
    client = await nats.connect(NATS_URL)
    try:
        js = client.jetstream()
        info = await js.stream_info(deployment.stream)
        texts = []
        for seq in range(int(info.state.first_seq), int(info.state.last_seq) + 1):
            try:
                message = await js.get_msg(deployment.stream, seq)
            except nats.js.errors.NotFoundError:
                continue
            texts.append((message.data or b"").decode(errors="replace") + str(message.headers or {}))
        return "\n".join(texts).lower()
    finally:
        await client.close()


def parquet_names(out: Path) -> list[str]:
    """The event names of every row of the Parquet files."""
    import pyarrow.parquet as pq

    from polku.adapters.parquet import files

    return [name for part in files.scan(out) for name in pq.read_table(part.path(out))["name"].to_pylist()]


def found_in(texts: dict[str, str], needles: list[str]) -> list[tuple[str, str]]:
    return [(where, needle) for where, text in texts.items() for needle in needles if needle.lower() in text]


async def test_erasure_leaves_no_trace_in_postgresql_the_stream_or_the_parquet_files(
    deployment: ScaleOut, tmp_path: Path
) -> None:
    api = api_server(deployment, tmp_path / "api")
    roles = [worker(deployment, tmp_path / "worker.log"), dispatcher(deployment, tmp_path / "dispatch.log")]
    out = tmp_path / "parquet"
    consumer = None
    try:
        api.start(timeout=60)
        for role in roles:
            role.start()
        consumer = start_consumer(deployment, out, tmp_path / "parquet.log", "--batch-seconds", "0.2")
        with smtp_server() as inbox, api.admin() as admin, api.writer() as writer:
            config = f"channels:\n  email: {{type: smtp, host: 127.0.0.1, port: {inbox.port}, sender: s@example.com}}\n"
            assert admin.put("/v1/workspace/config", content=config).status_code == 200
            assert admin.put("/v1/journeys/thank-you", content=JOURNEY, headers=YAML).status_code == 201
            assert admin.put("/v1/surveys/checkout-ces", content=IN_APP, headers=YAML).status_code == 201
            assert admin.put("/v1/actions", content=CATALOGUE, headers=YAML).status_code == 201
            await asyncio.sleep(2.5)  # the worker reads configuration and definitions
            assert writer.post("/v1/batch", json={"batch": _person_and_another(inbox.port)}).status_code == 200
            refused = writer.post("/v1/track", json={"userId": ANN["user"], "properties": {"order": ANN["order"]}})
            assert refused.status_code == 400
            customer = until(
                lambda: (
                    (r := admin.get("/v1/profiles/lookup", params={"user_id": ANN["user"]})).status_code == 200
                    and r.json()["customer_id"]
                ),
                timeout=60,
                what="the person's profile",
            )
            until(lambda: any(ANN["name"] in m.as_string() for m in inbox.messages), timeout=60, what="the email")
            (invitation,) = until(
                lambda: admin.get(f"/v1/profiles/{customer}/surveys").json()["surveys"], timeout=60, what="survey"
            )
            answer = {"score": 2, "customer_id": customer}
            assert admin.post(f"/v1/invitations/{invitation['token']}/answer", json=answer).status_code == 201
            decided = admin.post("/v1/decide", json={"identifier": {"user_id": ANN["user"]}, "channel": "chat"})
            assert decided.status_code == 200, decided.text
            exported = admin.get(f"/v1/profiles/{customer}/export").json()
            bob = admin.get("/v1/profiles/lookup", params={"user_id": "bob-keeps-3"}).json()
            await asyncio.sleep(2.0)  # the answer's and the decision's events reach the stream
            await written_through(out, await last_seq(deployment))
            needles = _needles([customer, *exported["merged_customer_ids"]])
            before = found_in(postgres_text(deployment), needles)
            assert {"events", "profiles", "identifiers", "messages", "deliveries"} <= {where for where, _ in before}
            assert found_in({"stream": await stream_text(deployment)}, needles)
            assert _scan(out, needles)

            erased = admin.delete(f"/v1/profiles/{customer}", params={"wait": 90, "suppress": "true"})
            assert erased.status_code == 200, erased.text
            receipt = erased.json()
            assert receipt["status"] == "erased", receipt
            assert receipt["removed"]["log.stream"] >= 7 and receipt["removed"]["analytics.parquet_rows"] >= 5
            assert not any(needle.lower() in erased.text.lower() for needle in needles)
            assert admin.get("/v1/profiles/lookup", params={"user_id": ANN["user"]}).status_code == 404
            assert admin.get("/v1/profiles/lookup", params={"user_id": "bob-keeps-3"}).json() == bob
            assert admin.get(f"/v1/erasures/{receipt['id']}").json() == receipt
            # They come back while suppressed: the worker and the Parquet consumer keep them out.
            again = {"userId": ANN["user"], "event": "Order Completed", "properties": {"order": ANN["order"]}}
            assert writer.post("/v1/track", json=again).status_code == 200
            assert writer.post("/v1/track", json={"userId": "bob-keeps-3", "event": "Later"}).status_code == 200
            until(
                lambda: (
                    admin.get("/v1/profiles/lookup", params={"user_id": "bob-keeps-3"}).json()["events"]
                    == bob["events"] + 1
                ),
                timeout=60,
                what="the later events applied",
            )
            await written_through(out, await last_seq(deployment))
            assert admin.get("/v1/profiles/lookup", params={"user_id": ANN["user"]}).status_code == 404

        assert found_in(postgres_text(deployment), needles) == []
        assert found_in({"stream": await stream_text(deployment)}, needles) == []
        assert _scan(out, needles) == []
    finally:
        if consumer is not None:
            consumer.terminate()
            consumer.wait(timeout=30)
        for role in roles:
            role.stop()
        api.stop()


async def test_retention_on_the_scale_out_takes_expired_events_from_every_store(
    deployment: ScaleOut, tmp_path: Path
) -> None:
    from tests.integration.test_retention import RULES, _iso

    day = 86_400_000
    now = int(time.time() * 1000)
    api = api_server(deployment, tmp_path / "api")
    role = worker(deployment, tmp_path / "worker.log")
    out = tmp_path / "parquet"
    consumer = None
    batch = [
        {"type": "track", "userId": "rita-s", "event": "Page Viewed", "timestamp": _iso(now - 100 * day)},
        {"type": "track", "userId": "rita-s", "event": "Page Viewed", "timestamp": _iso(now - 10 * day)},
        {"type": "page", "userId": "rita-s", "name": "Home", "context": {"channel": "web"},
         "timestamp": _iso(now - 40 * day)},
        {"type": "track", "userId": "rita-s", "event": "Order Completed", "timestamp": _iso(now - 800 * day)},
    ]  # fmt: skip
    try:
        api.start(timeout=60)
        role.start()
        consumer = start_consumer(deployment, out, tmp_path / "parquet.log", "--batch-seconds", "0.2")
        with api.admin() as admin, api.writer() as writer:
            assert writer.post("/v1/batch", json={"batch": batch}).status_code == 200
            customer = until(
                lambda: (
                    (r := admin.get("/v1/profiles/lookup", params={"user_id": "rita-s"})).status_code == 200
                    and r.json()["events"] == 4
                    and r.json()["customer_id"]
                ),
                timeout=60,
                what="the events applied",
            )
            await written_through(out, await last_seq(deployment))
            assert admin.put("/v1/workspace/config", content=RULES).status_code == 200

            def timeline() -> list[str]:
                events = admin.get(f"/v1/profiles/{customer}/timeline").json()["events"]
                return [event["name"] for event in events if not event["internal"]]

            until(lambda: timeline() == ["Page Viewed"], timeout=60, what="the expired events off the timeline")

        async def stores() -> tuple[list[str], str, list[str]]:
            text = postgres_text(deployment)["events"]
            return [line for line in text.splitlines() if line], await stream_text(deployment), parquet_names(out)

        for _ in range(100):
            index, stream, parquet = await stores()
            if len(index) == 1 and "order completed" not in stream and parquet == ["Page Viewed"]:
                break
            await asyncio.sleep(0.3)
        assert len(index) == 1 and "page viewed" in index[0]  # the one event the rules keep
        assert "home" not in stream and "order completed" not in stream and "page viewed" in stream
        assert parquet == ["Page Viewed"]
    finally:
        if consumer is not None:
            consumer.terminate()
            consumer.wait(timeout=30)
        role.stop()
        api.stop()
