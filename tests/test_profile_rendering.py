"""What an API profile makes of a history (extractor.templates, extractor.wire, extractor.auth),
checked on the requests themselves; tests/test_profile_modes.py runs them against servers."""

from __future__ import annotations

import hashlib
import hmac
import time
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import orjson
import pytest

from extractor.auth import AuthError, key_auth
from extractor.config import ExtractConfig
from extractor.profiles import ApiProfile, ProfileError, load_profile
from extractor.templates import render, render_path
from extractor.wire import ProfileWire

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "profiles"


def profile(**changes: Any) -> ApiProfile:
    data: dict[str, Any] = {
        "name": "shop",
        "request": {"path": "/r", "body": {"h": "{history}", "k": "{k}"}},
        "answer": {"items": "items"},
    }
    data.update(changes)
    return ApiProfile.model_validate(data)


def test_a_placeholder_alone_keeps_its_type_and_inside_text_becomes_text() -> None:
    values = {"{history}": ["a", "b"], "{k}": 5, "{session_id}": "s/1"}
    rendered = render(
        {"h": "{history}", "n": "{k}", "u": "user-{session_id}", "x": ["{k}"]}, values
    )
    assert rendered == {"h": ["a", "b"], "n": 5, "u": "user-s/1", "x": [5]}
    assert render_path("/users/{session_id}/items/", values) == "/users/s%2F1/items/"
    assert render("{unknown}", values) == "{unknown}"  # refused when the profile loads


def test_item_mode_asks_each_querys_most_recent_item_and_caps_histories_at_one() -> None:
    algolia = load_profile(str(EXAMPLES / "algolia.toml"))
    wire = ProfileWire(algolia, batch_size=50)
    request = wire.request([["a", "b", "c"], ["d"]], 7, batch=True)
    body = orjson.loads(request.body or b"")
    assert [entry["objectID"] for entry in body["requests"]] == ["c", "d"]
    assert body["requests"][0]["maxRecommendations"] == 7
    assert algolia.headers == {"X-Algolia-Application-Id": "RECMIMIC"} and request.headers is None
    assert algolia.history_cap == 1
    config = ExtractConfig(
        teacher_url="http://x", api_key="k", budget=1, out=Path("o"), dataset="d", max_history=5
    )
    assert config.history_cap == 5
    capped = replace(config, api_profile=algolia)
    assert capped.history_cap == 1 and capped.query_source()["max_history"] == 1


def test_a_session_is_written_in_calls_of_max_events_oldest_first_under_a_fresh_id() -> None:
    personalize = load_profile(str(EXAMPLES / "personalize.toml"))
    wire = ProfileWire(personalize, batch_size=1)
    history = [f"i{n}" for n in range(23)]
    first, second = wire.new_session(), wire.new_session()
    assert first != second and first.startswith("recmimic-")
    writes = wire.writes(history, first)
    bodies = [orjson.loads(write.body or b"") for write in writes]
    assert [len(body["eventList"]) for body in bodies] == [10, 10, 3]
    events = [event for body in bodies for event in body["eventList"]]
    assert [event["itemId"] for event in events] == history
    stamps = [event["sentAt"] for event in events]
    assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps)
    assert all(body["userId"] == body["sessionId"] == first for body in bodies)
    asked = orjson.loads(wire.request([history], 9, batch=False, session_id=first).body or b"")
    assert asked["userId"] == first and asked["numResults"] == 9 and "history" not in asked


def test_a_get_request_renders_its_path_and_query_and_a_cleanup_follows() -> None:
    recombee = load_profile(str(EXAMPLES / "recombee.toml"))
    wire = ProfileWire(recombee, batch_size=1)
    request = wire.request([["a"]], 4, batch=False, session_id="recmimic-9")
    assert (request.method, request.path, request.body) == (
        "GET",
        "/recmimic/recomms/users/recmimic-9/items/",
        None,
    )
    assert request.params == {"count": 4}
    [write] = wire.writes(["a", "b"], "recmimic-9")
    entries = orjson.loads(write.body or b"")["requests"]
    assert [entry["params"]["userId"] for entry in entries] == ["recmimic-9"] * 2
    cleanup = wire.cleanup("recmimic-9")
    assert cleanup is not None and (cleanup.method, cleanup.path) == (
        "DELETE",
        "/recmimic/users/recmimic-9",
    )


