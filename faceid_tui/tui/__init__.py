"""The Textual triage app: a thin client of :mod:`faceid_tui.triage` (screens, widgets, one
stylesheet). Blocking work runs in thread workers that talk back through messages."""
