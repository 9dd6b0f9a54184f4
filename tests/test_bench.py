"""The measuring harness: structure of its results, fairness rules, FLOP accounting, CLI."""

from __future__ import annotations

import json

import pytest

from fastmnist.bench import (
    BenchConfig,
    format_table,
    format_time_to_accuracy,
    predict_flops_per_sample,
    run_benchmark,
    steal_ticks,
    stolen_percent,
    time_to_accuracy,
    train_flops_per_sample,
)
from fastmnist.errors import ConfigError

from .synthetic import tiny_dataset
from .test_cli import run


def test_flop_accounting():
    # 784-10-10: forward 2*(7840+100), weight grads as much, input grad of layer 2 only.
    sizes = [784, 10, 10]
    params = 7840 + 100 + 10 + 10
    assert train_flops_per_sample(sizes, 1) == 4 * 7940 + 2 * 100 + 4 * params
    assert train_flops_per_sample(sizes, 128) == pytest.approx(4 * 7940 + 200 + 4 * params / 128)
    assert predict_flops_per_sample(sizes) == 2 * 7940


def test_run_benchmark_measures_every_backend_alike():
    result = run_benchmark(
        tiny_dataset(), backends=["numpy", "numpy"],  # a repeated name is measured once
        configs=[BenchConfig((16,), 32), BenchConfig((8,), 64, "float64")],
        repeats=2, step_repeats=2, threads=1,
    )
    assert [(r["config"], r["backend"]) for r in result.rows] == [
        ("784-16-10 b32 float32", "numpy"), ("784-8-10 b64 float64", "numpy")]
    for row in result.rows:
        assert row["ratio"] == pytest.approx(1.0)  # numpy against itself
        t = row["train_samples_per_second"]
        assert t["min"] <= t["median"] <= t["max"] and t["min"] > 0
        assert row["gflops"] > 0 and row["compile_seconds"] >= 0
        assert row["stolen_percent"] is None or 0 <= row["stolen_percent"] <= 100
    assert result.peak_gflops > 0 and result.machine["threads"] == 1
    json.dumps(result.to_dict())  # JSON-ready
    assert "784-16-10 b32" in format_table(result)


def test_steal_ticks_reads_the_steal_column_and_gives_none_without_it(tmp_path):
    stat = tmp_path / "stat"
    # user nice system idle iowait irq softirq steal guest guest_nice
    stat.write_text("cpu  588 0 704 32336 45 0 7 19 0 0\ncpu0 203 0 281 16357 3 0 0 12 0 0\n")
    assert steal_ticks(str(stat)) == 19
    stat.write_text("cpu  588 0 704 32336\n")  # a kernel without the column
    assert steal_ticks(str(stat)) is None
    stat.write_text("intr 5 6 7 8 9 10 11 12 13\n")
    assert steal_ticks(str(stat)) is None
    assert steal_ticks(str(tmp_path / "missing")) is None


def test_the_cpu_is_named_with_its_family_and_model(tmp_path):
    from fastmnist.bench import _cpu_model

    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 26\n"
                    "model\t\t: 2\nmodel name\t: AMD EPYC\n\nprocessor\t: 1\n"
                    "cpu family\t: 25\nmodel\t\t: 1\nmodel name\t: other\n")
    assert _cpu_model(str(info)) == "AMD EPYC (family 26, model 2)"
    info.write_text("processor\t: 0\nmodel name\t: Some CPU\n")
    assert _cpu_model(str(info)) == "Some CPU"
    assert _cpu_model(str(tmp_path / "missing"))  # falls back to platform's name


def test_stolen_percent_is_a_share_of_all_cpus_time():
    import os

    tick = 1.0 / os.sysconf("SC_CLK_TCK")
    # 10 ticks over 1 s of two CPUs' time whose total is 2 / tick ticks
    assert stolen_percent(10, 1.0, 2) == pytest.approx(100 * 10 * tick / 2)
    assert stolen_percent(0, 0.5, 2) == 0.0
    assert stolen_percent(10**6, 0.01, 2) == 100.0  # coarse ticks: capped
    assert stolen_percent(3, 0.0, 2) == 0.0


