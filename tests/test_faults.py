"""Faults: nothing a user trained or saved is lost to a crash, and a broken model never looks healthy.

The tests drive the real commands (`lyricist serve`, `lyricist train`, uvicorn) as subprocesses
and inject each fault from outside: damaged files, kill -9, a file-size limit, a full tmpfs.
docs/checkpoints.md ("Faults") sums up what holds.
"""

import hashlib
import json
import os
import random
import resource
import shlex
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import safetensors.torch
import torch

from lyricist.model import CheckpointError, load_checkpoint
from lyricist.model.checkpoint import CONFIG_FILE, MANIFEST_FILE, TOKENIZER_FILE, WEIGHTS_FILE, checkpoint_exists
from lyricist.model.cli import main as lyricist_main
from lyricist.training.run_state import LOG_FILE, load_for_resume

from .helpers import free_port

# -- a broken checkpoint stops `lyricist serve` in one line ----------------------------------------


def _sign(directory: Path, name: str, data: bytes) -> None:
    """Write a file and record it in the manifest, so that only validation can find what is wrong."""
    (directory / name).write_bytes(data)
    manifest = json.loads((directory / MANIFEST_FILE).read_text())
    manifest["files"][name] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    (directory / MANIFEST_FILE).write_text(json.dumps(manifest))


def _edit_weights(directory: Path, change) -> None:
    tensors = safetensors.torch.load((directory / WEIGHTS_FILE).read_bytes())
    change(tensors)
    _sign(directory, WEIGHTS_FILE, safetensors.torch.save(tensors))


def _flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def _config_says(key, value):
    def damage(directory: Path) -> None:
        config = json.loads((directory / CONFIG_FILE).read_text())
        config["model"][key] = value
        _sign(directory, CONFIG_FILE, json.dumps(config).encode())
    return damage


def _edit_manifest_sha(directory: Path) -> None:
    manifest = json.loads((directory / MANIFEST_FILE).read_text())
    manifest["files"][TOKENIZER_FILE]["sha256"] = "0" * 64
    (directory / MANIFEST_FILE).write_text(json.dumps(manifest))


def _half_precision(tensors):
    for name in tensors:
        tensors[name] = tensors[name].half()


def _nan_weight(tensors):
    tensors["embedding.weight"][0, 0] = float("nan")


# name -> (how to damage a copy of the served checkpoint, file the message must name, problem it must state).
# served_checkpoint is hidden_size 48, so "config says 64" disagrees with every recurrent tensor.
DAMAGE = {
    "weights_missing": (lambda d: (d / WEIGHTS_FILE).unlink(), WEIGHTS_FILE, "missing"),
    "weights_truncated": (lambda d: (d / WEIGHTS_FILE).write_bytes((d / WEIGHTS_FILE).read_bytes()[:-100]),
                          WEIGHTS_FILE, "truncated"),
    "weights_byte_flipped": (lambda d: _flip_a_byte(d / WEIGHTS_FILE), WEIGHTS_FILE, "sha256 differs"),
    "tokenizer_byte_flipped": (lambda d: _flip_a_byte(d / TOKENIZER_FILE), TOKENIZER_FILE, "sha256 differs"),
    "manifest_sha_edited": (_edit_manifest_sha, TOKENIZER_FILE, "sha256 differs"),
    "manifest_not_json": (lambda d: (d / MANIFEST_FILE).write_text("{\"files\": "), MANIFEST_FILE,
                          "not a valid manifest"),
    "manifest_missing": (lambda d: (d / MANIFEST_FILE).unlink(), MANIFEST_FILE, "missing"),
    "config_hidden_size_64_weights_48": (_config_says("hidden_size", 64), WEIGHTS_FILE, "the config needs"),
    "config_layers_3_weights_2": (_config_says("layers", 3), WEIGHTS_FILE, "missing tensor"),
    "config_not_json": (lambda d: _sign(d, CONFIG_FILE, b"{\"format\": "), CONFIG_FILE, "not valid JSON"),
    "tensor_missing": (lambda d: _edit_weights(d, lambda t: t.pop("rnns.1.weight_hh_l0")),
                       WEIGHTS_FILE, "missing tensor rnns.1.weight_hh_l0"),
    "tensor_extra": (lambda d: _edit_weights(d, lambda t: t.update(stowaway=torch.zeros(3))),
                     WEIGHTS_FILE, "unexpected tensor stowaway"),
    "tensors_half_precision": (lambda d: _edit_weights(d, _half_precision), WEIGHTS_FILE,
                               "dtype torch.float16, the model needs torch.float32"),
    "weights_nan": (lambda d: _edit_weights(d, _nan_weight), WEIGHTS_FILE, "embedding.weight holds NaN"),
    "weights_not_safetensors": (lambda d: _sign(d, WEIGHTS_FILE, b"\x00" * 64), WEIGHTS_FILE,
                                "not a valid safetensors file"),
}


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory, served_checkpoint):
    """A good copy of the served checkpoint, and one damaged copy per DAMAGE entry (each named like the good
    one, as a broken copy usually is, so that only the damage can explain a refusal)."""
    root = tmp_path_factory.mktemp("faults")
    paths = {"good": shutil.copytree(served_checkpoint, root / "good" / "tiny-lstm"),
             "good_twin": shutil.copytree(served_checkpoint, root / "good_twin" / "tiny-lstm")}
    for case, (damage, _, _) in DAMAGE.items():
        paths[case] = shutil.copytree(served_checkpoint, root / case / "tiny-lstm")
        damage(paths[case])
    return paths


