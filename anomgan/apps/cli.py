"""The `anomgan` command: train, detect, evaluate, demo, bench, export.

User mistakes (a missing file, an unreadable image, a file that is not a detector, bad
options) print one line `anomgan: error: ...` and exit with status 2; `--debug` shows the
traceback instead. Ctrl-C during training leaves a resumable checkpoint (exit status 130).
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import os
import signal
import sys

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130  # Ctrl-C (SIGINT)
EXIT_TERMINATED = 143  # SIGTERM (job schedulers, docker stop): 128 + 15


class UserError(Exception):
    """A mistake the user can fix; printed as one line."""


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage mistake is one line `anomgan: error: ...` (exit status 2) like the
    other user errors, with a pointer to the command's --help instead of the usage block."""

    def error(self, message):
        print(f"anomgan: error: {message} (see `{self.prog} --help`)", file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)


def _check_out_ext(path: str) -> None:
    if not path.lower().endswith((".csv", ".json")):
        raise UserError(f"--out {path}: give a .csv or .json file name")


def _expand_images(items: list[str]) -> list[str]:
    """Files as given, folders as their image files (sub-folders included, sorted)."""
    from ..data import IMAGE_EXTENSIONS, list_images

    paths = []
    for it in items:
        if os.path.isdir(it):
            found = list_images(it, recursive=True)
            if not found:
                raise UserError(f"{it}: no images ({', '.join(IMAGE_EXTENSIONS)}) in this folder")
            paths += found
        elif os.path.isfile(it):
            paths.append(it)
        else:
            raise UserError(f"{it}: no such file or folder")
    return paths


EXIT_SKIPPED = 3  # `detect --skip-unreadable` skipped files; the others were scored and written
_CSV_FIELDS = ["name", "score", "anomalous", "note"]  # note: "" unless the score is not finite


def _write_scores(path: str, threshold, rows: list[dict]) -> None:
    """The whole JSON document of ``rows`` to ``path``, atomically (a reader never sees half)."""
    from ..fileio import atomic_write_text

    atomic_write_text(path, json.dumps({"threshold": threshold, "images": rows}, indent=2))


class _ScoresOut:
    """Where `detect` puts each batch's rows as soon as it is scored: stdout (flushed) and --out
    (.csv: the header at once, then each batch's rows appended and flushed; .json: the document
    of every row so far rewritten atomically), so an interrupted run keeps what it scored."""

    def __init__(self, path: str | None, threshold):
        self.path, self.threshold, self.rows = path, threshold, []
        self._fh = None
        if path and path.lower().endswith(".csv"):
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
            self._fh = open(path, "w", newline="", encoding="utf-8")
            self._write_csv([], header=True)
        elif path:
            _check_out_ext(path)
            _write_scores(path, threshold, [])

    def _write_csv(self, rows: list[dict], header: bool = False) -> None:
        buf = io.StringIO()  # one write per batch: a Ctrl-C cannot leave half a row
        w = csv.DictWriter(buf, fieldnames=_CSV_FIELDS, restval="", extrasaction="ignore")
        if header:
            w.writeheader()
        w.writerows(rows)
        self._fh.write(buf.getvalue())
        self._fh.flush()

    def add(self, rows: list[dict]) -> None:
        lines = []
        for r in rows:
            note = r.get("note", "")
            lines.append(f"{r['score']:.6g}\t{'ANOMALOUS' if r['anomalous'] else 'ok'}\t{r['name']}"
                         + (f"\t{note}" if note else ""))
        if lines:
            print("\n".join(lines), flush=True)
        self.rows += rows
        if self._fh is not None:
            self._write_csv(rows)
        elif self.path:
            _write_scores(self.path, self.threshold, self.rows)

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


