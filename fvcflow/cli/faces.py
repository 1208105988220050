"""``fvc faces VIDEO... [--json]``: the face tracks of videos outside the lake.

The tracker of the ``faces`` stage (:mod:`fvcflow.stages.facetrack`) with the settings'
``faces.*``: per video, its tracks on the stage 2 sample of frames, frame indices in decode
order, coordinates in the video's own pixels. Each file is tracked independently: an unreadable
one prints an error line (to stderr) and the others are still tracked; the exit code is 1 when
any file failed. A video without a face has no track (not an error).
"""

from __future__ import annotations

import json
import sys


def register(sub) -> None:
    """Add the ``faces`` subcommand to the ``fvc`` parser."""
    p = sub.add_parser("faces", help="track the faces of videos (boxes, landmarks, scores)",
                       description="Detect faces on every faces.every-th sampled frame, link them into "
                                   "tracks, interpolate and smooth them, keep the faces.max_tracks longest "
                                   "x largest, and print each video's tracks.")
    p.add_argument("videos", nargs="+", metavar="VIDEO", help="video files")
    p.add_argument("--json", action="store_true",
                   help='one JSON document on stdout: [{"path", "detector", "tracks": [{"track", "frames": '
                        '[{"frame", "box": [x, y, w, h], "score", "landmarks": [[x, y] x 5]}]}]}]')
    p.set_defaults(func=run)


def tracks_document(path: str, detector: str, table) -> dict:
    """One video's entry of the ``--json`` document from its tracks table."""
    from fvcflow.stages.facetrack import LANDMARKS

    tracks = []
    for k in sorted(set(table["track"].to_list())):
        rows = table.filter(table["track"] == k).sort("frame").to_dicts()
        tracks.append({"track": int(k), "frames": [
            {"frame": int(r["frame"]), "box": [round(r[c], 2) for c in ("x", "y", "w", "h")],
             "score": round(r["score"], 4),
             "landmarks": [[round(r[f"{n}_x"], 2), round(r[f"{n}_y"], 2)] for n in LANDMARKS]}
            for r in rows]})
    return {"path": path, "detector": detector, "tracks": tracks}


def run(args) -> int:
    from fvcflow.errors import FvcError
    from fvcflow.stages.facetrack import fallback_note, make_detector, track_video
    from fvcflow.video.limits import bounded

    s = args.settings
    detector = make_detector(s.faces.detector, s.features.face_model, max_side=s.faces.max_side)
    note = fallback_note(detector)
    if note:
        print(note, file=sys.stderr)
    out, failed = [], 0
    for path in args.videos:
        try:
            with bounded(s.limits.video_limits()):
                table, summary = track_video(path, detector, every=s.faces.every,
                                             max_tracks=s.faces.max_tracks, full_every=s.faces.full_every)
        except FvcError as exc:
            error = str(exc)
        except Exception as exc:  # noqa: BLE001 - one bad file must not stop the others; say what happened
            error = f"{path}: {type(exc).__name__}: {exc}"
        else:
            doc = tracks_document(path, detector.name, table)
            out.append(doc)
            if not args.json:
                print(_describe(doc, summary))
            continue
        failed += 1
        print(f"error: {error}", file=sys.stderr)
        out.append({"path": path, "detector": detector.name, "tracks": [], "error": error})
    if args.json:
        print(json.dumps(out, indent=2))
    return 1 if failed else 0


def _describe(doc: dict, summary: dict) -> str:
    lines = [f"{doc['path']}: {len(doc['tracks'])} face track(s) on {summary['n_sampled']} sampled frames "
             f"({summary['width']}x{summary['height']}), detector {doc['detector']}"]
    for t in doc["tracks"]:
        fr = t["frames"]
        w = sum(f["box"][2] for f in fr) / len(fr)
        h = sum(f["box"][3] for f in fr) / len(fr)
        score = sum(f["score"] for f in fr) / len(fr)
        lines.append(f"  track {t['track']}: frames {fr[0]['frame']}-{fr[-1]['frame']} ({len(fr)} sampled), "
                     f"mean box {w:.0f}x{h:.0f} px, first at ({fr[0]['box'][0]:.0f}, {fr[0]['box'][1]:.0f}), "
                     f"mean score {score:.2f}")
    if not doc["tracks"]:
        lines.append("  no face found")
    return "\n".join(lines)
