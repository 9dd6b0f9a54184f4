"""Interruption and resume: Ctrl-C keeps the last complete epoch, resuming reproduces the run."""

from __future__ import annotations

import importlib
import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from fastmnist import available_backends, load_model
from fastmnist.train import TrainConfig, Trainer, load_checkpoint, save_checkpoint

from .conftest import make_fake_dataset
from .synthetic import blobs

BACKENDS = [b for b in ("numpy", "numba") if b in available_backends()]
X, Y = blobs(400, seed=0)


def _config(backend: str, epochs: int = 4) -> TrainConfig:
    return TrainConfig(hidden=(16,), epochs=epochs, batch_size=32, lr=0.05, backend=backend,
                       threads=1, seed=3, weight_decay=1e-4)


def _weights(trainer_or_model):
    model = getattr(trainer_or_model, "model", trainer_or_model)
    return [p.copy() for p in model.parameters()]


@pytest.mark.parametrize("backend", BACKENDS)
def test_checkpoint_and_resume_is_bit_identical_to_an_uninterrupted_run(tmp_path, backend):
    whole = Trainer(_config(backend), progress=False)
    whole.fit(X, Y)

    def stop_after_two(record, model):
        return record["epoch"] == 2

    first = Trainer(_config(backend), progress=False, callbacks=[stop_after_two])
    first.fit(X, Y)
    save_checkpoint(first, tmp_path / "ck.npz")
    resumed = load_checkpoint(tmp_path / "ck.npz", progress=False)
    assert resumed.epoch == 2 and len(resumed.history) == 2
    resumed.fit(X, Y)
    assert resumed.epoch == 4
    for a, b in zip(_weights(whole), _weights(resumed)):
        np.testing.assert_array_equal(a, b)
    assert resumed.history["loss"] == whole.history["loss"]


class _InterruptingBackend:
    """Wraps a backend; the second epoch changes the weights and then raises Ctrl-C."""

    def __init__(self, inner):
        self.inner, self.calls = inner, 0

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def train_epoch(self, model, optimizer, *args):
        self.calls += 1
        if self.calls == 2:
            for p in model.parameters():
                p += 1.0  # a half-done epoch
            raise KeyboardInterrupt
        return self.inner.train_epoch(model, optimizer, *args)


def test_interrupt_mid_epoch_restores_the_last_complete_epoch():
    trainer = Trainer(_config("numpy"), progress=False)
    trainer.backend = _InterruptingBackend(trainer.backend)
    reference = Trainer(_config("numpy"), progress=False, callbacks=[lambda r, m: True])
    reference.fit(X, Y)
    with pytest.raises(KeyboardInterrupt):
        trainer.fit(X, Y)
    assert trainer.epoch == 1
    for a, b in zip(_weights(trainer), _weights(reference)):
        np.testing.assert_array_equal(a, b)
    # The generator is back where epoch 2 starts, so resuming draws the same permutation.
    assert trainer.rng.bit_generator.state == reference.rng.bit_generator.state


def _raise_on_call(n, inner):
    """``inner``, except that its ``n``-th call raises Ctrl-C instead."""
    calls = [0]

    def wrapped(*args, **kwargs):
        calls[0] += 1
        if calls[0] == n:
            raise KeyboardInterrupt
        return inner(*args, **kwargs)

    return wrapped


