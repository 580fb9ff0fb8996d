"""``polku demo``: a believable company sending events into a real polku (docs/demo.md)."""
