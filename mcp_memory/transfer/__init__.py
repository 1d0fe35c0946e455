"""Save and load: the JSON Lines export format, checking a file, writing an export, reading
server-memory's knowledge graph."""
