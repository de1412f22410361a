"""Triage: the inbox, the ledger of processed photos and decisions, and the session logic the
triage app drives. Nothing here imports Textual, so it is tested without a terminal."""
