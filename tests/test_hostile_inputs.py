"""Hostile inputs through the real ``saliency-assets`` command.

Row cases (hostile videos, paths and cell values) are the rows of one table, run through
``materialize`` once per mode: in-process decoding, the ffmpeg binary, and ``--confine-to-root``.
Each row must end in its expected status with an error naming the file or column, and keep its
other columns exactly as they were. Command cases (malformed tables, flags, manifests) are one
command each: the expected exit code and a message naming the line, file or key; configuration
errors come before any work (no output, no clip computed).

Every command runs bounded (tests/support/bounded.py): an address-space cap on each process, a
time limit, a per-clip ``--decode-timeout``. None may print a traceback, hang or leave a process
behind. The exceptions are the flags and manifests whose values, types or keys are wrong: plain
configuration errors, refused before any work by the same validation whatever the value, they
call the command's ``main`` in the test process (a new bounded process each cost about a second
of start-up; an exception out of ``main`` fails the case); the manifests that attack resources
(deep nesting, huge numbers, a FIFO, a huge file) stay bounded, as does every table case. The
module ends with one summary line of the counts.
"""

from __future__ import annotations

import http.server
import json
import math
import os
import re
import shutil
import stat
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import run_cli_in_process
from support.bounded import CommandRun, Ledger, run_command, write_report_line
from support.clips import (
    ffmpeg_exe,
    make_audio_only,
    make_clip,
    make_raw_yuv,
    raw_frame_bytes,
    truncate_copy,
    write_garbage,
)

from saliency_assets.core.tables.table_files import MAX_LINE_BYTES, MAX_TABLE_GIB_ENV

DECODE_TIMEOUT = "20"
# Far below the address-space cap: a case that gets near the cap fails here, not as a status.
PEAK_RSS_BOUND_MIB = 768
COMMAND_WORKERS = 2
SALIENCY_COLUMNS = {
    "saliency_mean",
    "saliency_var",
    "saliency_status",
    "saliency_error",
    "saliency_model_id",
    "saliency_aggregator",
    "saliency_ema_alpha",
    "saliency_sampling",
    "saliency_inference_size",
}
IS_ROOT = os.geteuid() == 0


# --------------------------------------------------------------------------- row cases


@dataclass(frozen=True)
class Expect:
    """A row's expected status, and a pattern its error column must contain."""

    status: str
    detail: str | None = None


OK = Expect("ok")


def missing_source(detail: str) -> Expect:
    return Expect("missing-source", detail)


def missing_geometry(detail: str) -> Expect:
    return Expect("missing-geometry", detail)


def decode_failed(detail: str) -> Expect:
    return Expect("decode-failed", detail)


@dataclass(frozen=True)
class RowCase:
    name: str
    row: dict[str, Any]
    expect: Expect
    confined: Expect | None = None  # under --confine-to-root, where it differs
    binary: Expect | None = None  # through --ffmpeg-bin, where it differs

    def expected(self, mode: str) -> Expect:
        return {"confined": self.confined, "binary": self.binary}.get(mode) or self.expect


MODES = {
    "pyav": [],
    "binary": ["--ffmpeg-bin", ffmpeg_exe()],
    "confined": ["--confine-to-root"],
}


def make_video_files(root: Path) -> None:
    """Broken, misnamed, oversized and not-a-file sources (beside root/good.mp4)."""
    good = root / "good.mp4"
    (root / "zero.mp4").write_bytes(b"")
    truncate_copy(good, root / "cut.mp4", 0.5)
    truncate_copy(make_clip(root / "whole.mkv", 64, 48, 12), root / "cut.mkv", 0.6)
    write_garbage(root / "random.mp4", 64 * 1024, seed=1)
    (root / "with_tail.mkv").write_bytes(
        (root / "whole.mkv").read_bytes() + write_garbage(root / "tail.bin", 8192).read_bytes()
    )
    for name in ("good_as.avi", "good_as.txt", "good_no_suffix"):
        shutil.copy(good, root / name)
    _copy_with_partial_frame(good, root / "good_as.yuv")
    make_audio_only(root / "audio_only.m4a")
    make_audio_only(root / "audio_only.mp4")
    _forged_matroska(root / "forged_16384.mkv")
    _y4m_claiming(root / "claims_16384.y4m", 16384)
    _y4m_claiming(root / "claims_100000.y4m", 100000)
    _png_bomb(root / "png_bomb_16384.mp4", 16384)
    make_raw_yuv(root / "raw_ok.yuv", 64, 48, 4)
    make_raw_yuv(root / "raw10_ok.yuv", 64, 48, 2, "yuv420p10le")
    make_raw_yuv(root / "huge_claim.yuv", 64, 48, 2)
    partial = make_raw_yuv(root / "partial.yuv", 64, 48, 3)
    with partial.open("ab") as handle:
        handle.write(b"\0" * 100)
    make_raw_yuv(root / "ten_bit_as_8.yuv", 64, 48, 2, "yuv420p10le")
    make_raw_yuv(root / "eight_bit_as_10.yuv", 64, 48, 4)  # 4 8-bit frames = 2 10-bit frames
    (root / "folder.mp4").mkdir()
    os.mkfifo(root / "fifo.mp4")
    shutil.copy(good, root / "no_read.mp4")
    (root / "no_read.mp4").chmod(0)
    os.symlink("loop.mp4", root / "loop.mp4")
    os.symlink("loop_b.mp4", root / "loop_a.mp4")
    os.symlink("loop_a.mp4", root / "loop_b.mp4")
    os.symlink("nowhere.mp4", root / "dangling.mp4")
    os.symlink("/dev/zero", root / "dev_zero.mp4")
    with (root / "sparse_zeros.mkv").open("wb") as handle:
        handle.truncate(2 * 1024**3)