def _train_normal(args) -> str:
    """The folder of normal training images: --normal, or --mvtec's train/good."""
    if args.mvtec is None:
        if args.normal is None:
            raise UserError("give --normal DIR (normal images) or --mvtec DIR (an MVTec-AD-style folder)")
        return args.normal
    if args.normal is not None:
        raise UserError("give --normal DIR or --mvtec DIR, not both")
    from ..data.mvtec import read_mvtec, train_good_dir

    read_mvtec(args.mvtec, train=True, test=False)  # ValueError naming what is missing
    return train_good_dir(args.mvtec)


def cmd_evaluate(args) -> int:
    from ..evaluation import evaluate, summary

    if not os.path.isfile(args.model):
        raise UserError(f"--model {args.model}: no such file")
    if args.mvtec is not None:
        if args.normal or args.anomalous or args.masks:
            raise UserError("give --mvtec DIR, or --normal DIR --anomalous DIR [--masks DIR], not both")
        folders = [("--mvtec", args.mvtec)]
    else:
        if not args.normal or not args.anomalous:
            raise UserError("give --normal DIR and --anomalous DIR (and --masks DIR for pixel metrics), "
                            "or --mvtec DIR")
        folders = [("--normal", args.normal), ("--anomalous", args.anomalous), ("--masks", args.masks)]
    for opt, folder in folders:
        if folder is not None and not os.path.isdir(folder):
            what = "not a folder" if os.path.exists(folder) else "no such folder"
            raise UserError(f"{opt} {folder}: {what}")
    if args.out and not args.out.lower().endswith(".json"):
        raise UserError(f"--out {args.out}: give a .json file name")
    for opt, path in (("--plot", args.plot), ("--hardest", args.hardest)):
        if path and not path.lower().endswith(".png"):
            raise UserError(f"{opt} {path}: give a .png file name")
    if args.batch_size < 1:
        raise UserError(f"--batch-size {args.batch_size}: must be >= 1")
    if args.compare is not None and not os.path.isfile(args.compare):
        raise UserError(f"--compare {args.compare}: no such file")
    m = evaluate(args.model, args.normal, args.anomalous, masks=args.masks, mvtec=args.mvtec,
                 batch_size=args.batch_size, out=args.out, plot=args.plot, backend=args.backend,
                 progress=not args.quiet, compare=args.compare, hardest=args.hardest)
    print(summary(m))
    for note in m["notes"]:
        print(f"note: {note}")
    for path in (args.out, args.plot, args.hardest):
        if path:
            print(f"wrote {path}")
    return 0


def _key_values(option: str, items: list[str] | None) -> dict:
    """["NAME=VALUE", ...] -> {NAME: VALUE}, each VALUE read as JSON when it parses (numbers,
    true/false, null), else kept as the string."""
    out = {}
    for kv in items or []:
        if "=" not in kv:
            raise UserError(f"{option} {kv}: expected NAME=VALUE")
        k, v = kv.split("=", 1)
        try:
            out[k] = json.loads(v)
        except json.JSONDecodeError:
            out[k] = v
    return out


