"""Shared parts of the accuracy benchmarks (one_class.py, noisy_data.py, ir_mnist.py).

Data: an MNIST-style ``.npz`` (x_train, y_train, x_test, y_test) or a folder of IDX files
(e.g. Fashion-MNIST's under /usr/share/datasets/fashion-mnist/), images resized 28 -> 32
(the methods need power-of-two sizes; Kim et al. resize to 32 too).

Budgets (``--budget``): ``BUDGETS[budget][method]`` says the training steps, batch size,
network widths and the latent-search steps of the scorer; every number printed by a
benchmark is stated together with its budget in the JSON it writes.

Protocol rules kept by every benchmark:
* the test set is scored once, at the end, by an :class:`anomgan.detector.Detector` (networks
  in eval mode);
* what is chosen (the training length among ``select_at`` points, the decision threshold) is
  chosen on validation images held out of the training data, never on test images.
"""
from __future__ import annotations

import json
import math
import os
import platform
import sys
import time
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from anomgan.scoring import metrics  # noqa: E402
from anomgan.data import load_mnist  # noqa: E402
from anomgan.detector import Detector, ScoringConfig  # noqa: E402
from anomgan.fileio import atomic_write_bytes, atomic_write_text  # noqa: E402
from anomgan.scoring.search import ANOGAN_STEPS  # noqa: E402
from anomgan.scoring.thresholds import from_labelled_f1  # noqa: E402
from anomgan.training import fit  # noqa: E402

MNIST_DEFAULT = "/work/shared/data/mnist.npz"
FASHION_DEFAULT = "/usr/share/datasets/fashion-mnist"
IMAGE_SIZE = 32
METHOD_NAMES = ("dual-disc", "ganomaly", "noisy-gan", "anogan")
GAN_METHODS = ("noisy-gan", "anogan")


@dataclass
class Budget:
    """How one method is trained and scored. ``steps``: total optimisation steps (all stages);
    for the GAN methods ``stage_steps["encoder"]`` of them train the izi_f encoder.
    ``select_at``: fractions of the budget at which the validation AUROC is measured; the best
    point (ties: the later one) is the model that scores the test set. ``search_steps``: latent
    search steps (GAN methods; warm-started by the encoder). ``test_subset``: None = the whole
    test set, else a fixed (seed 0) random subset of that size. ``lr_decay_every``: fit's step
    decay (halving) of the learning rate, in steps; None = constant."""
    steps: int
    batch_size: int
    hparams: dict[str, Any] = field(default_factory=dict)
    encoder_steps: int = 0
    select_at: tuple[float, ...] = (1.0,)
    search_steps: int = 0
    augment: dict | None = None
    val_size: int | None = None
    test_subset: int | None = None
    lr_decay_every: int | None = None

    def describe(self) -> dict[str, Any]:
        return {"steps": self.steps, "batch_size": self.batch_size, "hparams": self.hparams,
                "encoder_steps": self.encoder_steps, "select_at": list(self.select_at),
                "search_steps": self.search_steps, "augment": self.augment,
                "val_size": self.val_size, "test_subset": self.test_subset,
                "lr_decay_every": self.lr_decay_every, "torch_threads": torch.get_num_threads()}