def test_every_damage_is_refused_by_load_checkpoint(checkpoints):
    """The library itself (what serve and train call) names the file and the problem in one line."""
    for case, (_, file, problem) in DAMAGE.items():
        with pytest.raises(CheckpointError) as error:
            load_checkpoint(checkpoints[case])
        message = str(error.value)
        assert message.startswith(str(checkpoints[case] / file)) and problem in message, (case, message)
        assert "\n" not in message, case


@pytest.mark.parametrize("case", DAMAGE)
def test_serve_command_refuses_each_damage_in_one_line(checkpoints, case, capsys):
    """`lyricist serve`'s own code, in this process: every kind of damage, one line, before any serving."""
    _, file, problem = DAMAGE[case]
    assert lyricist_main(["serve", "--model", str(checkpoints[case])]) == 1
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1, captured.err
    assert captured.err.startswith(f"lyricist serve: error: {checkpoints[case] / file}: ") and problem in captured.err


def _serve_cases(checkpoints, absent: str) -> dict[str, tuple[list[str], dict[str, str], tuple[str, ...]]]:
    """case -> (serve arguments, environment, what its one line must contain)."""
    good, truncated = str(checkpoints["good"]), str(checkpoints["weights_truncated"])

    def damaged(case):
        return ["--model", str(checkpoints[case])], {}, (f"{checkpoints[case] / DAMAGE[case][1]}: ", DAMAGE[case][2])

    return {
        "flag:directory_missing": (["--model", absent], {}, (f"{absent}: no such checkpoint directory",)),
        **{f"flag:{case}": damaged(case) for case in ("weights_truncated", "weights_byte_flipped",
                                                     "manifest_sha_edited", "config_hidden_size_64_weights_48")},
        "env:second_of_two_broken": ([], {"LYRICIST_MODELS": f"{good},{truncated}"},
                                     (f"{truncated}/{WEIGHTS_FILE}: ", "truncated")),
        "env:two_models_one_name": ([], {"LYRICIST_MODELS": f"{good},{checkpoints['good_twin']}"},
                                    ("two checkpoints have the same name",)),
        "env:max_queue_abc": (["--model", good], {"LYRICIST_MAX_QUEUE": "abc"},
                              ("LYRICIST_MAX_QUEUE must be a number, got 'abc'",)),
        "env:max_queue_0": (["--model", good], {"LYRICIST_MAX_QUEUE": "0"},
                            ("LYRICIST_MAX_QUEUE must be at least 1, got 0",)),
    }


# The real command costs a process and an import of torch each: one case per path through the code.
SERVE_CASES = ["flag:directory_missing", "flag:weights_truncated", "flag:weights_byte_flipped",
               "flag:manifest_sha_edited", "flag:config_hidden_size_64_weights_48", "env:second_of_two_broken",
               "env:two_models_one_name", "env:max_queue_abc", "env:max_queue_0"]


