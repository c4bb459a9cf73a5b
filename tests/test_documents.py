"""JSON and YAML a user hands us are read within bounds (``sam2_web.documents``): a batch manifest
with a "billion laughs" is refused fast with a message instead of growing memory, as are
prompts files too large, too deep or with numbers of thousands of digits; object names follow
one rule wherever they come from.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from hostile import yaml_bomb, yaml_merge_bomb

from sam2_web.batch.manifest import ManifestError, load_manifest
from sam2_web.documents import DocumentError, DocumentLimits, LongNumber, parse_document, read_document
from sam2_web.errors import LimitExceededError, PromptError
from sam2_web.jobs.prompts import MAX_NAME_CHARS, check_object_name, load_prompts, prompts_from_json

REPO = Path(__file__).resolve().parents[1]
SMALL = DocumentLimits(max_bytes=4096, max_values=1000, max_depth=8)
POINT = {"frame": 0, "points": [[30, 28]], "labels": [1]}


def run_bounded(cmd: list[str], max_rss_mb: float, timeout_s: float) -> tuple[int, str, float]:
    """Run ``cmd``, killing it once it holds more than ``max_rss_mb`` or runs past ``timeout_s``
    (so an unbounded load fails this test instead of the machine). Returns (exit code, stderr,
    the highest RSS seen in MB)."""
    process = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    watched, peak, deadline = psutil.Process(process.pid), 0.0, time.monotonic() + timeout_s
    while process.poll() is None:
        try:
            peak = max(peak, watched.memory_info().rss / 2**20)
        except psutil.NoSuchProcess:
            break
        if peak > max_rss_mb or time.monotonic() > deadline:
            process.kill()
            process.wait()
            pytest.fail(f"{' '.join(cmd[-2:])}: killed at {peak:.0f} MB RSS after "
                        f"{timeout_s - (deadline - time.monotonic()):.0f} s: the manifest was not refused")
        time.sleep(0.05)
    return process.wait(), process.stderr.read(), peak


def test_a_billion_laughs_in_a_manifest_is_refused_fast_by_sam2_web_batch(tmp_path):
    # The attack: nested anchors in a job's id pass the manifest checks, then printing
    # the id in the check's message expands them (~70 MB/s, no output, no error).
    manifest = tmp_path / "bomb.yaml"
    manifest.write_text(f"version: 1\njobs:\n  - {{clip: a.mp4, prompts: p.json, out: m, id: {yaml_bomb()}}}\n")
    assert manifest.stat().st_size < 1000
    code, err, peak = run_bounded([sys.executable, "-m", "sam2_web.cli", "batch", str(manifest)],
                                  max_rss_mb=1500, timeout_s=240)
    print(f"exit {code}, peak RSS {peak:.0f} MB: {err.strip()[-300:]}")
    assert code == 2 and "Traceback" not in err
    assert "bomb.yaml" in err and "aliases" in err and "more than 500000 values" in err


@pytest.mark.parametrize("text, says", [
    (f"id: {yaml_bomb(levels=4)}", "aliases"),  # 9**5 values, over the 1000 allowed here
    (yaml_merge_bomb(levels=12), "aliases"),  # merge keys double the copies each level
    ("a: &a [1, *a]", "refers to the value it is part of"),
    ("a: " + "[" * 20 + "]" * 20, "nested too deeply"),
    ("a: [1, 2", "not valid YAML"),
    ("a: *nowhere", "undefined alias"),
    ("- x\n" * 1001, "holds more than 1000 values"),
    ("a: " + "x" * 5000, "larger than 4096 bytes"),
])
def test_yaml_beyond_the_limits_is_refused_with_the_reason(text, says):
    with pytest.raises(DocumentError, match="the manifest") as caught:
        parse_document(text, fmt="yaml", source="the manifest", limits=SMALL)
    assert says in str(caught.value), caught.value


def test_yaml_within_the_limits_reads_as_safe_load_does():
    import yaml

    text = ("defaults: &d {out: mattes, formats: [png]}\njobs:\n  - {<<: *d, clip: a.mov, prompts: a.json}\n"
            "  - {<<: *d, clip: b.mov, prompts: b.json, start: 0x10, ratio: 1.5e3, on: yes, at: 2024-01-02}\n")
    assert parse_document(text, fmt="yaml") == yaml.safe_load(text)
    assert parse_document("", fmt="yaml") is None
    long = parse_document("n: -" + "7" * 5000, fmt="yaml")["n"]
    assert isinstance(long, LongNumber) and repr(long) == "a 5000-digit negative number"


@pytest.mark.parametrize("text, says", [
    ("[" * 9 + "]" * 9, "nested too deeply"),
    ("[" * 100000 + "]" * 100000, "nested too deeply"),
    ("[" + "0," * 1000 + "0]", "holds more than 1000 values"),
    ('{"a": 1', "not valid JSON"),
])
def test_json_beyond_the_limits_is_refused_with_the_reason(text, says):
    with pytest.raises(DocumentError) as caught:
        parse_document(text, fmt="json", source="prompts", limits=DocumentLimits(max_values=1000, max_depth=8))
    assert says in str(caught.value), caught.value


def test_files_are_read_no_further_than_the_size_limit(tmp_path):
    with pytest.raises(DocumentError, match="larger than 4096 bytes"):
        read_document(Path("/dev/zero"), fmt="json", what="prompts file", limits=SMALL)  # endless
    big = tmp_path / "big.json"
    big.write_text(json.dumps({"objects": [{"id": 1, "frames": [POINT] * 200}]}))
    with pytest.raises(DocumentError, match="the prompts file .*big.json is larger than"):
        read_document(big, what="prompts file", limits=SMALL)
    (tmp_path / "latin1.yaml").write_bytes(b"name: caf\xe9\n")
    with pytest.raises(DocumentError, match="not UTF-8"):
        read_document(tmp_path / "latin1.yaml")
    with pytest.raises(DocumentError, match="does not exist"):
        read_document(tmp_path / "none.yaml", what="manifest")


def test_a_manifest_with_a_merge_bomb_or_a_long_number_is_a_manifest_error(tmp_path):
    bomb = tmp_path / "merge.yaml"
    bomb.write_text(yaml_merge_bomb(levels=40))
    with pytest.raises(ManifestError, match="aliases"):
        load_manifest(bomb)
    long = tmp_path / "long.yaml"
    long.write_text(f"jobs:\n  - {{clip: a.mov, prompts: a.json, out: m, start: {'9' * 5000}}}\n")
    with pytest.raises(ManifestError, match=r"jobs\[0\]\.start: out of range, got a 5000-digit number"):
        load_manifest(long)


@pytest.mark.parametrize("field, value, says", [
    ("id", "9" * 5000, "objects[0].id: out of range: must be >= 0 and at most 2147483647, got a 5000-digit number"),
    ("frame", "-" + "9" * 5000, "objects[0].frames[0].frame: out of range"),
    ("x", "9" * 5000, "objects[0].frames[0].points[0][0]: out of range"),
    ("x", "1" + "0" * 400, "objects[0].frames[0].points[0][0]: out of range"),  # float() of it overflows
])
def test_a_number_of_thousands_of_digits_says_which_value_is_out_of_range(tmp_path, field, value, says):
    text = json.dumps({"objects": [{"id": 1, "frames": [{**POINT, "points": [["X", 28]]}]}]}).replace('"X"', "30")
    text = {"id": text.replace('"id": 1', f'"id": {value}'), "frame": text.replace('"frame": 0', f'"frame": {value}'),
            "x": text.replace("[[30, 28]]", f"[[{value}, 28]]")}[field]
    with pytest.raises(PromptError) as caught:
        prompts_from_json(text)
    assert says in str(caught.value) and len(str(caught.value)) < 300, caught.value
    path = tmp_path / "p.json"
    path.write_text(text)
    with pytest.raises(PromptError, match="out of range"):
        load_prompts(path)


def test_object_names_follow_one_rule():
    assert MAX_NAME_CHARS == 64
    assert check_object_name("  runner ") == "runner" and check_object_name(None) is None
    assert check_object_name("   ") is None
    assert check_object_name("n" * 64) == "n" * 64
    with pytest.raises(LimitExceededError, match="65 characters long; use at most 64"):
        check_object_name("n" * 65)
    with pytest.raises(LimitExceededError, match="use at most 24"):
        check_object_name("n" * 25, max_chars=24)
    assert check_object_name("n" * 500, max_chars=0) == "n" * 500  # 0: the app's "no limit"
    for bad in ("two\nlines", "tab\there", "bell\x07", "line\u2028separator"):
        with pytest.raises(PromptError, match="control characters"):
            check_object_name(bad)
    with pytest.raises(PromptError, match="must be text"):
        check_object_name(7)
    # Prompts text (/segment, the CLI, plugins) goes through the same rule, with the app's limit.
    flat = json.dumps([{**POINT, "object": 1, "name": "n" * 30}])
    assert prompts_from_json(flat).objects[0].name == "n" * 30
    with pytest.raises(LimitExceededError, match=r"\[0\]\.name: 30 characters long; use at most 24"):
        prompts_from_json(flat, max_name_chars=24)
