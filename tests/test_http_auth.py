"""Authenticated HTTP (slow): a real server on 127.0.0.1 with bearer tokens, reached with the SDK's HTTP client.

No token is 401 (with the protected-resource metadata's address), a token without a memory scope 403; a
principal sees only its groups (the ones its token names and the ones it created) in every tool, resource,
prompt and listing, and the denial reads the same whether the group exists or not; read-only tokens cannot
write; expired tokens stop working; JWTs are checked against a local issuer's keys on loopback.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from mcp.shared.exceptions import MCPError

from mcp_memory.server.auth.tokens import add_token
from tests.fake_openai import FakeOpenAI
from tests.helpers import call, call_error
from tests.http_server import Served, client, environment, post, running
from tests.test_multiprocess import console_script

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

PEOPLE = {  # principal: (scopes, groups its token names)
    "alice": (["write"], []),
    "bob": (["read"], ["shared"]),
    "carol": (["write"], ["shared"]),
    "root": (["admin"], []),
}


@pytest.fixture
def tokens(tmp_path: Path) -> dict[str, str]:
    return {
        name: add_token(tmp_path / "tokens.json", name, scopes, groups, None)[0]
        for name, (scopes, groups) in PEOPLE.items()
    }


@pytest.fixture
def served(tmp_path: Path, tokens: dict[str, str]) -> Iterator[Served]:
    with running(tmp_path, "--tokens-file", str(tmp_path / "tokens.json")) as server:
        yield server


def test_without_a_valid_token_the_answer_is_401_and_names_the_metadata(served: Served) -> None:
    status, headers, body = post(served.url, {})
    assert status == 401 and json.loads(body)["error"] == "invalid_token"
    metadata_url = f"{served.base}/.well-known/oauth-protected-resource/mcp"
    assert f'resource_metadata="{metadata_url}"' in headers["www-authenticate"]
    assert post(served.url, {"Authorization": "Bearer mcpm_not-a-token"})[0] == 401
    with urllib.request.urlopen(metadata_url, timeout=10) as answer:
        metadata = json.load(answer)
    assert metadata["resource"] == served.url and metadata["scopes_supported"] == ["read", "write", "admin"]
    with urllib.request.urlopen(f"{served.base}/health", timeout=10) as answer:  # no token needed
        assert json.load(answer)["status"] == "ok"


def test_the_tokens_file_keeps_digests_only(tmp_path: Path, tokens: dict[str, str]) -> None:
    text = (tmp_path / "tokens.json").read_text()
    for token in tokens.values():
        assert token not in text and hashlib.sha256(token.encode()).hexdigest() in text
    assert (tmp_path / "tokens.json").stat().st_mode & 0o077 == 0


async def test_a_principal_sees_only_its_groups(served: Served, tokens: dict[str, str]) -> None:
    async with (
        client(served.url, tokens["alice"]) as alice,
        client(served.url, tokens["bob"]) as bob,
        client(served.url, tokens["carol"]) as carol,
    ):
        made = await call(alice, "create_group", group_id="alice-notes", user_ids=["alice"])
        assert made["owner"] == "alice"
        await call(alice, "open_session", group_id="alice-notes", session_id="s")
        await call(
            alice,
            "add_memory",
            group_id="alice-notes",
            session_id="s",
            content="the vault code is 1234",
            producer="alice",
        )
        await call(
            alice, "add_fact", group_id="alice-notes", subject="vault", predicate="code", object="1234"
        )
        await call(carol, "create_group", group_id="shared", user_ids=["carol"])
        await call(carol, "open_session", group_id="shared", session_id="s")
        await call(
            carol, "add_memory", group_id="shared", session_id="s", content="lunch at noon", producer="carol"
        )

        # bob reads the group his token names, and nothing of alice's
        assert (await call(bob, "recall", group_id="shared", query="lunch"))["hits"]
        assert [g["group_id"] for g in (await call(bob, "list_groups"))["groups"]] == ["shared"]
        await call(
            alice, "open_session", group_id="alice-2", session_id="s", user_ids=["alice"]
        )  # creates it
        assert [g["group_id"] for g in (await call(alice, "list_groups"))["groups"]] == [
            "alice-2",
            "alice-notes",
        ]
        assert (await call_error(bob, "recall", group_id="alice-2")).startswith("denied: group 'alice-2'")
        listed = json.loads((await bob.read_resource("memory://groups")).contents[0].text)
        assert [g["group_id"] for g in listed] == ["shared"]
        denied = await call_error(bob, "recall", group_id="alice-notes", query="vault code")
        missing = await call_error(bob, "recall", group_id="no-such-group", query="vault code")
        assert denied.startswith("denied: group 'alice-notes' is not open to this token")
        assert denied.replace("alice-notes", "X") == missing.replace("no-such-group", "X")  # nothing leaks
        for tool, arguments in [
            ("list_groups", {"group_id": "alice-notes"}),
            ("open_session", {"group_id": "alice-notes", "session_id": "s"}),
            ("add_participants", {"group_id": "alice-notes", "user_ids": ["bob"]}),
        ]:
            assert (await call_error(carol, tool, **arguments)).startswith("denied: group 'alice-notes'")
        taken = await call_error(carol, "create_group", group_id="alice-notes", user_ids=["carol"])
        assert taken.startswith("denied: group_id 'alice-notes' is taken")
        for uri in (
            "memory://groups/alice-notes",
            "memory://groups/alice-notes/facts",
            "memory://groups/alice-notes/sessions/s",
        ):
            with pytest.raises(MCPError, match="denied: group 'alice-notes'"):
                await bob.read_resource(uri)
        with pytest.raises(MCPError, match="denied: group 'alice-notes'"):
            await bob.get_prompt("recall_topic", {"group_id": "alice-notes", "topic": "vault"})
        with pytest.raises(MCPError, match="denied: reading 'memory://stats' needs the admin scope"):
            await alice.read_resource("memory://stats")
    assert "1234" not in served.log_text()


async def test_a_summary_task_is_read_only_by_principals_of_its_group(
    tmp_path: Path, tokens: dict[str, str]
) -> None:
    with FakeOpenAI() as llm:
        llm.queue_chat(json.dumps({"topic": "plans", "action": "talked", "outcome": "agreed"}))
        env = environment(tmp_path, LLM_BASE_URL=llm.base_url, LLM_API_KEY="k", LLM_MODEL="tiny")
        with running(tmp_path, "--tokens-file", str(tmp_path / "tokens.json"), env=env) as server:
            async with client(server.url, tokens["alice"]) as alice, client(server.url, tokens["bob"]) as bob:
                await call(alice, "create_group", group_id="alice-notes", user_ids=["alice"])
                await call(alice, "open_session", group_id="alice-notes", session_id="s")
                await call(
                    alice,
                    "add_memory",
                    group_id="alice-notes",
                    session_id="s",
                    content="hi",
                    producer="alice",
                )
                started = await call(
                    alice, "summarize_session", group_id="alice-notes", session_id="s", sync=False
                )
                task = await call(alice, "get_task", task_id=started["task_id"])
                assert task["group_id"] == "alice-notes"
                refused = await call_error(bob, "get_task", task_id=started["task_id"])
                assert refused.startswith("denied: group 'alice-notes' is not open to this token")


async def test_read_only_tokens_cannot_write_and_admin_tools_need_admin(
    served: Served, tokens: dict[str, str]
) -> None:
    async with client(served.url, tokens["carol"]) as carol, client(served.url, tokens["bob"]) as bob:
        await call(carol, "create_group", group_id="shared", user_ids=["carol"])
        await call(carol, "open_session", group_id="shared", session_id="s")
        refused = await call_error(
            bob, "add_memory", group_id="shared", session_id="s", content="x", producer="bob"
        )
        assert refused.startswith("denied: add_memory needs the write scope; principal 'bob' has read on")
        assert (await call_error(bob, "delete_session", group_id="shared", session_id="s")).startswith(
            "denied:"
        )
        assert (await call_error(carol, "run_maintenance")).startswith(
            "denied: run_maintenance needs the admin"
        )
        refused = await call_error(carol, "transfer_memory", action="export", path="/tmp/x.jsonl")
        assert refused.startswith("denied: transfer_memory needs the admin scope")
        assert (await call(bob, "recall", group_id="shared"))["hits"] == []  # reading is allowed
    async with client(served.url, tokens["root"]) as root:
        assert [g["group_id"] for g in (await call(root, "list_groups"))["groups"]] == ["shared"]
        await call(root, "run_maintenance")
        stats = json.loads((await root.read_resource("memory://stats")).contents[0].text)
        assert stats["schema_version"] > 0
    denials = [line for line in served.log_text().splitlines() if '"outcome": "denied"' in line]
    assert len(denials) == 4 and all("WARNING" in line for line in denials)
    assert '"principal": "bob", "group_id": "shared"' in denials[0]


async def test_an_expired_token_stops_working(tmp_path: Path) -> None:
    soon = datetime.now(UTC) + timedelta(seconds=4)
    token, _ = add_token(tmp_path / "tokens.json", "temp", ["write"], [], soon)
    with running(tmp_path, "--tokens-file", str(tmp_path / "tokens.json")) as server:
        async with client(server.url, token) as temp:
            await call(temp, "create_group", group_id="g", user_ids=["t"])
        time.sleep(max(0.0, (soon - datetime.now(UTC)).total_seconds()) + 1)
        assert post(server.url, {"Authorization": f"Bearer {token}"})[0] == 401
        assert "refused an expired token of principal 'temp'" in server.log_text()


async def test_tokens_added_to_the_file_work_without_a_restart(
    tmp_path: Path, tokens: dict[str, str]
) -> None:
    with running(tmp_path, "--tokens-file", str(tmp_path / "tokens.json")) as server:
        late, _ = add_token(tmp_path / "tokens.json", "late", ["read"], [], None)
        async with client(server.url, late) as reader:
            assert (await call(reader, "list_groups"))["groups"] == []


def test_foreign_host_and_origin_are_refused_with_a_valid_token(
    served: Served, tokens: dict[str, str]
) -> None:
    bearer = {"Authorization": f"Bearer {tokens['alice']}"}
    assert post(served.url, bearer)[0] == 200
    assert post(served.url, {**bearer, "Host": "evil.example"})[0] == 421
    assert post(served.url, {**bearer, "Origin": "http://evil.example"})[0] == 403


def test_with_tokens_the_server_may_bind_beyond_loopback(tmp_path: Path, tokens: dict[str, str]) -> None:
    with running(tmp_path, "--host", "0.0.0.0", "--tokens-file", str(tmp_path / "tokens.json")) as server:
        assert post(server.url, {})[0] == 401  # reached on 127.0.0.1, which 0.0.0.0 includes


def test_the_token_command_prints_a_token_once_and_keeps_its_digest(tmp_path: Path) -> None:
    done = subprocess.run(
        [str(console_script()), "token", "--tokens-file", str(tmp_path / "t.json"), "--principal", "ci",
         "--scopes", "read", "--group", "team", "--expires", "30d"],
        env=environment(tmp_path), capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    shown = json.loads(done.stdout)
    stored = json.loads((tmp_path / "t.json").read_text())["tokens"]
    assert len(stored) == 1 and stored[0]["principal"] == "ci" and stored[0]["groups"] == ["team"]
    assert stored[0]["sha256"] == hashlib.sha256(shown["token"].encode()).hexdigest()
    assert shown["token"] not in (tmp_path / "t.json").read_text() and "shown once" in done.stderr
    wrong = subprocess.run(
        [str(console_script()), "token", "--tokens-file", str(tmp_path / "t.json"), "--principal", "x", "--scopes", "root"],
        env=environment(tmp_path), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert wrong.returncode == 2 and "unknown scope(s) ['root']" in wrong.stderr


# -- JWT access tokens from an identity provider -------------------------------------------------------------


class Issuer:
    """A local OpenID provider on loopback: its discovery document and its keys (JWKS)."""

    def __init__(self) -> None:
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self.key.public_key()))
        keys = {"keys": [{**jwk, "kid": "k1", "use": "sig", "alg": "RS256"}]}
        issuer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
                documents = {
                    "/.well-known/openid-configuration": {
                        "issuer": issuer.url,
                        "jwks_uri": f"{issuer.url}/jwks",
                    },
                    "/jwks": keys,
                }
                body = json.dumps(documents.get(self.path, {})).encode()
                self.send_response(200 if self.path in documents else 404)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.http.server_address[1]}"
        threading.Thread(target=self.http.serve_forever, daemon=True).start()

    def mint(self, sub: str, scope: str, *, groups: list[str] = (), key: Any = None, **claims: Any) -> str:  # type: ignore[assignment]
        now = int(time.time())
        payload = {"iss": self.url, "aud": "memory-api", "sub": sub, "scope": scope, "groups": list(groups),
                   "iat": now, "exp": now + 300, **claims}  # fmt: skip
        return jwt.encode(payload, key or self.key, algorithm="RS256", headers={"kid": "k1"})


@pytest.fixture
def issuer() -> Iterator[Issuer]:
    provider = Issuer()
    yield provider
    provider.http.shutdown()


async def test_jwt_access_tokens_from_an_identity_provider(tmp_path: Path, issuer: Issuer) -> None:
    with running(tmp_path, "--jwt-issuer", issuer.url, "--jwt-audience", "memory-api") as server:
        erin = issuer.mint("erin", "openid read write", groups=["team"])
        async with (
            client(server.url, erin) as member,
            client(server.url, issuer.mint("dave", "read")) as outsider,
        ):
            await call(member, "create_group", group_id="team", user_ids=["erin"])
            await call(member, "open_session", group_id="team", session_id="s")
            await call(
                member,
                "add_memory",
                group_id="team",
                session_id="s",
                content="ship on friday",
                producer="erin",
            )
            assert (await call(member, "recall", group_id="team", query="ship"))["hits"]
            assert (await call_error(outsider, "recall", group_id="team", query="ship")).startswith(
                "denied: group 'team'"
            )
        past = int(time.time()) - 600
        for refused in (
            issuer.mint("erin", "read", exp=past, iat=past - 60),  # expired
            issuer.mint("erin", "read", aud="another-api"),  # issued for another server
            issuer.mint("erin", "read", iss="http://127.0.0.1:1"),  # another issuer
            issuer.mint("erin", "read", key=rsa.generate_private_key(public_exponent=65537, key_size=2048)),
            jwt.encode(
                {"sub": "erin", "aud": "memory-api", "iss": issuer.url, "exp": past + 1200},
                "a-shared-secret-of-thirty-two-bytes!",
                algorithm="HS256",
            ),
        ):
            assert post(server.url, {"Authorization": f"Bearer {refused}"})[0] == 401
        status, headers, _ = post(
            server.url, {"Authorization": f"Bearer {issuer.mint('erin', 'openid profile')}"}
        )
        assert status == 403 and 'error="insufficient_scope"' in headers["www-authenticate"]
        # step-up: a tool call needing a scope the JWT lacks is refused before it runs, naming the scope
        reader = {"Authorization": f"Bearer {issuer.mint('erin', 'read', groups=['team'])}"}
        write = {
            "jsonrpc": "2.0",
            "id": 2,
            "method": "tools/call",
            "params": {"name": "add_memory", "arguments": {}},
        }
        status, headers, body = post(server.url, reader, write)
        assert status == 403 and json.loads(body)["error"] == "insufficient_scope"
        assert (
            'scope="write"' in headers["www-authenticate"]
            and "resource_metadata=" in headers["www-authenticate"]
        )
        batch = [
            {**write, "params": {"name": "recall", "arguments": {}}},
            {**write, "id": 3},
        ]  # a legacy batch
        assert post(server.url, reader, batch)[0] == 403
        maintain = {**write, "params": {"name": "run_maintenance", "arguments": {}}}
        assert (
            'scope="admin"'
            in post(server.url, {"Authorization": f"Bearer {erin}"}, maintain)[1]["www-authenticate"]
        )
        async with client(server.url, issuer.mint("erin", "read", groups=["team"])) as reading:
            assert (await call(reading, "recall", group_id="team", query="ship"))["hits"]  # reads pass
        assert "ship on friday" not in server.log_text()
