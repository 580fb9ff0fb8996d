"""The demo's company: a believable retailer with web, app, email, phone, chat and
stores, consumers and B2B accounts — and a few problems planted for a newcomer to
find with the analyses (docs/demo.md). Pure and seeded: the same seed gives the
same world, the same history and the same live stream.

What is planted lives here and only here; the analyses know none of these names:

1. **A failed password reset in the app sends people to the phone**, and phone
   CSAT after it is poor (root causes, channel switching, opportunities).
2. **A failed payment on the web sends people to chat** (failure demand).
3. **The company believes it is 80 % B2B; it is mostly consumers** (channel mix,
   by customer type).
4. **Checkout loses people at the delivery options** (funnel, where they went).
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Final

MINUTE: Final = 60_000
HOUR: Final = 60 * MINUTE
DAY: Final = 24 * HOUR
FIRST_NAMES: Final = (
    "Aino", "Eero", "Helmi", "Juho", "Kaisa", "Leevi", "Maija", "Niko", "Oona", "Pekka", "Saara", "Tuomas",
    "Venla", "Ville", "Anna", "Mikko", "Emma", "Lauri", "Sofia", "Onni", "Ella", "Elias", "Iida", "Aleksi",
)  # fmt: skip
COMPANIES: Final = (
    "Kallio Logistics", "Sauna Works", "Nordic Paper", "Aurora Labs", "Vaahtera Foods", "Lumi Design",
    "Kivi Build", "Revontuli IT", "Saimaa Boats", "Tammi Legal", "Kuusi Health", "Meri Energy",
)  # fmt: skip
PRODUCTS: Final = ("Desk Lamp", "Office Chair", "Standing Desk", "Monitor Arm", "Headset", "Webcam", "Keyboard")


@dataclass
class Person:
    number: int
    user_id: str
    anonymous_id: str
    first_name: str
    email: str
    phone: str
    locale: str
    account: str | None
    app_user: bool
    marketing: bool
    known: bool = False
    """Has logged in (identify sent)."""
    clock: int = 0
    """When this person last did something (their events stay in order)."""


@dataclass
class DemoWorld:
    seed: int = 42
    customers: int = 1500
    accounts: int = 40
    days: int = 30
    people: list[Person] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.random = random.Random(self.seed)
        self.message = 0
        for number in range(self.customers):
            first = self.random.choice(FIRST_NAMES)
            # Planted 3: about one customer in six acts for a company.
            account = self.random.randrange(self.accounts) if self.random.random() < 0.17 else None
            self.people.append(
                Person(
                    number=number,
                    user_id=f"cust-{number:05d}",
                    anonymous_id=f"anon-{self.seed}-{number:05d}",
                    first_name=first,
                    email=f"{first.lower()}.{number}@example.com",
                    phone=f"+35840{number:07d}",
                    locale=self.random.choice(("fi", "fi", "en", "sv")),
                    account=f"acct-{account:03d}" if account is not None else None,
                    app_user=self.random.random() < 0.55,
                    marketing=self.random.random() < 0.6,
                )
            )

    # -- what customers do -------------------------------------------------------------------

    def history(self, now_ms: int) -> list[dict[str, Any]]:
        """``days`` of the past, every person's events in order (a backfill)."""
        start = now_ms - self.days * DAY
        events: list[dict[str, Any]] = []
        for person in self.people:
            person.clock = start + self.random.randrange(0, DAY)
            while True:
                person.clock += self.random.randrange(6 * HOUR, 5 * DAY)
                if person.clock > now_ms - HOUR:
                    break
                events.extend(self.visit(person))
        return events

    def live(self, now_ms: int) -> list[dict[str, Any]]:
        """One visit of a random person, starting now (the live stream)."""
        person = self.random.choice(self.people)
        # Now, even when their history ran past it (a backfilled visit's steps
        # spread over hours): live events never come from the future.
        person.clock = now_ms
        return self.visit(person, spread=False)

    def visit(self, person: Person, *, spread: bool = True) -> list[dict[str, Any]]:
        """One thing a person came to do, as events; ``spread`` lets it take the
        minutes it takes (a backfill); live, its steps follow one another quickly."""
        self._pace = 1.0 if spread else 0.02
        events: list[dict[str, Any]] = []
        if not person.known:
            events += self._first_visit(person)
        roll = self.random.random()
        if roll < 0.30:
            events += self._shop(person)
        elif roll < 0.42 and person.app_user:
            events += self._password_reset(person)
        elif roll < 0.52:
            events += self._newsletter(person)
        elif roll < 0.62:
            events += self._billing_call(person)
        elif roll < 0.72:
            events += self._store_visit(person)
        elif roll < 0.82 and person.app_user:
            events += self._app_browse(person)
        else:
            events += self._browse(person)
        return events

    # -- scenarios ------------------------------------------------------------------------------

    def _first_visit(self, person: Person) -> list[dict[str, Any]]:
        person.known = True
        events = [self._page(person, "Home", anonymous=True)]
        self._later(person, 2 * MINUTE)
        traits: dict[str, Any] = {
            "email": person.email,
            "phone": person.phone,
            "first_name": person.first_name,
            "locale": person.locale,
            "consent": {"marketing": person.marketing},
        }
        events.append(self._message(person, "identify", "web", traits=traits, anonymous=True))
        if person.account is not None:
            number = int(person.account.split("-")[1])
            company = COMPANIES[number % len(COMPANIES)] + (
                f" {number // len(COMPANIES) + 1}" if number >= len(COMPANIES) else ""
            )
            events.append(
                self._message(
                    person, "group", "web", groupId=person.account, traits={"name": company, "plan": "business"}
                )
            )
        return events

    def _shop(self, person: Person) -> list[dict[str, Any]]:
        channel = "app" if person.app_user and self.random.random() < 0.4 else "web"
        product = self.random.choice(PRODUCTS)
        events = [self._track(person, "Product Viewed", channel, product=product)]
        for _ in range(self.random.randint(0, 2)):
            self._later(person, 3 * MINUTE)
            events.append(self._track(person, "Product Viewed", channel, product=self.random.choice(PRODUCTS)))
        if self.random.random() < 0.55:
            return events
        self._later(person, 2 * MINUTE)
        events.append(self._track(person, "Added to Cart", channel, product=product))
        self._later(person, 4 * MINUTE)
        events.append(self._track(person, "Checkout Started", channel))
        self._later(person, 2 * MINUTE)
        events.append(self._track(person, "Delivery Options Viewed", channel))
        # Planted 4: many leave at the delivery options (and look for the prices elsewhere).
        if self.random.random() < 0.45:
            if self.random.random() < 0.5:
                self._later(person, 3 * MINUTE)
                events.append(self._page(person, "Shipping Prices"))
            return events
        self._later(person, 3 * MINUTE)
        if channel == "web" and self.random.random() < 0.22:
            # Planted 2: a failed payment on the web; half of them open a chat.
            events.append(self._track(person, "Payment Failed", channel, reason="3ds_timeout"))
            if self.random.random() < 0.55:
                self._later(person, 12 * MINUTE)
                events.append(self._track(person, "Chat Started", "chat", topic="payment"))
                self._later(person, 9 * MINUTE)
                events.append(self._track(person, "Chat Ended", "chat"))
                events.append(self._feedback(person, "chat", "ces", self.random.choice((4, 5, 5, 6, 6, 7))))
            return events
        events.append(
            self._track(person, "Order Completed", channel, total=self.random.choice((49, 89, 129, 249, 399)))
        )
        if self.random.random() < 0.1:
            events.append(self._feedback(person, channel, "nps", self.random.choice((7, 8, 9, 9, 10, 10, 6))))
        return events

    def _password_reset(self, person: Person) -> list[dict[str, Any]]:
        events = [self._track(person, "App Opened", "app")]
        self._later(person, MINUTE)
        events.append(self._track(person, "Password Reset Requested", "app"))
        self._later(person, 3 * MINUTE)
        if self.random.random() < 0.6:
            events.append(self._track(person, "Password Reset Succeeded", "app"))
            return events
        # Planted 1: the reset link fails in the app; most of them call, and are unhappy.
        events.append(self._track(person, "Password Reset Failed", "app", reason="link_expired"))
        if self.random.random() < 0.7:
            self._later(person, self.random.randrange(10, 90) * MINUTE)
            events += self._call(person, "login", score=self.random.choice((1, 1, 2, 2, 2, 3, 4)))
        return events

    def _billing_call(self, person: Person) -> list[dict[str, Any]]:
        return self._call(person, "billing", score=self.random.choice((3, 4, 4, 5, 5, 5, 2)))

    def _call(self, person: Person, reason: str, score: int) -> list[dict[str, Any]]:
        events = [self._track(person, "Call Started", "phone", reason=reason)]
        self._later(person, self.random.randrange(4, 15) * MINUTE)
        events.append(self._track(person, "Call Ended", "phone", reason=reason))
        if self.random.random() < 0.6:
            # The IVR's survey after the call (imported feedback).
            self._later(person, MINUTE)
            events.append(self._feedback(person, "phone", "csat", score))
        return events

    def _newsletter(self, person: Person) -> list[dict[str, Any]]:
        events = [self._track(person, "Email Opened", "email", campaign="weekly")]
        if self.random.random() < 0.35:
            self._later(person, MINUTE)
            events.append(self._track(person, "Email Clicked", "email", campaign="weekly"))
            self._later(person, MINUTE)
            events.append(self._page(person, "Offers"))
        return events

    def _store_visit(self, person: Person) -> list[dict[str, Any]]:
        return [
            self._track(person, "Store Purchase", "store", store=self.random.choice(("Helsinki", "Tampere", "Turku")))
        ]

    def _app_browse(self, person: Person) -> list[dict[str, Any]]:
        events = [self._track(person, "App Opened", "app")]
        self._later(person, 2 * MINUTE)
        events.append(self._message(person, "screen", "app", name="Orders"))
        return events

    def _browse(self, person: Person) -> list[dict[str, Any]]:
        events = [self._page(person, "Home")]
        for page in self.random.sample(("Products", "Offers", "Help", "Stores"), self.random.randint(1, 2)):
            self._later(person, 2 * MINUTE)
            events.append(self._page(person, page))
        return events

    # -- messages ------------------------------------------------------------------------------

    def _later(self, person: Person, typical_ms: int) -> None:
        person.clock += max(1_000, int(self.random.randrange(typical_ms // 2, typical_ms * 3 // 2 + 1) * self._pace))

    def _feedback(self, person: Person, channel: str, metric: str, score: int) -> dict[str, Any]:
        return self._track(
            person,
            "Feedback Submitted",
            channel,
            metric=metric,
            score=score,
            source="ivr" if channel == "phone" else channel,
        )

    def _track(self, person: Person, name: str, channel: str, **properties: Any) -> dict[str, Any]:
        return self._message(person, "track", channel, event=name, properties=properties)

    def _page(self, person: Person, name: str, *, anonymous: bool = False) -> dict[str, Any]:
        return self._message(person, "page", "web", name=name, anonymous=anonymous)

    def _message(
        self, person: Person, kind: str, channel: str, *, anonymous: bool = False, **fields: Any
    ) -> dict[str, Any]:
        self.message += 1
        message: dict[str, Any] = {
            "type": kind,
            "messageId": f"demo-{self.seed}-{self.message}",
            "anonymousId": person.anonymous_id,
            "timestamp": _iso(person.clock),
            "context": {"channel": channel},
            **fields,
        }
        if not anonymous:
            message["userId"] = person.user_id
        if kind == "identify":
            message["userId"] = person.user_id
        if person.account is not None and kind not in ("group", "identify"):
            message["context"]["groupId"] = person.account
        return message


def _iso(ms: int) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def batches(events: list[dict[str, Any]], size: int = 500) -> Iterator[list[dict[str, Any]]]:
    for start in range(0, len(events), size):
        yield events[start : start + size]