def cmd_train(args) -> int:
    from ..api import train
    from ..training import TrainingInterrupted

    args.normal = _train_normal(args)
    for opt, folder in (("--normal", args.normal), ("--anomalous", args.anomalous),
                        ("--validation", args.validation)):
        if folder is not None and not os.path.isdir(folder):
            what = "not a folder" if os.path.exists(folder) else "no such folder"
            raise UserError(f"{opt} {folder}: {what}")
    if args.resume is not None and not os.path.isfile(args.resume):
        raise UserError(f"--resume {args.resume}: no such checkpoint file")
    if args.device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise UserError(f"--device {args.device}: no CUDA device is available to this torch "
                            f"(torch {torch.__version__}, CUDA {torch.version.cuda})")
    hparams = _key_values("--hparam", args.hparam)
    scoring = _key_values("--scoring", args.scoring) or None
    head = None if args.defect_head is None else (_key_values("--defect-head", args.defect_head) or True)
    seg = None if args.segmenter is None else (_key_values("--segmenter", args.segmenter) or True)
    feats = None if args.features is None else (_key_values("--features", args.features) or True)
    ckpt_dir = args.checkpoint_dir or (os.path.splitext(args.out)[0] + ".checkpoints")
    try:
        steps = args.steps if args.steps is not None or args.time_budget is not None else 2000
        det = train(args.normal, args.anomalous, method=args.method, image_size=args.size,
                    channels=args.channels, steps=steps, batch_size=args.batch_size,
                    time_budget=args.time_budget, input_mode=args.input_mode, validation=args.validation,
                    seed=args.seed, checkpoint_dir=ckpt_dir, checkpoint_every=args.checkpoint_every,
                    resume=args.resume, device=args.device, validation_fraction=args.val_fraction,
                    target_fpr=args.target_fpr, hparams=hparams, scoring=scoring,
                    defect_head=head, segmenter=seg, features=feats, progress=not args.quiet,
                    lr_decay_every=args.lr_decay_every)
    except KeyboardInterrupt as exc:
        msg = str(exc) or "training interrupted"
        if isinstance(exc, TrainingInterrupted) and exc.checkpoint:  # a checkpoint of the last finished step
            msg += f" (run the same command with --resume {exc.checkpoint})"
        stop = KeyboardInterrupt(msg)
        stop.signum = getattr(exc, "signum", None)  # main() maps SIGTERM to its exit status
        raise stop from None
    det.save(args.out)
    print(f"wrote {args.out}: {det}")
    return 0


def cmd_detect(args) -> int:
    det, paths = _detect_setup(args)
    out = _ScoresOut(args.out, det.threshold.value if det.threshold is not None else None)
    results, skipped = [], []
    try:
        for result in _detect_batches(det, paths, args, skipped):
            out.add(result.to_records())
            if args.report:
                results.append(result)
    except KeyboardInterrupt:
        raise KeyboardInterrupt(_interrupted(args, len(out.rows), len(paths), len(skipped))) from None
    except Exception as exc:
        from ..data import ImageFileError

        if isinstance(exc, ImageFileError) and out.rows and args.out:
            raise UserError(f"{_one_line(exc)} (the {len(out.rows)} images scored before it are in "
                            f"{args.out}; --skip-unreadable scores the others)") from exc
        raise
    finally:
        out.close()
    if args.out:
        print(f"wrote {args.out}")
    if args.report:
        _detect_report(args, det, results)
    if skipped:
        print(f"anomgan: {len(skipped)} of {len(paths)} images could not be read and were skipped; "
              f"the other {len(paths) - len(skipped)} were scored (exit status {EXIT_SKIPPED})", file=sys.stderr)
        return EXIT_SKIPPED
    return 0


def _detect_setup(args):
    """(detector, image paths) of `detect`, after checking the options (before any work)."""
    from ..api import load
    from ..scoring.thresholds import fixed

    if not os.path.isfile(args.model):
        raise UserError(f"--model {args.model}: no such file")
    if args.out:
        _check_out_ext(args.out)
    if args.batch_size < 1:
        raise UserError(f"--batch-size {args.batch_size}: must be >= 1")
    det = load(args.model)
    if args.threshold is not None:
        det.threshold = fixed(args.threshold)
    if args.compile == "exact":
        det.compile()
    elif args.compile == "bf16":
        import torch

        det.compile(dtype=torch.bfloat16)
        if det.compiled and det.threshold is not None and not args.quiet:
            print("anomgan: --compile bf16: scores are ~1e-3 (relative) off the float32 ones the "
                  "threshold was calibrated on; images within that of the threshold may flip",
                  file=sys.stderr)
    return det, _expand_images(args.images)


