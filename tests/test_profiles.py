"""API profiles (extractor.profiles, extractor.wire) against real servers on real ports.

The mock teacher speaks each built-in profile's wire format (`teacher_mock.wires`) with the
same model, so a profile's extraction must give exactly the answers recmimic's own contract
gives; the teacher's `/v1/usage` is the witness of what was paid.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request
from service_stack import free_port
from tiny_teacher import save_tiny_teacher
from typer.testing import CliRunner

from extractor.client import BlackBoxClient, ClientConfig
from extractor.config import ExtractConfig
from extractor.probeset import read_probe_set
from extractor.profiles import ProfileError, load_profile
from extractor.run import extract
from seqrec.data.loading import load_dataset
from service.cli import app, is_user_error
from teacher_mock.app import create_app
from teacher_mock.server import running
from teacher_mock.settings import TeacherSettings

DATASET = "synthetic:150:60"
KEY = "profile-test-key"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    item_ids = [str(raw) for raw in load_dataset(DATASET).item_ids]
    return save_tiny_teacher(tmp_path_factory.mktemp("teacher"), item_ids)


@pytest.fixture(scope="module")
def teachers(model_dir: Path) -> Iterator[dict[str, str]]:
    """The same model behind each wire, by wire name."""
    urls = {}
    servers = []
    for wire in ("recmimic", "mlflow", "open-inference"):
        settings = TeacherSettings(model_dir=model_dir, api_keys=[KEY], wire=wire)
        server = running(create_app(settings))
        urls[wire] = server.__enter__()
        servers.append(server)
    yield urls
    for server in servers:
        server.__exit__(None, None, None)


def usage(url: str) -> int:
    return httpx.get(f"{url}/v1/usage", headers={"Authorization": f"Bearer {KEY}"}).json()["used"]


def extraction(url: str, out: Path, **changes: Any) -> ExtractConfig:
    settings: dict[str, Any] = dict(source="seeded", dataset=DATASET, prefixes=3, k=10)
    settings.update({"budget": 2000, **changes})
    return ExtractConfig(teacher_url=url, api_key=KEY, out=out, **settings)


@pytest.mark.parametrize("profile", ["mlflow", "open-inference"])
def test_a_built_in_profile_extracts_what_recmimics_contract_does(
    teachers: dict[str, str], tmp_path: Path, profile: str
) -> None:
    own = asyncio.run(extract(extraction(teachers["recmimic"], tmp_path / "own"), progress=False))
    url = teachers[profile]
    before = usage(url)
    cache = str(tmp_path / "answers.sqlite3")
    first = extraction(url, tmp_path / "first", api_profile=profile, cache=cache)
    summary = asyncio.run(extract(first, progress=False))
    assert summary.stopped is None and summary.paid == own.paid == usage(url) - before
    mine, theirs = read_probe_set(tmp_path / "first"), read_probe_set(tmp_path / "own")
    assert mine.column("items").equals(theirs.column("items"))
    assert mine.column("view_items").equals(theirs.column("view_items"))
    if profile == "open-inference":  # its answers name the model in the body
        assert summary.model_tag == own.model_tag
    again = asyncio.run(extract(replace(first, out=tmp_path / "again"), progress=False))
    assert again.paid == 0 and usage(url) - before == summary.paid  # a rerun pays nothing


def test_extract_distill_evaluate_through_a_profile_on_the_command_line(
    teachers: dict[str, str], tmp_path: Path
) -> None:
    url = teachers["mlflow"]
    runner = CliRunner(env={"RECMIMIC_API_KEY": KEY})
    probes, student, report = tmp_path / "probes", tmp_path / "student", tmp_path / "report"
    extracted = runner.invoke(
        app,
        ["extract", "--teacher-url", url, "--budget", "600", "--out", str(probes)]
        + ["--dataset", DATASET, "--k", "10", "--api-profile", "mlflow", "--no-progress"],
    )
    assert extracted.exit_code == 0, extracted.output
    distilled = runner.invoke(
        app,
        ["distill", "--probes", str(probes), "--out", str(student), "--max-epochs", "1"]
        + ["--hidden", "16", "--max-len", "20", "--no-progress", "--device", "cpu"],
    )
    assert distilled.exit_code == 0, distilled.output
    before = usage(url)
    evaluated = runner.invoke(
        app,
        ["evaluate", "--teacher", url, "--student", str(student), "--dataset", DATASET]
        + ["--out", str(report), "--api-profile", "mlflow"],
    )
    assert evaluated.exit_code == 0, evaluated.output
    users = load_dataset(DATASET).n_users
    assert usage(url) - before == users
    assert json.loads((report / "report.json").read_text())["run"]["paid"]["evaluation"] == users


PROFILE = """
name = "shop"
[request]
path = "/recs"
body = {items = "{history}", count = "{k}"}
[answer]
items = "data.recommendations[*].id"
[auth]
kind = "{kind}"
name = "X-Shop-Key"
"""


def stub_shop(seen: list[Request]) -> FastAPI:
    """An API of another shape: ids at data.recommendations[*].id, the key where the profile
    says; it records each request."""
    shop = FastAPI()

    @shop.post("/recs")
    async def recs(request: Request) -> dict[str, Any]:
        seen.append(request)
        body = await request.json()
        ids = [f"r{i}" for i in range(body["count"])]
        return {"data": {"recommendations": [{"id": item} for item in ids]}}

    return shop


@pytest.mark.parametrize(
    ("kind", "where"),
    [
        ("bearer", lambda r: r.headers["authorization"] == f"Bearer {KEY}"),
        ("header", lambda r: r.headers["x-shop-key"] == KEY),
        ("query", lambda r: r.query_params["X-Shop-Key"] == KEY),
        ("basic", lambda r: r.headers["authorization"].startswith("Basic ")),
    ],
)
def test_a_profile_file_renders_the_body_reads_the_ids_and_sends_the_key_where_it_says(
    tmp_path: Path, kind: str, where: Any
) -> None:
    path = tmp_path / "shop.toml"
    path.write_text(PROFILE.replace("{kind}", kind))
    profile = load_profile(str(path))
    seen: list[Request] = []
    with running(stub_shop(seen)) as url:

        async def ask() -> list[Any]:
            config = ClientConfig(base_url=url, api_key=KEY, profile=profile)
            async with BlackBoxClient(config) as client:
                return await client.recommend_many([["a", "b"], ["c"]], 3)

        outcomes = asyncio.run(ask())
    assert [o.items for o in outcomes] == [["r0", "r1", "r2"]] * 2
    assert len(seen) == 2 and all(where(request) for request in seen)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("name = 'x'", "request: Field required"),
        (PROFILE.replace('"{history}"', '"{hist}"'), "request: unknown placeholders ['{hist}']"),
        (PROFILE.replace('"{history}"', '"x"'), "request must hold {history} in history mode"),
        (PROFILE.replace("data.recommendations[*].id", "data[["), "answer.items: not a JMESPath"),
        (PROFILE.replace('kind = "{kind}"', 'kind = "oauth"'), "auth.kind: Input should be"),
        (PROFILE.replace('name = "X-Shop-Key"', "").replace("{kind}", "header"), "needs a name"),
        ("[request", "not TOML"),
    ],
)
def test_a_bad_profile_is_one_line_naming_the_field(
    tmp_path: Path, text: str, message: str
) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text.replace("{kind}", "bearer"))
    with pytest.raises(ProfileError) as raised:
        load_profile(str(path))
    assert message in str(raised.value) and "\n" not in str(raised.value)
    result = CliRunner(env={"RECMIMIC_API_KEY": KEY}).invoke(
        app,
        ["extract", "--teacher-url", "http://127.0.0.1:9", "--budget", "5"]
        + ["--out", str(tmp_path / "out"), "--dataset", DATASET, "--api-profile", str(path)],
    )
    assert isinstance(result.exception, ProfileError) and is_user_error(result.exception)
    assert not (tmp_path / "out").exists()  # nothing written that a later run would trip over


def test_an_unknown_profile_name_lists_the_built_in_ones() -> None:
    with pytest.raises(ProfileError, match="mlflow, open-inference"):
        load_profile("personalize")


def test_a_profile_that_does_not_fit_the_answers_stops_after_one_paid_call(
    teachers: dict[str, str], tmp_path: Path
) -> None:
    """A wrong expression would have paid every request and its retries, then written every
    query as failed; the first answer is asked alone and checks the profile."""
    url = teachers["mlflow"]
    wrong = tmp_path / "wrong.toml"
    wrong.write_text(
        'name = "mlflow-typo"\n[request]\npath = "/invocations"\nbatch = true\n'
        'body = {dataframe_split = {columns = ["history"], data = "{histories}"}, '
        'params = {k = "{k}"}}\neach = ["{history}"]\n'
        '[answer]\nitems = "predictionz"\n'
    )
    out, before = tmp_path / "out", usage(url)
    result = CliRunner(env={"RECMIMIC_API_KEY": KEY}).invoke(
        app,
        ["extract", "--teacher-url", url, "--budget", "500", "--out", str(out)]
        + ["--dataset", DATASET, "--k", "10", "--api-profile", str(wrong), "--no-progress"],
    )
    message = str(result.exception)
    assert is_user_error(result.exception) and "\n" not in message
    assert "answer.items 'predictionz' found nothing" in message
    assert 'the answer\'s shape: {"predictions": [[str ×10] ×1]}' in message
    assert usage(url) - before == 1 and read_probe_set(out).num_rows == 0
    fixed = asyncio.run(
        extract(extraction(url, out, budget=500, api_profile="mlflow", prefixes="all"), False)
    )
    assert fixed.stopped in (None, "budget exhausted") and read_probe_set(out).num_rows > 0


@pytest.fixture(scope="module")
def mlflow_server(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The teacher's artifact served by MLflow's own model server, in a process of its own."""
    pytest.importorskip("mlflow", reason="the mlflow extra (mlflow-skinny) is not installed")
    from teacher_mock.mlflow_model import save_mlflow_model

    packaged = save_mlflow_model(model_dir, tmp_path_factory.mktemp("mlflow") / "model")
    port = free_port()
    command = [sys.executable, "-m", "mlflow", "models", "serve", "-m", str(packaged)]
    command += ["--env-manager", "local", "-h", "127.0.0.1", "-p", str(port)]
    log = (packaged.parent / "serve.log").open("wb")
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            assert process.poll() is None, (packaged.parent / "serve.log").read_text()
            try:
                if httpx.get(f"{url}/ping", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.3)
        yield url
    finally:
        process.terminate()
        process.wait(30)


