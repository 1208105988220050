"""``fvc predict VIDEO... [--model NAME_OR_URI] [--json]``: probability of fake for new videos.

A deep model trained on face clips names, in ``face_track``, the face track whose clips gave the
score (the max over tracks). Each file is scored independently: an unreadable one prints an error
line (to stderr) and the others are still scored; the exit code is 1 when any file failed.
"""

from __future__ import annotations

import json
import sys

from fvcflow.cli.options import add_model


def register(sub) -> None:
    """Add the ``predict`` subcommand to the ``fvc`` parser."""
    p = sub.add_parser("predict", help="score new videos with the trained detector",
                       description="Score each video with the model (the pipeline's features for a feature "
                                   "model; letterboxed clips for a deep model) and print the probability "
                                   "that it is fake, with the model and its version. The registered "
                                   "fvc-detector's probabilities are calibrated (on grouped out-of-fold "
                                   "predictions) and the output says so.")
    p.add_argument("videos", nargs="+", metavar="VIDEO", help="video files")
    add_model(p)
    p.add_argument("--allow-external-model", action="store_true",
                   help="load a --model URI from outside this work dir's registry (another store, a "
                        "folder elsewhere, s3://, https://); refused without it")
    p.add_argument("--json", action="store_true", help="one JSON document on stdout (with the evidence: "
                                                       "the features that moved each score most)")
    p.set_defaults(func=run)


def run(args) -> int:
    from fvcflow.detector.evidence import explain
    from fvcflow.detector.predict import load_detector, scoring_options
    from fvcflow.errors import FvcError

    settings = args.settings
    lake = settings.lake()
    det = load_detector(lake, args.model or settings.train.registered_name,
                        tracking_uri=settings.train.tracking_uri, allow_external=args.allow_external_model)
    out, failed = [], 0
    for path in args.videos:
        rec = {"path": path, "prob_fake": None, "model": det.model_name, "registered_name": det.name,
               "version": det.version, "calibrated": det.calibration is not None,
               "calibration": det.calibration, "threshold": det.threshold,
               "threshold_rule": det.threshold_rule, "verdict": None, "face_track": None, "error": None,
               "evidence": None}
        try:
            got = explain(det, path, **scoring_options(settings))
            rec["prob_fake"] = got.prob_fake
            rec["verdict"] = det.verdict(got.prob_fake)
            rec["evidence"] = {"method": got.method, "approximate": got.approximate,
                               "top_features": got.top_features}
            # a deep model on face clips: the face track whose clips gave the video's score
            rec["face_track"] = getattr(det.video, "last_track", None)
        except FvcError as exc:
            rec["error"] = str(exc)
        except Exception as exc:  # one bad file must not stop the others; say what happened
            rec["error"] = f"{path}: {type(exc).__name__}: {exc}"
        if rec["error"]:
            failed += 1
            print(f"error: {rec['error']}", file=sys.stderr)
        out.append(rec)
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        for rec in out:
            if rec["error"] is None:
                how = f"calibrated ({det.calibration})" if det.calibration else "uncalibrated"
                face = "" if rec["face_track"] is None else f"\tface track {rec['face_track']}"
                print(f"{rec['path']}\tP(fake)={rec['prob_fake']:.4f} {how}\t{rec['verdict']} at "
                      f"threshold {det.threshold:.4g}\tmodel={rec['model']}"
                      f"\t{rec['registered_name']} v{rec['version']}{face}")
    return 1 if failed else 0