@pytest.fixture
def quick_bench(monkeypatch):
    """The bench without its idle pauses and SGEMM measurement, on two CPUs."""
    import fastmnist.bench as bench

    monkeypatch.setattr(bench, "_settle", lambda previous: None)
    monkeypatch.setattr(bench, "_idle_before_predictions", lambda: None)
    monkeypatch.setattr(bench, "measure_peak_gflops", lambda threads: 100.0)
    monkeypatch.setattr(bench.os, "cpu_count", lambda: 2)
    return bench


def _one_row(repeats=2):
    return run_benchmark(tiny_dataset(), backends=["numpy"], configs=[BenchConfig((8,), 64)],
                         repeats=repeats, step_repeats=1)


def test_the_table_flags_rows_measured_while_the_hypervisor_took_the_cpus(quick_bench,
                                                                          monkeypatch):
    bench = quick_bench
    ticks = iter(range(0, 10**6, 50))  # 50 ticks stolen between any two readings
    monkeypatch.setattr(bench, "steal_ticks", lambda path="/proc/stat": next(ticks))
    result = _one_row()
    row = result.rows[0]
    assert row["stolen_ticks"] == 2 * 2 * 50  # two windows a round, two rounds
    assert row["stolen_percent"] > bench.DISTURBED_PERCENT
    assert "disturbed machine" in format_table(result)

    monkeypatch.setattr(bench, "steal_ticks", lambda path="/proc/stat": 7)  # none stolen
    quiet = _one_row()
    assert quiet.rows[0]["stolen_percent"] == 0.0 and quiet.rows[0]["stolen_ticks"] == 0
    assert "disturbed" not in format_table(quiet) and "0.0%" in format_table(quiet)

    monkeypatch.setattr(bench, "steal_ticks", lambda path="/proc/stat": None)  # not reported
    unknown = _one_row(repeats=1)
    assert unknown.rows[0]["stolen_percent"] is None and unknown.rows[0]["stolen_ticks"] is None
    assert " n/a" in format_table(unknown)


def test_one_coarse_tick_is_not_called_a_disturbance(quick_bench, monkeypatch):
    bench = quick_bench
    ticks = iter(range(10**6))  # one tick per reading: a tick per window
    monkeypatch.setattr(bench, "steal_ticks", lambda path="/proc/stat": next(ticks))
    result = _one_row(repeats=1)
    row = result.rows[0]
    # two 10 ms ticks over a few ms of timed work: a large share, but too few ticks
    assert row["stolen_ticks"] == 2 < bench.DISTURBED_TICKS
    assert row["stolen_percent"] >= bench.DISTURBED_PERCENT
    assert "disturbed" not in format_table(result)


def test_a_counter_that_goes_backwards_counts_as_nothing_stolen(quick_bench, monkeypatch):
    bench = quick_bench
    ticks = iter(range(10**6, 0, -5))
    monkeypatch.setattr(bench, "steal_ticks", lambda path="/proc/stat": next(ticks))
    row = _one_row().rows[0]
    assert row["stolen_ticks"] == 0 and row["stolen_percent"] == 0.0


def test_a_window_without_a_reading_makes_the_row_unknown_not_an_undercount(quick_bench,
                                                                            monkeypatch):
    bench = quick_bench
    readings = iter([0, 40, None, 90] + [100] * 100)  # the second window's start fails
    monkeypatch.setattr(bench, "steal_ticks", lambda path="/proc/stat": next(readings))
    row = _one_row(repeats=1).rows[0]
    assert row["stolen_ticks"] is None and row["stolen_percent"] is None


def test_each_round_times_predict_repeats_predictions(quick_bench, monkeypatch):
    from fastmnist.backends.numpy_backend import NumpyBackend

    bench = quick_bench
    events = []
    original = NumpyBackend.predict_proba
    monkeypatch.setattr(NumpyBackend, "predict_proba",
                        lambda self, model, x: events.append(len(x)) or original(self, model, x))
    monkeypatch.setattr(bench, "_idle_before_predictions", lambda: events.append("idle"))
    monkeypatch.setattr(bench, "steal_ticks",
                        lambda path="/proc/stat": events.append("tick") or 0)
    data = tiny_dataset()
    run_benchmark(data, backends=["numpy"], configs=[BenchConfig((8,), 64)], repeats=2,
                  step_repeats=1, predict_repeats=3)
    full = len(data.test.images)
    # the burn-in's tiny and full predictions; then each round: the steal meter
    # around the epoch and steps, an idle pause and an untimed prediction outside
    # it, then the meter around 3 timed predictions
    one_round = ["tick", "tick", "idle", full, "tick", full, full, full, "tick"]
    assert events == [8, full] + one_round * 2
    with pytest.raises(ConfigError, match="predict_repeats"):
        run_benchmark(data, backends=["numpy"], predict_repeats=0)