def video_cases() -> list[RowCase]:
    """Broken, misnamed, oversized and not-a-file sources."""
    raw = {"width": 64, "height": 48}
    no_video = "has no video stream"
    return [
        RowCase("zero-byte file", {"src": "zero.mp4"}, decode_failed("zero.mp4: not a readable")),
        RowCase("mp4 cut mid-stream", {"src": "cut.mp4"}, decode_failed("cut.mp4: not a readable")),
        RowCase("mkv cut mid-stream keeps its frames", {"src": "cut.mkv"}, OK),
        RowCase("random bytes named .mp4", {"src": "random.mp4"}, decode_failed("random.mp4")),
        RowCase("valid clip with garbage appended", {"src": "with_tail.mkv"}, OK),
        RowCase("valid clip named .avi", {"src": "good_as.avi"}, OK),
        RowCase("valid clip named .txt", {"src": "good_as.txt"}, OK),
        RowCase("valid clip without suffix", {"src": "good_no_suffix"}, OK),
        RowCase(
            "container named .yuv, no geometry",
            {"src": "good_as.yuv"},
            missing_geometry("good_as.yuv needs a width and height"),
        ),
        RowCase(
            "container named .yuv, with geometry",
            {"src": "good_as.yuv", **raw},
            decode_failed(
                r"good_as.yuv: raw file (size .* not a whole number|is \d+ bytes, smaller)"
            ),
        ),
        RowCase("audio only (.m4a)", {"src": "audio_only.m4a"}, decode_failed(no_video)),
        RowCase("audio only (.mp4)", {"src": "audio_only.mp4"}, decode_failed(no_video)),
        RowCase(
            "header forged to 16384x16384",
            {"src": "forged_16384.mkv"},
            decode_failed("forged_16384.mkv: "),
        ),
        RowCase(
            "y4m header claims 16384x16384",
            {"src": "claims_16384.y4m"},
            decode_failed("claims_16384.y4m: "),
        ),
        RowCase(
            "y4m header claims 100000x100000",
            {"src": "claims_100000.y4m"},
            decode_failed("claims_100000.y4m: "),
        ),
        RowCase(
            "PNG decompression bomb 16384x16384",
            {"src": "png_bomb_16384.mp4"},
            decode_failed("png_bomb_16384.mp4: no video frames could be decoded"),
            binary=decode_failed("png_bomb_16384.mp4: first frame did not decode"),
        ),
        RowCase("raw control", {"src": "raw_ok.yuv", **raw}, OK),
        RowCase("raw 10-bit control", {"src": "raw10_ok.yuv", **raw, "pix_fmt": "yuv420p10le"}, OK),
        RowCase(
            "raw claimed as 100000x100000",
            {"src": "huge_claim.yuv", "width": 100000, "height": 100000},
            decode_failed("huge_claim.yuv: declared raw geometry 100000x100000 exceeds"),
        ),
        RowCase(
            "raw size not whole frames",
            {"src": "partial.yuv", **raw},
            decode_failed(r"partial.yuv: raw file size 13924 bytes is not a whole number"),
        ),
        RowCase(
            "10-bit data declared 8-bit",
            {"src": "ten_bit_as_8.yuv", **raw},
            decode_failed("ten_bit_as_8.yuv: every second byte is 0-3.*looks like yuv420p10le"),
        ),
        RowCase(
            "8-bit data declared 10-bit",
            {"src": "eight_bit_as_10.yuv", **raw, "pix_fmt": "yuv420p10le"},
            decode_failed("eight_bit_as_10.yuv: holds sample value .* above 1023"),
        ),
        RowCase("a directory", {"src": "folder.mp4"}, missing_source("is a directory")),
        RowCase("a FIFO", {"src": "fifo.mp4"}, missing_source("fifo.mp4 is not a regular file")),
        RowCase(
            "unreadable file (chmod 000)",
            {"src": "no_read.mp4"},
            # root reads any file: then the honest outcome is ok; others get a clear refusal.
            OK if IS_ROOT else missing_source("no_read.mp4 is not readable"),
        ),
        RowCase("symlink to itself", {"src": "loop.mp4"}, missing_source("symbolic links")),
        RowCase("symlink loop of two", {"src": "loop_a.mp4"}, missing_source("symbolic links")),
        RowCase("dangling symlink", {"src": "dangling.mp4"}, missing_source("No such file")),
        RowCase(
            "symlink to /dev/zero",
            {"src": "dev_zero.mp4"},
            missing_source("not a regular file"),
            confined=missing_source("dev_zero.mp4 is outside root"),
        ),
        RowCase("2 GiB sparse zeros", {"src": "sparse_zeros.mkv"}, decode_failed("sparse_zeros")),
    ]


def make_path_files(root: Path, outside: Path, port: int) -> None:
    """Odd names, links out of the root, playlists."""
    good = root / "good.mp4"
    for name in ("spaced name ü 日本 🎬.mp4", "new\nline.mp4", "concat:a.mp4|b.mp4"):
        shutil.copy(good, root / name)
    (root / "sub").mkdir()
    os.symlink(outside / "elsewhere.mp4", root / "link_out.mp4")
    url = f"http://127.0.0.1:{port}"
    (root / "remote.m3u8").write_text(
        f"#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXTINF:1,\n{url}/seg0.ts\n#EXT-X-ENDLIST\n"
    )
    (root / "local.m3u8").write_text(
        "#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXTINF:1,\n"
        f"{outside / 'elsewhere.mp4'}\n#EXT-X-ENDLIST\n"
    )
    (root / "list.ffconcat").write_text(f"ffconcat version 1.0\nfile '{outside}/elsewhere.mp4'\n")


def path_cases(root: Path, outside: Path, port: int) -> list[RowCase]:
    """Names that are odd, escape the root, or would mean a protocol to FFmpeg."""
    good = root / "good.mp4"
    url = f"http://127.0.0.1:{port}"
    escaped = missing_source(r"is outside root .* \(confine_to_root is set\)")
    no_file = missing_source("No such file")
    return [
        RowCase("unicode and spaces", {"src": "spaced name ü 日本 🎬.mp4"}, OK),
        RowCase("newline in the name", {"src": "new\nline.mp4"}, OK),
        RowCase("dot-dot staying inside root", {"src": "sub/../good.mp4"}, OK),
        RowCase("dot-dot escaping root", {"src": "../outside/elsewhere.mp4"}, OK, escaped),
        RowCase("absolute path outside root", {"src": str(outside / "elsewhere.mp4")}, OK, escaped),
        RowCase("symlink escaping root", {"src": "link_out.mp4"}, OK, escaped),
        RowCase("concat protocol string", {"src": "concat:good.mp4|good.mp4"}, no_file),
        RowCase("file named like the concat protocol", {"src": "concat:a.mp4|b.mp4"}, OK),
        RowCase("http URL", {"src": f"{url}/clip.mp4"}, no_file),
        RowCase("subfile protocol", {"src": f"subfile,,start,0,end,4096,,:{good}"}, no_file),
        RowCase("pipe protocol (stdin holds a clip)", {"src": "pipe:0"}, no_file),
        RowCase("data URI", {"src": "data:video/mp4;base64,AAAAIGZ0eXBpc29t"}, no_file),
        RowCase("file: URL", {"src": f"file:{good}"}, no_file),
        RowCase("playlist of URLs", {"src": "remote.m3u8"}, decode_failed("remote.m3u8")),
        RowCase(
            "playlist of local files", {"src": "local.m3u8"}, decode_failed("local.m3u8: is a hls")
        ),
        RowCase("ffconcat list", {"src": "list.ffconcat"}, decode_failed("list.ffconcat")),
        RowCase("NUL in the path", {"src": "good.mp4\x00.txt"}, missing_source("NUL character")),
        RowCase("lone surrogate in the path", {"src": "\ud800.mp4"}, missing_source("surrogate")),
        RowCase("5000-character name", {"src": "x" * 5000 + ".mp4"}, missing_source("too long")),
        RowCase("empty path", {"src": ""}, missing_source("path column 'src' is empty")),
        RowCase("the root itself", {"src": "."}, missing_source("is a directory")),
        RowCase(
            "the filesystem root",
            {"src": "/"},
            missing_source("is a directory"),
            missing_source("is outside root"),
        ),
        RowCase("tilde is not expanded", {"src": "~/good.mp4"}, no_file),
    ]


