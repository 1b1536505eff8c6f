"""Regression test on the reproduced table of the official CARN-M weights (docs/results.md).

The reference values were made by converting ../shared/data/weights/CARN/carn_m.pth with
`srkd convert` and evaluating with `srkd eval` (fp32, whole images, Y channel, shave = scale).
Any change to the protocol, the bicubic, the model or the converter that moves a score by more
than 0.01 dB (or 1e-4 SSIM) fails here. Urban100 and B100 run at x4 only to keep CI short;
docs/results.md has the full table and the command that reproduces it.
"""

from __future__ import annotations

import pytest

from conftest import data_path
from srkd.evaluate import evaluate
from srkd.io.checkpoint import load_model_file
from srkd.io.convert import convert_file

# (dataset, scale): (Y-PSNR, SSIM)
REFERENCE = {
    ("set5", 2): (37.6784, 0.95948), ("set14", 2): (33.3029, 0.91521),
    ("set5", 3): (34.0577, 0.92478), ("set14", 3): (30.1025, 0.83770),
    ("set5", 4): (31.8831, 0.89099), ("set14", 4): (28.4175, 0.77719),
    ("b100", 4): (27.4521, 0.73152), ("urban100", 4): (25.6381, 0.77026),
}


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    src = data_path("weights", "CARN", "carn_m.pth")
    dst = tmp_path_factory.mktemp("carn") / "carn-m.safetensors"
    convert_file(src, dst)
    return dst


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_official_carn_m_matches_reference(converted, scale):
    names = sorted({d for d, s in REFERENCE if s == scale})
    model = load_model_file(converted, scale=scale).model
    results = evaluate(model, names, data_root=data_path(), device="cpu", precision="fp32", progress=False)
    for r in results:
        ref = REFERENCE[(r.dataset.lower(), scale)]
        assert r.psnr == pytest.approx(ref[0], abs=0.01), (r.dataset, scale, r.psnr)
        assert r.ssim == pytest.approx(ref[1], abs=1e-4), (r.dataset, scale, r.ssim)


def test_bundled_model_equals_converted_official_file(converted):
    import torch

    from srkd.io.hub import load_model

    bundled = load_model().model.state_dict()
    fresh = load_model_file(converted).model.state_dict()
    assert bundled.keys() == fresh.keys()
    assert all(torch.equal(bundled[k], fresh[k]) for k in bundled)
