"""Who is calling over HTTP, and what they may do: principals with scopes and groups (principal.py), checked
from static bearer tokens kept hashed in a file or the environment (tokens.py) or from JWT access tokens an
identity provider signs (oauth.py). The guard (server/guard.py) asks these on every request."""
