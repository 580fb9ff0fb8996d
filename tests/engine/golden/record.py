"""Write ``journeys.jsonl``: a recorded stream of events (with the processor's
clock at each) for the golden replay test. Run once; the file is committed:
``python -m tests.engine.golden.record``."""

from __future__ import annotations

import random
from pathlib import Path

import msgspec

T0 = 1_790_000_000_000
MINUTE = 60_000


def main() -> None:
    rng = random.Random(20261123)
    users = [f"u{number:03d}" for number in range(60)]
    now = T0
    lines = []
    for user in users:
        traits = {"email": f"{user}@example.com", "first_name": user.upper(), "plan": rng.choice(["pro", "trial"])}
        if rng.random() < 0.3:
            traits["timezone"] = rng.choice(["Europe/Helsinki", "America/New_York", "Asia/Tokyo"])
        if rng.random() < 0.5:
            traits["consent"] = {"marketing": rng.random() < 0.7}
        lines.append({"at": now, "event": {"type": "identify", "userId": user, "traits": traits}})
        if rng.random() < 0.4:
            lines.append(
                {
                    "at": now,
                    "event": {
                        "type": "group",
                        "userId": user,
                        "groupId": rng.choice(["acme", "globex"]),
                        "traits": {"name": "Co"},
                    },
                }
            )
    names = [
        ("Password Reset Failed", "app"),
        ("Call Started", "phone"),
        ("Article Viewed", "web"),
        ("Feedback Submitted", "email"),
        ("Newsletter Due", "email"),
        ("Pricing Viewed", "web"),
        ("Signed Up", "web"),
        ("Order Completed", "store"),
        ("Cart Abandoned", "web"),
    ]
    for number in range(600):
        now += rng.randint(0, 20) * MINUTE
        user = rng.choice(users)
        name, channel = rng.choice(names)
        properties: dict[str, object] = {}
        if name == "Article Viewed":
            properties["topic"] = rng.choice(["A", "B"])
        if name == "Feedback Submitted":
            properties["score"] = rng.randint(1, 5)
        if name == "Password Reset Failed":
            properties["reason"] = rng.choice(["expired_link", "wrong_code"])
        if rng.random() < 0.05:
            user_event = {"type": "track", "anonymousId": f"anon-{user}", "event": name}
        else:
            user_event = {"type": "track", "userId": user, "event": name}
        user_event |= {"properties": properties, "context": {"channel": channel}, "messageId": f"g{number}"}
        lines.append({"at": now, "event": user_event})
        if rng.random() < 0.02:
            lines.append(
                {
                    "at": now,
                    "event": {
                        "type": "identify",
                        "userId": user,
                        "anonymousId": f"anon-{user}",
                        "messageId": f"a{number}",
                    },
                }
            )
    Path(__file__).with_name("journeys.jsonl").write_bytes(
        b"\n".join(msgspec.json.encode(line) for line in lines) + b"\n"
    )


if __name__ == "__main__":
    main()
