"""Validation and test AUROC of noisy-gan detectors against the number of latent-search steps.

For each search-step count in ``--steps`` (default 0, 5, 10, 20, 50, 100, 200, 500), each
trained model scores the same validation and test images twice: from the encoder's warm start
E(x) (f-AnoGAN izi_f, what a trained noisy-gan detector does) and from the detector's random
start (the fixed seeded N(0, I) draw it uses without an encoder). The search is the
detector's own (:class:`anomgan.scoring.latent.LatentSearchScorer`: frozen copies of G and f,
AnoGAN's learning-rate schedule scaled to the step count, λ = 0.1, "mean" reduction); 0 steps
means the AnoGAN loss at the start itself.

Models (noisy-gan, the CPU budget of the accuracy protocols, ``common._cpu``: DCGAN width 16,
z 64, γ = 0.5, 600 GAN + 200 izi_f encoder steps at batch 64, trained to the end of the budget,
no selection point; ``--budget paper --device cuda`` for the papers' budget on a GPU): every
model is trained once and cached under ``--cache`` (default /tmp/anomgan_search_steps), so a
rerun only scores. Protocols:

* protocol 1 (one_class.py): one MNIST digit normal, as many k-means-balanced other digits as
  labelled anomalies; digits ``--p1-digits`` (default 8, 3, 5), seeds 0..``--seeds``-1;
* protocol 2 (noisy_data.py): digit ``--p2-digit`` (default 8) with ρ = ``--p2-rho`` % (5)
  unlabelled other digits in the normal set and k = ``--p2-k`` (500) labelled anomalies.

Validation: a fixed subset (``--val-size``, seed = model seed + 1 as in the protocols) of the
protocol's held-out validation images; test: a fixed subset (``--test-size``, seed 0) of the
MNIST test set (anomaly = another digit). The test set is scored at every step count: it is a
reported curve, never used for a choice.

The choice (``choose_default``): the smallest step count whose mean validation AUROC (encoder
start, mean over the models of a protocol) is within ``--within`` (0.3) points of the mean at
the largest count (500), on every protocol, and stays so at every larger count.

Per-sample early stopping (``latent_search(tol=...)``) is measured on the same searches for
free: until a sample stops, its trajectory is the one without ``tol``, and after it stops its
z no longer moves, so its score is its recorded loss at the stopping step. For each ``--tols``
value the JSON holds the AUROCs and the mean number of steps taken.

Writes search_steps.json, search_steps.md and search_steps.png into --out.

    OMP_NUM_THREADS=1 python benchmarks/accuracy/search_steps.py   # ~45 min on one shared core
    python benchmarks/accuracy/search_steps.py --render-only    # table and plot from the JSON
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common as C  # noqa: E402
import noisy_data as P2  # noqa: E402
import one_class as P1  # noqa: E402

from anomgan import ops  # noqa: E402
from anomgan.models import get_method  # noqa: E402
from anomgan.scoring import metrics  # noqa: E402
from anomgan.scoring.config import ScoringConfig  # noqa: E402
from anomgan.scoring.search import latent_search, scaled_schedule  # noqa: E402

STEP_COUNTS = (0, 5, 10, 20, 50, 100, 200, 500)
STARTS = ("encoder", "random")
OUT_DEFAULT = os.path.join(C.HERE, "results", "search_steps")
CACHE_DEFAULT = "/tmp/anomgan_search_steps"
TOL_MIN_STEPS = 20  # early stopping is measured on the searches of at least this many steps
METHOD = "noisy-gan"


# ------------------------------------------------------------------------------- models
def model_specs(args) -> list[dict]:
    specs = [{"protocol": "p1", "digit": d, "seed": s}
             for d in args.p1_digits for s in range(args.seeds)]
    if args.p2_digit >= 0:
        specs += [{"protocol": "p2", "digit": args.p2_digit, "seed": s, "rho_percent": args.p2_rho,
                   "k": args.p2_k} for s in range(args.seeds)]
    return specs


def _key(obj) -> str:
    return hashlib.sha1(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:12]


def build(spec, xtr, ytr):
    """(normal, anomalous, anomaly_labels, val index, val labels) of one model's protocol."""
    if spec["protocol"] == "p1":
        s = P1.build_sets(xtr, ytr, spec["digit"], spec["seed"])
        return (xtr[s["normal"]], xtr[s["anomalous"]], ytr[s["anomalous"]], s["val"], s["val_y"])
    s = P2.build_sets(xtr, ytr, spec["digit"], spec["rho_percent"] / 100.0, spec["k"], spec["seed"])
    return xtr[s["normal"]], xtr[s["labelled"]], None, s["val"], s["val_y"]


