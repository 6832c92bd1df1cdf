"""A run: its configuration, decisions, record, resume and skip, and the output folder's lock."""
