"""The `recmimic` command as a user runs it: real subprocesses, tiny data, tiny models."""

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from seqrec.artifacts import load_artifact

TINY_MODEL = ["--hidden", "16", "--max-len", "20", "--n-heads", "2", "--max-epochs", "2"]


def recmimic(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "service.cli", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=cwd)


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
        (["teacher", "train", "--dataset", "no-such-file.csv"], "unknown dataset"),
        (["teacher", "train", "--dataset", "synthetic:50:40", "--arch", "gpt"], "unknown arch"),
        (["data", "stats", "synthetic:0:5"], "bad synthetic dataset"),
        (["data", "fetch", "ml-20m"], "unknown dataset"),
        (["distill", "--probes", "x", "--out", "y", "--negatives", "some"], "bad --negatives"),
        (["distill", "--probes", "no-such-dir", "--out", "y"], "is not a directory"),
        (["distill", "--probes", "x", "--out", "y", "--objective", "magic"], "unknown objective"),
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
    assert "training epoch" in result.stdout  # the job's progress, polled while it ran
    summary = json.loads((workdir / "demo.json").read_text())
    job = summary["job"]
    assert job["status"] == "done" and job["request"]["source"] == "seeded"
    assert job["metrics"]["probing"]["spent_total"] == 150
    assert job["metrics"]["training"]["epochs_run"] <= 2
    evaluation_paid = job["metrics"]["evaluation"]["paid"]
    assert job["paid"] == 150 + evaluation_paid == summary["black_box_answers_paid_this_run"]
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
