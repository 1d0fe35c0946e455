"""The SQLite backend (with sqlite-vec): the only package importing SQLite or holding SQL."""
