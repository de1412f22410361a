"""The identity bank: names, SQLite storage, folder sync, enrolment and matching.
Nothing here imports Textual."""