def _detect_batches(det, paths, args, skipped: list):
    """Yield the DetectionResult of each batch of ``paths`` as it is scored. A batch holding a
    file that cannot be read is scored again one file at a time: the readable ones are yielded,
    the unreadable one raises ImageFileError, or with --skip-unreadable is listed on stderr and
    appended to ``skipped``."""
    from tqdm import tqdm

    from ..data import ImageFileError

    n = args.batch_size
    for i in tqdm(range(0, len(paths), n), desc="detect", unit="batch", disable=args.quiet):
        batch = paths[i:i + n]
        try:
            result = det.detect(batch, backend=args.backend)
        except ImageFileError:
            if len(batch) == 1 and not args.skip_unreadable:
                raise
            yield from _detect_one_by_one(det, batch, args, skipped)
        else:
            yield result


def _detect_one_by_one(det, batch, args, skipped: list):
    from ..data import ImageFileError

    for p in batch:
        try:
            result = det.detect([p], backend=args.backend)
        except ImageFileError as exc:
            if not args.skip_unreadable:
                raise
            print(f"anomgan: skipped {p}: {_skip_reason(p, exc)}", file=sys.stderr, flush=True)
            skipped.append(p)
        else:
            yield result


def _skip_reason(path: str, exc: BaseException) -> str:
    """The error message without its leading `batch[0] ('PATH'): ` (the path is said already)."""
    msg = _one_line(exc)
    head, sep, tail = msg.partition(": ")
    return tail if sep and path in head else msg


def _interrupted(args, done: int, total: int, skipped: int) -> str:
    msg = f"interrupted after {done} of {total} images"
    if skipped:
        msg += f" ({skipped} skipped as unreadable)"
    if args.out:
        msg += f"; scores so far in {args.out}"
    if args.report:
        msg += f"; {args.report} not written (it is written only for a complete run)"
    return msg


def _detect_report(args, det, results) -> None:
    from ..data import to_batch
    from .report import write_report

    if not results:
        print(f"anomgan: {args.report} not written: no image could be read", file=sys.stderr)
        return
    result = _concat(results)
    images = [to_batch([p], channels=det.channels)[0] for p in result.names]
    write_report(args.report, images, result, det.describe(),
                 title=f"anomgan report: {os.path.basename(args.model)}")
    print(f"wrote {args.report}")


def _concat(results):
    import torch

    from ..scoring.result import DetectionResult

    same = len({tuple(r.maps.shape[1:]) for r in results}) == 1
    return DetectionResult(
        scores=torch.cat([r.scores for r in results]),
        maps=torch.cat([r.maps for r in results]) if same else [m for r in results for m in r.maps],
        labels=torch.cat([r.labels for r in results]),
        threshold=results[0].threshold,
        names=[n for r in results for n in (r.names or [])] or None)


def cmd_demo(args) -> int:
    from . import demo

    if args.high_res:
        return demo.run_high_res(out_dir=args.out_dir or "anomgan-demo-highres", steps=args.steps, seed=args.seed,
                                 progress=not args.quiet)
    return demo.run_mnist(out_dir=args.out_dir or "anomgan-demo", steps=args.steps, seed=args.seed,
                          digit=args.digit, progress=not args.quiet)


def cmd_bench(args) -> int:
    from .bench import run

    run(size=args.size, batch=args.batch)
    return 0


def cmd_export(args) -> int:
    from ..api import load

    if not os.path.isfile(args.model):
        raise UserError(f"--model {args.model}: no such file")
    det = load(args.model)
    try:
        det.export(args.out, format=args.format)
    except ImportError as exc:  # the optional onnx package
        raise UserError(_one_line(exc)) from exc
    print(f"wrote {args.out}: {det.method_name}, uint8 images (N, {det.channels}, "
          f"{det.image_size}, {det.image_size}) -> scores (N,), maps (N, {det.image_size}, "
          f"{det.image_size})")
    from ..export.onnx_head import beside

    for part, what in (("head", "its defect head"), ("features", "its pretrained-feature terms")):
        if getattr(det, part) is not None:
            print(f"wrote {beside(args.out, part)}: {what} (the threshold applies to the fused "
                  f"score; README, 'Export to ONNX')")
    return 0


