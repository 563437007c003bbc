"""Detector.compile(dtype=torch.qint8): int8 networks on the CPU (anomgan.scoring.quantized),
calibrated through the detector's own path; close to float32 scores, errors on bad settings."""
import warnings

import pytest
import torch
from torch import nn

from anomgan.detector import Detector, ScoringConfig
from anomgan.models import get_method
from anomgan.scoring import quantized as Q

from models_helpers import TINY, one_thread  # noqa: F401  (fixture)
from test_detect_compile import detector, images

pytestmark = pytest.mark.skipif(not Q.quantization_supported(),
                                reason="this torch build has no x86 int8 engine")
SINGLE = ["dual-disc", "ganomaly"]


def int8_modules(module):
    return [m for m in module.modules() if type(m).__module__.startswith("torch.ao.nn.quantized")]


def rank_corr(a, b):
    r = lambda s: s.argsort().argsort().double()  # noqa: E731
    return torch.corrcoef(torch.stack([r(a), r(b)]))[0, 1].item()


@pytest.mark.parametrize("name", SINGLE)
def test_int8_scores_close_to_float32_and_method_untouched(name):
    det = detector(name, size=16, width=8, max_width=32) if name == "ganomaly" else detector(name)
    before = {k: v.clone() for k, v in det.method.state_dict().items()}
    x = images(48, seed=3)
    ref = det.detect(x)
    det.compile(dtype=torch.qint8, calibration=images(64, seed=4))
    copy = det._compiled.copy
    convs = [m for m in int8_modules(copy) if "Conv" in type(m).__name__]
    assert convs, "no int8 convolution in the quantized copy"
    assert copy._anomgan_quantized >= 1
    got = det.detect(x)
    assert got.scores.dtype == torch.float32 and got.maps.dtype == torch.float32
    assert torch.isfinite(got.scores).all() and got.maps.shape == ref.maps.shape
    # int8 rounding: close, not equal (a wrong scale or layout gives unrelated scores)
    assert rank_corr(got.scores, ref.scores) > 0.9
    torch.testing.assert_close(got.maps, ref.maps, rtol=0, atol=0.05)
    assert not torch.equal(got.maps, ref.maps)  # the int8 path really ran
    for k, v in det.method.state_dict().items():  # the detector's own method is unchanged
        assert torch.equal(v, before[k]), k
    det.uncompile()
    again = det.detect(x)
    torch.testing.assert_close(again.scores, ref.scores, rtol=0, atol=0)


@pytest.mark.parametrize("kernel,stride,padding,out_pad,h,w", [
    (4, 2, 1, 0, 4, 4), (4, 2, 1, 0, 1, 1), (3, 2, 1, 1, 5, 7), (4, 1, 0, 0, 3, 3), (5, 3, 2, 2, 4, 6),
    ((3, 5), (2, 3), (0, 2), (1, 0), 3, 5), (2, 2, 0, 0, 7, 2), (4, 2, 0, 1, 3, 3), (1, 1, 0, 0, 4, 4)])
@pytest.mark.parametrize("bias", [True, False])
def test_convtranspose_as_conv_equals_the_transposed_convolution(kernel, stride, padding, out_pad, h, w, bias):
    torch.manual_seed(0)
    ct = nn.ConvTranspose2d(3, 5, kernel, stride, padding, output_padding=out_pad, bias=bias).double()
    assert Q._ConvTransposeAsConv.applies(ct)
    x = torch.randn(2, 3, h, w, dtype=torch.float64)
    ref = ct(x)
    got = Q._ConvTransposeAsConv(ct).double()(x)
    assert got.shape == ref.shape
    torch.testing.assert_close(got, ref, rtol=0, atol=1e-12)
    assert not Q._ConvTransposeAsConv.applies(nn.ConvTranspose2d(4, 4, 3, 2, groups=2))
    # int8 convolutions return NHWC planes: the interleave's as_strided gather / NHWC permute
    layer = Q._ConvTransposeAsConv(ct).double()
    planes = layer.conv(x).contiguous(memory_format=torch.channels_last)
    got = layer.interleave(planes, h, w)
    torch.testing.assert_close(got, ref, rtol=0, atol=1e-12)


