"""Sources beyond the Segment HTTP API: file import and inbound webhooks."""