def _add_train_parser(sub) -> None:
    """The ``train`` subcommand: its parser, arguments and handler (``func``)."""
    t = sub.add_parser("train", help="train a detector on folders of images")
    t.add_argument("--normal", help="folder of normal images (may hold a few unlabelled defects)")
    t.add_argument("--mvtec", metavar="DIR", help="instead of --normal: an MVTec-AD-style folder, trained on "
                   "its train/good images")
    t.add_argument("--anomalous", help="folder of known defective images (noisy-gan, dual-disc)")
    t.add_argument("--method", default="noisy-gan", help="noisy-gan (default), anogan, ganomaly, dual-disc")
    t.add_argument("--out", required=True, help="detector file to write, e.g. line3.anomgan")
    t.add_argument("--size", type=int, default=64, help="model input size in pixels (power of two; default 64)")
    t.add_argument("--channels", type=int, default=None, help="1 or 3 (default: from the images)")
    t.add_argument("--steps", type=int, default=None,
                   help="training steps (default 2000; with --time-budget: the most steps, default unlimited)")
    t.add_argument("--time-budget", default=None, metavar="DURATION",
                   help="wall-clock training budget, e.g. 90s, 20m, 1.5h (the steps run are stored in the detector)")
    t.add_argument("--input-mode", choices=("resize", "tile"), default=None,
                   help="images larger than --size: resize them, or keep native resolution and tile "
                        "(train on random crops, detect by tiles); default: resize if the images are "
                        "not --size already. Stored in the detector, so detect reads images the same way")
    t.add_argument("--validation", metavar="DIR", default=None,
                   help="folder of normal images to calibrate the threshold on (full size for a tiled "
                        "detector); default: a --val-fraction of --normal")
    t.add_argument("--batch-size", type=int, default=64)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--device", default="cpu", help="cpu or cuda")
    t.add_argument("--checkpoint-dir", help="where checkpoints go (default: next to --out)")
    t.add_argument("--checkpoint-every", type=int, default=200)
    t.add_argument("--lr-decay-every", type=int, default=None, metavar="STEPS",
                   help="halve the learning rate every STEPS steps (default: constant)")
    t.add_argument("--resume", help="checkpoint file to continue from")
    t.add_argument("--val-fraction", type=float, default=0.1,
                   help="share of normal images kept for threshold calibration (default 0.1)")
    t.add_argument("--target-fpr", type=float, default=0.05,
                   help="false-positive rate on the validation images that sets the threshold")
    t.add_argument("--hparam", action="append", metavar="NAME=VALUE", help="method hyper-parameter (repeatable)")
    t.add_argument("--scoring", action="append", metavar="NAME=VALUE",
                   help="scoring setting stored in the detector (repeatable), e.g. --scoring "
                        "image_score=patch_topn --scoring patch=32 --scoring map_norm=position; "
                        "names: anomgan.ScoringConfig")
    t.add_argument("--defect-head", nargs="*", metavar="NAME=VALUE", default=None,
                   help="also learn from the --anomalous images how to read the residual maps (a "
                        "small CNN ensemble fused with the image score; anomgan.scoring.defect_head); "
                        "optional settings, e.g. --defect-head size=192 paste=60 weight=3")
    t.add_argument("--segmenter", nargs="*", metavar="NAME=VALUE", default=None,
                   help="also learn per-pixel defect maps from synthetic anomalies planted in the "
                        "normal images (a small U-Net whose maps replace the residual; needs no "
                        "labelled defects; anomgan.scoring.segmenter); optional settings, e.g. "
                        "--segmenter steps=3000 inputs=image+residual")
    t.add_argument("--features", nargs="*", metavar="NAME=VALUE", default=None,
                   help="also fuse a frozen ImageNet backbone's view of each image into the image "
                        "score (a logistic regression of its features on the --anomalous images and "
                        "a nearest-normal-patch distance; anomgan.scoring.feature_score; needs pip "
                        "install anomgan[pretrained]); optional settings, e.g. --features bank=20000")
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    t.set_defaults(func=cmd_train)


