"""Ingestion limits. They match Segment's documented HTTP Tracking API limits so
that SDK batching (which is tuned to them) never trips them in normal use."""

from __future__ import annotations

MAX_EVENT_BYTES = 32 * 1024
"""One message, as JSON, before merging batch-level context."""

MAX_REQUEST_BYTES = 500 * 1024
"""One request body after gzip decompression (and before it, on the wire)."""

MAX_BATCH_EVENTS = 2_500
"""Messages in one ``/v1/batch`` request."""

MAX_ID_CHARS = 256
"""messageId, userId, anonymousId, groupId, previousId and event names."""

MAX_CHANNEL_CHARS = 32