@pytest.fixture(scope="module")
def refused_serves(checkpoints, tmp_path_factory):
    """Run every case's real `lyricist serve` once, two at a time."""
    cases = _serve_cases(checkpoints, str(tmp_path_factory.mktemp("absent") / "no-such-checkpoint"))
    assert sorted(cases) == sorted(SERVE_CASES)

    def serve(case):
        args, env, expected = cases[case]
        environment = {k: v for k, v in os.environ.items() if not k.startswith("LYRICIST_")}
        started = time.monotonic()
        # On a free port: a serve that wrongly started would be killed by the timeout, and fail the test.
        result = subprocess.run([sys.executable, "-m", "lyricist.model.cli", "serve", "--port", str(free_port()), *args],
                                env={**environment, "LYRICIST_THREADS": "1", **env}, capture_output=True,
                                text=True, timeout=60, check=False)
        return case, (result, time.monotonic() - started, expected)

    with ThreadPoolExecutor(max_workers=2) as pool:
        return dict(pool.map(serve, SERVE_CASES))


@pytest.mark.parametrize("case", SERVE_CASES)
def test_serve_refuses_a_broken_checkpoint_or_setting_in_one_line(refused_serves, case):
    result, seconds, expected = refused_serves[case]
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "Traceback" not in output
    assert result.stdout == "" and result.stderr.count("\n") == 1 and result.stderr.endswith("\n"), output
    assert result.stderr.startswith("lyricist serve: error: ") and all(part in output for part in expected), output
    assert seconds < 30, "it should stop at once, not after loading or serving anything"


def test_a_model_broken_after_the_check_never_makes_the_server_ready(checkpoints):
    """The lifespan loads the models again (the CLI's check ran earlier): run the app under real uvicorn,
    without the check, and the second model broken. Startup must fail and /readyz must never say ready."""
    port = free_port()
    truncated = checkpoints["weights_truncated"]
    environment = {k: v for k, v in os.environ.items() if not k.startswith("LYRICIST_")}
    process = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "--factory", "lyricist.app.server:create_app", "--port", str(port)],
        env={**environment, "LYRICIST_THREADS": "1", "LYRICIST_MODELS": f"{checkpoints['good']},{truncated}"},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    answers = []
    deadline = time.monotonic() + 60
    while process.poll() is None and time.monotonic() < deadline:
        try:
            answers.append(httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code)
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    if process.poll() is None:
        process.kill()
    log = process.communicate()[0]
    assert process.returncode not in (0, None), log
    assert answers == [], log  # uvicorn binds its port only after a successful startup: nothing ever answered
    assert f"{truncated / WEIGHTS_FILE}: " in log and "truncated" in log and "Application startup failed" in log


# -- training survives kill -9 and a full disk -----------------------------------------------------

MAX_STEPS = 400  # more than the killed runs can reach between them (about 100 on an idle machine), so each is killed mid-run
TINY_RUN = [
    "model.vocab_size=400", "model.hidden_size=32", "model.embedding_size=16", "optim.batch_size=8",
    "optim.bptt=16", "optim.warmup_steps=5", f"optim.max_steps={MAX_STEPS}", "run.log_every_steps=1",
    "run.eval_every_steps=10", "run.samples_in_card=0", "run.threads=1",
]
SAVE_EVERY_STEP = "run.checkpoint_every_minutes=0.0001"



def train_args(corpus: Path, out: Path, *settings: str) -> list[str]:
    args = ["train", "--corpus", str(corpus), "--out", str(out)]
    for setting in [*TINY_RUN, *settings]:
        args += ["--set", setting]
    return args


def start_training(args: list[str], logs: Path, **popen) -> subprocess.Popen:
    """`lyricist train` with unbuffered output into files (so reading it never blocks the run)."""
    logs.mkdir(parents=True, exist_ok=True)
    with open(logs / "stdout", "w") as stdout, open(logs / "stderr", "w") as stderr:
        return subprocess.Popen([sys.executable, "-m", "lyricist.model.cli", *args], stdout=stdout, stderr=stderr,
                                env={**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}, **popen)