def _add_detect_parser(sub) -> None:
    """The ``detect`` subcommand: its parser, arguments and handler (``func``)."""
    d = sub.add_parser("detect", help="score images with a detector", epilog=(
        "Scores are printed and written to --out as each batch finishes, so a Ctrl-C (exit status "
        f"{EXIT_INTERRUPTED}) keeps what was scored; --report is written only for a complete run. Exit "
        f"status: 0 done, {EXIT_USER_ERROR} a mistake (e.g. an unreadable image), {EXIT_SKIPPED} done "
        "but --skip-unreadable skipped files."))
    d.add_argument("--model", required=True, help="detector file written by `anomgan train`")
    d.add_argument("images", nargs="+", help="image files or folders")
    d.add_argument("--out", help="write scores to a .csv or .json file")
    d.add_argument("--report", help="write a self-contained HTML report")
    d.add_argument("--threshold", type=float, help="override the detector's threshold")
    d.add_argument("--batch-size", type=int, default=16, help="images per call (default 16)")
    d.add_argument("--backend", help="kernel backend: torch, cpp, triton, cuda (default: fastest)")
    d.add_argument("--compile", choices=("exact", "none", "bf16"), default="exact",
                   help="ganomaly / dual-disc networks: exact (default) scores through the inference "
                        "copy (BatchNorm folded, CPU-friendly layers; equal to the plain path within "
                        "1e-5, 1.3-1.5x faster on a CPU), none the plain path, bf16 the copy in "
                        "bfloat16 (faster again on CPUs with AVX512-BF16/AMX and on GPUs; scores ~1e-3 "
                        "relative off). int8: the Python API (Detector.compile(dtype=torch.qint8, "
                        "calibration=...)), which needs normal images and a new threshold")
    d.add_argument("--skip-unreadable", action="store_true",
                   help="score the other images when a file cannot be read, list the skipped ones on "
                        f"stderr and exit with status {EXIT_SKIPPED} (default: stop with status "
                        f"{EXIT_USER_ERROR})")
    d.add_argument("--quiet", action="store_true")
    d.set_defaults(func=cmd_detect)


def _add_demo_parser(sub) -> None:
    """The ``demo`` subcommand: its parser, arguments and handler (``func``)."""
    m = sub.add_parser("demo", help="train and detect on real data shipped with anomgan (offline)")
    m.add_argument("--high-res", action="store_true",
                   help="1024x1024 surfaces (scikit-image photographs) with planted synthetic defects")
    m.add_argument("--out-dir", default=None, help="where the detectors and report go "
                   "(default anomgan-demo/, or anomgan-demo-highres/ with --high-res)")
    m.add_argument("--steps", type=int, default=None, help="training steps (default: the demo's budget)")
    m.add_argument("--digit", type=int, default=0, help="MNIST digit taken as normal (default 0)")
    m.add_argument("--seed", type=int, default=0)
    m.add_argument("--quiet", action="store_true")
    m.set_defaults(func=cmd_demo)


def _add_bench_parser(sub) -> None:
    """The ``bench`` subcommand: its parser, arguments and handler (``func``)."""
    b = sub.add_parser("bench", help="time the kernels against their pure-PyTorch references")
    b.add_argument("--size", type=int, default=1024)
    b.add_argument("--batch", type=int, default=8)
    b.set_defaults(func=cmd_bench)


