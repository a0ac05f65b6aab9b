"""``lgdnet eval-detection``: frame-mAP and video-mAP of a detections file (Sec. 5.6, Table 7)."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "eval-detection",
        help="frame-mAP and video-mAP of action tubes against ACT ground truth",
        description=(
            "Evaluate spatio-temporal action detections (a detections JSON file of tubes and "
            "per-frame boxes) on the test videos of one split of an ACT-layout ground-truth "
            "pickle (JHMDB-GT.pkl, UCF101v2-GT.pkl). Reports frame-mAP at IoU 0.5 and "
            "video-mAP at the paper's Table 7 thresholds: 0.2 and 0.5 for J-HMDB (the file "
            "with 3 splits), 0.05, 0.1, 0.2 and 0.3 for UCF101-24. Detections on videos "
            "outside the split's test list are ignored. See docs/detection.md."
        ),
    )
    parser.add_argument("gt", metavar="GT.pkl", help="ground-truth pickle in the ACT layout")
    parser.add_argument("detections", metavar="DETECTIONS.json",
                        help='{"tubes": [...], "frames": [...]} (see docs/detection.md)')
    parser.add_argument("--split", type=int, required=True, metavar="N",
                        help="1-based split whose test videos are evaluated (J-HMDB 1..3, "
                             "UCF101-24 1)")
    parser.add_argument("--thresholds", nargs="+", type=float, default=None, metavar="DELTA",
                        help="video-mAP spatio-temporal IoU thresholds (default: the "
                             "dataset's, see above)")
    parser.add_argument("--per-class", action="store_true",
                        help="also print every class's APs")
    parser.add_argument("--json", action="store_true",
                        help='end with one JSON line {"frame_mAP": {...}, "video_mAP": {...}}')
    parser.set_defaults(func=run)


def _percent(value: float) -> str:
    return f"{100 * value:6.2f}"


def _print_table(result: dict, labels: list[str], per_class: bool) -> None:
    rows = [("frame-mAP", key, value) for key, value in result["frame_mAP"].items()]
    rows += [("video-mAP", key, value) for key, value in result["video_mAP"].items()]
    print(f"{'metric':<10} {'IoU':>5} {'mAP %':>7}")
    for name, key, value in rows:
        print(f"{name:<10} {key:>5} {_percent(value):>7}")
    if not per_class:
        return
    classes = result["per_class"]
    width = max(len("class"), *(len(name) for name in classes))
    columns = [("frame_AP", "frame", key) for key in result["frame_mAP"]]
    columns += [("video_AP", "video", key) for key in result["video_mAP"]]
    heads = [f"{kind}@{key}" for _, kind, key in columns]
    print()
    print(f"{'class':<{width}} {'tubes':>5} " + " ".join(f"{head:>10}" for head in heads))
    for name, entry in classes.items():
        values = " ".join(f"{_percent(entry[field][key]):>10}" for field, _, key in columns)
        print(f"{name:<{width}} {entry['num_gt_tubes']:>5} {values}")
    left_out = len(labels) - len(classes)
    if left_out:
        print(f"({left_out} of {len(labels)} classes have no ground truth in this split: left "
              "out)")


def run(args: argparse.Namespace) -> int:
    import json

    from lgdnet.data.detection_annotations import load_detection_gt
    from lgdnet.detection.evaluation import evaluate_detections, plural
    from lgdnet.detection.io import load_detections

    gt = load_detection_gt(args.gt)
    gt.split_videos(args.split, "test")  # a bad split fails before the detections are read
    tubes, frames = load_detections(args.detections, gt)
    result = evaluate_detections(gt, tubes, frames, args.split, args.thresholds)

    ignored = result["ignored"]
    print(f"ground truth: {args.gt}, split {args.split}: "
          f"{plural(result['num_test_videos'], 'test video')}, {len(result['per_class'])} of "
          f"{len(gt.labels)} classes with ground truth")
    print(f"detections:   {args.detections}: {plural(result['num_tubes'], 'tube')} and "
          f"{plural(result['num_frame_detections'], 'frame detection')} on test videos ("
          f"{plural(ignored['tubes'], 'tube')} and {plural(ignored['frames'], 'frame detection')}"
          " elsewhere ignored)")
    print()
    _print_table(result, gt.labels, args.per_class)
    if args.json:
        print(json.dumps({"frame_mAP": result["frame_mAP"], "video_mAP": result["video_mAP"]}))
    return 0
