"""``lgdnet detect``: action tubes in one video with a trained detector (Sec. 5.6)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "detect",
        help="detect action tubes in a video with a trained LGD-3D detector",
        description=(
            "Score every proposal of every frame of VIDEO with a detector checkpoint (an "
            "LGD-3D backbone with an ROI head on x_L, Sec. 5.6), link the scored boxes into "
            "action tubes (Saha et al., BMVC 2016), and write the tubes and frame detections "
            "as a detections JSON file and an annotated MP4. Class names come from the "
            "checkpoint."
        ),
    )
    parser.add_argument("video", metavar="VIDEO", help="video file or folder of frames")
    parser.add_argument("--checkpoint", required=True, metavar="CKPT",
                        help="detector checkpoint (stage1_best.safetensors of a detector run)")
    parser.add_argument("--proposals", required=True, metavar="FILE",
                        help="per-frame proposals (.json or .npz, lgdnet's proposals format)")
    parser.add_argument("--video-name", default=None, metavar="NAME",
                        help="the video's key in the proposals file (default: the only video, "
                             "or the one named like VIDEO: 'folder/stem' or 'stem')")
    parser.add_argument("--out", default=".", metavar="DIR",
                        help="where STEM.detections.json and STEM.detections.mp4 go "
                             "(default: the current folder)")
    parser.add_argument("--batch-size", type=int, default=16, help="clips per forward pass")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    parser.add_argument("--no-video", action="store_true", help="skip the annotated video")
    parser.set_defaults(func=run)


def _video_key(proposals: dict, video: str, name: str | None, source: str) -> str:
    from lgdnet.errors import LgdnetError

    if name is not None:
        if name not in proposals:
            raise LgdnetError(f"{source}: no proposals for video {name!r} (--video-name)")
        return name
    if len(proposals) == 1:
        return next(iter(proposals))
    path = Path(video)
    stem = path.name if path.is_dir() else path.stem
    for key in (f"{path.parent.name}/{stem}", stem):
        if key in proposals:
            return key
    raise LgdnetError(f"{source}: holds {len(proposals)} videos and none is named "
                      f"{path.parent.name}/{stem} or {stem}; pass --video-name")


def run(args: argparse.Namespace) -> int:
    from lgdnet.data.detection_annotations import load_proposals
    from lgdnet.detection.inference import detect_video
    from lgdnet.detection.io import save_detections
    from lgdnet.detection.training import clip_spec_from_config, load_detector
    from lgdnet.errors import LgdnetError

    if args.batch_size < 1:
        raise LgdnetError(f"--batch-size must be >= 1, got {args.batch_size}")
    if not os.path.exists(args.video):
        raise LgdnetError(f"{args.video}: video not found")
    proposals = load_proposals(args.proposals)
    key = _video_key(proposals, args.video, args.video_name, args.proposals)
    detector, config, classes = load_detector(args.checkpoint, device=args.device)
    tubes, frames = detect_video(detector, args.video, proposals[key], video=key,
                                 spec=clip_spec_from_config(config), batch_size=args.batch_size)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = Path(args.video).name if Path(args.video).is_dir() else Path(args.video).stem
    detections = out / f"{stem}.detections.json"
    save_detections(detections, tubes, frames, meta={
        "checkpoint": os.fspath(args.checkpoint), "video": os.fspath(args.video),
        "video_name": key, "classes": classes})
    print(f"{len(tubes)} tubes, {len(frames)} frame detections of {key} -> {detections}")
    for tube in sorted(tubes, key=lambda t: -t.score)[:5]:
        print(f"  {classes[tube.label]:<20} score {tube.score:.3f}  frames "
              f"{tube.start}-{tube.end}")
    if not args.no_video:
        from lgdnet.detection.visualize import write_annotated_video

        visual = write_annotated_video(out / f"{stem}.detections.mp4", args.video, tubes, classes)
        print(f"annotated video -> {visual}")
    return 0
