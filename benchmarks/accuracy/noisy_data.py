"""Protocol 2 (Kimura & Yanagihara 2018): anomaly detection from noisy normal training data.

For each normal digit d, contamination rate rho and number k of labelled anomalies:
* training normal set: digit-d training images (less the validation hold-out) plus unlabelled
  other-digit images making up a fraction rho of it (n_noise = round(rho / (1 - rho) * n_d));
* labelled anomalies: k other-digit training images (disjoint from the noise), given to
  noisy-gan as its anomaly batches (k-means balanced sampler); anogan never sees them;
* validation (model and threshold choice): 10 % of the digit-d training images, held out,
  plus as many other-digit training images used nowhere else (labelled anomalous);
* test: the test set (a fixed random subset under the CPU budget), anomaly = digit != d.
noisy-gan with k = 0 trains exactly AnoGAN's game (no anomaly term), so it is not rerun: its
cell repeats anogan's number, marked "(= anogan)".

Writes noisy_data.json, noisy_data.md and noisy_data.png (AUROC against rho, one line per
method and k) into --out.

    python benchmarks/accuracy/noisy_data.py --digits 0 --rhos 5 --ks 500 --seeds 3
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common as C  # noqa: E402

METHODS = ("anogan", "noisy-gan")


def build_sets(x, y, digit: int, rho: float, k: int, seed: int, val_fraction: float = 0.1):
    """Index sets of the protocol for one (digit, rho, k, seed); see the module doc."""
    g = torch.Generator().manual_seed(1000 * seed + 17 * digit + 1)
    own = torch.nonzero(y == digit).flatten()
    other = torch.nonzero(y != digit).flatten()
    own = own[torch.randperm(len(own), generator=g)]
    other = other[torch.randperm(len(other), generator=g)]
    n_val = max(1, int(round(val_fraction * len(own))))
    val_normal, train_own = own[:n_val], own[n_val:]
    n_noise = int(round(rho / (1.0 - rho) * len(train_own))) if rho > 0 else 0
    val_anom = other[:n_val]
    noise = other[n_val:n_val + n_noise]
    labelled = other[n_val + n_noise:n_val + n_noise + k]
    if len(labelled) < k:
        raise ValueError(f"k={k}: only {len(labelled)} other-digit images left")
    return {"normal": torch.cat([train_own, noise]), "noise": noise, "labelled": labelled,
            "val": torch.cat([val_normal, val_anom]),
            "val_y": np.r_[np.zeros(len(val_normal)), np.ones(len(val_anom))].astype(np.int64)}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    C.add_common_args(p)
    p.add_argument("--digits", default="0", help="normal digits, comma-separated (default 0)")
    p.add_argument("--rhos", default="0,1,5,10", help="contamination rates in %% (default 0,1,5,10)")
    p.add_argument("--ks", default="0,50,500", help="numbers of labelled anomalies (default 0,50,500)")
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--no-plot", action="store_true")
    p.add_argument("--render-only", nargs="+", metavar="JSON",
                   help="train nothing: merge the runs of these noisy_data.json files (e.g. one "
                        "process per rho) and write the table and plot into --out")
    args = p.parse_args(argv)
    if args.render_only:
        return render_only(args)
    C.setup(args)
    digits = [int(d) for d in args.digits.split(",")]
    rhos = [float(r) for r in args.rhos.split(",")]
    ks = [int(k) for k in args.ks.split(",")]
    methods = [m for m in args.methods.split(",") if m]
    for m in methods:
        if m not in METHODS:
            p.error(f"--methods: {m!r} is not one of {METHODS}")

    xtr, ytr, xte, yte, budgets = C.load_protocol_data(args, methods)
    doc = {**C.run_header(args, {m: b.describe() for m, b in budgets.items()}),
           "protocol": "noisy_data", "digits": digits, "rhos_percent": rhos, "ks": ks,
           "n_test": int(len(yte)), "metric": C.metric_key(args), "runs": []}
    t0 = time.time()
    for d in digits:
        test_y = (yte != d).numpy().astype(np.int64)
        for rho in rhos:
            for k in ks:
                for m in methods:
                    if m == "anogan" and k != ks[0]:
                        continue  # anogan ignores labelled anomalies: one run per rho
                    if m == "noisy-gan" and k == 0:
                        continue  # identical to anogan (module doc)
                    for seed in range(args.seeds):
                        s = build_sets(xtr, ytr, d, rho / 100.0, k, seed)
                        anom = xtr[s["labelled"]] if (m == "noisy-gan" and k > 0) else None
                        r = C.train_select_score(
                            m, budgets[m], normal=xtr[s["normal"]], anomalous=anom,
                            anomaly_labels=None, val_x=xtr[s["val"]], val_y=s["val_y"],
                            test_x=None if args.val_only else xte, test_y=test_y, seed=seed,
                            device=args.device)
                        r.pop("_detector")
                        r.update({"digit": d, "rho_percent": rho, "k": k if m == "noisy-gan" else 0,
                                  "n_noise": int(len(s["noise"]))})
                        doc["runs"].append(r)
                        print(f"digit {d} rho {rho:g}% k {r['k']} {m} seed {seed}: {C.describe_run(r)}",
                              flush=True)
                        C.write_outputs(args.out, "noisy_data", doc, render(doc, ks, rhos, digits))
    doc["elapsed_s"] = round(time.time() - t0, 1)
    return publish(args, doc)


def render_only(args) -> dict:
    return publish(args, C.merge_docs(args.render_only, ("digits", "rhos_percent", "ks")))


def publish(args, doc) -> dict:
    """Write the final JSON, table and (unless --no-plot) plot into --out; print the table."""
    md = render(doc, doc["ks"], doc["rhos_percent"], doc["digits"])
    C.publish(args.out, "noisy_data", doc, md)
    if not args.no_plot:
        plot(doc, doc["ks"], doc["rhos_percent"], os.path.join(args.out, "noisy_data.png"))
    return doc


def cell(doc, m, d, rho, k):
    kk = k if m == "noisy-gan" else 0
    v = [r[doc.get("metric", "test_auroc")] for r in doc["runs"]
         if r["method"] == m and r["digit"] == d and r["rho_percent"] == rho and r["k"] == kk]
    return v


def render(doc, ks, rhos, digits) -> str:
    lines = [f"# Protocol 2: noisy training data (Kimura & Yanagihara)\n",
             f"{doc['date_utc']}, {doc['machine']}; budget `{doc['budget']}`, seeds "
             f"0..{doc['seeds'] - 1}, test images {doc['n_test']}. "
             f"{C.metric_title(doc.get('metric', 'test_auroc'))} (%) mean ± std over seeds; "
             "rho = share of unlabelled other digits in the normal training set, k = labelled "
             "anomalies (noisy-gan only).\n"]
    for d in digits:
        header = ["method", "k"] + [f"ρ = {r:g} %" for r in rhos]
        rows = []
        if any(r["method"] == "anogan" for r in doc["runs"]):
            rows.append(["anogan", "—"] + [C.fmt(cell(doc, "anogan", d, r, 0)) for r in rhos])
        if any(r["method"] == "noisy-gan" for r in doc["runs"]) or 0 in ks:
            for k in ks:
                if k == 0:
                    vals = [C.fmt(cell(doc, "anogan", d, r, 0)) for r in rhos]
                    rows.append(["noisy-gan", "0"] + [f"{v} (= anogan)" if v != "—" else v for v in vals])
                else:
                    rows.append(["noisy-gan", str(k)] + [C.fmt(cell(doc, "noisy-gan", d, r, k)) for r in rhos])
        lines.append(f"\n## normal digit {d}\n\n" + C.markdown_table(header, rows))
    return "".join(lines)


def plot(doc, ks, rhos, path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    digits = doc["digits"]
    fig, axes = plt.subplots(1, len(digits), figsize=(5 * len(digits), 4), squeeze=False)
    for ax, d in zip(axes[0], digits):
        series = [("anogan", 0)] + [("noisy-gan", k) for k in ks if k > 0]
        for m, k in series:
            xs, ms, ss = [], [], []
            for r in rhos:
                v = cell(doc, m, d, r, k)
                if v:
                    mu, sd = C.mean_std(v)
                    xs.append(r), ms.append(100 * mu), ss.append(100 * sd)
            if xs:
                label = "anogan (= noisy-gan k=0)" if m == "anogan" else f"noisy-gan k={k}"
                ax.errorbar(xs, ms, yerr=ss, marker="o", capsize=3, label=label)
        ax.set_xlabel("ρ: unlabelled anomalies in the normal training set (%)")
        ax.set_ylabel(f"{C.metric_title(doc.get('metric', 'test_auroc')).split(' (')[0]} (%)")
        ax.set_title(f"normal digit {d} ({doc['budget']} budget, {doc['seeds']} seeds)")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    C.save_figure(fig, path, dpi=100)


if __name__ == "__main__":
    main()