def _cpu(method: str, scale: float = 1.0, dataset: str = "mnist") -> Budget:
    """The CPU budget: sized for a 2-core machine shared with other jobs (one torch thread,
    ~0.1-0.25 s per step there; a few minutes per model). Fashion-MNIST's dual-disc trains 6x
    longer (chosen on validation curves; RESULTS_ACCURACY.md)."""
    s = lambda n: max(10, int(round(n * scale)))  # noqa: E731
    if method == "dual-disc":
        b = Budget(steps=s(1000), batch_size=32, hparams={"width": 16, "d_width": 8, "lr": 1e-3},
                   select_at=(0.25, 0.5, 0.75, 1.0), val_size=400, test_subset=1000)
        if dataset == "fashion-mnist":  # validated every 1000 steps, lr halved every 2000
            b = replace(b, steps=s(6000), lr_decay_every=s(2000),
                        select_at=(0.1667, 0.3333, 0.5, 0.6667, 0.8333, 1.0))
        return b
    if method == "ganomaly":
        return Budget(steps=s(600), batch_size=32,
                      hparams={"width": 16, "max_width": 64, "z_dim": 64},
                      select_at=(0.5, 1.0), val_size=400, test_subset=1000)
    # noisy-gan / anogan: DCGAN width 16 (16-32-64 channels), z_dim 64; 600 GAN + 200 encoder steps.
    # noisy-gan's gamma 0.5 was chosen on validation data (protocol 2, digit 8, rho 5 %, k 500,
    # seeds 0-1: val AUROC 83.1 +- 1.1 against 79.8 +- 7.3 for the library default 0.9)
    hp = {"width": 16, "max_width": 64, "z_dim": 64}
    if method == "noisy-gan":
        hp["gamma"] = 0.5
    return Budget(steps=s(800), batch_size=64, hparams=hp,
                  encoder_steps=s(200), select_at=(0.5, 1.0), search_steps=10, val_size=400,
                  test_subset=1000)


