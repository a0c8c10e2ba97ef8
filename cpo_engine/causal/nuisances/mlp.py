"""``mlp``: a small multi-output MLP regressor (torch, CUDA when present) with early stopping."""

from __future__ import annotations

from typing import Any

import numpy as np

from cpo_engine.causal._folds import fold_ids
from cpo_engine.causal.nuisances._common import (
    TorchNuisance,
    as_2d,
    resolve_torch_device,
    saved_params,
    torch_module,
)

_SCALERS = ("x_mean_", "x_std_", "y_mean_", "y_std_")


class TorchMLP(TorchNuisance):
    """A small multi-output MLP regressor (ReLU, Adam, early stopping), on CUDA when present.

    Inputs and targets are standardized; 10% of the groups (or rows) are held out for early stopping.

    Parameters
    ----------
    hidden : tuple of int
        Hidden layer widths.
    max_epochs : int
        Upper bound on passes over the training data.
    batch_size : int
        Largest minibatch; smaller data sets use ``n / 16`` (at least 32) so every epoch takes
        at least 16 optimizer steps.
    lr : float
        Adam learning rate.
    weight_decay : float
        L2 penalty (AdamW).
    patience : int
        Epochs without validation improvement before stopping.
    device : {"auto", "cpu", "cuda"}
        Where training runs.
    random_state : int
        Seed for initialization, batching and the validation split.
    """

    def __init__(
        self,
        hidden: tuple[int, ...] = (64,),
        max_epochs: int = 60,
        batch_size: int = 2048,
        lr: float = 3e-3,
        weight_decay: float = 1e-4,
        patience: int = 5,
        device: str = "auto",
        random_state: int = 0,
    ) -> None:
        self.hidden = hidden
        self.max_epochs = max_epochs
        self.batch_size = batch_size
        self.lr = lr
        self.weight_decay = weight_decay
        self.patience = patience
        self.device = device
        self.random_state = random_state

    def fit(self, X: np.ndarray, y: np.ndarray, groups: np.ndarray | None = None) -> "TorchMLP":
        """Fit on ``X`` (n, d) and ``y`` (n,) or (n, k); returns self."""
        torch = torch_module()
        dev = resolve_torch_device(self.device)
        gen = torch.Generator().manual_seed(self.random_state)
        X = np.asarray(X, dtype=np.float64)
        Y, self._y_1d = as_2d(y)
        self.x_mean_, self.x_std_ = X.mean(0), X.std(0) + 1e-8
        self.y_mean_, self.y_std_ = Y.mean(0), Y.std(0) + 1e-8
        Xs = torch.as_tensor((X - self.x_mean_) / self.x_std_, dtype=torch.float32, device=dev)
        Ys = torch.as_tensor((Y - self.y_mean_) / self.y_std_, dtype=torch.float32, device=dev)
        val = torch.as_tensor(fold_ids(len(X), 10, groups, self.random_state) == 0, device=dev)
        torch.manual_seed(self.random_state)
        self.net_ = _mlp(X.shape[1], self.hidden, Y.shape[1]).to(dev)
        self._train(Xs[~val], Ys[~val], Xs[val], Ys[val], gen)
        self.n_features_in_ = X.shape[1]
        return self

    def _train(self, Xtr, Ytr, Xva, Yva, gen) -> None:
        torch = torch_module()
        opt = torch.optim.AdamW(self.net_.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        best, best_state, stale = float("inf"), None, 0
        bs = int(min(self.batch_size, max(32, len(Xtr) // 16)))
        for _ in range(self.max_epochs):
            perm = torch.randperm(len(Xtr), generator=gen).to(Xtr.device)
            for i in range(0, len(Xtr), bs):
                idx = perm[i : i + bs]
                opt.zero_grad()
                torch.nn.functional.mse_loss(self.net_(Xtr[idx]), Ytr[idx]).backward()
                opt.step()
            with torch.no_grad():
                loss = float(torch.nn.functional.mse_loss(self.net_(Xva), Yva)) if len(Xva) else 0.0
            if loss < best - 1e-5:
                best, stale = loss, 0
                best_state = {k: v.detach().clone() for k, v in self.net_.state_dict().items()}
            else:
                stale += 1
                if stale >= self.patience:
                    break
        if best_state is not None:
            self.net_.load_state_dict(best_state)

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Predictions of shape (n,) or (n, k), matching the ``y`` passed to fit."""
        torch = torch_module()
        dev = next(self.net_.parameters()).device
        Xs = torch.as_tensor((np.asarray(X, np.float64) - self.x_mean_) / self.x_std_,
                             dtype=torch.float32, device=dev)
        with torch.no_grad():
            out = self.net_(Xs).double().cpu().numpy() * self.y_std_ + self.y_mean_
        return out[:, 0] if self._y_1d else out

    # ------------------------------------------------------------------ persistence
    def state_arrays(self) -> dict[str, np.ndarray]:
        """Network weights (``net.<parameter>``) and the input/target standardization."""
        arrays = {f"net.{name}": t.detach().cpu().numpy() for name, t in self.net_.state_dict().items()}
        return arrays | {a: getattr(self, a) for a in _SCALERS}

    def meta(self) -> dict[str, Any]:
        """JSON-safe settings: target shape, layer widths and constructor parameters."""
        return {"y_1d": bool(self._y_1d), "hidden": list(self.hidden), "params": saved_params(self)}

    @classmethod
    def from_state(cls, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> "TorchMLP":
        """A fitted MLP on the CPU from :meth:`meta` and :meth:`state_arrays`."""
        torch = torch_module()
        params = dict(meta.get("params", {})) | {"hidden": tuple(meta["hidden"]), "device": "cpu"}
        m = cls(**params)
        for a in _SCALERS:
            setattr(m, a, np.asarray(arrays[a]))
        state = {name[len("net."):]: torch.as_tensor(v, dtype=torch.float32)
                 for name, v in arrays.items() if name.startswith("net.")}
        m.net_ = _mlp(len(m.x_mean_), m.hidden, len(m.y_mean_))
        m.net_.load_state_dict(state)
        m.n_features_in_, m._y_1d = len(m.x_mean_), bool(meta["y_1d"])
        return m


def _mlp(d_in: int, hidden: tuple[int, ...], d_out: int) -> Any:
    torch = torch_module()
    layers: list = []
    for h in hidden:
        layers += [torch.nn.Linear(d_in, h), torch.nn.ReLU()]
        d_in = h
    layers.append(torch.nn.Linear(d_in, d_out))
    return torch.nn.Sequential(*layers)


__all__ = ["TorchMLP"]
