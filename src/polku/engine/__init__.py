"""The drivers around the pure core: ingestion, setup and (later) the processor."""
