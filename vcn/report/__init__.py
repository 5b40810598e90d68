"""Per-track and per-cluster aggregates (``summary``) and the HTML and Markdown reports (``html``)."""
