"""The `recmimic` command as a user runs it: real subprocesses, tiny data, tiny models."""

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import typer

from distill.config import Objective
from extractor.config import SOURCES
from seqrec.artifacts import load_artifact
from seqrec.data.readers import FORMATS
from seqrec.models.config import ARCHS
from service.cli import app

ROOT = Path(__file__).resolve().parent.parent
STEAL = ["steal", "--teacher-url", "http://127.0.0.1:9", "--budget", "10", "--out", "o"]
STEAL += ["--api-key", "k", "--dataset", "synthetic"]
TINY_MODEL = ["--hidden", "16", "--max-len", "20", "--n-heads", "2", "--max-epochs", "2"]


def recmimic(
    *args: str, cwd: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "service.cli", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=cwd, env=env)


def service_env(**settings: str) -> dict[str, str]:
    """This environment without the service's settings (the dataset cache stays), plus these
    `RECMIMIC_<NAME>` settings; the package stays importable from any working directory."""
    kept = {
        name: value
        for name, value in os.environ.items()
        if name == "RECMIMIC_CACHE" or not name.startswith(("RECMIMIC_", "DATABASE_URL"))
    }
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    return {**kept, "PYTHONPATH": path, **{f"RECMIMIC_{k.upper()}": v for k, v in settings.items()}}


@contextmanager
def busy_port() -> Iterator[int]:
    """A port some other server is listening on."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        yield server.getsockname()[1]


def assert_one_line_error(result: subprocess.CompletedProcess, fragment: str) -> None:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert fragment in lines[0]


def test_teacher_train_writes_artifact_and_json(tmp_path: Path) -> None:
    out, report = tmp_path / "teacher", tmp_path / "metrics.json"
    result = recmimic(
        "teacher", "train", "--dataset", "synthetic:150:80", "--arch", "bert4rec", "--seed", "3",
        "--out", str(out), "--json", str(report), *TINY_MODEL,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    metrics = json.loads(report.read_text())
    for group in ("overall", "head_users", "tail_users", "head_items", "tail_items"):
        assert 0.0 <= metrics["test"][group]["NDCG@10"] <= metrics["test"][group]["HR@10"] <= 1.0
    assert metrics["test"]["overall"]["users"] == 150
    assert metrics["training"]["seed"] == 3 and metrics["training"]["epochs_run"] == 2
    assert metrics["training"]["window_ends"] == "random"  # BERT4Rec's default reaches the CLI
    artifact = load_artifact(out)
    assert artifact.info.model.arch == "bert4rec" and artifact.info.model.hidden == 16
    assert artifact.version == metrics["version"]
    assert artifact.info.metrics["test"] == metrics["test"]


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["teacher", "train", "--dataset", "no-such-file.csv"], "file not found: no-such-file.csv"),
        (["data", "stats", "data/no-such-file"], "file not found: data/no-such-file"),
        (["data", "stats", "ml-20m"], "unknown dataset 'ml-20m'"),
        (["teacher", "train", "--dataset", "synthetic:50:40", "--arch", "gpt"], "unknown arch"),
        (["data", "stats", "synthetic:0:5"], "bad synthetic dataset"),
        (["data", "fetch", "ml-20m"], "unknown dataset"),
        (["distill", "--probes", "x", "--out", "y", "--negatives", "some"], "bad --negatives"),
        (["distill", "--probes", "no-such-dir", "--out", "y"], "is not a directory"),
        (["distill", "--probes", "x", "--out", "y", "--objective", "magic"], "unknown objective"),
        (["distill", "--probes", "x", "--out", "y", "--score-weight", "-1"], "score_weight must"),
        (STEAL + ["--score", "loudest"], "unknown score 'loudest'"),
        (STEAL + ["--first-share", "0"], "first_share must be in (0, 1]"),
        (STEAL + ["--grow-from", "oracle"], "unknown grow_from 'oracle'"),
        (
            STEAL + ["--source", "autoregressive", "--score", "neighbour"],
            "the neighbour score compares the student with paid answers",
        ),
        (
            ["evaluate", "--teacher", "no-such", "--student", "no-such", "--dataset", "ml-100k"],
            "not a model artifact",
        ),
    ],
)
def test_bad_input_is_one_line_error(args: list[str], fragment: str) -> None:
    assert_one_line_error(recmimic(*args), fragment)


CHECK_WITHOUT_TORCH = """
import sys
from service.cli import main
sys.argv = ["recmimic", *sys.argv[1:]]
try:
    main()
except SystemExit as stop:
    print(stop.code, "torch" in sys.modules)
