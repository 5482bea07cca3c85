"""The model file's check in a short-lived child, and a command's parent process that loads
only what it uses: no onnxruntime (the child checks the model), no pandas, and no pyarrow for
a JSONL table without a folder store (pyarrow loads pandas itself when it builds an array)."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from saliency_assets.core.contract.errors import ConfigError
from saliency_assets.core.model import model_check
from saliency_assets.core.model.model_check import check_model_file
from saliency_assets.core.model.saliency_model import AUTO, CPU_PROVIDER, validate_model_file
from saliency_assets.models import DEFAULT_MODEL_PATH

# The command's own main in a fresh interpreter, then the heavy packages it loaded.
_LOADED_BY_A_RUN = """
import json, sys
from saliency_assets.cli import main
code = main(sys.argv[1:])
heavy = sorted({name.split(".")[0] for name in sys.modules} & {"onnxruntime", "pandas", "pyarrow"})
print(json.dumps({"code": code, "heavy": heavy}))
"""


@pytest.fixture
def forking(monkeypatch):
    """This test process has onnxruntime loaded, so it would check in place: make it fork."""
    monkeypatch.setattr(model_check, "_forks_safely", lambda: True)


@pytest.mark.parametrize("providers", [(AUTO,), (CPU_PROVIDER,)])
def test_the_child_answers_what_the_check_in_place_answers(forking, providers):
    assert check_model_file(DEFAULT_MODEL_PATH, providers) == validate_model_file(
        DEFAULT_MODEL_PATH, providers
    )


def test_the_childs_config_error_comes_back_with_its_message(forking, tmp_path):
    model = tmp_path / "broken.onnx"
    model.write_bytes(b"not a model")
    with pytest.raises(ConfigError, match=f"model file {model} is not a loadable ONNX model"):
        check_model_file(model, (AUTO,))


def test_a_child_that_dies_without_answering_is_a_config_error_naming_the_file(
    forking, monkeypatch, tmp_path
):
    monkeypatch.setattr(model_check, "validate_model_file", lambda path, providers: os._exit(3))
    with pytest.raises(ConfigError, match=r"could not be checked.*exit code 3"):
        check_model_file(tmp_path / "model.onnx", (AUTO,))


def test_a_stop_signal_ends_the_child_at_once_not_through_the_parents_handler(
    forking, monkeypatch, tmp_path, capfd
):
    from saliency_assets.interrupts import stop_signals_raise

    def stopped(path, providers):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # not reached: the signal ends the child

    monkeypatch.setattr(model_check, "validate_model_file", stopped)
    with stop_signals_raise(), pytest.raises(ConfigError, match=r"exit code -15"):
        check_model_file(tmp_path / "model.onnx", (AUTO,))
    assert "Traceback" not in capfd.readouterr().err


def test_with_other_threads_running_the_check_runs_in_place(monkeypatch, tmp_path):
    monkeypatch.delitem(sys.modules, "onnxruntime")  # not loaded: only the threads say no
    monkeypatch.setattr(model_check.threading, "active_count", lambda: 2)
    checked = []
    monkeypatch.setattr(
        model_check, "validate_model_file", lambda path, providers: checked.append(os.getpid())
    )
    check_model_file(tmp_path / "model.onnx", (AUTO,))
    assert checked == [os.getpid()]


@pytest.mark.parametrize(
    ("store", "table", "heavy"),
    [
        ("none", "in.jsonl", []),
        ("none", "in.parquet", ["pandas", "pyarrow"]),
        ("folder", "in.jsonl", ["pandas", "pyarrow"]),
    ],
)
def test_a_commands_process_loads_only_what_its_table_and_store_use(
    tmp_path, clip_dir, store, table, heavy
):
    rows = [{"src": str(clip_dir / "clip.mp4")}]
    source = tmp_path / table
    if table.endswith(".jsonl"):
        source.write_text("".join(json.dumps(row) + "\n" for row in rows))
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(rows), source)
    store_flag = "none" if store == "none" else str(tmp_path / "store")
    done = subprocess.run(
        [sys.executable, "-c", _LOADED_BY_A_RUN, "materialize", "--input", str(source),
         "--output", str(tmp_path / "out.jsonl"), "--max-frames", "2", "--jobs", "1",
         "--results-store", store_flag],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    loaded = json.loads(done.stdout.splitlines()[-1])
    assert loaded == {"code": 0, "heavy": heavy}
    output = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert output[0]["saliency_status"] == "ok"