def leftovers(out: Path) -> list[str]:
    """What a save leaves beside the checkpoint while it runs: the staging copy, the previous one."""
    return sorted(p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}."))


def seconds_passed(seconds: float):
    at = time.monotonic() + seconds
    return lambda: time.monotonic() >= at


def kill_when(process: subprocess.Popen, moment) -> None:
    """kill -9 the process as soon as `moment()` is true; it must still be running then."""
    deadline = time.monotonic() + 90
    while not moment():
        assert process.poll() is None, f"the run ended (rc {process.returncode}) before the kill point"
        assert time.monotonic() < deadline, "the kill point never came"
        time.sleep(0.002)
    process.kill()
    process.wait()


def test_kill_9_at_spread_moments_never_loses_the_last_checkpoint(corpus, tmp_path, capsys):
    """One run, killed -9 again and again and resumed each time: during its first save, during later saves,
    just after a validation, and at random moments (start-up, steps, saves). After every kill the last
    checkpoint loads and verifies; in the end the run completes with every step done exactly once."""
    out = tmp_path / "run"
    seed = random.randrange(10**6)
    rng = random.Random(seed)
    landed: list[tuple[str, list[str]]] = []  # (what the kill aimed at, what lay beside the checkpoint then)
    last_step = 0

    def saving() -> bool:
        return any(name.startswith(f".{out.name}.tmp-") for name in leftovers(out))

    def kill(aim: str, moment) -> list[str]:
        nonlocal last_step
        logs = tmp_path / f"attempt-{len(landed)}"
        resume = ["--resume"] if checkpoint_exists(out) else []
        process = start_training(train_args(corpus, out, SAVE_EVERY_STEP) + resume, logs)
        kill_when(process, moment(logs))
        landed.append((aim, leftovers(out)))  # the process is dead: this is exactly what kill -9 left
        context = f"kill {len(landed)} ({aim}; seed {seed}): {landed}"
        if not checkpoint_exists(out):  # killed before its first save finished: nothing to keep, nothing shown
            assert not out.exists() and not resume, context
            with pytest.raises(CheckpointError, match="no such checkpoint directory"):
                load_checkpoint(out)
            capsys.readouterr()
            assert lyricist_main(train_args(corpus, out) + ["--resume"]) == 1
            assert "nothing to resume" in capsys.readouterr().err
            return landed[-1][1]
        saved = load_for_resume(out)  # every file verified against the manifest, the trainer state included
        step = saved["state"]["progress"]["step"]
        assert load_checkpoint(out).training["steps"] == step >= last_step, context
        last_step = step
        return landed[-1][1]

    kill("the first save", lambda logs: saving)
    for _ in range(4):  # a save's staging lasts milliseconds: aim again if the kill came just after one
        if any(".tmp-" in name for name in kill("a save", lambda logs: lambda: saving() and out.exists())):
            break
    kill("just after a validation", lambda logs: lambda: "validation" in (logs / "stdout").read_text())
    for low, high in ((0.3, 1.5), (1.5, 3.5), (3.5, 5.0)):  # from start-up (reading) into training and saves
        delay = rng.uniform(low, high)
        kill(f"{delay:.2f} s after the start", lambda logs, delay=delay: seconds_passed(delay))

    assert any(".tmp-" in name for _, left in landed for name in left), landed  # some kill landed mid-save
    assert any(not left for _, left in landed), landed  # and some outside any save

    final = start_training(train_args(corpus, out) + ["--resume"], tmp_path / "final")
    assert final.wait(timeout=120) == 0, (tmp_path / "final" / "stderr").read_text()[-2000:]
    assert load_checkpoint(out).training["finished"]
    log = [json.loads(line) for line in (out / LOG_FILE).read_text().splitlines()]
    # Work done after the last save is redone, never lost and never counted twice (the run may end before
    # MAX_STEPS by early stopping: the tiny model stops improving on its tiny corpus).
    steps = load_checkpoint(out).training["steps"]
    assert steps > last_step
    assert [e["step"] for e in log if e["event"] == "train"] == list(range(1, steps + 1))
    assert leftovers(out) == []