@pytest.mark.parametrize("where", ["options", "finiteness check", "scoring", "recording"])
def test_interrupt_outside_the_kernel_undoes_the_whole_epoch(monkeypatch, where):
    # Ctrl-C can land after the epoch drew its permutation but before training,
    # or after training but before the record is kept; the checkpoint written
    # then must still be the last complete epoch.
    test = (X[:50], Y[:50])
    trainer = Trainer(_config("numpy"), progress=False)
    if where == "options":  # called just after the permutation is drawn
        monkeypatch.setattr(trainer, "epoch_options", _raise_on_call(2, trainer.epoch_options))
    elif where == "finiteness check":
        monkeypatch.setattr(trainer.model, "is_finite", _raise_on_call(2, trainer.model.is_finite))
    elif where == "scoring":
        module = importlib.import_module("fastmnist.train.trainer")
        monkeypatch.setattr(module, "evaluate", _raise_on_call(2, module.evaluate))
    else:
        monkeypatch.setattr(trainer.history, "append", _raise_on_call(2, trainer.history.append))
    with pytest.raises(KeyboardInterrupt):
        trainer.fit(X, Y, test)
    monkeypatch.undo()
    one_epoch = Trainer(_config("numpy"), progress=False, callbacks=[lambda r, m: True])
    one_epoch.fit(X, Y, test)
    assert trainer.epoch == 1 and len(trainer.history) == 1
    for a, b in zip(_weights(trainer), _weights(one_epoch)):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(trainer.optimizer.state_arrays(), one_epoch.optimizer.state_arrays()):
        np.testing.assert_array_equal(a, b)
    assert trainer.rng.bit_generator.state == one_epoch.rng.bit_generator.state

    trainer.fit(X, Y, test)  # resuming where it stopped reproduces the uninterrupted run
    whole = Trainer(_config("numpy"), progress=False)
    whole.fit(X, Y, test)
    for a, b in zip(_weights(trainer), _weights(whole)):
        np.testing.assert_array_equal(a, b)
    assert trainer.history["loss"] == whole.history["loss"]


# A suite started in the background by a non-interactive shell (as CI may be)
# passes SIGINT down ignored, and Python then installs no KeyboardInterrupt
# handler; Ctrl-C is what is tested, so the child installs it before the CLI runs.
# (Not by preexec_fn: that forks a process that JAX has made multithreaded.)
_CLI_WITH_CTRL_C = ("import signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
                    "from fastmnist.cli import main; sys.exit(main())")


def _run_cli(*args, **kwargs):
    return subprocess.Popen(
        [sys.executable, "-c", _CLI_WITH_CTRL_C, "train", *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs,
    )


def _interrupt_after_epoch(epoch: int, *args: str) -> tuple[int, str]:
    """Run ``fastmnist train ARGS``, send SIGINT once its progress bar shows
    ``epoch`` epochs done; return the exit code (0 if it finished first) and stderr."""
    proc = _run_cli(*args)
    seen: list[str] = []
    reader = threading.Thread(target=lambda: seen.extend(iter(lambda: proc.stderr.read(1), "")))
    reader.start()
    deadline = time.monotonic() + 300
    while f"| {epoch}/" not in "".join(seen) and time.monotonic() < deadline:  # tqdm's counter
        if proc.poll() is not None:
            break
        time.sleep(0.01)
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
    code = proc.wait(timeout=120)
    reader.join()
    return code, "".join(seen)


@pytest.mark.parametrize("backend", BACKENDS)
def test_real_sigint_writes_a_checkpoint_and_resume_matches(tmp_path, backend):
    data = tmp_path / "data"
    make_fake_dataset(data, n_train=6000, n_test=100)
    common = ["--data", str(data), "--backend", backend, "--hidden", "32", "--epochs", "40",
              "--batch-size", "64", "--threads", "1", "--seed", "5"]
    full = tmp_path / "full.npz"
    done = subprocess.run([sys.executable, "-m", "fastmnist", "train", *common, "--quiet",
                           "--out", str(full)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr

    ck = tmp_path / "ck.npz"
    # A loaded machine can delay reading the progress bar until training is over;
    # then the signal comes too late to test anything, and the run is repeated.
    for _attempt in range(3):
        code, err = _interrupt_after_epoch(3, *common, "--out", str(ck))
        if code != 0:
            break
    assert code == 130, err
    assert "checkpoint written to" in err and "Traceback" not in err
    interrupted = load_model(ck)
    assert 3 <= len(interrupted.history) < 40  # only complete epochs are kept

    resumed = subprocess.run([sys.executable, "-m", "fastmnist", "train", "--resume", str(ck),
                              "--data", str(data), "--quiet"],
                             capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    for a, b in zip(load_model(full).parameters(), load_model(ck).parameters()):
        np.testing.assert_array_equal(a, b)


def test_resume_errors_are_one_line(tmp_path):
    model_only = tmp_path / "m.npz"
    from fastmnist import Model

    Model.initialize((4,), rng=0).save(model_only)
    proc = subprocess.run([sys.executable, "-m", "fastmnist", "train", "--resume",
                           str(model_only)], capture_output=True, text=True, timeout=120,
                          env={**os.environ})
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("error:") and "not a checkpoint" in proc.stderr
