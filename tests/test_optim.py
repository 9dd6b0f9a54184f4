"""Optimizers and schedules: the reference update rules against PyTorch's, and schedule shapes."""

from __future__ import annotations

import numpy as np
import pytest

from fastmnist import ConfigError, Model, get_backend
from fastmnist.optim import SGD, Adam, make_optimizer
from fastmnist.train import make_schedule

from .synthetic import blobs

X, Y = blobs(48, seed=2)


def _torch_run(optimizer_name: str, model: Model, lrs, **kw):
    """The same steps through torch.optim, on the reference backend's gradients."""
    torch = pytest.importorskip("torch")
    params = [torch.tensor(p, dtype=torch.float64, requires_grad=True) for p in model.parameters()]
    groups = [{"params": params[0::2], "weight_decay": kw.get("weight_decay", 0.0)},
              {"params": params[1::2], "weight_decay": 0.0}]
    cls = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam, "adamw": torch.optim.AdamW}
    extra = {"momentum": 0.9, "nesterov": kw.get("nesterov", False)} if optimizer_name == "sgd" \
        else {"eps": 1e-8}
    opt = cls[optimizer_name](groups, lr=lrs[0], **extra)
    backend, probe = get_backend("numpy"), model.copy()
    for lr in lrs:
        for p, t in zip(probe.parameters(), params):
            p[...] = t.detach().numpy()
        g = backend.gradients(probe, X, Y)
        for t, grad in zip(params, [a for pair in zip(g.weights, g.biases) for a in pair]):
            t.grad = torch.tensor(grad)
        for group in opt.param_groups:
            group["lr"] = lr
        opt.step()
    return [t.detach().numpy() for t in params]


@pytest.mark.parametrize(
    "name, kw",
    [("sgd", {"weight_decay": 1e-3}), ("sgd", {"nesterov": True}), ("adam", {}),
     ("adam", {"weight_decay": 1e-2}), ("adamw", {"weight_decay": 1e-2})],
)
def test_reference_update_rules_match_torch_optim(name, kw):
    model = Model.initialize((6, 5), dtype="float64", rng=0)
    lrs = np.array([0.01, 0.02, 0.005])
    expected = _torch_run(name, model, lrs, **kw)
    opt = make_optimizer(name, momentum=0.9, **kw)
    order = np.concatenate([np.arange(48)] * 3)
    get_backend("numpy").train_epoch(model, opt, X, Y, order, 48, lrs)
    # Each side computes its own gradients, which can differ between processes in
    # the last bits (the same process repeats them bit for bit; CI once saw a
    # 5.4e-13 difference in an Adam weight). Adam divides a gradient by
    # sqrt(v) + eps, so a rounding-level difference d in a gradient near zero
    # moves a step by up to lr * d / eps: with d ~ 1e-17 here, about 2e-11.
    atol = 1e-10 if name.startswith("adam") else 1e-14
    for got, want in zip(model.parameters(), expected):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=atol)
    assert opt.step == (3 if name != "sgd" else 0)


def test_adam_state_and_validation():
    opt = Adam()
    w = [np.zeros((3, 2), np.float32)]
    b = [np.zeros(2, np.float32)]
    opt.init_state(w, b)
    assert len(opt.state_arrays()) == 4 and opt.step == 0
    for bad in ({"beta1": 1.0}, {"beta2": -0.1}, {"eps": 0.0}, {"weight_decay": -1.0}):
        with pytest.raises(ConfigError):
            Adam(**bad)
    with pytest.raises(ConfigError):
        make_optimizer("rmsprop")
    assert isinstance(make_optimizer("sgd"), SGD)


def test_warmup_then_cosine():
    s = make_schedule("cosine", 0.1, epochs=4, warmup_epochs=1)
    first = s.epoch_lrs(0, 10)
    np.testing.assert_allclose(first, 0.1 * np.arange(1, 11) / 10)  # reaches lr at step 10
    later = np.concatenate([s.epoch_lrs(e, 10) for e in (1, 2, 3)])
    assert later[0] == pytest.approx(0.1) and np.all(np.diff(later) <= 0) and later[-1] < 1e-3


def test_onecycle_rises_then_falls():
    s = make_schedule("onecycle", 0.3, epochs=10)
    lrs = np.concatenate([s.epoch_lrs(e, 20) for e in range(10)])
    peak = int(np.argmax(lrs))
    assert lrs[0] == pytest.approx(0.3 / 25) and lrs.max() == pytest.approx(0.3, rel=1e-3)
    assert 0.25 < peak / len(lrs) < 0.35
    assert np.all(np.diff(lrs[: peak + 1]) >= 0) and np.all(np.diff(lrs[peak:]) <= 0)
    assert lrs[-1] < 1e-3