def train_or_load(spec, budget: C.Budget, sets, args):
    """The trained method of ``spec`` (from the cache when there), its training seconds (None
    when cached) and its cache file. With ``--encoder-steps`` other than the budget's, the
    encoder of the budget's model (same GAN) is trained afresh for that many izi_f steps."""
    if args.encoder_steps is not None and args.encoder_steps != budget.encoder_steps:
        return _retrain_encoder(spec, budget, sets, args)
    normal, anomalous, labels = sets[:3]
    key = _key({"spec": spec, "budget": budget.describe() | {"torch_threads": None},
                "data": os.path.abspath(args.data), "n_normal": int(normal.shape[0])})
    path = os.path.join(args.cache, f"{spec['protocol']}_d{spec['digit']}_s{spec['seed']}_{key}.pt")
    cls = get_method(METHOD)
    if os.path.exists(path):
        return _load_cached(cls, path, args.device), None, path
    t0 = time.time()
    res = C._fit(METHOD, budget, normal, anomalous, labels, spec["seed"], budget.steps,
                 evaluate=None, evaluate_at=None, device=args.device)
    secs = time.time() - t0
    _save_cached(res.method, path)
    return res.method.eval(), secs, path


def _load_cached(cls, path, device):
    """A model cached by :func:`_save_cached`, in eval mode on ``device``."""
    blob = torch.load(path, map_location="cpu", weights_only=True)
    m = cls.from_stored(blob["hparams"])
    m.load_state_dict(blob["state"])
    return m.to(device).eval()