"""


@pytest.mark.parametrize(
    "args",
    [
        ["distill", "--probes", "x", "--out", "y", "--objective", "magic"],
        ["distill", "--probes", "x", "--out", "y", "--negatives", "some"],
        ["distill", "--probes", "x", "--out", "y", "--experts", "1"],
        ["distill", "--probes", "x", "--out", "y", "--score-temperature", "0"],
        STEAL + ["--score", "loudest"],
        STEAL + ["--rounds", "0"],
        STEAL + ["--source", "autoregressive", "--score", "neighbour"],
        ["distill", "--probes", "no-such-dir", "--out", "y"],
        ["distill", "--probes", "x", "--out", "y", "--arch", "bert4rec", "--experts", "2"],
        ["teacher", "train", "--dataset", "synthetic:50:40", "--arch", "gpt"],
        ["teacher", "train", "--dataset", "synthetic:50:40", "--hidden", "10", "--n-heads", "3"],
        ["teacher", "train", "--dataset", "no-such-file.csv"],
        ["data", "stats", "synthetic:0:5"],
        ["evaluate", "--teacher", "http://127.0.0.1:9", "--student", "no-such-dir"]
        + ["--dataset", "synthetic", "--api-key", "k"],
        ["evaluate", "--teacher", "no-such-dir", "--student", "y", "--dataset", "synthetic"],
        ["teacher", "serve", "--model", "no-such-dir", "--api-key", "k"],
    ],
)
def test_bad_options_are_refused_before_torch_loads(args: list[str]) -> None:
    """Options are checked first, so a typo is answered in well under a second, not after
    the 2 s or more that importing torch takes."""
    done = subprocess.run(
        [sys.executable, "-c", CHECK_WITHOUT_TORCH, *args], capture_output=True, text=True
    )
    assert done.stdout.split() == ["2", "False"], done.stdout + done.stderr
    assert done.stderr.startswith("error: ") and "Traceback" not in done.stderr


def test_bad_file_is_one_line_error(tmp_path: Path) -> None:
    bad = tmp_path / "broken.csv"
    bad.write_text("user,item,timestamp\nu1,i1,notatime\n")
    result = recmimic("data", "stats", str(bad))
    assert_one_line_error(result, "broken.csv")


def test_distill_refuses_a_probe_set_with_a_flipped_byte(tmp_path: Path) -> None:
    """One flipped bit in a part once trained a student on a history whose item 478 had
    become 467, and exited 0. Now the part is refused by name before anything is trained."""
    from extractor.probeset import ProbeRow, ProbeSetWriter

    probes, student = tmp_path / "probes", tmp_path / "student"
    with ProbeSetWriter(probes, rows_per_part=30) as writer:
        for query in range(60):
            history = [str(400 + (query * 7 + i) % 90) for i in range(8)]
            writer.add(ProbeRow(query, history, [str(400 + (query + j) % 90) for j in range(10)]))
    part = probes / "part-00001.parquet"
    data = bytearray(part.read_bytes())
    data[len(data) // 3] ^= 0x01
    part.write_bytes(bytes(data))
    result = recmimic(
        "distill", "--probes", str(probes), "--out", str(student), "--hidden", "16",
        "--max-len", "20", "--max-epochs", "1", "--no-progress", "--device", "cpu",
    )  # fmt: skip
    assert result.returncode == 2
    assert_one_line_error(result, "part-00001.parquet is damaged")
    assert result.stderr.startswith("error: probe-set part ")
    assert not (student / "model.safetensors").exists()


def test_data_stats_on_fixture() -> None:
    fixture = Path(__file__).parent / "fixtures" / "u.data"
    result = recmimic("data", "stats", str(fixture), "--min-user", "1", "--min-item", "1")
    assert result.returncode == 0, result.stderr
    assert "users" in result.stdout and "interactions" in result.stdout


def test_demo_end_to_end_on_tiny_data(tmp_path: Path) -> None:
    workdir = tmp_path / "demo"
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = str(probe.getsockname()[1])
    args = ["demo", "--dataset", "synthetic:120:60", "--workdir", str(workdir), "--port", port]
    args += ["--max-epochs", "1", "--budget", "150", "--epochs", "2", "--poll-s", "0.2"]
    result = recmimic(*args)
    assert result.returncode == 0, result.stderr
    assert "[4/5] extraction job through the service" in result.stdout
    # The job's progress, polled while it ran: every stage (a stage run between two polls is
    # shown as "<stage> done"), epochs counted from 1.
    for stage in ("probing", "training", "evaluating", "done"):
        assert f"s  {stage}" in result.stdout, result.stdout
    assert "epoch 0/" not in result.stdout and "epoch 3/2" not in result.stdout
    summary = json.loads((workdir / "demo.json").read_text())
    job = summary["job"]
    assert job["status"] == "done" and job["request"]["source"] == "seeded"
    assert job["metrics"]["probing"]["spent_total"] == 150
    assert job["metrics"]["training"]["epochs_run"] <= 2
    evaluation_paid = job["metrics"]["evaluation"]["paid"]
    assert job["paid"] == 150 + evaluation_paid == summary["black_box_answers_paid_this_run"]
    # Never one sum that reads as an overspent budget: probing and evaluation apart.
    split = f"paid 150 of 150 for probing + {evaluation_paid} for evaluation"
    assert split in result.stdout and f"paid {job['paid']}" not in result.stdout
    assert job["report"]["run"]["paid"] == {"probing": 150, "evaluation": evaluation_paid}
    for group in ("overall", "tail_users"):
        for who in ("teacher", "student"):
            assert 0.0 <= job["report"][who][group]["NDCG@10"] <= 1.0
        assert 0.0 <= job["report"]["agreement"][group]["agr10"] <= 1.0
    markdown, png = Path(job["report_files"]["markdown"]), Path(job["report_files"]["png"])
    assert markdown.read_text().startswith("# Fidelity report") and png.stat().st_size > 0
    assert str(markdown) in result.stdout and str(png) in result.stdout
    again = recmimic(*args)
    assert again.returncode == 0 and "reusing the teacher" in again.stdout
    rerun = json.loads((workdir / "demo.json").read_text())
    assert rerun["job"]["id"] == job["id"] and rerun["black_box_answers_paid_this_run"] == 0


def test_training_is_deterministic_for_a_seed(tmp_path: Path) -> None:
    def run(name: str, seed: str) -> dict:
        report = tmp_path / f"{name}.json"
        args = ["--dataset", "synthetic:120:60", "--seed", seed, "--json", str(report)]
        result = recmimic("teacher", "train", *args, "--out", str(tmp_path / name), *TINY_MODEL)
        assert result.returncode == 0, result.stderr
        return json.loads(report.read_text())

    first, again, other = run("a", "1"), run("b", "1"), run("c", "2")
    assert first["training"]["history"] == again["training"]["history"]
    assert first["version"] == again["version"]
    assert first["training"]["history"] != other["training"]["history"]


def test_help_and_option_errors_never_load_torch() -> None:
    """Stages import their heavy modules when they run, so `--help` answers at once."""
    probe = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from service.cli import app\n"
        "for args in (['--help'], ['distill', '--help'], ['extract', '--budget', 'x']):\n"
        "    CliRunner().invoke(app, args)\n"
        "print(sorted(m for m in ('torch', 'pandas', 'matplotlib') if m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_an_undetectable_format_names_the_option_and_its_values(tmp_path: Path) -> None:
    odd = tmp_path / "log.txt"
    odd.write_text("u1;i1;5\n")
    result = recmimic("data", "stats", str(odd))
    assert_one_line_error(result, "name it with --fmt (atomic, ml-100k, ml-1m, amazon, csv)")
    assert "fmt=" not in result.stderr


def all_commands() -> Iterator[tuple[str, Any]]:
    """Every command of `recmimic` (Typer's own click commands), by its full name."""

    def walk(name: str, command: Any) -> Iterator[tuple[str, Any]]:
        if hasattr(command, "commands"):
            for sub_name, sub in command.commands.items():
                yield from walk(f"{name} {sub_name}".strip(), sub)
        else:
            yield name, command

    yield from walk("", typer.main.get_command(app))


# Options that take one of a fixed set of values, wherever they appear, and those values.
FIXED_VALUES = {
    "--arch": ARCHS,
    "--device": ("auto", "cpu", "cuda"),
    "--fmt": FORMATS,
    "--source": SOURCES,
    "--objective": tuple(Objective.__args__),
    "--reliability": ("overlap", "rbo"),
}


def test_every_option_shows_its_default_and_its_values() -> None:
    """`recmimic demo --help` once showed no default for most options (left None so that the
    config decides), and `--fmt` listed no formats."""
    checked = 0
    for name, command in all_commands():
        for option in command.params:
            if option.param_type_name != "option" or option.required or option.name == "help":
                continue
            flag = option.opts[0]
            shown = isinstance(option.show_default, str) or (
                option.default is not None and option.show_default is not False
            )
            assert shown or "default:" in (option.help or ""), f"{name} {flag} shows no default"
            for value in FIXED_VALUES.get(flag, ()):
                assert value in (option.help or ""), f"{name} {flag}'s help lacks {value!r}"
            checked += 1
    assert checked > 80


def test_demo_help_shows_the_demos_defaults() -> None:
    from service.demo_config import DemoConfig

    result = recmimic("demo", "--help", env={**os.environ, "COLUMNS": "200"})
    assert result.returncode == 0
    assert f"[default: ({DemoConfig.budget})]" in result.stdout
    assert f"[default: ({DemoConfig.port})]" in result.stdout


def test_a_busy_port_is_refused_before_the_demo_trains_anything(tmp_path: Path) -> None:
    """The demo once trained its teacher for minutes, then failed with `[Errno 98] Address
    already in use`, naming neither the port nor the option."""
    workdir = tmp_path / "demo"
    with busy_port() as port:
        result = recmimic(
            "demo", "--dataset", "synthetic:60:40", "--workdir", str(workdir), "--port", str(port)
        )
    assert result.returncode == 2
    assert_one_line_error(result, f"port {port} on 127.0.0.1 is already in use")
    assert "choose another with --port" in result.stderr
    assert not workdir.exists()


@pytest.mark.parametrize(
    "command", [["teacher", "serve", "--model", "no-such-dir", "--api-key", "k"], ["serve"]]
)
def test_a_busy_port_is_refused_before_anything_is_served(
    tmp_path: Path, command: list[str]
) -> None:
    """`teacher serve` on a busy port exited 3 with uvicorn's log instead of one line."""
    with busy_port() as port:
        result = recmimic(*command, "--port", str(port), cwd=tmp_path, env=service_env())
    assert result.returncode == 2
    assert_one_line_error(result, f"port {port} on 127.0.0.1 is already in use")
    assert "--port" in result.stderr


def test_a_zero_budget_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    """`--budget 0` once wrote four files that the next step then failed on."""
    out = tmp_path / "run"
    result = recmimic(
        "extract", "--teacher-url", "http://127.0.0.1:9", "--budget", "0", "--out", str(out),
        "--api-key", "k", "--source", "autoregressive",
    )  # fmt: skip
    assert result.returncode == 2
    assert_one_line_error(result, "--budget must be at least 1")
    assert not out.exists()


def test_the_worker_keeps_library_logs_quiet_and_announces_its_data_directory(
    tmp_path: Path,
) -> None:
    """`recmimic worker --once` printed Alembic's migration log and made `./recmimic-data`
    without a word; the log is `--verbose`'s, the new directory gets one line."""
    quiet = recmimic("worker", "--once", cwd=tmp_path, env=service_env())
    assert quiet.returncode == 0, quiet.stderr
    created = [line for line in quiet.stderr.splitlines() if "data directory" in line]
    assert created == [f"created the data directory {tmp_path / 'recmimic-data'} "
                       "(RECMIMIC_HOME sets another)"]  # fmt: skip
    assert "alembic" not in quiet.stderr.lower()
    verbose = recmimic("--verbose", "worker", "--once", cwd=tmp_path, env=service_env())
    assert verbose.returncode == 0, verbose.stderr
    assert "alembic" in verbose.stderr and "data directory" not in verbose.stderr


def test_keys_create_announces_the_data_directory_it_creates(tmp_path: Path) -> None:
    first = recmimic("keys", "create", "me", cwd=tmp_path, env=service_env())
    assert first.returncode == 0, first.stderr
    assert first.stderr.strip().startswith("created the data directory ")
    assert (tmp_path / "recmimic-data").is_dir() and first.stdout.strip()
    again = recmimic("keys", "create", "me", cwd=tmp_path, env=service_env())
    assert again.returncode == 0 and again.stderr == ""


def test_demo_progress_shows_every_stage_and_counts_epochs_from_one() -> None:
    """Read every 3 s, a short probing stage never showed, and the epoch counter ran from 0/40
    to 39/40; a job's paid answers were one sum, probing's and evaluation's."""
    from service.demo import progress_lines

    request = {"budget": 8000, "dataset": "ml-100k"}
    job = {"status": "training", "progress": 0.0, "paid": 8000, "cached": 0, "error": None}
    job |= {"request": request, "metrics": None}
    assert progress_lines(job, 40, "queued") == [
        "probing done           paid 8000 of 8000 for probing, cached 0",
        "training epoch 1/40    paid 8000 of 8000 for probing, cached 0",
    ]
    last = progress_lines({**job, "progress": 39 / 40}, 40, "training")
    assert last == ["training epoch 40/40   paid 8000 of 8000 for probing, cached 0"]
    metrics = {"probing": {"spent_total": 8000}, "evaluation": {"paid": 943}}
    done = progress_lines(
        {**job, "status": "done", "paid": 8943, "metrics": metrics}, 40, "training"
    )
    assert done == [
        "evaluating done        paid 8000 of 8000 for probing + 943 for evaluation, cached 0",
        "done                   paid 8000 of 8000 for probing + 943 for evaluation, cached 0",
    ]


def test_teacher_serve_help_states_the_settings_own_defaults() -> None:
    """`teacher serve` states these in its help without importing its settings (see
    `teacher_mock.cli._default`), so they are checked here instead."""
    from teacher_mock.settings import TeacherSettings

    fields = TeacherSettings.model_fields
    assert all(fields[name].default is None for name in ("quota", "rate", "burst", "fault_seed"))
    rates = ("latency_ms", "error_rate", "timeout_rate", "truncate_rate")
    assert all(fields[name].default == 0 for name in rates)