def make_cell_files(root: Path) -> None:
    make_raw_yuv(root / "plain.yuv", 64, 48, 4)  # no WxH in the name to fall back on


def cell_cases() -> list[RowCase]:
    """Wrong types in the path, geometry, pixel format and saliency columns; missing columns."""
    not_a_path = {
        "NaN": math.nan,
        "int": 5,
        "float": 3.5,
        "bool": True,
        "list": ["good.mp4"],
        "dict": {"path": "good.mp4"},
    }
    cases = [
        RowCase(f"path column holds {label}", {"src": value}, missing_source("not a path"))
        for label, value in not_a_path.items()
    ]
    cases.append(RowCase("path column None", {"src": None}, missing_source("is empty")))
    cases.append(RowCase("no path column at all", {"path": "good.mp4"}, missing_source("is empty")))
    bad_sizes = {
        "NaN": math.nan,
        "None": None,
        "text": "abc",
        "list": [64],
        "dict": {"w": 64},
        "negative": -64,
        "zero": 0,
        "bool": True,
        "infinite text": "inf",
        "int beyond any float": 10**400,
    }
    no_geometry = missing_geometry("plain.yuv needs a width and height")
    for label, value in bad_sizes.items():
        cases.append(
            RowCase(
                f"width {label}", {"src": "plain.yuv", "width": value, "height": 48}, no_geometry
            )
        )
        cases.append(
            RowCase(
                f"height {label}", {"src": "plain.yuv", "width": 64, "height": value}, no_geometry
            )
        )
    cases += [
        RowCase("geometry as text", {"src": "plain.yuv", "width": "64", "height": "48"}, OK),
        RowCase("fractional geometry", {"src": "plain.yuv", "width": 64.9, "height": 48.2}, OK),
        RowCase("nonsense geometry on a container", {"src": "good.mp4", "width": "x"}, OK),
        RowCase(
            "unknown pixel format",
            {"src": "plain.yuv", "width": 64, "height": 48, "pix_fmt": "rgb24"},
            missing_geometry("raw pixel format 'rgb24' is not supported"),
        ),
        RowCase(
            "pixel format of the wrong type",
            {"src": "plain.yuv", "width": 64, "height": 48, "pix_fmt": 5},
            OK,
        ),
    ]
    existing = {
        "numeric text": ("0.25", "0.01"),
        "NaN": (math.nan, math.nan),
        "lists": ([0.2], [0.1]),
        "an object": ({"v": 1}, 1),
        "int beyond any float": (10**400, 1),
        "infinity as text": ("inf", "1"),
        "bools": (True, True),
        "one missing": (0.3, None),
        "empty text": ("", ""),
    }
    for label, (mean, var) in existing.items():
        done = label == "numeric text"
        cases.append(
            RowCase(
                f"existing saliency: {label}",
                {"src": "good.mp4", "saliency_mean": mean, "saliency_var": var},
                Expect("skipped-existing") if done else OK,
            )
        )
    return cases


def _copy_with_partial_frame(src: Path, dst: Path) -> None:
    data = src.read_bytes()
    if len(data) % raw_frame_bytes(64, 48) == 0:
        data += b"\0"
    dst.write_bytes(data)


def _forged_matroska(path: Path) -> None:
    """An FFV1 Matroska whose PixelWidth/PixelHeight were patched to 16384."""
    data = bytearray(make_clip(path, 256, 256, 1, codec="ffv1").read_bytes())
    for element_id in (b"\xb0", b"\xba"):
        at = data.index(element_id + b"\x82\x01\x00")
        data[at + 2 : at + 4] = (16384).to_bytes(2, "big")
    path.write_bytes(bytes(data))


def _y4m_claiming(path: Path, side: int) -> None:
    header = f"YUV4MPEG2 W{side} H{side} F25:1 Ip A1:1 C420jpeg\nFRAME\n".encode()
    path.write_bytes(header + bytes(4096))