def _save_cached(method, path):
    """Cache a trained model's hparams and state_dict at ``path`` (temp file + rename)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".tmp"
    torch.save({"hparams": method.hparams(), "state": method.state_dict()}, tmp)
    os.replace(tmp, path)


def _retrain_encoder(spec, budget, sets, args):
    base, base_secs, base_path = train_or_load(spec, budget, sets, argparse.Namespace(
        **{**vars(args), "encoder_steps": None}))
    path = base_path.replace(".pt", f"_enc{args.encoder_steps}.pt")
    cls = get_method(METHOD)
    if os.path.exists(path):
        return _load_cached(cls, path, args.device), None, path
    from anomgan.models.networks import Encoder
    from anomgan.training import fit

    torch.manual_seed(spec["seed"])
    hp = base.hp
    base.encoder = Encoder(base.z_dim, base.image_size, base.channels, hp["width"],
                           hp["max_width"], hp["norm"])
    base.encoder_trained.fill_(False)
    normal, anomalous, labels = sets[:3]
    t0 = time.time()
    kw = {"anomaly_labels": labels} if labels is not None else {}
    res = fit(normal, anomalous, method=base, stage_steps={"gan": 0, "encoder": args.encoder_steps},
              batch_size=budget.batch_size, seed=spec["seed"], progress=False,
              device=args.device, **kw)
    secs = time.time() - t0
    _save_cached(res.method, path)
    return res.method.eval(), secs, path


# ------------------------------------------------------------------------------ scoring
def search_scores(method, x: torch.Tensor, steps: int, start: str, batch: int = 256,
                  record: bool = False, precision: str = "float32"):
    """The detector's latent-search scores (N,) of images x in [0, 1] after ``steps`` steps
    from the ``start`` ("encoder": E(x); "random": the detector's seeded N(0, I) start), as
    :meth:`LatentSearchScorer.score` computes them; with ``record``, also the (steps, N) loss
    history (what ``tol`` needs). ``precision``: ScoringConfig.search_precision."""
    cfg = ScoringConfig(search_steps=steps, search_precision=precision)
    scorer = method._scorer
    out, hist = [], []
    with method.eval_mode(), torch.no_grad():
        fg, fd = scorer.frozen(method.generator, method.discriminator)
        enc = method.encoder if start == "encoder" else None
        for i in range(0, x.shape[0], batch):
            xm = method.to_model(x[i:i + batch])
            z0 = scorer.starts(xm, method.z_dim, cfg, enc)
            if steps == 0:
                z = z0[:, 0]
                out.append(ops.residual_fm_loss(xm, fg(z), fd.features(xm), fd.features(fg(z)),
                                                lam=cfg.search_lam,
                                                reduction=cfg.search_reduction).float())
                continue
            res = latent_search(fg, fd.features, xm, steps=steps, lr=scaled_schedule(steps),
                                lam=cfg.search_lam, z0=z0, restarts=cfg.search_restarts,
                                reduction=cfg.search_reduction, record_loss=record,
                                compute_dtype=cfg.search_compute_dtype(xm))
            out.append(res.loss.float())
            if record:
                hist.append(res.loss_history.float())
    scores = torch.cat(out).cpu().numpy().astype(np.float64)
    return scores, (torch.cat(hist, dim=1).cpu().numpy() if record and hist else None)


def early_stop(history: np.ndarray, tol: float, patience: int = 5):
    """(scores (N,), steps taken (N,)) that ``latent_search(tol=tol, patience=patience)`` gives,
    from the loss history of the same search without tol (module doc): the search's rule, a
    sample stops before step t once its relative loss change stayed < tol for ``patience``
    consecutive steps, and keeps the loss of that step."""
    steps, n = history.shape
    calm = np.zeros(n, dtype=np.int64)
    stop = np.full(n, -1)
    prev = np.full(n, np.inf)
    for t in range(steps):
        cur = history[t]
        active = stop < 0
        change = np.abs(prev - cur) / np.maximum(np.abs(cur), 1e-30)
        now = np.isfinite(prev) & (change < tol) & active
        calm = np.where(now, calm + 1, 0)
        newly = active & (calm >= patience)
        stop[newly] = t
        prev = np.where(stop < 0, cur, prev)
    # a sample stopped before step t took t Adam steps and keeps the loss at that z
    taken = np.where(stop < 0, steps, stop)
    final = history[np.clip(stop, 0, steps - 1), np.arange(n)]
    return final, taken


# ------------------------------------------------------------------------------ the run
def score_model(method, spec, vx, vy, tx, ty, args, cache_key) -> list[dict]:
    path = os.path.join(args.cache, f"scores_{cache_key}.json")
    if os.path.exists(path) and not args.rescore:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    rows = []
    for start in args.starts:
        for steps in args.steps:
            record = bool(args.tols) and steps >= TOL_MIN_STEPS and start == "encoder"
            t0 = time.time()
            vs, vh = search_scores(method, vx, steps, start, record=record,
                                   precision=args.precision)
            ts, th = search_scores(method, tx, steps, start, record=record,
                                   precision=args.precision)
            secs = time.time() - t0
            row = {**spec, "start": start, "steps": steps,
                   "val_auroc": metrics.roc_auc(vy, vs), "test_auroc": metrics.roc_auc(ty, ts),
                   "s_per_image": secs / (len(vy) + len(ty))}
            if record:
                row["tol"] = {}
                for tol in args.tols:
                    v2, vt = early_stop(vh, tol)
                    t2, tt = early_stop(th, tol)
                    row["tol"][f"{tol:g}"] = {
                        "val_auroc": metrics.roc_auc(vy, v2), "test_auroc": metrics.roc_auc(ty, t2),
                        "mean_steps": float(np.r_[vt, tt].mean())}
            rows.append(row)
            print(f"  {spec['protocol']} digit {spec['digit']} seed {spec['seed']} {start:7s} "
                  f"{steps:4d} steps: val {100 * row['val_auroc']:.1f} test "
                  f"{100 * row['test_auroc']:.1f} ({secs:.0f} s)", flush=True)
    os.makedirs(args.cache, exist_ok=True)
    with open(path + ".tmp", "w", encoding="utf-8") as fh:
        json.dump(rows, fh)
    os.replace(path + ".tmp", path)
    return rows


def _scoring_key(precision: str) -> dict:
    """The search settings a cached score depends on (float32: the key of the first runs)."""
    d = {"search_steps": None, "search_lam": 0.1, "search_restarts": 1, "search_seed": 0,
         "search_reduction": "mean", "image_score": "native", "patch": 16, "stride": 8, "n": 3,
         "tile_overlap": None, "batch_size": 64}
    if precision != "float32":
        d["search_precision"] = precision
    return d


def choose_default(doc, within: float) -> dict:
    """The smallest step count whose mean validation AUROC (encoder start) is within ``within``
    points of the largest count's on every protocol, and stays within at every larger count.
    Validation data only."""
    counts = sorted(doc["steps"])
    ref = counts[-1]
    protos = sorted({r["protocol"] for r in doc["runs"]})
    gap = {}
    for p in protos:
        mean = {n: 100 * np.mean([r["val_auroc"] for r in doc["runs"] if r["protocol"] == p
                                  and r["start"] == "encoder" and r["steps"] == n])
                for n in counts}
        gap[p] = {n: mean[n] - mean[ref] for n in counts}
    ok = [all(gap[p][n] >= -within for p in protos) for n in counts]
    chosen = ref
    for i in range(len(counts) - 1, -1, -1):
        if not ok[i]:
            break
        chosen = counts[i]
    # the same gap model by model (paired: same model, same images): mean, std, and how many
    # models are within ``within`` points of the reference
    paired = {}
    for p in protos:
        models = sorted({(r["digit"], r["seed"]) for r in doc["runs"] if r["protocol"] == p})
        val = {(r["digit"], r["seed"], r["steps"]): r["val_auroc"] for r in doc["runs"]
               if r["protocol"] == p and r["start"] == "encoder"}
        paired[p] = {}
        for n in counts:
            g = [100 * (val[m + (n,)] - val[m + (ref,)]) for m in models
                 if m + (n,) in val and m + (ref,) in val]
            if g:
                paired[p][str(n)] = {"mean": round(float(np.mean(g)), 3),
                                     "std": round(float(np.std(g, ddof=1)) if len(g) > 1 else 0.0, 3),
                                     "within": int(sum(x >= -within for x in g)), "models": len(g)}
    return {"chosen_steps": chosen, "reference_steps": ref, "within_points": within,
            "val_gap_points": {p: {str(n): round(g, 3) for n, g in gp.items()}
                               for p, gp in gap.items()},
            "paired_val_gap_points": paired}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=C.MNIST_DEFAULT)
    p.add_argument("--p1-digits", default="8,3,5")
    p.add_argument("--p2-digit", type=int, default=8, help="-1: no protocol-2 models")
    p.add_argument("--p2-rho", type=float, default=5.0)
    p.add_argument("--p2-k", type=int, default=500)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--steps", default=",".join(map(str, STEP_COUNTS)))
    p.add_argument("--starts", default=",".join(STARTS))
    p.add_argument("--tols", default="1e-2,3e-3,1e-3,1e-4",
                   help="early-stopping tolerances measured on the recorded searches ('' = none)")
    p.add_argument("--precision", default="float32", choices=("float32", "bfloat16", "auto"),
                   help="ScoringConfig.search_precision of the searches (default float32)")
    p.add_argument("--val-size", type=int, default=150)
    p.add_argument("--test-size", type=int, default=100)
    p.add_argument("--budget", choices=("cpu", "paper"), default="cpu",
                   help="the training budget of the accuracy protocols (common.py); paper: for a GPU")
    p.add_argument("--device", default="cpu")
    p.add_argument("--scale", type=float, default=1.0, help="scale the CPU training budget")
    p.add_argument("--encoder-steps", type=int, default=None,
                   help="train the izi_f encoder this many steps on the budget's (cached) GAN "
                        "instead of the budget's 200 (a variant: its own cached models)")
    p.add_argument("--within", type=float, default=0.3, help="points of validation AUROC")
    p.add_argument("--cache", default=CACHE_DEFAULT)
    p.add_argument("--rescore", action="store_true", help="ignore cached scores (not models)")
    p.add_argument("--out", default=OUT_DEFAULT)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--no-plot", action="store_true")
    p.add_argument("--render-only", action="store_true",
                   help="train and score nothing: table and plot from --out/search_steps.json")
    args = p.parse_args(argv)
    if args.render_only:
        with open(os.path.join(args.out, "search_steps.json"), encoding="utf-8") as fh:
            doc = json.load(fh)
        doc["choice"] = choose_default(doc, args.within)
        return publish(args, doc)
    torch.set_num_threads(max(1, args.threads))
    args.p1_digits = [int(d) for d in args.p1_digits.split(",") if d != ""]
    args.steps = sorted({int(s) for s in args.steps.split(",")})
    args.starts = [s for s in args.starts.split(",") if s]
    args.tols = [float(t) for t in args.tols.split(",") if t]
    for s in args.starts:
        if s not in STARTS:
            p.error(f"--starts: {s!r} is not one of {STARTS}")

    xtr, ytr = C.load_split(args.data, "train")
    xte, yte = C.load_split(args.data, "test")
    tsub = C.subset(len(yte), args.test_size, seed=0)
    xte, yte = xte[tsub], yte[tsub]
    budget = C.budget_for(args.budget, METHOD, args.scale)
    budget.select_at = (1.0,)
    doc = {"date_utc": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "machine": C.machine(),
           "argv": sys.argv if argv is None else ["search_steps.py", *argv], "data": args.data,
           "method": METHOD, "budget": budget.describe(), "budget_name": args.budget,
           "scale": args.scale, "seeds": args.seeds, "steps": args.steps, "starts": args.starts,
           "tols": args.tols, "precision": args.precision,
           "encoder_steps": args.encoder_steps or budget.encoder_steps, "val_size": args.val_size, "n_test": int(len(yte)),
           "p1_digits": args.p1_digits, "p2": None if args.p2_digit < 0 else
           {"digit": args.p2_digit, "rho_percent": args.p2_rho, "k": args.p2_k},
           "models": [], "runs": []}
    t_all = time.time()
    for spec in model_specs(args):
        sets = build(spec, xtr, ytr)
        method, secs, mpath = train_or_load(spec, budget, sets, args)
        vidx, vy = sets[3], np.asarray(sets[4])
        keep = C.subset(len(vy), args.val_size, seed=spec["seed"] + 1)
        vx, vy = xtr[vidx][keep], vy[keep.numpy()]
        ty = (yte != spec["digit"]).numpy().astype(np.int64)
        print(f"{spec}: model {'trained in %.0f s' % secs if secs else 'from the cache'} "
              f"({mpath}); val {len(vy)}, test {len(ty)}", flush=True)
        ckey = _key({"model": os.path.basename(mpath), "steps": args.steps, "starts": args.starts,
                     "tols": args.tols, "val": keep.tolist(), "test": tsub.tolist(),
                     "scoring": _scoring_key(args.precision)})
        rows = score_model(method, spec, vx, vy, xte, ty, args, ckey)
        doc["models"].append({**spec, "train_s": None if secs is None else round(secs, 1),
                              "n_val": int(len(vy)), "n_test": int(len(ty))})
        doc["runs"].extend(rows)
        doc["choice"] = choose_default(doc, args.within)
        C.write_outputs(args.out, "search_steps", doc, render(doc))  # partial
    doc["elapsed_s"] = round(time.time() - t_all, 1)
    doc["choice"] = choose_default(doc, args.within)
    return publish(args, doc)


# ------------------------------------------------------------------------------ reporting
def _cell(doc, proto, start, steps, key):
    v = [r[key] for r in doc["runs"]
         if r["protocol"] == proto and r["start"] == start and r["steps"] == steps]
    return v


def render(doc) -> str:
    protos = [p for p in ("p1", "p2") if any(r["protocol"] == p for r in doc["runs"])]
    names = {"p1": f"protocol 1 (one class, digits {', '.join(map(str, doc['p1_digits']))})",
             "p2": "protocol 2 (digit {digit}, ρ = {rho_percent:g} %, k = {k})".format(**doc["p2"])
             if doc.get("p2") else ""}
    header = ["steps"]
    for p in protos:
        for start in doc["starts"]:
            header += [f"{p} {start} val", f"{p} {start} test"]
    header.append("s/image")
    rows = []
    for n in doc["steps"]:
        row = [str(n)]
        for p in protos:
            for start in doc["starts"]:
                row += [C.fmt(_cell(doc, p, start, n, "val_auroc")),
                        C.fmt(_cell(doc, p, start, n, "test_auroc"))]
        t = [r["s_per_image"] for r in doc["runs"] if r["steps"] == n and r["start"] == "encoder"]
        row.append(f"{np.mean(t):.3f}" if t else "—")
        rows.append(row)
    ch = doc.get("choice", {})
    lines = [f"# AUROC against latent-search steps ({doc['method']})\n\n",
             f"{doc['date_utc']}, {doc['machine']}; {doc.get('budget_name', 'cpu')} budget "
             f"(scale {doc['scale']:g}; izi_f "
             f"encoder {doc.get('encoder_steps', doc['budget']['encoder_steps'])} steps; search "
             f"precision {doc.get('precision', 'float32')}), seeds "
             f"0..{doc['seeds'] - 1}; {' and '.join(names[p] for p in protos)}; validation "
             f"{doc['val_size']} images per model, test {doc['n_test']} images. AUROC (%), mean ± "
             "std over the models of a protocol (digits × seeds). s/image: scoring seconds per "
             "image (encoder start, one thread).\n\n", C.markdown_table(header, rows)]
    if ch:
        gaps = "; ".join(f"{p}: " + ", ".join(f"{n} {g:+.2f}" for n, g in gp.items())
                         for p, gp in ch["val_gap_points"].items())
        lines.append(f"\nChosen on validation (encoder start): **{ch['chosen_steps']} steps**, the "
                     f"smallest count within {ch['within_points']} points of {ch['reference_steps']} "
                     f"steps on every protocol and at every larger count. Validation gaps to "
                     f"{ch['reference_steps']} steps (points): {gaps}.\n")
        paired = ch.get("paired_val_gap_points", {})
        if paired:
            hdr = ["steps"] + [f"{p}: val gap to {ch['reference_steps']} (points)" for p in paired]
            prow = []
            for n in doc["steps"]:
                cells = [str(n)]
                for p in paired:
                    c = paired[p].get(str(n))
                    cells.append("—" if c is None else f"{c['mean']:+.2f} ± {c['std']:.2f} "
                                 f"({c['within']}/{c['models']} models within)")
                prow.append(cells)
            lines.append("\nThe same gaps model by model (paired: each model's validation AUROC "
                         f"at n steps minus its own at {ch['reference_steps']}, mean ± std over "
                         "models; a model is within when its gap is >= "
                         f"-{ch['within_points']}):\n\n")
            lines.append(C.markdown_table(hdr, prow))
    tol_rows = []
    for n in doc["steps"]:
        for tol in doc.get("tols", []):
            for p in protos:
                rs = [r["tol"][f"{tol:g}"] for r in doc["runs"] if r["protocol"] == p
                      and r["start"] == "encoder" and r["steps"] == n and "tol" in r]
                if rs:
                    tol_rows.append([str(n), f"{tol:g}", p,
                                     C.fmt([r["val_auroc"] for r in rs]),
                                     C.fmt([r["test_auroc"] for r in rs]),
                                     f"{np.mean([r['mean_steps'] for r in rs]):.1f}"])
    if tol_rows:
        lines.append("\nPer-sample early stopping (patience 5), encoder start, from the recorded "
                     "searches:\n\n")
        lines.append(C.markdown_table(["steps", "tol", "protocol", "val", "test", "mean steps taken"],
                                      tol_rows))
    return "".join(lines)


def publish(args, doc) -> dict:
    md = render(doc)
    C.publish(args.out, "search_steps", doc, md)
    if not args.no_plot:
        plot(doc, os.path.join(args.out, "search_steps.png"))
    return doc


def plot(doc, path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    protos = [p for p in ("p1", "p2") if any(r["protocol"] == p for r in doc["runs"])]
    fig, axes = plt.subplots(1, len(protos), figsize=(6 * len(protos), 4.2), squeeze=False)
    xs = np.array(doc["steps"], dtype=float)
    xplot = np.where(xs == 0, 1.0, xs)  # 0 steps drawn at 1 on the log axis
    for ax, p in zip(axes[0], protos):
        for start, style in (("encoder", "-"), ("random", "--")):
            if start not in doc["starts"]:
                continue
            for key, marker in (("val_auroc", "o"), ("test_auroc", "s")):
                ms = [100 * np.mean(_cell(doc, p, start, n, key)) for n in doc["steps"]]
                ss = [100 * np.std(_cell(doc, p, start, n, key), ddof=1)
                      if len(_cell(doc, p, start, n, key)) > 1 else 0.0 for n in doc["steps"]]
                ax.errorbar(xplot, ms, yerr=ss, ls=style, marker=marker, capsize=2,
                            label=f"{start} start, {key.split('_')[0]}")
        ch = doc.get("choice")
        if ch:
            ax.axvline(max(1, ch["chosen_steps"]), color="grey", lw=0.8, ls=":")
        ax.set_xscale("log")
        ax.set_xticks(xplot)
        ax.set_xticklabels([str(int(n)) for n in xs])
        ax.set_xlabel("latent-search steps (0 = loss at the start)")
        ax.set_ylabel("AUROC (%)")
        title = {"p1": f"protocol 1, digits {','.join(map(str, doc['p1_digits']))}",
                 "p2": "protocol 2, digit {digit}, ρ {rho_percent:g} %, k {k}".format(**doc["p2"])
                 if doc.get("p2") else ""}[p]
        ax.set_title(f"{title} ({doc['seeds']} seeds)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    C.save_figure(fig, path, dpi=100)


if __name__ == "__main__":
    main()
