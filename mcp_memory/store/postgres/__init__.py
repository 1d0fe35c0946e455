"""The PostgreSQL backend (a team's shared memory; issue 13): the Store protocol on psycopg 3 and pgvector."""