@pytest.fixture(scope="module")
def paused_run(corpus, tmp_path_factory) -> Path:
    """A run killed (-9) right after its first checkpoint: resumable, as a crashed run is."""
    out = tmp_path_factory.mktemp("paused") / "run"
    process = start_training(train_args(corpus, out, SAVE_EVERY_STEP), out.parent / "logs")
    kill_when(process, lambda: (out / MANIFEST_FILE).exists())
    return out


def _files(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in directory.iterdir()}


def _check_one_error_line(stderr: str, out: Path, reason: str) -> None:
    errors = [line for line in stderr.splitlines() if "error" in line.lower()]
    assert "Traceback" not in stderr and len(errors) == 1, stderr[-3000:]
    assert errors[0].startswith(f"lyricist train: error: {out}: cannot save a checkpoint: {reason} (writing "), errors
    assert errors[0].endswith("what was there before is unchanged"), errors


def test_a_file_size_limit_fails_the_save_in_one_line_and_keeps_the_previous_checkpoint(
        corpus, paused_run, tmp_path):
    out = shutil.copytree(paused_run, tmp_path / "run")
    before = _files(out)

    def limit_file_size():  # in the child: room for the small files, not the weights (Python ignores SIGXFSZ)
        limit = len(before[WEIGHTS_FILE]) // 2
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    logs = tmp_path / "logs"
    process = start_training(train_args(corpus, out, SAVE_EVERY_STEP) + ["--resume"], logs,
                             preexec_fn=limit_file_size)
    assert process.wait(timeout=120) == 1
    _check_one_error_line((logs / "stderr").read_text(), out, "File too large")
    assert _files(out) == before  # byte for byte
    assert leftovers(out) == []
    saved = load_for_resume(out)
    assert saved["state"]["progress"]["step"] == load_checkpoint(out).training["steps"] >= 1


def _can_mount_a_private_tmpfs() -> bool:
    probe = 'd=$(mktemp -d) && mount -t tmpfs -o size=64k lyricist-probe "$d" && umount "$d"; r=$?; rmdir "$d"; exit $r'
    return shutil.which("unshare") is not None and subprocess.run(
        ["unshare", "--mount", "--map-root-user", "sh", "-c", probe], capture_output=True, check=False).returncode == 0


@pytest.mark.skipif(not _can_mount_a_private_tmpfs(), reason="needs user namespaces to mount a small tmpfs")
def test_a_disk_with_room_for_one_checkpoint_fails_the_next_save_and_keeps_the_first(corpus, paused_run, tmp_path):
    """A real full disk (ENOSPC): a tmpfs, in a mount namespace of its own, with room for 1.5 checkpoints.
    A save needs room for two (the new copy is written whole before the old one goes), so it must fail."""
    before = _files(paused_run)
    pages = sum(-(-len(data) // 4096) * 4096 for data in before.values())
    disk, after, logs = tmp_path / "disk", tmp_path / "after", tmp_path / "logs"
    for directory in (disk, after, logs):
        directory.mkdir()
    train = shlex.join([sys.executable, "-m", "lyricist.model.cli",
                        *train_args(corpus, disk / "run", SAVE_EVERY_STEP), "--resume"])
    # The tmpfs lives as long as the namespace: what the run left is copied out before the shell ends.
    q = {name: shlex.quote(str(path)) for name, path in
         {"disk": disk, "after": after, "logs": logs, "paused": paused_run}.items()}
    script = f"""set -e
mount -t tmpfs -o size={pages * 3 // 2} lyricist-full {q['disk']}
cp -a {q['paused']} {q['disk']}/run
set +e
{train} >{q['logs']}/stdout 2>{q['logs']}/stderr
echo $? >{q['logs']}/rc
cp -a {q['disk']}/. {q['after']}/"""
    subprocess.run(["unshare", "--mount", "--map-root-user", "sh", "-c", script], check=True, timeout=120,
                   env={**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"})
    assert (logs / "rc").read_text().strip() == "1"
    _check_one_error_line((logs / "stderr").read_text(), disk / "run", "No space left on device")
    assert sorted(p.name for p in after.iterdir()) == ["run"]  # the staging copy was removed
    assert _files(after / "run") == before
    assert load_for_resume(after / "run")["state"]["progress"]["step"] >= 1
