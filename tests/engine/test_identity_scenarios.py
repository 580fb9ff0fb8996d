"""The identity stories of PRODUCT.md (scenarios 6, 7, 9) through the processor,
on a real SQLite state store."""

from __future__ import annotations

from pathlib import Path

from polku.engine.identity_change import MERGED_EVENT
from tests.engine.helpers import T0, World, event

HOUR = 3_600_000


def test_devices_logins_email_and_phone_make_one_customer(tmp_path: Path) -> None:
    world = World(tmp_path)
    world.send(
        event("page", anonymous_id="laptop-1", name="Home", channel="web", ts=T0),
        event("screen", anonymous_id="phone-1", name="Start", channel="app", ts=T0 + 1000),
        event("page", anonymous_id="laptop-1", name="Pricing", channel="web", ts=T0 + 2000),
    )
    world.run()
    assert world.customer("anonymous_id:laptop-1") != world.customer("anonymous_id:phone-1")
    world.send(
        event(
            "identify",
            anonymous_id="laptop-1",
            user_id="u-42",
            traits={"email": "Ann@Example.COM", "phone": "+358 40 123 4567", "name": "Ann"},
            ts=T0 + 3000,
        ),
        event("track", anonymous_id="phone-1", user_id="u-42", event="Logged In", channel="app", ts=T0 + 4000),
        event(
            "track",
            event="Email Opened",
            channel="email",
            ts=T0 + 5000,
            context={"traits": {"email": "ann@example.com"}},
        ),
        event(
            "track", event="Call Started", channel="phone", ts=T0 + 6000, context={"traits": {"phone": "+358401234567"}}
        ),
    )
    world.run()
    customer = world.customer("user_id:u-42")
    for identifier in ("anonymous_id:laptop-1", "anonymous_id:phone-1", "email:ann@example.com", "phone:+358401234567"):
        assert world.customer(identifier) == customer
    rows = [row for row in world.store.timeline("default", customer) if not row.internal]
    assert len(rows) == 7
    assert {row.name: row.channel for row in rows} == {
        "Home": "web",
        "Start": "app",
        "Pricing": "web",
        None: "web",
        "Logged In": "app",
        "Email Opened": "email",
        "Call Started": "phone",
    }
    profile = world.store.profile("default", customer)
    assert profile is not None
    assert profile.traits["name"][0] == "Ann"
    assert set(profile.last_seen) == {"web", "app", "email", "phone"}
    # The absorbed customer redirects to the survivor, and the merge was announced.
    changes = world.store.identity_changes("default")
    assert changes and all(record.survivor == customer for _, record in changes)
    for _, record in changes:
        for absorbed in record.absorbed:
            assert world.store.redirect("default", absorbed) == customer
    assert any(b'"Customers Merged"' in body for _, _, body in world.log.rows), MERGED_EVENT


def test_two_user_ids_sharing_an_email_stay_apart_and_the_refusal_is_recorded(tmp_path: Path) -> None:
    world = World(tmp_path)
    world.send(
        event("identify", user_id="alice", traits={"email": "family@example.com"}, ts=T0),
        event("identify", user_id="bob", traits={"email": "family@example.com"}, ts=T0 + 1000),
    )
    world.run()
    assert world.customer("user_id:alice") != world.customer("user_id:bob")
    assert world.customer("email:family@example.com") == world.customer("user_id:alice")
    refusals = world.store.refusals("default")
    assert len(refusals) == 1
    refused = refusals[0][1]
    assert {refused.target, refused.identifier} == {"user_id:bob", "email:family@example.com"}
    assert "user_id" in refused.reason and "limit" in refused.reason
    bob = world.store.profile("default", world.customer("user_id:bob"))
    assert bob is not None and bob.conflicted
    # Bob's identify still lands on Bob: his traits are his.
    assert bob.traits["email"][0] == "family@example.com"


def test_limit_on_anonymous_ids_stops_a_shared_kiosk_merging_everyone(tmp_path: Path) -> None:
    world = World(tmp_path, "identity: {limits: {user_id: 1, anonymous_id: 2}}")
    world.send(
        event("track", user_id="u1", anonymous_id="a1", event="X", ts=T0),
        event("track", user_id="u1", anonymous_id="a2", event="X", ts=T0 + 1),
        event("track", user_id="u1", anonymous_id="a3", event="X", ts=T0 + 2),
    )
    world.run()
    assert world.customer("anonymous_id:a1") == world.customer("anonymous_id:a2") == world.customer("user_id:u1")
    assert world.customer("anonymous_id:a3") != world.customer("user_id:u1")
    assert world.store.refusals("default")


def test_merge_on_excludes_a_type(tmp_path: Path) -> None:
    world = World(tmp_path, "identity: {merge_on: [user_id, anonymous_id, email]}")
    world.send(
        event("identify", anonymous_id="a1", traits={"phone": "+358401111111"}, ts=T0),
        event("identify", anonymous_id="a2", traits={"email": "x@example.com"}, ts=T0 + 1),
        event("identify", anonymous_id="a2", traits={"phone": "+358401111111"}, ts=T0 + 2),
    )
    world.run()
    assert world.customer("anonymous_id:a1") != world.customer("anonymous_id:a2")
    assert "merge_on" in world.store.refusals("default")[0][1].reason


def test_alias_links_previous_id(tmp_path: Path) -> None:
    world = World(tmp_path)
    world.send(
        event("page", anonymous_id="anon-9", name="Home", ts=T0),
        event("alias", user_id="u-9", previous_id="anon-9", ts=T0 + 1),
    )
    world.run()
    assert world.customer("user_id:u-9") == world.customer("anonymous_id:anon-9")


def test_group_attaches_customers_to_accounts(tmp_path: Path) -> None:
    world = World(tmp_path)
    world.send(
        event(
            "group",
            user_id="u1",
            group_id="acme",
            traits={"name": "Acme", "plan": "enterprise", "email": "ceo@acme.example"},
            ts=T0,
        ),
        event("group", user_id="u2", group_id="acme", traits={"employees": 120}, ts=T0 + 1),
        event("group", user_id="u1", group_id="globex", traits={"name": "Globex"}, ts=T0 + 2),
    )
    world.run()
    u1, u2 = world.customer("user_id:u1"), world.customer("user_id:u2")
    assert sorted(world.store.account_members("default", "acme")) == sorted([u1, u2])
    account = world.store.account("default", "acme")
    assert account is not None
    assert account.trait_values() == {
        "name": "Acme",
        "plan": "enterprise",
        "email": "ceo@acme.example",
        "employees": 120,
    }
    profile = world.store.profile("default", u1)
    assert profile is not None and set(profile.accounts) == {"acme", "globex"}
    # A group call's traits describe the account: its e-mail is not the person's identifier.
    assert world.store.identifier("default", "email:ceo@acme.example") is None
