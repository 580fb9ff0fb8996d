"""One module per area of the dashboard, each with its ``routes``."""
