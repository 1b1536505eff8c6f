"""srkd.infer: exact tiling, receptive radius, global-pool sync, precision and device choice."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from conftest import data_path
from torch import nn
from torch.nn import functional as F

from srkd.errors import SrkdError
from srkd.infer import (
    SrkdWarning,
    Upscaler,
    cpu_native_bf16,
    plan_cpu_grid,
    plan_tiles,
    resolve_device,
    resolve_precision,
    to_tensor,
    trace_model,
)
from srkd.models.registry import build_from_spec


# Small random configurations of every standard architecture (full sizes are too slow for CI);
# exactness does not depend on width, only on the structure the tiler has to respect.
SMALL = {
    "edsr": "edsr:n_resblocks=3,n_feats=16,res_scale=0.1,scale=4",
    "edsr-baseline": "edsr:n_resblocks=4,n_feats=24,res_scale=1.0,scale=2",
    "rcan": "rcan:n_resgroups=2,n_resblocks=2,n_feats=16,reduction=4,scale=3",
    "carn": "carn:n_feats=8,scale=2",
    "carn-m": "carn-m:n_feats=8,scale=4",
}


def _real_crop(h: int, w: int) -> torch.Tensor:
    import cv2

    path = data_path("benchmarks", "Urban100", "HR", "img_004.png")
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)[:, :, ::-1]
    y0, x0 = 100, 150  # a busy area (windows, edges)
    return to_tensor(np.ascontiguousarray(img[y0 : y0 + h, x0 : x0 + w]))


def _model(spec: str) -> nn.Module:
    torch.manual_seed(0)
    return build_from_spec(spec).eval()


# ------------------------------------------------------------------------------ tile plans


@pytest.mark.parametrize("h,w,tile,pad", [(100, 77, 32, 5), (64, 64, 64, 8), (130, 41, 40, 12), (9, 200, 50, 30), (33, 33, 10, 0)])
def test_plan_covers_once_with_context(h, w, tile, pad):
    tiles = plan_tiles(h, w, tile, pad)
    cover = np.zeros((h, w), int)
    shapes = set()
    for t in tiles:
        cy0, cy1, cx0, cx1 = t.core
        wy0, wy1, wx0, wx1 = t.window
        cover[cy0:cy1, cx0:cx1] += 1
        shapes.add((wy1 - wy0, wx1 - wx0))
        assert 0 <= wy0 <= cy0 < cy1 <= wy1 <= h and 0 <= wx0 <= cx0 < cx1 <= wx1 <= w
        assert cy1 - cy0 <= tile and cx1 - cx0 <= tile
        # Context: pad pixels on each side, unless the window stops at the image border.
        assert cy0 - wy0 >= pad or wy0 == 0
        assert wy1 - cy1 >= pad or wy1 == h
        assert cx0 - wx0 >= pad or wx0 == 0
        assert wx1 - cx1 >= pad or wx1 == w
    assert (cover == 1).all()
    assert len(shapes) == 1  # every window the same size, so tiles batch


def test_plan_whole_image_when_tile_is_none_or_large():
    assert [t.core for t in plan_tiles(50, 60, None, 10)] == [(0, 50, 0, 60)]
    assert [t.window for t in plan_tiles(50, 60, 64, 10)] == [(0, 50, 0, 60)]


# ------------------------------------------------------------------------------ tracing


def test_trace_counts_shared_blocks_and_resolution():
    # CARN-M x4: entry 1 + 3 cascades x 3 uses of the shared unit x 2 grouped 3x3 convs = 18,
    # upsampler 3x3 at LR (1) and at 2x (1/2), exit 3x3 at 4x (1/4).
    tr = trace_model(_model(SMALL["carn-m"]), torch.device("cpu"))
    assert tr.scale == 4 and tr.receptive_radius == pytest.approx(20.75)
    # EDSR x2: head 1 + 3 blocks x 2 + body end 1 + upsampler 1 + last conv at 2x (1/2).
    tr = trace_model(_model("edsr:n_resblocks=3,n_feats=8,scale=2"), torch.device("cpu"))
    assert tr.scale == 2 and tr.receptive_radius == pytest.approx(9.5)
    assert tr.global_pools == []
    tr = trace_model(_model(SMALL["rcan"]), torch.device("cpu"))
    assert len(tr.global_pools) == 4  # one channel attention per RCAB


def test_traced_radius_bounds_real_dependence():
    """Changing one LR pixel changes no output pixel farther than the traced radius."""
    net = _model(SMALL["carn"])
    up = Upscaler(net, precision="fp32", tile=None)
    x = torch.rand(1, 3, 64, 64)
    y0 = up.process(x)
    x2 = x.clone()
    x2[0, :, 32, 32] += 0.5
    diff = (up.process(x2) - y0).abs().amax(1)[0] > 0
    ys, xs = np.nonzero(diff.numpy())
    s, r = up.scale, up.trace.receptive_radius
    reach = max(abs(ys // s - 32).max(), abs(xs // s - 32).max())
    assert 0 < reach <= r


# --------------------------------------------------------------------- tiled == untiled


@pytest.mark.parametrize("arch", sorted(SMALL))
def test_tiled_equals_whole_image_fp32(arch):
    net = _model(SMALL[arch])
    x = _real_crop(112, 150)
    ref = Upscaler(net, precision="fp32", tile=None).process(x)
    up = Upscaler(net, precision="fp32", tile=41)  # divides neither side
    wy0, wy1, wx0, wx1 = plan_tiles(112, 150, 41, up.tile_pad)[0].window
    assert wy1 - wy0 < 112 and wx1 - wx0 < 150  # really cut in both directions
    out = up.process(x)
    assert out.shape == ref.shape
    # Exact up to float summation order (RCAN: its global pools are synchronised).
    assert float((out - ref).abs().max()) * 255 < 0.05, arch


@pytest.mark.parametrize("arch", ["carn-m", "rcan", "edsr"])
def test_tiled_equals_whole_image_default_precision(arch):
    net = _model(SMALL[arch])
    x = _real_crop(100, 120)
    ref = Upscaler(net, tile=None).process(x, out_dtype=torch.uint8)
    out = Upscaler(net, tile=29, batch_tiles=3).process(x, out_dtype=torch.uint8)
    assert int((out.int() - ref.int()).abs().max()) <= 1


def test_tiled_equals_whole_image_real_weights():
    from srkd.io.hub import load_model

    net = load_model(None).model  # bundled CARN-M with the official weights
    x = _real_crop(100, 130)
    ref = Upscaler(net, tile=None).process(x, out_dtype=torch.uint8)
    up = Upscaler(net, tile=45)
    out = up.process(x, out_dtype=torch.uint8)
    assert len(plan_tiles(100, 130, 45, up.tile_pad)) == 9
    assert int((out.int() - ref.int()).abs().max()) <= 1


def test_rcan_without_pool_sync_is_not_exact():
    """The pool synchronisation is what makes RCAN tiles exact (guards against a silent no-op)."""
    net = _model(SMALL["rcan"])
    x = _real_crop(61, 83)
    ref = Upscaler(net, precision="fp32", tile=None).process(x)
    up = Upscaler(net, precision="fp32", tile=23)
    up._pool_sync.close()
    up._pool_sync = None
    naive = up.process(x)
    synced = Upscaler(net, precision="fp32", tile=23).process(x)
    assert float((naive - ref).abs().max()) > 20 * float((synced - ref).abs().max())


# --------------------------------------------------------------------------- behaviour


def test_output_range_dtype_and_model_untouched():
    net = _model(SMALL["edsr-baseline"])
    before = {k: v.clone() for k, v in net.state_dict().items()}
    up = Upscaler(net, tile=16)
    x = torch.rand(1, 3, 30, 20)
    y = up.process(x)
    assert y.shape == (1, 3, 60, 40) and y.dtype == torch.float32 and y.device.type == "cpu"
    assert float(y.min()) >= 0 and float(y.max()) <= 1
    q = up.process(x, out_dtype=torch.uint8)
    assert q.dtype == torch.uint8 and torch.equal(q, (y * 255).round().to(torch.uint8))
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    assert all(p.is_contiguous() for p in net.parameters())
    assert not any("forward" in m.__dict__ for m in net.modules())


def test_self_ensemble_is_mean_of_eight_transforms():
    net = _model(SMALL["carn"])
    up = Upscaler(net, precision="fp32", tile=None)
    x = torch.rand(1, 3, 20, 26)
    outs = []
    for t in range(2):
        xt = x.transpose(-2, -1) if t else x
        for fy in (False, True):
            for fx in (False, True):
                v = xt.flip(-2) if fy else xt
                v = v.flip(-1) if fx else v
                y = up.process(v.contiguous())
                y = y.flip(-1) if fx else y
                y = y.flip(-2) if fy else y
                outs.append(y.transpose(-2, -1) if t else y)
    expected = torch.stack(outs).mean(0)
    got = up.process(x, self_ensemble=True)
    assert float((got - expected).abs().max()) < 1e-5
    assert float((got - up.process(x)).abs().max()) > 1e-4  # it really averages something


def test_out_of_memory_retries_with_smaller_tiles(monkeypatch):
    net = _model(SMALL["carn-m"])
    x = torch.rand(1, 3, 100, 90)
    ref = Upscaler(net, precision="fp32", tile=None).process(x)
    up = Upscaler(net, precision="fp32", tile="auto")
    real = up._run_batch
    sizes = []

    def limited(xb, precision=None):
        sizes.append(tuple(xb.shape[-2:]))
        if xb.shape[-1] * xb.shape[-2] > 80 * 80:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(xb, precision)

    monkeypatch.setattr(up, "_run_batch", limited)
    out = up.process(x)
    assert sizes[0] == (100, 90) and up.tile is not None and max(up.tile) < 90
    assert float((out - ref).abs().max()) * 255 < 0.05

    fixed = Upscaler(net, precision="fp32", tile=64)
    monkeypatch.setattr(fixed, "_run_batch", lambda xb, precision=None: (_ for _ in ()).throw(RuntimeError("out of memory")))
    with pytest.raises(SrkdError, match="smaller --tile"):
        fixed.process(x)


class _Cancelling(nn.Module):
    """Subtracts two nearly equal large feature maps: fine in fp32, ruined by bf16 rounding."""

    def __init__(self):
        super().__init__()
        self.head = nn.Conv2d(3, 8, 3, padding=1)
        self.big = nn.Conv2d(8, 8, 1)
        self.tail = nn.Conv2d(8, 3 * 4, 3, padding=1)
        self.shuffle = nn.PixelShuffle(2)
        with torch.no_grad():
            self.big.weight.copy_(torch.eye(8).view(8, 8, 1, 1) * 1000.0)
            self.big.bias.fill_(0.0)

    def forward(self, x):
        f = self.head(x)
        return self.shuffle(self.tail(self.big(f) - 999.0 * f)).sigmoid()


def test_precision_auto_falls_back_to_fp32_with_a_warning(monkeypatch):
    monkeypatch.setattr("srkd.precision.cpu_native_bf16", lambda: True)
    torch.manual_seed(0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        up = Upscaler(_Cancelling(), device="cpu", precision="auto")
    assert up.precision == "fp32"
    assert any(issubclass(w.category, SrkdWarning) and "using fp32" in str(w.message) for w in caught)
    # A well-conditioned model keeps bf16.
    good = Upscaler(_model(SMALL["carn"]), device="cpu", precision="auto")
    assert good.precision == "bf16" and good.precision_check["psnr"] > 45


def test_precision_and_device_resolution():
    cpu = torch.device("cpu")
    assert resolve_precision("auto", cpu) == ("bf16" if cpu_native_bf16() else "fp32")
    assert resolve_precision("fp32", cpu) == "fp32"
    assert resolve_precision("BF16", cpu) == "bf16"
    with pytest.raises(SrkdError, match="fp16 is not supported on CPU"):
        resolve_precision("fp16", cpu)
    with pytest.raises(SrkdError, match="unknown precision"):
        resolve_precision("int8", cpu)
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type in ("cpu", "cuda", "mps")
    with pytest.raises(SrkdError, match="unknown device"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(SrkdError, match="CUDA is not available"):
            resolve_device("cuda")
    with pytest.raises(SrkdError, match="--tile"):
        Upscaler(_model(SMALL["carn"]), tile="big")
    with pytest.raises(SrkdError, match="tile-pad"):
        Upscaler(_model(SMALL["carn"]), tile_pad=-1)


def test_auto_tile_keeps_global_context_models_whole_and_tiles_others_on_cpu():
    rcan = Upscaler(_model(SMALL["rcan"]), device="cpu")
    assert rcan.global_context and rcan.auto_tile(400, 500) == (None, 1)
    carn = Upscaler(_model(SMALL["carn"]), device="cpu")
    threads = torch.get_num_threads()
    torch.set_num_threads(2)  # with one thread a whole image that fits is the cheapest plan
    try:
        tile, batch = carn.auto_tile(1000, 1200)
    finally:
        torch.set_num_threads(threads)
    assert tile is not None and 32 <= min(tile) and tile[0] <= 1000 and tile[1] <= 1200 and batch == 1
    assert carn.auto_tile(50, 60) == (None, 1)


def _grid(h, w, tile, pad):
    tiles = plan_tiles(h, w, tile, pad)
    win = tiles[0].window
    return len(tiles), (win[1] - win[0]) * (win[3] - win[2])


def test_cpu_grid_plan_minimises_rounds_times_window_area():
    # 512x512, pad 23, 2 threads: two half-image windows (302x512, one round) beat nine 217x217
    # windows (five rounds: the ninth runs alone) and the whole image on two threads.
    tile, concurrent = plan_cpu_grid(512, 512, 23, threads=2, max_px=1e9, min_core=46)
    assert _grid(512, 512, tile, 23) == (2, 302 * 512) and concurrent == 2
    # One thread: no reason to split at all (every split only adds pad).
    assert plan_cpu_grid(512, 512, 23, threads=1, max_px=1e9, min_core=46) == (None, 1)
    # Four threads: four windows, one round.
    tile, concurrent = plan_cpu_grid(512, 512, 23, threads=4, max_px=1e9, min_core=46)
    assert _grid(512, 512, tile, 23)[0] == 4 and concurrent == 4
    # A memory cap: every window in flight fits, and the plan is the cheapest that does.
    tile, concurrent = plan_cpu_grid(1024, 1024, 23, threads=2, max_px=2 * 150_000, min_core=46)
    n, area = _grid(1024, 1024, tile, 23)
    assert concurrent == 2 and 2 * area <= 2 * 150_000
    costs = []
    for ty in range(46, 1025, 7):
        for tx in range(46, 1025, 7):
            m, a = _grid(1024, 1024, (ty, tx), 23)
            if m > 1 and 2 * a <= 2 * 150_000:
                costs.append(math.ceil(m / 2) * a)
    assert math.ceil(n / 2) * area <= min(costs)
    # Nothing fits: the smallest windows the minimum core allows, one at a time.
    assert plan_cpu_grid(400, 400, 23, threads=2, max_px=10, min_core=46) == ((50, 50), 1)
    assert len(plan_tiles(400, 400, (50, 50), 23)) == 64
    # Many threads, little memory: a few large windows on all threads, not 64 tiny ones whose
    # pad would be most of the work.
    tile, concurrent = plan_cpu_grid(2000, 3000, 23, threads=64, max_px=320_000, min_core=46)
    n, area = _grid(2000, 3000, tile, 23)
    assert concurrent == 1 and area <= 320_000 and area > 200_000


def test_auto_plan_runs_windows_as_planned(monkeypatch):
    net = _model(SMALL["carn-m"])
    x = _real_crop(100, 120)
    ref = Upscaler(net, precision="fp32", tile=None).process(x)
    up = Upscaler(net, precision="fp32")
    seen = []
    monkeypatch.setattr("srkd.infer.upscaler.plan_cpu_grid", lambda *a, **k: ((50, 60), 1))
    real = up._cpu_workers
    monkeypatch.setattr(up, "_cpu_workers", lambda n, g, limit=None: seen.append(limit) or real(n, g, limit))
    out = up.process(x)
    assert seen == [1] and up.tile == (50, 60)
    assert float((out - ref).abs().max()) * 255 < 0.05


def test_concurrent_cpu_tiles_are_exact_and_restore_threads():
    net = _model(SMALL["carn-m"])
    x = _real_crop(100, 120)
    ref = Upscaler(net, precision="fp32", tile=None).process(x)
    torch.set_num_threads(2)
    try:
        up = Upscaler(net, precision="fp32", tile=30)
        assert up._cpu_workers(12, plan_tiles(100, 120, 30, up.tile_pad)[:1]) == 2
        done = []
        out = up.process(x, progress=lambda d, n: done.append((d, n)))
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(1)
    assert float((out - ref).abs().max()) * 255 < 0.05
    assert done[-1] == (16, 16) and [d for d, _ in done] == sorted(d for d, _ in done)


class _Shifts(nn.Module):
    """A diagonal mean shift (fast path) and a mixing 1x1 colour conv (generic path)."""

    def __init__(self):
        super().__init__()
        self.shift = nn.Conv2d(3, 3, 1)
        self.mix = nn.Conv2d(3, 3, 1)
        self.body = nn.Conv2d(3, 3 * 4, 3, padding=1)
        with torch.no_grad():
            self.shift.weight.copy_(torch.diag(torch.tensor([0.5, 1.0, 2.0])).view(3, 3, 1, 1))
            self.shift.bias.copy_(torch.tensor([-0.4, -0.45, -0.5]))

    def forward(self, x):
        return self.mix(F.pixel_shuffle(self.body(self.shift(x)), 2))


def test_diagonal_colour_convs_take_the_elementwise_path_and_match():
    torch.manual_seed(0)
    net = _Shifts().eval()
    x = torch.rand(1, 3, 21, 17)
    with torch.no_grad():
        ref = net(x)
    for precision in ("fp32", "bf16"):
        up = Upscaler(net, device="cpu", precision=precision, tile=None)
        shift, mix = up._active.shift, up._active.mix
        assert shift._srkd_diagonal is not None and mix._srkd_diagonal is None
        assert torch.equal(shift._srkd_diagonal.flatten(), torch.tensor([0.5, 1.0, 2.0]))
        out = up._run_batch(x)
        tol = 1e-6 if precision == "fp32" else 2e-2
        assert out.dtype == torch.float32 and float((out - ref).abs().max()) < tol
