"""Record SMHI `ifcb-pytorch-classify`'s model inputs for real ROIs into `smhi.npz` (tests/test_preprocess_peers.py).

How they were made: PyTorch 2.13.0 (CPU build) and Pillow 13.0.0 in a virtualenv of their own (torchvision is not
needed: each step below is what its torchvision transform runs on a tensor), on the ROIs of the shared real bins
(`../shared/data/ifcb/bins`, read by ifcbflow's bin reader), every `STEP`-th ROI of each bin:

    python -m venv /tmp/peer && /tmp/peer/bin/pip install torch==2.13.0 numpy pillow==13.0.0
    PYTHONPATH=.:$IFCBFLOW_SITE_PACKAGES /tmp/peer/bin/python tests/peer_reference/make_smhi.py  # repository root;
    # IFCBFLOW_SITE_PACKAGES: the site-packages of ifcbflow's own environment (the bin reader's dependencies)

SMHI's evaluation transform `dataset_squarepad` at 224 x 224 (`ifcb_classify.data.datasets.build_transform`): the
ROI as an RGB PIL image of equal channels, `Grayscale(num_output_channels=3)`, `ToImage`, `ToDtype(float32,
scale=True)` (divide by 255), `SquarePad` (the mean of the four corner pixels of channel 0, padded by
`int((long - short) / 2)` on each side of the short side, `F.pad(..., fill, "constant")`), then `Resize((224, 224),
antialias=True)` (on a float tensor: `torch.nn.functional.interpolate(mode="bilinear", align_corners=False,
antialias=True)`). Its optional `Normalize(mean, std)` is an affine map applied by the test. The three channels are
equal; one is stored (float32, (n, 224, 224)).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from tests.preprocess_support import bin_rois_by_bin

SIZE, STEP = 224, 2
OUT = Path(__file__).with_name("smhi.npz")


def smhi_input(image: np.ndarray) -> np.ndarray:
    """SMHI's `dataset_squarepad` model input (3, SIZE, SIZE) float32 for one uint8 grey ROI."""
    x = torch.from_numpy(np.repeat(image[None], 3, axis=0)).to(torch.float32).div(255)
    height, width = x.shape[-2:]
    side = max(height, width)
    hp, vp = int((side - width) / 2), int((side - height) / 2)
    fill = (x[0][0][0].item() + x[0][-1][0].item() + x[0][0][-1].item() + x[0][-1][-1].item()) / 4
    x = F.pad(x, (hp, hp, vp, vp), mode="constant", value=fill)
    x = F.interpolate(x[None], size=(SIZE, SIZE), mode="bilinear", align_corners=False, antialias=True)[0]
    return x.numpy()


def main() -> None:
    bins, numbers, inputs = [], [], []
    for bin_id, rois in bin_rois_by_bin(Path("../shared/data/ifcb")):
        for number, image in rois[::STEP]:
            made = smhi_input(image)
            assert (made[0] == made[1]).all() and (made[0] == made[2]).all()
            bins.append(bin_id)
            numbers.append(number)
            inputs.append(made[0])
    np.savez_compressed(OUT, bin=np.array(bins), roi_number=np.array(numbers), inputs=np.stack(inputs), size=SIZE)
    print(f"wrote {OUT}: {len(inputs)} ROIs, torch {torch.__version__}")


if __name__ == "__main__":
    main()