def _add_export_parser(sub) -> None:
    """The ``export`` subcommand: its parser, arguments and handler (``func``)."""
    e = sub.add_parser("export", help="write a detector as an ONNX file that runs without anomgan",
                       epilog="Single-pass methods only (ganomaly, dual-disc). The file takes uint8 "
                              "images of the model size and returns scores and maps; the threshold "
                              "and settings are stored as metadata (see anomgan/export/onnx.py).")
    e.add_argument("--model", required=True, help="detector file written by `anomgan train`")
    e.add_argument("--out", required=True, help="file to write, e.g. line3.onnx")
    e.add_argument("--format", default="onnx", help="onnx (the default and only format)")
    e.set_defaults(func=cmd_export)


def _add_evaluate_parser(sub) -> None:
    """The ``evaluate`` subcommand: its parser, arguments and handler (``func``)."""
    v = sub.add_parser("evaluate", help="measure a detector on labelled images (AUROC, AUPR, F1, pixel metrics)",
                       epilog="MVTec-AD-style folder (MVTec AD, VisA, MPDD, BTAD exports): DIR/test/good/*, "
                              "DIR/test/<defect>/*, DIR/ground_truth/<defect>/<name>_mask.png. Masks named "
                              "<name>_mask.png or <name>.png like their images; pixel > 0 = defect.")
    v.add_argument("--model", required=True, help="detector file written by `anomgan train`")
    v.add_argument("--normal", metavar="DIR", help="folder of defect-free images")
    v.add_argument("--anomalous", metavar="DIR", help="folder of defective images")
    v.add_argument("--masks", metavar="DIR", help="folder of the defective images' masks (pixel metrics)")
    v.add_argument("--mvtec", metavar="DIR", help="instead: an MVTec-AD-style folder (its test/ and ground_truth/)")
    v.add_argument("--out", help="write the metrics to a .json file")
    v.add_argument("--plot", help="write the ROC and precision-recall curves to a .png file")
    v.add_argument("--hardest", metavar="PNG", help="write the lowest-scored anomalous and highest-scored "
                   "normal images, with their maps, to a .png file")
    v.add_argument("--batch-size", type=int, default=16, help="images per call (default 16)")
    v.add_argument("--compare", metavar="MODEL", help="another detector file: score the same images "
                   "with it and test the AUROC difference (DeLong, paired)")
    v.add_argument("--backend", help="kernel backend: torch, cpp, triton, cuda (default: fastest)")
    v.add_argument("--quiet", action="store_true", help="no progress bar")
    v.set_defaults(func=cmd_evaluate)


def build_parser() -> argparse.ArgumentParser:
    """The ``anomgan`` argument parser: ``--debug`` and one subcommand parser per command, each
    setting ``func`` (the handler taking the parsed arguments and returning the exit status)."""
    p = _Parser(prog="anomgan", description="GAN-based visual anomaly detection "
                                "for industrial inspection.")
    p.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    _add_train_parser(sub)
    _add_detect_parser(sub)
    _add_demo_parser(sub)
    _add_bench_parser(sub)
    _add_export_parser(sub)
    _add_evaluate_parser(sub)
    return p


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt as exc:
        print(f"anomgan: {_one_line(exc) or 'interrupted'}", file=sys.stderr)
        signum = getattr(exc, "signum", None)  # the signal that stopped training, if any
        return EXIT_TERMINATED if signum == signal.SIGTERM else EXIT_INTERRUPTED
    except Exception as exc:  # noqa: BLE001 - user-facing boundary
        if args.debug:
            raise
        from ..fileio import BundleError, WriteError

        # ImportError: an optional package (its message names the pip command) is missing
        user = (UserError, BundleError, WriteError, ValueError, TypeError, FileNotFoundError, PermissionError,
                IsADirectoryError, NotADirectoryError, ImportError)
        if isinstance(exc, user):
            print(f"anomgan: error: {_one_line(exc)}", file=sys.stderr)
            return EXIT_USER_ERROR
        print(f"anomgan: internal error: {type(exc).__name__}: {_one_line(exc)} (run with --debug for the "
              "traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