def test_uninstalled_backends_are_skipped_not_crashed_on(monkeypatch):
    import fastmnist.bench as bench

    monkeypatch.setattr(bench, "available_backends", lambda: ["numpy"])
    result = run_benchmark(tiny_dataset(), backends=["numpy", "torch"],
                           configs=[BenchConfig((8,), 64)], repeats=1, step_repeats=1)
    assert result.skipped == {"torch": "not installed"}
    assert "skipped: torch" in format_table(result)


def test_time_to_accuracy_stops_at_the_target():
    result = time_to_accuracy(
        tiny_dataset(), target=0.9, backends=["numpy"], seeds=[0, 1],
        recipe=dict(hidden=(32,), epochs=6, batch_size=32, lr=0.05, schedule="constant"),
    )
    (row,) = result.rows
    assert row["reached"] == 2 and row["runs"] == 2
    for r in row["per_seed"]:
        assert r["test_accuracy"] >= 0.9 and r["epochs"] <= 6
    assert "time to 90.00%" in format_time_to_accuracy(result)


@pytest.mark.mnist
def test_bench_command_json_and_plot(mnist_dir, tmp_path):
    pytest.importorskip("matplotlib")
    proc = run("bench", "--backends", "numpy", "--hidden", "10", "--batch-size", "128",
               "--repeats", "1", "--train-samples", "2000", "--threads", "1", "--json",
               "--plot", str(tmp_path / "b.png"), "--data", str(mnist_dir))
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["rows"][0]["backend"] == "numpy" and out["machine"]["cores"] >= 1
    assert out["machine"]["huge_pages"] in ("always", "madvise", "never", None)
    assert (tmp_path / "b.png").read_bytes()[:4] == b"\x89PNG"


def test_time_to_accuracy_counts_a_missed_target_as_never():
    # 99.9% on the tiny set within one epoch of a 4-unit network is out of reach.
    result = time_to_accuracy(
        tiny_dataset(), target=0.999, backends=["numpy"], seeds=[0, 1, 2],
        recipe=dict(hidden=(4,), epochs=1, batch_size=32, lr=0.01, schedule="constant"),
    )
    (row,) = result.rows
    assert row["reached"] == 0
    assert row["train_seconds"] == {"median": None, "min": None, "max": None}
    assert all(r["train_seconds"] > 0 for r in row["per_seed"])
    table = format_time_to_accuracy(result)
    assert "never" in table
    json.dumps(result.to_dict(), allow_nan=False)


def test_time_to_accuracy_skips_a_peer_that_cannot_run_the_recipe():
    pytest.importorskip("torch")
    result = time_to_accuracy(
        tiny_dataset(), target=0.5, backends=["numpy", "torch"], seeds=[0],
        recipe=dict(hidden=(8,), epochs=1, batch_size=32, lr=0.05, augment=1),
    )
    assert [r["backend"] for r in result.rows] == ["numpy"]
    assert "augmentation" in result.skipped["torch"]
    assert "skipped: torch" in format_time_to_accuracy(result)


def test_without_zeros_keeps_shapes_and_labels_and_removes_every_zero():
    from fastmnist.bench import without_zeros

    data = tiny_dataset()
    dense = without_zeros(data)
    for before, after in ((data.train, dense.train), (data.test, dense.test)):
        assert after.images.shape == before.images.shape
        assert after.images.min() >= 1
        assert (after.labels == before.labels).all()


def test_bench_no_zeros_cannot_time_accuracy(fake_mnist_dir):
    proc = run("bench", "--no-zeros", "--to-accuracy", "0.9", "--data", str(fake_mnist_dir))
    assert proc.returncode == 2 and "--no-zeros" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