def test_a_teacher_served_by_mlflows_own_server_is_extracted_distilled_and_evaluated(
    teachers: dict[str, str], mlflow_server: str, tmp_path: Path
) -> None:
    """A serving stack no one here wrote: its answers are the model's (the mock teacher's),
    a rerun into a new directory pays nothing, and the student is evaluated through it."""
    own = asyncio.run(extract(extraction(teachers["recmimic"], tmp_path / "own"), progress=False))
    cache = str(tmp_path / "answers.sqlite3")
    served = extraction(mlflow_server, tmp_path / "mlflow", api_profile="mlflow", cache=cache)
    summary = asyncio.run(extract(served, progress=False))
    assert summary.stopped is None and summary.paid == own.paid
    mine, theirs = read_probe_set(tmp_path / "mlflow"), read_probe_set(tmp_path / "own")
    assert mine.column("items").equals(theirs.column("items"))
    again = asyncio.run(extract(replace(served, out=tmp_path / "again"), progress=False))
    assert again.paid == 0
    runner = CliRunner(env={"RECMIMIC_API_KEY": KEY})
    student, report = tmp_path / "student", tmp_path / "report"
    distilled = runner.invoke(
        app,
        ["distill", "--probes", str(tmp_path / "mlflow"), "--out", str(student)]
        + ["--max-epochs", "1", "--hidden", "16", "--max-len", "20", "--no-progress"],
    )
    assert distilled.exit_code == 0, distilled.output
    evaluated = runner.invoke(
        app,
        ["evaluate", "--teacher", mlflow_server, "--student", str(student), "--dataset", DATASET]
        + ["--out", str(report), "--api-profile", "mlflow"],
    )
    assert evaluated.exit_code == 0, evaluated.output
    paid = json.loads((report / "report.json").read_text())["run"]["paid"]["evaluation"]
    assert paid == load_dataset(DATASET).n_users