@pytest.mark.parametrize("transposed", [False, True])
@pytest.mark.parametrize("channels_last", [False, True])
def test_pointwise_linear_equals_the_convolution(transposed, channels_last):
    """A convolution whose kernel covers its input, or a transposed convolution of a 1x1 input,
    as one matrix product with NHWC-ordered features: equal in float64, whatever the input's
    memory format, NHWC out, with a following ReLU absorbed."""
    torch.manual_seed(0)
    if transposed:
        layer = nn.ConvTranspose2d(6, 5, (4, 3)).double()
        x, out_shape = torch.randn(3, 6, 1, 1, dtype=torch.float64), (5, 4, 3)
    else:
        layer = nn.Conv2d(6, 5, (4, 3)).double()
        x, out_shape = torch.randn(3, 6, 4, 3, dtype=torch.float64), (5, 1, 1)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    parent = nn.Sequential(layer, nn.Identity(), nn.ReLU())
    ref = parent(x)
    Q._pointwise_as_linear_(parent, {id(layer)}, {id(layer): (x,)})
    assert isinstance(parent[0], Q._PointwiseLinear) and isinstance(parent[0].act, nn.ReLU)
    assert isinstance(parent[2], nn.Identity)  # the ReLU moved inside the layer
    got = parent(x)
    assert got.shape == ref.shape == (3, *out_shape)
    torch.testing.assert_close(got, ref, rtol=0, atol=1e-12)
    assert got.is_contiguous(memory_format=torch.channels_last)


def test_relu_after_a_transposed_convolution_moves_inside_it():
    torch.manual_seed(0)
    ct = nn.ConvTranspose2d(3, 4, 4, 2, 1).double()
    seq = nn.Sequential(ct, nn.Identity(), nn.ReLU(), nn.Conv2d(4, 2, 3).double(), nn.ReLU())
    other = nn.Sequential(nn.ConvTranspose2d(3, 4, 4, 2, 1).double(), nn.Sigmoid())
    x = torch.randn(2, 3, 5, 6, dtype=torch.float64)
    ref, ref_other = seq(x), other(x)
    called = {id(m) for m in [*seq, *other]}
    Q._convtranspose_as_conv_(seq, called, {})
    Q._convtranspose_as_conv_(other, called, {})
    assert isinstance(seq[0].act, nn.ReLU) and isinstance(seq[2], nn.Identity)
    assert isinstance(seq[4], nn.ReLU)  # only the one right after the layer
    assert other[0].act is None and isinstance(other[1], nn.Sigmoid)
    torch.testing.assert_close(seq(x), ref, rtol=0, atol=1e-12)
    torch.testing.assert_close(other(x), ref_other, rtol=0, atol=1e-12)


@pytest.mark.parametrize("stride,offset,affine", [
    (2, 0, True), (2, 1, True), (2, 3, True), (1, 2, True), (3, 0, True), (3, 3, True),
    (3, 1, False), (4, 2, False)])