def _png_bomb(path: Path, side: int) -> None:
    """A real side x side greyscale PNG of zeros: about 1 MB that decodes to side**2 bytes."""
    import struct
    import zlib

    compressor = zlib.compressobj(1)
    row_block = bytes((side + 1) * 256)  # a filter byte and `side` samples per row
    body = b"".join(compressor.compress(row_block) for _ in range(side // 256))
    body += compressor.flush()

    def chunk(kind: bytes, payload: bytes) -> bytes:
        crc = zlib.crc32(kind + payload)
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", body) + chunk(b"IEND", b"")
    )


class _CountingHandler(http.server.BaseHTTPRequestHandler):
    requests: list[str] = []

    def setup(self) -> None:
        self.requests.append("connection")
        super().setup()

    def do_GET(self) -> None:  # noqa: N802 (the http.server API)
        self.send_error(404)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def url_server():
    """A local HTTP server that counts connections: a fetched URL would show up here."""
    _CountingHandler.requests = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _CountingHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()


@pytest.fixture(scope="module")
def ledger(request):
    """Counts for the summary line printed at the end of the module."""
    book = Ledger("hostile inputs")
    yield book
    write_report_line(request, book.summary())


@dataclass
class RowRuns:
    cases: dict[str, RowCase]
    inputs: dict[str, dict[str, Any]]
    runs: dict[str, CommandRun] = field(default_factory=dict)
    outputs: dict[str, list[dict[str, Any]]] = field(default_factory=dict)


@pytest.fixture(scope="module")
def row_runs(tmp_path_factory, url_server, ledger) -> RowRuns:
    """The table of row cases, run once per mode."""
    folder = tmp_path_factory.mktemp("hostile_rows")
    root, outside = folder / "root", folder / "outside"
    root.mkdir()
    outside.mkdir()
    good = make_clip(root / "good.mp4", 64, 48, 6)
    shutil.copy(good, outside / "elsewhere.mp4")
    port = url_server.server_address[1]
    make_video_files(root)
    make_path_files(root, outside, port)
    make_cell_files(root)
    cases = all_cases(root, outside, port)
    assert [case.name for case in cases] == ROW_CASE_NAMES
    rows = [{"case": case.name, **case.row} for case in cases]
    table = folder / "hostile.jsonl"
    table.write_text("".join(json.dumps(row) + "\n" for row in rows))
    result = RowRuns({case.name: case for case in cases}, {row["case"]: row for row in rows})
    for mode, flags in MODES.items():
        output = folder / f"out-{mode}.jsonl"
        args = ["materialize", "--input", table, "--output", output, "--root", root]
        args += ["--jobs", "2", "--max-frames", "3", "--decode-timeout", DECODE_TIMEOUT, *flags]
        env = {"SALIENCY_ASSETS_CACHE": str(folder / f"cache-{mode}")}
        run = ledger.record(run_command(args, cwd=folder, env=env, stdin_path=good))
        result.runs[mode] = run
        if output.exists():
            result.outputs[mode] = [json.loads(line) for line in output.read_text().splitlines()]
    ledger.cases += len(cases) * len(MODES)
    return result


@pytest.mark.parametrize("mode", list(MODES))
def test_each_mode_runs_the_whole_table_without_crashing(row_runs, mode):
    run = row_runs.runs[mode]
    assert not run.hung and not run.crashed and not run.left_processes, run.describe()
    assert run.peak_rss_mib < PEAK_RSS_BOUND_MIB, run.describe()
    assert run.returncode == 1, run.describe()  # some rows fail by design
    total = len(row_runs.cases)
    assert re.search(rf"saliency materialize: total={total} ok=\d+ skipped=1 failed=", run.stderr)
    assert "path_column='src' not found in row" in run.stderr


@pytest.mark.parametrize("mode", list(MODES))
def test_no_row_is_lost_reordered_or_altered(row_runs, ledger, mode):
    written = row_runs.outputs[mode]
    assert [row["case"] for row in written] == list(row_runs.inputs)
    altered = [row["case"] for row in written if not _kept(row_runs.inputs[row["case"]], row)]
    ledger.altered_rows += len(altered)
    assert altered == []


def test_no_url_was_ever_fetched(row_runs, url_server):
    assert _CountingHandler.requests == []


def all_cases(root: Path, outside: Path, port: int) -> list[RowCase]:
    return [*video_cases(), *path_cases(root, outside, port), *cell_cases()]


# Names only, for the test ids; the rows are built again with the real folders.
ROW_CASE_NAMES = [case.name for case in all_cases(Path("/r"), Path("/o"), 0)]


@pytest.mark.parametrize("row_case", ROW_CASE_NAMES)
@pytest.mark.parametrize("mode", list(MODES))
def test_row_ends_in_its_expected_status(row_runs, mode, row_case):
    case = row_runs.cases[row_case]
    expected = case.expected(mode)
    row = next(row for row in row_runs.outputs[mode] if row["case"] == row_case)
    assert row["saliency_status"] == expected.status, row.get("saliency_error")
    if expected.status in ("ok", "skipped-existing"):
        assert "saliency_error" not in row or row["saliency_error"] is None
    else:
        assert row["saliency_error"], "a failed row must say why"
        assert "worker process died" not in row["saliency_error"]  # e.g. out of memory
        assert re.search(expected.detail, row["saliency_error"]), row["saliency_error"]
    if expected.status == "ok":
        assert 0.0 <= row["saliency_mean"] <= 1.0


def _kept(source: dict[str, Any], written: dict[str, Any]) -> bool:
    """Every input column other than the saliency ones is written back unchanged and in order;
    a skipped row keeps its saliency values too. Non-finite floats become null (strict JSON)."""
    strict = _strict(source)
    kept_keys = [key for key in written if key in source]
    if kept_keys != list(source):
        return False
    protected = [key for key in source if key not in SALIENCY_COLUMNS]
    if written.get("saliency_status") == "skipped-existing":
        protected += ["saliency_mean", "saliency_var"]
    return all(written[key] == strict[key] for key in protected)


def _strict(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _strict(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_strict(item) for item in value]
    return value


# --------------------------------------------------------------------------- command cases


@dataclass(frozen=True)
class CommandCase:
    """One command: ``build`` writes its inputs into a fresh folder and returns the arguments."""

    name: str
    build: Callable[[Path, Path], list[Any]]
    exit_code: int
    message: str  # a pattern stderr must contain
    check: Callable[[Path, CommandRun], None] | None = None
    timeout_s: float = 60.0
    in_process: bool = False  # a plain configuration error: main in the test process


def write_rows(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def materialize(*flags: Any, table: str = "in.jsonl", output: str = "out.jsonl") -> Callable:
    """A builder for ``materialize`` over one good row."""

    def build(folder: Path, clip: Path) -> list[Any]:
        write_rows(folder / table, [{"src": str(clip)}])
        return materialize_args(table, output, *flags)

    return build


def with_input(write: Callable[[Path, Path], None], *flags: Any, **names: str) -> Callable:
    """A ``materialize`` builder whose input is written by ``write(path, clip)``."""
    table, output = names.get("table", "in.jsonl"), names.get("output", "out.jsonl")

    def build(folder: Path, clip: Path) -> list[Any]:
        write(folder / table, clip)
        return materialize_args(table, output, *flags)

    return build


def materialize_args(table: str, output: str, *flags: Any) -> list[Any]:
    return ["materialize", "--input", table, "--output", output, "--jobs", "1", *flags]


def nothing_written(folder: Path, run: CommandRun) -> None:
    """No output, report or audit, no temp file left beside them, no clip result stored."""
    no_output(folder, run)
    cache = folder / "cache"
    assert not cache.exists() or not any(cache.iterdir()), run.describe()


def no_output(folder: Path, run: CommandRun) -> None:
    """No output, report or audit, and no temp file left beside them."""
    written = [
        path.name
        for path in folder.iterdir()
        if path.name.startswith(("out", "a.out", "b.out", "report", "audit", "."))
    ]
    assert written == [], run.describe()


def output_rows(name: str) -> Callable[[Path, CommandRun], list[dict[str, Any]]]:
    def read(folder: Path, run: CommandRun) -> list[dict[str, Any]]:
        path = folder / name
        assert path.exists(), run.describe()
        return [json.loads(line) for line in path.read_text().splitlines()]

    return read


def empty_output(folder: Path, run: CommandRun) -> None:
    assert (folder / "out.jsonl").read_bytes() == b"", run.describe()


def sparse_long_line(path: Path, clip: Path) -> None:
    """Line 2 is 1 GiB long; the file is sparse, so it costs no disk and no time to make."""
    with path.open("wb") as handle:
        handle.write(json.dumps({"src": str(clip)}).encode() + b"\n" + b'{"src": "')
        handle.seek(1024**3)
        handle.write(b'"}\n')


def bounded_rejection(folder: Path, run: CommandRun) -> None:
    nothing_written(folder, run)
    assert run.peak_rss_mib < 512 and run.seconds < 30, run.describe()


def text_input(text: str | bytes) -> Callable[[Path, Path], None]:
    def write(path: Path, clip: Path) -> None:
        data = text.encode() if isinstance(text, str) else text
        path.write_bytes(data.replace(b"CLIP", str(clip).encode()))

    return write


def parquet_input(table_of: Callable[[Path], pa.Table]) -> Callable[[Path, Path], None]:
    def write(path: Path, clip: Path) -> None:
        pq.write_table(table_of(clip), path)

    return write


# One row less than the old 50,000,000-cell cap allowed: about 96 KB that expands to ~40 GiB.
BOMB_ROWS = 49_999_999


def parquet_bomb(path: Path, clip: Path) -> None:
    """A file of a few hundred kilobytes whose rows, held as dicts, would need tens of GB."""
    pq.write_table(pa.table({"src": pa.nulls(BOMB_ROWS, pa.string())}), path)


def empty_parquet_kept(folder: Path, run: CommandRun) -> None:
    written = pq.read_table(folder / "out.parquet")
    assert written.num_rows == 0 and written.column_names[:2] == ["src", "width"]


def fifo_at(path: Path, clip: Path) -> None:
    os.mkfifo(path)


def folder_at(path: Path, clip: Path) -> None:
    path.mkdir()


def loop_at(path: Path, clip: Path) -> None:
    os.symlink(path.name, path)


def nothing_at(path: Path, clip: Path) -> None:
    pass


def folder_in_the_way(folder: Path, clip: Path) -> list[Any]:
    (folder / "out.jsonl").mkdir()
    return materialize()(folder, clip)


def file_in_the_way(folder: Path, clip: Path) -> list[Any]:
    (folder / "blocker").write_text("a file, not a folder")
    return materialize(output="blocker/out.jsonl")(folder, clip)


def clip_results_kept_beside_the_folder(folder: Path, run: CommandRun) -> None:
    hidden = [path.name for path in folder.iterdir() if path.name.startswith(".")]
    assert hidden == [] and not any((folder / "out.jsonl").iterdir()), run.describe()


def clip_results_kept(folder: Path, run: CommandRun) -> None:
    """The table could not be written, but its clips are stored: a rerun recomputes nothing."""
    no_output(folder, run)
    assert any((folder / "cache").iterdir()), run.describe()


def hanging_ffmpeg(folder: Path, clip: Path) -> list[Any]:
    script = folder / "hanging-ffmpeg"
    script.write_text("#!/bin/sh\nexec sleep 60\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return materialize("--ffmpeg-bin", script, "--decode-timeout", "1")(folder, clip)


def lists_inside_root(folder: Path, clip: Path) -> list[Any]:
    """A playlist and an ffconcat list inside the root naming a clip outside it, decoded by the
    ffmpeg binary with geometry from a (stand-in) ffprobe that vouches for any file."""
    root = folder / "root"
    root.mkdir()
    (root / "list.m3u8").write_text(
        f"#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXTINF:1,\n{clip}\n#EXT-X-ENDLIST\n"
    )
    (root / "list.ffconcat").write_text(f"ffconcat version 1.0\nfile '{clip}'\n")
    probe = {"streams": [{"index": 0, "width": 64, "height": 48, "pix_fmt": "yuv420p"}]}
    ffprobe = folder / "ffprobe"
    ffprobe.write_text(f"#!/bin/sh\ncat <<'EOF'\n{json.dumps(probe)}\nEOF\n")
    ffprobe.chmod(ffprobe.stat().st_mode | stat.S_IXUSR)
    write_rows(folder / "in.jsonl", [{"src": "list.m3u8"}, {"src": "list.ffconcat"}])
    flags = ["--root", root, "--confine-to-root", "--ffmpeg-bin", ffmpeg_exe()]
    return materialize_args("in.jsonl", "out.jsonl", *flags, "--ffprobe-bin", ffprobe)


def lists_refused(folder: Path, run: CommandRun) -> None:
    rows = output_rows("out.jsonl")(folder, run)
    assert [row["saliency_status"] for row in rows] == ["decode-failed", "decode-failed"]
    assert "list.m3u8: is a hls playlist" in rows[0]["saliency_error"]
    assert "list.ffconcat: not a readable media file" in rows[1]["saliency_error"]


def row_timed_out(folder: Path, run: CommandRun) -> None:
    (row,) = output_rows("out.jsonl")(folder, run)
    assert row["saliency_status"] == "decode-failed"
    assert "decode timed out after 1 s" in row["saliency_error"]
    assert run.seconds < 30, run.describe()


def output_but_no_audit(folder: Path, run: CommandRun) -> None:
    (row,) = output_rows("out.jsonl")(folder, run)
    assert row["saliency_status"] == "ok"


TABLE_CASES = [
    CommandCase(
        "malformed JSONL line",
        with_input(text_input('{"src": "CLIP"}\n{"src": "CLIP"}\n{"src": "CLIP",\n')),
        1,
        r"in.jsonl: line 3 is not valid JSON",
        nothing_written,
    ),
    CommandCase(
        "1 GiB line",
        with_input(sparse_long_line),
        1,
        rf"in.jsonl: line 2 is longer than {MAX_LINE_BYTES} bytes",
        bounded_rejection,
    ),
    CommandCase(
        "invalid UTF-8",
        with_input(text_input(b'{"src": "CLIP"}\n{"src": "\xff\xfe"}\n')),
        1,
        r"in.jsonl: line 2 is not valid UTF-8",
        nothing_written,
    ),
    CommandCase(
        "line that is not an object",
        with_input(text_input("[1, 2]\n")),
        1,
        r"line 1 must be a JSON object",
        nothing_written,
    ),
    CommandCase(
        "nesting 100000 deep",
        with_input(text_input('{"a": ' + "[" * 100000 + "]" * 100000 + "}\n")),
        1,
        r"line 1 nests arrays or objects too deeply",
        nothing_written,
    ),
    CommandCase(
        "5000-digit integer",
        with_input(text_input('{"src": "CLIP", "n": ' + "7" * 5000 + "}\n")),
        1,
        r"line 1: Exceeds the limit \(4300 digits\)",
        nothing_written,
    ),
    CommandCase(
        "repeated key in a row",
        with_input(text_input('{"src": "CLIP", "src": "other.mp4"}\n')),
        1,
        r"line 1: key 'src' appears more than once",
        nothing_written,
    ),
    CommandCase("empty JSONL", with_input(text_input("")), 0, r"total=0 ok=0", empty_output),
    CommandCase(
        "blank lines only", with_input(text_input("\n  \n\t\n")), 0, r"total=0 ok=0", empty_output
    ),
    CommandCase(
        "byte order mark", with_input(text_input('\ufeff{"src": "CLIP"}\n')), 0, r"total=1 ok=1"
    ),
    CommandCase(
        "empty Parquet",
        with_input(
            parquet_input(lambda clip: pa.table({"src": pa.array([], pa.string()), "width": []})),
            table="in.parquet",
            output="out.parquet",
        ),
        0,
        r"total=0 ok=0",
        empty_parquet_kept,
    ),
    CommandCase(
        "duplicated Parquet column names",
        with_input(
            parquet_input(
                lambda clip: pa.Table.from_arrays(
                    [pa.array([str(clip)]), pa.array([1])], names=["src", "src"]
                )
            ),
            table="in.parquet",
        ),
        1,
        r"in.parquet: duplicated column names \['src'\]",
        nothing_written,
    ),
    CommandCase(
        "Parquet decompression bomb",
        with_input(parquet_bomb, table="in.parquet"),
        1,
        rf"in.parquet: {BOMB_ROWS} rows with {BOMB_ROWS} values would take about .* GiB of "
        rf"memory .*more than the 8 GiB allowed; split the table or set {MAX_TABLE_GIB_ENV}$",
        bounded_rejection,
    ),
    CommandCase(
        "random bytes named .parquet",
        with_input(lambda path, clip: write_garbage(path, 4096), table="in.parquet"),
        1,
        r"in.parquet: cannot read Parquet",
        nothing_written,
    ),
    CommandCase(
        "zero-byte Parquet",
        with_input(text_input(""), table="in.parquet"),
        1,
        r"in.parquet: cannot read Parquet",
        nothing_written,
    ),
    CommandCase(
        "input is a folder",
        with_input(folder_at),
        1,
        r"in.jsonl: input table does not exist or is not a file",
        nothing_written,
    ),
    CommandCase(
        "input is a FIFO",
        with_input(fifo_at),
        1,
        r"in.jsonl: input table does not exist or is not a file",
        nothing_written,
        timeout_s=30,
    ),
    CommandCase(
        "input is a symlink loop",
        with_input(loop_at),
        1,
        r"in.jsonl: input table does not exist or is not a file",
        nothing_written,
    ),
    CommandCase(
        "input does not exist",
        with_input(nothing_at, table="nothere.jsonl"),
        1,
        r"nothere.jsonl: input table does not exist",
        nothing_written,
    ),
    CommandCase(
        "output is a folder",
        folder_in_the_way,
        1,
        r"out.jsonl: cannot write \(Is a directory\)",
        clip_results_kept_beside_the_folder,
    ),
    CommandCase(
        "output under a file",
        file_in_the_way,
        1,
        r"blocker/out.jsonl: cannot write \(File exists: blocker\)",
        clip_results_kept,
    ),
    CommandCase(
        "input of another format", materialize(table="in.csv"), 2, r"in.csv: a table must end in"
    ),
    CommandCase(
        "audit cannot be written",
        materialize("--audit-json", "/dev/null/audit.json"),
        1,
        r"audit JSON not written: .*/dev/null",
        output_but_no_audit,
    ),
    CommandCase(
        "audit is the output",
        materialize("--audit-json", "out.jsonl"),
        2,
        r"--audit-json and --output are the same file",
    ),
    CommandCase(
        "text Parquet cannot store",
        with_input(text_input('{"src": "CLIP", "note": "\\ud800"}\n'), output="out.parquet"),
        1,
        r"out.parquet: column 'note' holds text that is not valid Unicode",
        clip_results_kept,
    ),
    CommandCase(
        "playlists in the root naming files outside, via ffmpeg and ffprobe binaries",
        lists_inside_root,
        1,
        r"total=2 ok=0 skipped=0 failed=2",
        lists_refused,
    ),
    CommandCase(
        "a clip whose decoder hangs",
        hanging_ffmpeg,
        1,
        r"total=1 ok=0 skipped=0 failed=1",
        row_timed_out,
    ),
]

FLAG_CASES = [
    CommandCase(f"flag {' '.join(flags)}", materialize(*flags), 2, message, in_process=True)
    for flags, message in [
        (("--max-frames", "0"), r"max_frames must be at least 1, got 0"),
        (("--max-frames", "abc"), r"argument --max-frames: invalid int value"),
        (("--frame-samples", "-1"), r"frame_samples must be at least 1, got -1"),
        (("--ema-alpha", "0"), r"ema_alpha must be in \(0, 1\], got 0.0"),
        (("--ema-alpha", "1.5"), r"ema_alpha must be in \(0, 1\], got 1.5"),
        (("--ema-alpha", "nan"), r"ema_alpha must be in \(0, 1\], got nan"),
        (("--jobs", "0"), r"jobs must be at least 1"),
        (("--decode-timeout", "-1"), r"decode_timeout must be a positive number"),
        (("--decode-timeout", "abc"), r"argument --decode-timeout: invalid"),
        (("--inference-size", "100000"), r"inference_size must be 'native' or from 8 to 4320"),
        (("--inference-size", "4"), r"inference_size must be 'native' or from 8 to 4320"),
        (("--inference-size", "big"), r"argument --inference-size: invalid"),
        (("--confine-to-root",), r"confine_to_root needs a root"),
        (("--temporal-aggregator", "median"), r"argument --temporal-aggregator: invalid choice"),
        (("--default-width", "-5"), r"default_width must be 0 \(none\) or positive"),
        (("--model-path", "missing.onnx"), r"missing.onnx"),
        (("--ffmpeg-bin", "/nonexistent/ffmpeg"), r"binary '/nonexistent/ffmpeg' not found"),
        (("--providers", ","), r"providers must name at least one"),
    ]
]


def manifest(
    *,
    defaults: dict[str, Any] | None = None,
    second: dict[str, Any] | None = None,
    document: Any = None,
    text: str | None = None,
    write_second_input: bool = True,
) -> Callable:
    """A batch builder: table 'a' is valid; table 'b' gets ``second``'s keys (None deletes one).
    ``document`` or ``text`` replace the whole manifest."""

    def build(folder: Path, clip: Path) -> list[Any]:
        write_rows(folder / "a.jsonl", [{"src": str(clip)}])
        if write_second_input:
            write_rows(folder / "b.jsonl", [{"src": str(clip)}])
        table_b = {"id": "b", "input": "b.jsonl", "output": "b.out.jsonl", **(second or {})}
        body = document
        if body is None:
            body = {
                "defaults": defaults or {},
                "tables": [
                    {"id": "a", "input": "a.jsonl", "output": "a.out.jsonl"},
                    {key: value for key, value in table_b.items() if value is not None},
                ],
            }
        (folder / "manifest.json").write_text(text if text is not None else json.dumps(body))
        return ["batch", "--manifest", "manifest.json", "--report-json", "report.json"]

    return build


def manifest_at(make: Callable[[Path, Path], None]) -> Callable:
    def build(folder: Path, clip: Path) -> list[Any]:
        make(folder / "manifest.json", clip)
        return ["batch", "--manifest", "manifest.json"]

    return build


def other_tables_still_run(folder: Path, run: CommandRun) -> None:
    (row,) = output_rows("a.out.jsonl")(folder, run)
    assert row["saliency_status"] == "ok"


def sparse_manifest(path: Path, clip: Path) -> None:
    with path.open("wb") as handle:
        handle.truncate(17 * 1024**2)


B = r"table 'b' \(table entry 1\): "
A_AND_B = '{"id": "a", "input": "a.jsonl", "output": "a.out.jsonl"}'
# Manifests that attack the reader's resources, run bounded like every table case.
BOUNDED_MANIFEST_CASES = {
    "nesting 100000 deep",
    "a 5000-digit integer",
    "a FIFO",
    "larger than 16 MiB",
}
MANIFEST_CASES = [
    CommandCase(
        f"manifest {name}", build, 2, message, in_process=name not in BOUNDED_MANIFEST_CASES
    )
    for name, build, message in [
        (
            "max_frames as text",
            manifest(second={"max_frames": "8"}),
            B + "max_frames must be an integer, got '8'",
        ),
        (
            "max_frames zero",
            manifest(second={"max_frames": 0}),
            B + "max_frames must be at least 1, got 0",
        ),
        (
            "negative max_frames in defaults",
            manifest(defaults={"max_frames": -3}),
            "max_frames must be at least 1, got -3",
        ),
        (
            "fractional max_frames",
            manifest(second={"max_frames": 2.5}),
            B + "max_frames must be an integer, got 2.5",
        ),
        (
            "frame_samples zero",
            manifest(second={"frame_samples": 0}),
            B + "frame_samples must be at least 1",
        ),
        (
            "ema_alpha zero",
            manifest(second={"ema_alpha": 0}),
            B + r"ema_alpha must be in \(0, 1\], got 0",
        ),
        (
            "ema_alpha above one",
            manifest(second={"ema_alpha": 1.5}),
            B + r"ema_alpha must be in \(0, 1\]",
        ),
        (
            "ema_alpha negative",
            manifest(second={"ema_alpha": -0.1}),
            B + r"ema_alpha must be in \(0, 1\]",
        ),
        (
            "ema_alpha as text",
            manifest(second={"ema_alpha": "0.5"}),
            B + "ema_alpha must be a number, got '0.5'",
        ),
        (
            "ema_alpha true",
            manifest(second={"ema_alpha": True}),
            B + "ema_alpha must be a number, got True",
        ),
        (
            "ema_alpha NaN",
            manifest(text='{"defaults": {"ema_alpha": NaN}, "tables": [' + A_AND_B + "]}"),
            r"ema_alpha must be in \(0, 1\], got nan",
        ),
        (
            "unknown reducer",
            manifest(second={"temporal_aggregator": "median"}),
            B + "temporal_aggregator 'median' is not one of",
        ),
        (
            "reducer of the wrong type",
            manifest(second={"temporal_aggregator": 5}),
            B + "temporal_aggregator must be a string",
        ),
        ("duplicate table ids", manifest(second={"id": "a"}), "duplicate table id 'a'"),
        (
            "two tables, one output",
            manifest(second={"output": "sub/../a.out.jsonl"}),
            "tables 'a' and 'b' write the same output",
        ),
        (
            "an audit over another output",
            manifest(second={"audit_json": "a.out.jsonl"}),
            "tables 'a' and 'b' write the same output",
        ),
        (
            "audit over its own output",
            manifest(second={"audit_json": "b.out.jsonl"}),
            "table 'b': output and audit_json are the same file",
        ),
        (
            "unknown table key",
            manifest(second={"max_frame": 4}),
            r"unknown keys in table entry 1: \['max_frame'\]",
        ),
        (
            "unknown default key",
            manifest(defaults={"bogus": 1}),
            r"unknown default keys: \['bogus'\]",
        ),
        (
            "decode_timeout as text",
            manifest(second={"decode_timeout": "10"}),
            B + "decode_timeout must be a number",
        ),
        (
            "negative decode_timeout",
            manifest(second={"decode_timeout": -1}),
            B + "decode_timeout must be a positive number",
        ),
        ("jobs zero", manifest(second={"jobs": 0}), B + "jobs must be at least 1"),
        (
            "negative inference_size",
            manifest(second={"inference_size": -5}),
            B + "inference_size must be 'native' or from 8",
        ),
        (
            "huge inference_size",
            manifest(second={"inference_size": 100000}),
            B + "inference_size must be 'native' or from 8",
        ),
        ("root as a number", manifest(second={"root": 5}), B + "root must be a path string, got 5"),
        (
            "confine_to_root as text",
            manifest(second={"confine_to_root": "yes"}),
            B + "confine_to_root must be true or false",
        ),
        (
            "confine_to_root without root",
            manifest(second={"confine_to_root": True}),
            B + "confine_to_root needs a root",
        ),
        (
            "empty path_column",
            manifest(second={"path_column": ""}),
            B + "path_column must not be empty",
        ),
        (
            "negative default_width",
            manifest(second={"default_width": -1}),
            B + "default_width must be 0",
        ),
        (
            "providers as a number",
            manifest(second={"providers": 5}),
            B + "providers must be a list",
        ),
        ("missing id", manifest(second={"id": None}), "table entry 1 is missing non-empty id"),
        ("blank id", manifest(second={"id": "  "}), "table entry 1 is missing non-empty id"),
        (
            "missing input",
            manifest(second={"input": None}),
            r"table 'b' \(table entry 1\) is missing input",
        ),
        (
            "input of another format",
            manifest(second={"input": "b.csv"}),
            B + "input 'b.csv' must end in .jsonl or .parquet",
        ),
        (
            "output as a number",
            manifest(second={"output": 5}),
            B + "output must be a path string, got 5",
        ),
        ("missing model", manifest(second={"model_path": "missing.onnx"}), "missing.onnx"),
        (
            "missing ffmpeg binary",
            manifest(second={"ffmpeg_bin": "/nonexistent/ffmpeg"}),
            "binary '/nonexistent/ffmpeg' not found",
        ),
        (
            "tables as an object",
            manifest(document={"tables": {"a": {}}}),
            "manifest tables must be an array",
        ),
        (
            "a table that is a string",
            manifest(document={"tables": [json.loads(A_AND_B), "b"]}),
            "table entry 1 must be an object",
        ),
        ("an array", manifest(text="[]"), "must be a JSON object"),
        ("invalid JSON", manifest(text="{"), "is not valid JSON"),
        ("an empty file", manifest(text=""), "is not valid JSON"),
        (
            "nesting 100000 deep",
            manifest(text='{"x": ' + "[" * 100000 + "]" * 100000 + "}"),
            "nests arrays or objects too deeply",
        ),
        (
            "a repeated key",
            manifest(
                text='{"defaults": {"max_frames": 4, "max_frames": 8}, "tables": [' + A_AND_B + "]}"
            ),
            "key 'max_frames' appears more than once",
        ),
        (
            "a 5000-digit integer",
            manifest(text='{"defaults": {"max_frames": ' + "9" * 5000 + "}}"),
            r"Exceeds the limit \(4300 digits\)",
        ),
        ("a FIFO", manifest_at(fifo_at), "is not a regular file"),
        ("a folder", manifest_at(folder_at), "is not a regular file"),
        ("missing", manifest_at(nothing_at), "does not exist"),
        ("larger than 16 MiB", manifest_at(sparse_manifest), "is larger than 16777216 bytes"),
    ]
]


def confined_manifest(folder: Path, clip: Path) -> list[Any]:
    """A batch table with ``root`` and ``confine_to_root``: rows escaping the root, and one
    that stays inside."""
    root = folder / "root"
    root.mkdir()
    shutil.copy(clip, root / "inside.mp4")
    os.symlink(clip, root / "link_out.mp4")
    rows = [{"src": "inside.mp4"}, {"src": "../../clip.mp4"}, {"src": str(clip)}]
    write_rows(folder / "a.jsonl", [*rows, {"src": "link_out.mp4"}])
    table = {"id": "a", "input": "a.jsonl", "output": "a.out.jsonl", "root": "root"}
    document = {"defaults": {"confine_to_root": True}, "tables": [table]}
    (folder / "manifest.json").write_text(json.dumps(document))
    return ["batch", "--manifest", "manifest.json"]


def escaping_rows_refused(folder: Path, run: CommandRun) -> None:
    statuses = [row["saliency_status"] for row in output_rows("a.out.jsonl")(folder, run)]
    assert statuses == ["ok", "missing-source", "missing-source", "missing-source"]


RUNTIME_CASES = [
    CommandCase(
        "manifest confine_to_root refuses escaping rows",
        confined_manifest,
        1,
        r"total=4 ok=1 skipped=0 failed=3",
        escaping_rows_refused,
    ),
    CommandCase(
        "manifest table whose input is missing",
        manifest(write_second_input=False),
        1,
        r"table 'b' error: .*b.jsonl: input table does not exist",
        other_tables_still_run,
    ),
]
COMMAND_CASES = [*TABLE_CASES, *FLAG_CASES, *MANIFEST_CASES, *RUNTIME_CASES]


@pytest.fixture(scope="module")
def command_runs(tmp_path_factory, ledger) -> dict[str, tuple[Path, CommandRun]]:
    """Every command case, run a few at a time; by case name, its folder and what it did."""
    base = tmp_path_factory.mktemp("hostile_commands")
    clip = make_clip(base / "clip.mp4", 64, 48, 3)

    def run_case(index_and_case: tuple[int, CommandCase]) -> tuple[str, Path, CommandRun]:
        index, case = index_and_case
        folder = base / f"case-{index:03d}"
        folder.mkdir()
        args = [str(arg) for arg in case.build(folder, clip)]
        env = {"SALIENCY_ASSETS_CACHE": str(folder / "cache")}
        if case.in_process:
            return case.name, folder, call_main(args, folder, env)
        return case.name, folder, run_command(args, cwd=folder, env=env, timeout_s=case.timeout_s)

    cases = list(enumerate(COMMAND_CASES))
    with ThreadPoolExecutor(COMMAND_WORKERS) as pool:
        results = list(pool.map(run_case, [pair for pair in cases if not pair[1].in_process]))
    for _, _, run in results:
        ledger.record(run)
    # One after another in this thread: main swaps the process's streams, directory and signals.
    results += [run_case(pair) for pair in cases if pair[1].in_process]
    ledger.cases += len(COMMAND_CASES)
    ledger.in_process += sum(case.in_process for case in COMMAND_CASES)
    return {name: (folder, run) for name, folder, run in results}


def call_main(args: list[str], folder: Path, env: dict[str, str]) -> CommandRun:
    """The command's main in this process, as a CommandRun (no process: no memory to sample,
    none left behind)."""
    started = time.monotonic()
    done = run_cli_in_process(*args, cwd=folder, env=env)
    seconds = time.monotonic() - started
    return CommandRun(args, done.returncode, done.stdout, done.stderr, seconds, 0.0, 0.0)


@pytest.mark.parametrize("case", COMMAND_CASES, ids=lambda case: case.name)
def test_command_ends_with_its_exit_code_and_a_message(command_runs, case):
    folder, run = command_runs[case.name]
    assert not run.hung and not run.crashed and not run.left_processes, run.describe()
    assert run.peak_rss_mib < PEAK_RSS_BOUND_MIB, run.describe()
    assert run.returncode == case.exit_code, run.describe()
    assert re.search(case.message, run.stderr), run.describe()
    if case.check is not None:
        case.check(folder, run)
    elif case.exit_code == 2:  # configuration errors come before any work
        nothing_written(folder, run)
