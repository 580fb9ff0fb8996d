"""The web dashboard that ``polku serve`` serves at ``/ui/`` (docs/dashboard.md).

Server-rendered pages (Jinja2) over the same engine functions the API and the CLI
use, with a little progressive JavaScript for live numbers and Plotly charts (the
bundle ships in the ``plotly`` package; nothing is fetched from the internet).
"""