def test_interleave_phase_map_is_affine_where_one_view_gathers_it(stride, offset, affine):
    got = Q._Interleave._affine_map(stride, offset)
    assert (got is not None) == affine
    if affine:
        r0, dr, k0, dk = got
        for c in range(stride):
            assert (r0 + c * dr, k0 + c * dk) == ((c + offset) // stride, (c + offset) % stride)


@pytest.mark.parametrize("kernel,stride,padding,out_pad,h,w", [
    (4, 2, 1, 0, 5, 6), (4, 2, 1, 0, 1, 1), (4, 2, 1, 0, 4, 3), (3, 2, 1, 1, 3, 4),
    (3, 2, 1, 0, 3, 4), (5, 3, 1, 0, 2, 3), (6, 3, 0, 0, 2, 2)])
def test_int8_interleave_keeps_int8_and_equals_the_float32_one(kernel, stride, padding, out_pad, h, w):
    """On int8 NHWC planes (what int8 convolutions return) the interleave gives the float32
    interleave's values exactly, as an int8 tensor of the same scale (as_strided gather where
    the phase map is affine and the output a multiple of the stride, else permute and crop)."""
    layer = Q._ConvTransposeAsConv(nn.ConvTranspose2d(6, 5, kernel, stride, padding, output_padding=out_pad))
    hc, wc = layer.conv(torch.zeros(1, 6, h, w)).shape[2:]
    planes = torch.quantize_per_tensor(torch.randn(3, 5 * stride * stride, hc, wc), 0.05, 64, torch.quint8)
    planes = planes.contiguous(memory_format=torch.channels_last)
    got = layer.interleave(planes, h, w)
    ref = layer.interleave(planes.dequantize().contiguous(), h, w)  # the NCHW float32 path
    assert got.is_quantized and got.q_scale() == 0.05 and got.q_zero_point() == 64
    assert got.shape == ref.shape == (3, 5, *layer.interleave.out_size(h, w))
    torch.testing.assert_close(got.dequantize(), ref, rtol=0, atol=0)


def _lively(det, calibration):
    """Kaiming-initialised weights and BatchNorm statistics of real activations: untrained DCGAN
    networks otherwise reconstruct a near-constant image, which hides a wrong int8 decoder."""
    m = det.method
    for mod in m.modules():
        if isinstance(mod, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.kaiming_normal_(mod.weight, a=0.2)
        if isinstance(mod, nn.modules.batchnorm._BatchNorm):
            mod.reset_running_stats()
            mod.momentum = None
    m.train()
    with torch.no_grad():
        (m if hasattr(m, "decoder") else m.autoencoder)(m.to_model(calibration))
    m.eval()


@pytest.mark.parametrize("name", SINGLE)
def test_int8_reconstructions_follow_float32(name):
    """The decoder's transposed convolutions run as int8 convolutions (torch's int8 transposed
    convolution on the x86 engine is wrong: reconstruction correlation 0.05-0.7 with float32)."""
    from anomgan.scoring.compiled import inference_copy
    det = detector(name, size=32, width=16, max_width=64)
    cal = images(64, size=32, seed=4)
    _lively(det, cal)
    det.compile(dtype=torch.qint8, calibration=cal)
    copy = det._compiled.copy
    ref_copy = inference_copy(det.method, rewrite=False)
    net = (lambda m: m) if name == "ganomaly" else (lambda m: m.autoencoder)  # noqa: E731
    x = images(32, size=32, seed=9)
    with torch.no_grad():
        ref = net(ref_copy)(ref_copy.to_model(x))[0]
        got = net(copy)(copy.to_model(x))[0]
    assert ref.std() > 0.1  # a reconstruction that depends on the input
    assert torch.corrcoef(torch.stack([ref.flatten(), got.flatten()]))[0, 1] > 0.95
    assert not [m for m in copy.modules() if "ConvTranspose" in type(m).__name__
                and type(m).__module__.startswith("torch.ao.nn.quantized")]
    assert [m for m in int8_modules(copy)  # the phase planes' int8 convolutions
            if type(m).__name__ in ("Conv2d", "ConvReLU2d") and m.kernel_size == (2, 2)]
    if name == "ganomaly":  # (dual-disc's interleaves feed concatenations: those need a requantize)
        # interleaves between int8 convolutions run on int8 planes (no dequantize / quantize
        # around them), and a ReLU after a transposed convolution is fused into its phase convolution
        dequantized = [Q._is_dequantize(n.args[0]) for g in copy.modules()
                       if isinstance(g, torch.fx.GraphModule) for n in g.graph.nodes
                       if n.op == "call_module" and isinstance(g.get_submodule(n.target), Q._Interleave)]
        assert dequantized == [False, False, False]
        assert len([m for m in copy.modules() if type(m).__name__ == "ConvReLU2d"
                    and type(m).__module__.startswith("torch.ao.nn.intrinsic.quantized")
                    and m.kernel_size == (2, 2)]) == 2
    with warnings.catch_warnings(record=True) as caught:  # int8 concatenations get shared scales
        warnings.simplefilter("always")
        det.detect(x)
    assert not [w for w in caught if "quantization parameters" in str(w.message)]


def test_int8_tiled_detector_calibrates_through_tiles(monkeypatch):
    """A tile-mode detector calibrates on full-size images: the networks see tiles."""
    det = detector("dual-disc")
    seen = []
    calib = images(3, size=40, seed=5)
    real = Q.quantize_int8

    def spy(method, calibrate):
        def wrapped(score):
            def recording(x, scoring=None, backend=None):
                seen.append(tuple(x.shape[-2:]))
                return score(x, scoring, backend=backend)
            calibrate(recording)
        return real(method, wrapped)

    monkeypatch.setattr(Q, "quantize_int8", spy)
    det.compile(dtype=torch.qint8, calibration=calib)
    assert seen and set(seen) == {(16, 16)}
    x = images(2, size=40, seed=6)
    ref = Detector(det.method, scoring=det.scoring).detect(x)
    got = det.detect(x)
    assert got.maps.shape == (2, 40, 40)
    torch.testing.assert_close(got.maps, ref.maps, rtol=0, atol=0.05)


def test_int8_copy_is_remade_when_the_weights_change():
    det = detector("ganomaly")
    det.compile(dtype=torch.qint8, calibration=images(16, seed=7))
    first = det._compiled
    x = images(8, seed=8)
    a = det.detect(x).scores
    with torch.no_grad():
        for p in det.method.decoder.parameters():
            p.mul_(0.5)
    b = det.detect(x).scores
    assert det._compiled is not first and det._compiled.copy._anomgan_quantized >= 1
    assert not torch.allclose(a, b)
    ref = Detector(det.method, scoring=det.scoring).detect(x).scores
    assert rank_corr(b, ref) > 0.9


def test_traceable_networks_are_whole_networks_or_their_traceable_parts():
    """The methods' networks skip their shape checks under FX tracing only (a real tensor of the
    wrong shape is still refused), so each is quantized whole (no float32 between a trunk and its
    head); a module with other Python on its input is descended into; networks scoring does not
    call are left out."""
    torch.manual_seed(0)
    m = get_method("ganomaly")(16, 1, **TINY["ganomaly"]).eval()
    called, _ = Q._called_modules(m, lambda: m.score(images(2)))
    nets = Q.traceable_networks(m, called)
    assert {name for _, name, _ in nets} == {"encoder", "decoder", "encoder2"}  # no discriminator
    with pytest.raises(ValueError, match="must have shape"):
        m.encoder(torch.zeros(2, 1, 8, 8))
    with pytest.raises(ValueError, match="must have shape"):
        m.decoder(torch.zeros(2, 3))

    class Checked(nn.Module):  # Python on the input that FX cannot trace
        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU())

        def forward(self, x):
            if x.shape[1] != 1:
                raise ValueError("one channel")
            return self.body(x)

    root = nn.Module()
    root.net = Checked()
    called, _ = Q._called_modules(root, lambda: root.net(torch.zeros(1, 1, 5, 5)))
    assert [(parent, name) for parent, name, _ in Q.traceable_networks(root, called)] == [(root.net, "body")]


def test_int8_settings_are_checked():
    det = detector("ganomaly")
    with pytest.raises(ValueError, match="calibration is required"):
        det.compile(dtype=torch.qint8)
    with pytest.raises(ValueError, match="only used with dtype=torch.qint8"):
        det.compile(calibration=images(4))
    with pytest.raises(TypeError, match="dtype must be a torch.dtype"):
        det.compile(dtype="int8")
    with pytest.raises(ValueError, match="compiler must be 'auto' or None"):
        det.compile(dtype=torch.qint8, compiler="inductor", calibration=images(4))
    with pytest.raises(ValueError, match="smaller than the detector's input"):
        det.compile(dtype=torch.qint8, calibration=torch.rand(4, 1, 8, 8))


def test_int8_latent_search_methods_are_a_no_op():
    torch.manual_seed(0)
    det = Detector(get_method("anogan")(16, 1, **TINY["anogan"]), scoring=ScoringConfig(batch_size=8))
    assert det.compile(dtype=torch.qint8, calibration=images(4)).compiled is False