def _paper(method: str) -> Budget:
    """The papers' budgets (for a GPU): Kim et al. Table 3 train 300 epochs at batch 1; we keep
    their epoch count over ~6000+6000 images at batch 64 (~28k steps); AnoGAN's 500-step
    latent search."""
    steps = 300 * (12000 // 64)
    if method == "dual-disc":
        return Budget(steps=steps, batch_size=64, hparams={}, select_at=(0.25, 0.5, 0.75, 1.0),
                      augment={"crop": 2}, lr_decay_every=50 * (12000 // 64))  # halved every 50 epochs
    if method == "ganomaly":
        return Budget(steps=steps // 2, batch_size=64, hparams={}, select_at=(0.25, 0.5, 0.75, 1.0))
    return Budget(steps=steps, batch_size=64, hparams={}, encoder_steps=steps // 4,
                  select_at=(0.5, 0.75, 1.0), search_steps=ANOGAN_STEPS)


def dataset_name(path: str) -> str:
    """"fashion-mnist" when the data path names Fashion-MNIST, else "mnist"."""
    return "fashion-mnist" if "fashion" in os.path.abspath(path).lower() else "mnist"


def budget_for(budget: str, method: str, scale: float = 1.0, dataset: str = "mnist") -> Budget:
    if budget == "cpu":
        return _cpu(method, scale, dataset)
    if budget == "paper":
        return _paper(method)
    raise ValueError(f"--budget must be 'cpu' or 'paper', got {budget!r}")


# ---------------------------------------------------------------------------------- data
def load_split(path: str, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(images float32 (N, 1, 32, 32) in [0, 1], labels int64 (N,))."""
    return load_mnist(path, split, image_size=IMAGE_SIZE, channels=1)


def subset(n: int, size: int | None, seed: int = 0) -> torch.Tensor:
    """A fixed random subset of range(n) (sorted), or all of it when size is None / >= n."""
    if size is None or size >= n:
        return torch.arange(n)
    g = torch.Generator().manual_seed(seed)
    return torch.sort(torch.randperm(n, generator=g)[:size]).values


def permutation(n: int, seed: int) -> torch.Tensor:
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))


# ------------------------------------------------------------------------------ training
def _fit(method: str, b: Budget, normal, anomalous, anomaly_labels, seed: int, steps: int, *,
         evaluate, evaluate_at, device: str = "cpu"):
    """One training run of ``steps`` steps in all (GAN methods: the GAN stage's full budget,
    then the encoder stage up to ``steps``) that calls ``evaluate`` at the steps ``evaluate_at``."""
    kw: dict[str, Any] = dict(method=method, batch_size=b.batch_size, seed=seed, progress=False,
                              device=device, augment=b.augment, lr_decay_every=b.lr_decay_every,
                              evaluate=evaluate, evaluate_at=evaluate_at, **b.hparams)
    if method in GAN_METHODS:
        gan = b.steps - b.encoder_steps
        kw["stage_steps"] = {"gan": gan, "encoder": max(1, steps - gan)}
    else:
        kw["steps"] = steps
    if anomalous is not None:
        kw["anomaly_labels"] = anomaly_labels
    return fit(normal, anomalous, **kw)


def detector_for(method_obj, b: Budget) -> Detector:
    # the budget's own step count (not the detector default), in float32 as the published
    # protocol numbers were measured (RESULTS_ACCURACY.md)
    scoring = ScoringConfig(search_steps=max(1, b.search_steps), search_precision="float32",
                            batch_size=256)
    info = {"encoder_trained": bool(getattr(method_obj, "encoder_trained", False))}
    return Detector(method_obj, scoring=scoring, info=info)


def score(det: Detector, x: torch.Tensor) -> tuple[np.ndarray, torch.Tensor]:
    """(scores float64 (N,), maps (N, H, W)) from the detector (eval mode, per-image scores)."""
    s, maps = det.score_tensor(x)
    return s.detach().cpu().numpy().astype(np.float64), maps.detach().cpu()


def selection_points(method: str, b: Budget) -> list[int]:
    """The global steps (sorted, distinct) at which the validation AUROC is measured: the
    ``select_at`` fractions of the budget; for the GAN methods, of the encoder stage, which
    follows the GAN stage's full budget."""
    if method in GAN_METHODS:
        gan = b.steps - b.encoder_steps
        return sorted({gan + max(1, int(round(f * b.encoder_steps))) for f in b.select_at})
    return sorted({max(1, int(round(f * b.steps))) for f in b.select_at})


def train_select_score(method: str, b: Budget, *, normal: torch.Tensor,
                       anomalous: torch.Tensor | None, anomaly_labels: torch.Tensor | None,
                       val_x: torch.Tensor, val_y: np.ndarray, test_x: torch.Tensor | None,
                       test_y: np.ndarray | None, seed: int, device: str = "cpu") -> dict[str, Any]:
    """Train ``method`` with budget ``b``; at each ``select_at`` point score the validation
    images; keep the best point; score the test set once with it. Returns a JSON-able dict:
    val_auroc (of the chosen point), chosen_steps, test_auroc, test_f1_at_val_threshold,
    the validation curve and timings."""
    t0 = time.time()
    if b.val_size is not None and len(val_y) > b.val_size:
        keep = subset(len(val_y), b.val_size, seed=seed + 1)
        val_x, val_y = val_x[keep], np.asarray(val_y)[keep.numpy()]
    points = selection_points(method, b)
    curve = []
    best: list = []  # [val AUROC, steps, state_dict copy, validation scores] of the best point

    val_x = val_x.to(device)

    def evaluate(m, steps):
        vs, _ = score(detector_for(m, b), val_x)
        vauc = metrics.roc_auc(val_y, vs)
        curve.append({"steps": steps, "val_auroc": vauc})
        if not best or vauc >= best[0]:
            best[:] = [vauc, steps, {k: v.clone() for k, v in m.state_dict().items()}, vs]
        return {"val_auroc": vauc}

    res = _fit(method, b, normal, anomalous, anomaly_labels, seed, points[-1], evaluate=evaluate,
               evaluate_at=points, device=device)
    t_train = time.time() - t0
    vauc, steps, state, vs = best
    res.method.load_state_dict(state)
    det = detector_for(res.method, b)
    thr = from_labelled_f1(val_y, vs)
    if test_x is None:
        return {"method": method, "seed": seed, "val_auroc": vauc, "chosen_steps": steps,
                "val_curve": curve, "threshold": thr.value,
                "train_and_select_s": round(t_train, 1), "_detector": det}
    t1 = time.time()
    ts, _ = score(det, test_x)
    t_test = time.time() - t1
    pred = ts >= thr.value
    tp = int((pred & (test_y == 1)).sum())
    fp = int((pred & (test_y == 0)).sum())
    fn = int((~pred & (test_y == 1)).sum())
    f1 = 2 * tp / max(1, 2 * tp + fp + fn)
    return {"method": method, "seed": seed, "test_auroc": metrics.roc_auc(test_y, ts),
            "val_auroc": vauc, "chosen_steps": steps, "val_curve": curve,
            "threshold": thr.value, "test_f1_at_val_threshold": f1,
            "n_train_normal": int(normal.shape[0]),
            "n_train_anomalous": 0 if anomalous is None else int(anomalous.shape[0]),
            "n_val": int(len(val_y)), "n_test": int(len(test_y)),
            "train_and_select_s": round(t_train, 1), "test_score_s": round(t_test, 1),
            "_detector": det}


# ------------------------------------------------------------------------------ reporting
def metric_key(args) -> str:
    """The AUROC a run reports: the test AUROC, or the validation AUROC under --val-only."""
    return "val_auroc" if getattr(args, "val_only", False) else "test_auroc"


def metric_title(key: str) -> str:
    return {"test_auroc": "Test AUROC",
            "val_auroc": "VALIDATION AUROC (--val-only: the test set was not scored)"}[key]


def describe_run(r: dict[str, Any]) -> str:
    """One progress line: test AUROC (when scored), validation AUROC, chosen steps, seconds."""
    t = r["train_and_select_s"] + r.get("test_score_s", 0.0)
    test = f"test AUROC {100 * r['test_auroc']:.1f} " if "test_auroc" in r else ""
    return (f"{test}(val {100 * r['val_auroc']:.1f} at step {r['chosen_steps']}, "
            f"curve {[round(100 * c['val_auroc'], 1) for c in r['val_curve']]}, {t:.0f} s)")


def mean_std(values) -> tuple[float, float]:
    v = np.asarray(list(values), dtype=np.float64)
    if v.size == 0:
        return float("nan"), float("nan")
    return float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else 0.0


def fmt(values, scale: float = 100.0) -> str:
    """'mean ± std' (in %, one decimal) of a list of AUROCs; '—' when empty."""
    v = list(values)
    if not v:
        return "—"
    m, s = mean_std(v)
    return f"{m * scale:.1f} ± {s * scale:.1f}"


def markdown_table(header: list[str], rows: list[list[Any]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out) + "\n"


def machine() -> str:
    return f"{platform.node()} {platform.machine()} {os.cpu_count()} CPUs, torch {torch.__version__}"


def run_header(args, budget_desc: dict[str, Any]) -> dict[str, Any]:
    return {"date_utc": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "machine": machine(),
            "argv": sys.argv, "data": args.data, "budget": args.budget, "seeds": args.seeds,
            "budgets": budget_desc}


def merge_docs(paths: list[str], union_keys: tuple[str, ...]) -> dict[str, Any]:
    """One result document from the JSON files of several processes of the same protocol: the
    runs concatenated, ``union_keys`` (lists, e.g. the digits) sorted unions, the budgets of all
    methods. Raises ValueError when the files disagree on what makes their numbers comparable
    (dataset, data, metric, test set size, budget name, the budget of a method they share)."""
    docs = []
    for path in paths:
        with open(path, encoding="utf-8") as fh:
            docs.append(json.load(fh))
    doc = dict(docs[0])
    for path, d in zip(paths[1:], docs[1:]):
        for key in ("protocol", "dataset", "data", "metric", "n_test", "budget"):
            if d.get(key) != doc.get(key):
                raise ValueError(f"{path}: {key}={d.get(key)!r}, but {paths[0]} has {doc.get(key)!r}")
        known = doc.get("budgets", {})
        for m, b in d.get("budgets", {}).items():
            if m in known and known[m] != b:
                raise ValueError(f"{path}: the {m} budget {b} differs from {known[m]} in an earlier file")
        doc["budgets"] = {**known, **d.get("budgets", {})}
    doc["runs"] = [r for d in docs for r in d["runs"]]
    doc["merged_from"] = {p: d["argv"] for p, d in zip(paths, docs)}
    for key in union_keys:
        doc[key] = sorted({v for d in docs for v in d[key]})
    doc["seeds"] = max(d["seeds"] for d in docs)
    doc["elapsed_s"] = sum(d.get("elapsed_s", 0.0) for d in docs)
    return doc


def write_outputs(out: str, stem: str, doc: dict[str, Any], markdown: str) -> tuple[str, str]:
    os.makedirs(out, exist_ok=True)
    jp, mp = os.path.join(out, f"{stem}.json"), os.path.join(out, f"{stem}.md")
    atomic_write_text(jp, json.dumps(doc, indent=1, default=_json_default) + "\n")
    atomic_write_text(mp, markdown)
    return jp, mp


def publish(out: str, stem: str, doc: dict[str, Any], markdown: str) -> None:
    """The final outputs of a protocol run: write them (:func:`write_outputs`), print the table."""
    jp, mp = write_outputs(out, stem, doc, markdown)
    print(markdown)
    print(f"wrote {jp}, {mp}")


def save_figure(fig, path: str, dpi: int = 100) -> None:
    """Write a matplotlib figure as a PNG, atomically, and close it."""
    import io

    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


def load_protocol_data(args, methods: list[str]):
    """The train split, the test split cut to the first method's test subset, and the budget
    of every method (``--budget``, ``--scale``, then the overrides):
    (xtr, ytr, xte, yte, budgets)."""
    xtr, ytr = load_split(args.data, "train")
    xte, yte = load_split(args.data, "test")
    ds = dataset_name(args.data)
    budgets = {m: apply_overrides(budget_for(args.budget, m, args.scale, ds), args, m) for m in methods}
    tsub = subset(len(yte), budgets[methods[0]].test_subset, seed=0)
    return xtr, ytr, xte[tsub], yte[tsub], budgets


def _json_default(o):
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, float) and not math.isfinite(o):
        return None
    return str(o)


def add_common_args(p, default_data: str = MNIST_DEFAULT) -> None:
    p.add_argument("--data", default=default_data,
                   help="MNIST-style .npz or a folder of IDX files (default: %(default)s)")
    p.add_argument("--budget", choices=("cpu", "paper"), default="cpu",
                   help="cpu: minutes per model on a 2-core CPU; paper: the papers' budgets (GPU)")
    p.add_argument("--seeds", type=int, default=3, help="training seeds 0..N-1 (default 3)")
    p.add_argument("--out", default="benchmarks/accuracy/out", help="output folder")
    p.add_argument("--scale", type=float, default=1.0,
                   help="multiply the CPU budget's step counts (smoke tests use < 1)")
    p.add_argument("--test-subset", type=int, default=None,
                   help="override the budget's test subset size (0 = whole test set)")
    p.add_argument("--val-size", type=int, default=None,
                   help="override the budget's validation subset size (0 = all held-out images)")
    p.add_argument("--set", action="append", default=[], metavar="METHOD.FIELD=VALUE",
                   help="change one budget setting, e.g. dual-disc.steps=1200, "
                        "dual-disc.hp.lr=5e-4, dual-disc.augment='{\"hflip\": true}' (VALUE is JSON, "
                        "else a string); repeatable; recorded in the output JSON")
    p.add_argument("--val-only", action="store_true",
                   help="train and select on validation data, report validation AUROC only and "
                        "never touch the test set (for tuning a budget)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads (default 1: on a shared 2-core machine 1 thread is ~5x "
                        "faster than 2 contending ones)")


def setup(args) -> None:
    torch.set_num_threads(max(1, args.threads))


def apply_overrides(b: Budget, args, method: str | None = None) -> Budget:
    """--test-subset, --val-size and the --set METHOD.FIELD=VALUE changes for ``method``."""
    for item in getattr(args, "set", []) or []:
        key, sep, raw = item.partition("=")
        m, dot, fld = key.partition(".")
        if not sep or not dot or not fld:
            raise ValueError(f"--set: expected METHOD.FIELD=VALUE, got {item!r}")
        if m not in METHOD_NAMES:
            raise ValueError(f"--set {item!r}: {m!r} is not one of {METHOD_NAMES}")
        if m != method:
            continue
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        if fld.startswith("hp."):
            b.hparams = {**b.hparams, fld[3:]: value}
        elif fld in Budget.__dataclass_fields__:
            if fld == "select_at":
                value = tuple(value)
            setattr(b, fld, value)
        else:
            raise ValueError(f"--set {item!r}: {fld!r} is not a budget field "
                             f"({', '.join(Budget.__dataclass_fields__)}) or hp.NAME")
    if args.test_subset is not None:
        b.test_subset = None if args.test_subset == 0 else args.test_subset
    if args.val_size is not None:
        b.val_size = None if args.val_size == 0 else args.val_size
    return b