def test_hmac_signing_signs_the_path_and_query_as_sent_with_the_signature_last() -> None:
    recombee = load_profile(str(EXAMPLES / "recombee.toml"))
    auth = key_auth(recombee.auth, "s3cret", "https://rapi.example.com/base/")
    assert auth.signer is not None and not auth.headers and "s3cret" not in repr(auth)
    signed = auth.signer.sign("GET", "/recmimic/items/list/", {"count": 10}, None)
    assert signed.params is not None and list(signed.params)[-1] == "hmac_sign"
    query = dict(signed.params)
    signature = query.pop("hmac_sign")
    message = f"/base/recmimic/items/list/?{urlencode(query)}".encode()
    assert hmac.compare_digest(signature, hmac.new(b"s3cret", message, hashlib.sha1).hexdigest())
    assert abs(int(query["hmac_timestamp"]) - time.time()) < 5


def test_sigv4_signing_is_botocores_and_verifies_with_the_secret() -> None:
    pytest.importorskip("botocore", reason="the aws extra is not installed")
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    personalize = load_profile(str(EXAMPLES / "personalize.toml"))
    auth = key_auth(personalize.auth, "AKIDEXAMPLE:wJalrXUtnFEMI", "http://127.0.0.1:8080")
    assert auth.signer is not None and "wJalr" not in repr(auth.signer)
    body = b'{"userId": "u"}'
    signed = auth.signer.sign("POST", "/recommendations", None, body)
    assert signed.headers is not None
    header = signed.headers["Authorization"]
    assert header.startswith("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/")
    assert "/us-east-1/personalize/aws4_request" in header and "wJalr" not in header
    again = AWSRequest(
        method="POST",
        url="http://127.0.0.1:8080/recommendations",
        data=body,
        headers={"host": "127.0.0.1:8080", "content-type": "application/json"},
    )
    again.context["timestamp"] = signed.headers["X-Amz-Date"]
    SigV4Auth(Credentials("AKIDEXAMPLE", "wJalrXUtnFEMI"), "personalize", "us-east-1").add_auth(
        again
    )
    assert again.headers["Authorization"] == header
    with pytest.raises(AuthError, match="ACCESS_KEY_ID:SECRET_ACCESS_KEY"):
        key_auth(personalize.auth, "no-colon", "http://127.0.0.1:8080")


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"mode": "item"}, "request must hold {item} in item mode"),
        ({"mode": "session"}, "request must hold {session_id} in session mode"),
        (
            {"request": {"path": "/r", "body": {"h": "{history}", "e": "{events}"}}},
            "event: {events} needs an event template",
        ),
        (
            {"request": {"path": "/r", "method": "GET", "body": {"h": "{history}"}}},
            "a GET request has no body",
        ),
        (
            {"request": {"path": "/r", "body": "{history}", "headers": {"X-A": "b\r\nX-C: d"}}},
            "a header is one line",
        ),
        ({"catalogue": {"path": "/items", "file": "ids.txt"}}, "a path or a file, not both"),
        ({"auth": {"kind": "sigv4"}}, "needs a region and a service"),
    ],
)
def test_a_profile_that_cannot_work_in_its_mode_is_refused_naming_why(
    tmp_path: Path, changes: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message.replace("{", r"\{").replace("}", r"\}")):
        profile(**changes)
    path = tmp_path / "p.toml"
    path.write_text(
        'name = "s"\nmode = "session"\n[request]\npath = "/r/{session_id}"\nmethod = "GET"\n'
        '[answer]\nitems = "items"\n'
    )
    with pytest.raises(ProfileError, match="session: needed in session mode") as raised:
        load_profile(str(path))
    assert "\n" not in str(raised.value)


def test_a_catalogue_file_is_read_relative_to_its_profile(tmp_path: Path) -> None:
    (tmp_path / "ids.txt").write_text("b\na\n\nb\n")
    path = tmp_path / "p.toml"
    path.write_text(
        'name = "f"\n[request]\npath = "/r"\nbody = {h = "{history}"}\n[answer]\nitems = "i"\n'
        '[catalogue]\nfile = "ids.txt"\n'
    )
    from extractor.catalogue import read_catalogue_file

    loaded = load_profile(str(path))
    assert loaded.catalogue.file == tmp_path / "ids.txt"
    assert read_catalogue_file(loaded.catalogue.file) == ["b", "a"]
    with pytest.raises(ValueError, match="cannot read the catalogue file"):
        read_catalogue_file(tmp_path / "missing.txt")
