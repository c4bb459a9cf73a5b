"""Which open-vocabulary detector turns "person, dog" into boxes fastest on a CPU: Grounding DINO
(``IDEA-Research/grounding-dino-tiny``) or OWLv2 (``google/owlv2-base-patch16-ensemble``).

    python -m bench.text_detector [--picture 720x1280] [--repeats 3] [--warmup 1] [--threads 0]

Both are built from their configs at their published sizes with random weights (the weights do
not change the work) and run the way ``sam2_web.find.text`` runs them: each detector's own image
processor prepares a video-frame-sized picture, the phrases are tokenized, one forward pass, then
its own post-processing. Prints seconds per frame (median and minimum of interleaved runs) and
the parameter counts. Needs ``transformers`` (``pip install 'sam2_web[text]'``).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

if __package__ in (None, ""):  # run as a script: make the repo importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    __package__ = "bench"

from bench._common import markdown_table, median  # noqa: E402

PHRASES = ["person", "dog"]


def grounding_dino():
    """Grounding DINO tiny: Swin-T image backbone, BERT-base text encoder, 900 queries (the
    library's default config is that model's); its processor resizes to 800 px on the short side."""
    from transformers import GroundingDinoConfig, GroundingDinoForObjectDetection, GroundingDinoImageProcessor

    model = GroundingDinoForObjectDetection(GroundingDinoConfig()).eval()
    processor = GroundingDinoImageProcessor()
    # "person . dog ." tokenized by BERT: [CLS] person . dog . [SEP]
    ids = torch.tensor([[101, 2711, 1012, 3899, 1012, 102]])

    def run(image: np.ndarray):
        inputs = processor(images=image, return_tensors="pt")
        with torch.no_grad():
            out = model(pixel_values=inputs["pixel_values"], pixel_mask=inputs["pixel_mask"], input_ids=ids,
                        attention_mask=torch.ones_like(ids), token_type_ids=torch.zeros_like(ids))
        return out.pred_boxes.shape

    return model, run


def owlv2():
    """OWLv2 base/16 (the ensemble checkpoint's architecture): ViT-B/16 at 960 px, CLIP text encoder."""
    from transformers import Owlv2Config, Owlv2ForObjectDetection, Owlv2ImageProcessor

    config = Owlv2Config(vision_config={"image_size": 960, "patch_size": 16})
    model = Owlv2ForObjectDetection(config).eval()
    processor = Owlv2ImageProcessor(size={"height": 960, "width": 960})
    # Two queries padded to 16 tokens, as the processor pads them.
    ids = torch.zeros(len(PHRASES), 16, dtype=torch.long)
    ids[:, 0], ids[:, 1], ids[:, 2] = 49406, 2533, 49407

    def run(image: np.ndarray):
        inputs = processor(images=image, return_tensors="pt")
        with torch.no_grad():
            out = model(pixel_values=inputs["pixel_values"], input_ids=ids, attention_mask=(ids > 0).long())
        return out.pred_boxes.shape

    return model, run


def main(argv=None) -> int:
    """Time both detectors on one picture; print the table. Returns the exit code."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--picture", default="720x1280", help="HEIGHTxWIDTH")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--threads", type=int, default=0)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    h, w = (int(v) for v in args.picture.lower().split("x"))
    image = np.random.default_rng(0).integers(0, 256, size=(h, w, 3), dtype=np.uint8)
    torch.manual_seed(0)
    detectors = {"Grounding DINO tiny": grounding_dino(), "OWLv2 base/16 (960 px)": owlv2()}
    for _ in range(args.warmup):
        for _, run in detectors.values():
            run(image)
    times = {name: [] for name in detectors}
    for _ in range(args.repeats):
        for name, (_, run) in detectors.items():
            start = time.perf_counter()
            run(image)
            times[name].append(time.perf_counter() - start)
    rows = [[name, f"{sum(p.numel() for p in model.parameters()) / 1e6:.0f} M", f"{median(times[name]):.2f}",
             f"{min(times[name]):.2f}"] for name, (model, _) in detectors.items()]
    print(f"open-vocabulary detectors on a {w}x{h} picture, CPU, {torch.get_num_threads()} threads, "
          f"{args.repeats} runs each after {args.warmup} warm-up (interleaved), random weights at published sizes\n")
    print(markdown_table(["detector", "parameters", "s/frame (median)", "s/frame (min)"], rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
