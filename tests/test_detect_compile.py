"""Detector.compile(): the inference copy's layer rewrites, the compiled single-pass path
(eager == compiled within 1e-5), its staleness rule, and the CUDA-graph cache's keying and
fallbacks (run on the CPU with a stand-in capture)."""
import pytest
import torch
from torch import nn

from anomgan.detector import Detector, ScoringConfig
from anomgan.models import get_method
from anomgan.scoring import compiled as C

from models_helpers import TINY, one_thread  # noqa: F401  (fixture)

SINGLE = ["dual-disc", "ganomaly"]


def randomise_batchnorm_(module, seed=0):
    """Non-trivial running statistics and affine parameters, so that folding them matters."""
    g = torch.Generator().manual_seed(seed)
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.rand(m.num_features, generator=g) * 0.4 - 0.2)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            with torch.no_grad():
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(torch.rand(m.num_features, generator=g) * 0.2 - 0.1)


def detector(name, size=16, **extra):
    torch.manual_seed(0)
    hp = dict(TINY[name], **extra)
    det = Detector(get_method(name)(size, 1, **hp), scoring=ScoringConfig(batch_size=8))
    randomise_batchnorm_(det.method)
    return det


def images(n=11, size=16, seed=1):
    return torch.rand(n, 1, size, size, generator=torch.Generator().manual_seed(seed))


# ----------------------------------------------------------------------------- layer rewrites
@pytest.mark.parametrize("cin,cout,h,w,bias", [(3, 1, 5, 7, True), (8, 16, 4, 4, False),
                                               (2, 5, 1, 1, True), (16, 8, 9, 6, True)])
@pytest.mark.parametrize("channels_last", [False, True])
def test_phase_conv_transpose_equals_conv_transpose(cin, cout, h, w, bias, channels_last):
    torch.manual_seed(0)
    ct = nn.ConvTranspose2d(cin, cout, 4, 2, 1, bias=bias)
    x = torch.randn(3, cin, h, w)
    pc = C.PhaseConvTranspose2d(ct)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
        pc.weight.data = pc.weight.data.contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        torch.testing.assert_close(pc(x), ct(x), rtol=1e-5, atol=1e-5)


def test_phase_rewrite_refuses_other_transposed_convolutions():
    for ct in (nn.ConvTranspose2d(2, 2, 3, 2, 1), nn.ConvTranspose2d(2, 2, 4, 2, 1, output_padding=1),
               nn.ConvTranspose2d(2, 2, 4, 1, 1), nn.ConvTranspose2d(2, 2, 4, 2, 1, groups=2)):
        assert not C.PhaseConvTranspose2d.fits(ct)
        with pytest.raises(ValueError):
            C.PhaseConvTranspose2d(ct)


def test_linear_when_pointwise_and_fallback():
    torch.manual_seed(0)
    conv = nn.Conv2d(6, 5, 4, 1, 0)
    tconv = nn.ConvTranspose2d(7, 3, 4, 1, 0)
    lc, lt = C.LinearWhenPointwise(conv), C.LinearWhenPointwise(tconv)
    with torch.no_grad():
        for x in (torch.randn(4, 6, 4, 4), torch.randn(2, 6, 9, 7)):  # pointwise, then fallback
            torch.testing.assert_close(lc(x), conv(x), rtol=1e-5, atol=1e-5)
        for z in (torch.randn(4, 7, 1, 1), torch.randn(2, 7, 3, 2)):
            torch.testing.assert_close(lt(z), tconv(z), rtol=1e-5, atol=1e-5)
    assert not C.LinearWhenPointwise.fits(nn.Conv2d(2, 2, 4, 1, 1))


@pytest.mark.parametrize("name", SINGLE)
def test_inference_copy_leaves_the_method_alone_and_scores_the_same(name):
    det = detector(name)
    before = {k: v.clone() for k, v in det.method.state_dict().items() if torch.is_tensor(v)}
    copy = C.inference_copy(det.method)
    assert copy._anomgan_rewrites > 0
    assert not any(isinstance(m, nn.BatchNorm2d) for m in copy.modules())
    assert all(not p.requires_grad for p in copy.parameters())
    for k, v in det.method.state_dict().items():
        if torch.is_tensor(v):
            assert torch.equal(v, before[k]), k
    x = images()
    ref, got = det.method.score(x), copy.score(x)
    torch.testing.assert_close(got[0], ref[0], rtol=0, atol=1e-5)
    torch.testing.assert_close(got[1], ref[1], rtol=0, atol=1e-5)


# ----------------------------------------------------------------------------- Detector.compile
@pytest.mark.parametrize("name", SINGLE)
def test_compiled_scores_equal_eager_scores(name):
    """torch.compile (inductor's C++ backend on the CPU): model-size batches with a remainder
    chunk (11 images, chunks of 8), and tiled larger images (2 x 4 tiles: one chunk of 8, the
    shape already compiled)."""
    det = detector(name)
    x, big = images(), images(2, size=28, seed=2)
    eager, eager_big = det.detect(x), det.detect(big)
    assert det.compile(compiler="inductor") is det and det.compiled
    got, got_big = det.detect(x), det.detect(big)
    for a, b in ((got, eager), (got_big, eager_big)):
        torch.testing.assert_close(a.scores, b.scores, rtol=0, atol=1e-5)
        torch.testing.assert_close(a.maps, b.maps, rtol=0, atol=1e-5)
        assert a.scores.dtype == torch.float32 and a.maps.dtype == torch.float32


def test_auto_compiler_is_none_on_the_cpu():
    det = detector("ganomaly").compile()
    assert det._compiled.compiler is None and det._compiled.graphs is None
    x = images()
    torch.testing.assert_close(det.detect(x).scores, det.uncompile().detect(x).scores,
                               rtol=0, atol=1e-5)


@pytest.mark.parametrize("compiler", [None, "aot_eager"])
def test_compile_without_inductor_and_back(compiler):
    det = detector("dual-disc")
    x = images()
    eager = det.detect(x)
    det.compile(compiler=compiler)
    torch.testing.assert_close(det.detect(x).scores, eager.scores, rtol=0, atol=1e-5)
    assert det.uncompile() is det and not det.compiled
    torch.testing.assert_close(det.detect(x).scores, eager.scores, rtol=0, atol=0)


def test_compiled_copy_is_remade_when_the_weights_change():
    det = detector("dual-disc").compile(compiler=None)
    x = images()
    first = det.detect(x).scores
    scorer = det._compiled
    with torch.no_grad():
        for p in det.method.autoencoder.parameters():
            p.mul_(1.5)
    eager = type(det)(det.method).detect(x).scores
    got = det.detect(x).scores
    assert det._compiled is not scorer
    assert not torch.allclose(got, first)
    torch.testing.assert_close(got, eager, rtol=0, atol=1e-5)
    assert det._compiled.is_current(det.method)
    det.method.load_state_dict(detector("dual-disc").method.state_dict())  # copies in place
    assert not det._compiled.is_current(det.method)
    torch.testing.assert_close(det.detect(x).scores, first, rtol=0, atol=1e-5)


def test_weights_key_sees_replaced_parameters_buffers_and_modules():
    from anomgan.scoring.compiled import weights_key
    m = detector("dual-disc").method
    key = weights_key(m)
    assert weights_key(m) == key
    conv = next(mod for mod in m.modules() if isinstance(mod, nn.Conv2d))
    conv.weight = nn.Parameter(conv.weight.detach().clone())  # same values, a new tensor
    assert weights_key(m) != key
    key = weights_key(m)
    bn = next(mod for mod in m.modules() if isinstance(mod, nn.BatchNorm2d))
    bn.running_mean = bn.running_mean.clone()
    assert weights_key(m) != key
    key = weights_key(m)
    m.autoencoder = detector("dual-disc").method.autoencoder  # a whole network replaced
    assert weights_key(m) != key


def test_compile_is_a_no_op_for_latent_search_methods():
    torch.manual_seed(0)
    det = Detector(get_method("anogan")(16, 1, **TINY["anogan"]),
                   scoring=ScoringConfig(search_steps=2, batch_size=8))
    x = images(3)
    before = det.detect(x).scores
    assert det.compile() is det and not det.compiled
    torch.testing.assert_close(det.detect(x).scores, before, rtol=0, atol=0)


def test_backend_is_still_checked_on_the_compiled_path():
    det = detector("dual-disc").compile(compiler=None)
    with pytest.raises(ValueError, match="backend"):
        det.detect(images(2), backend="nope")
    torch.testing.assert_close(det.detect(images(2), backend="torch").scores,
                               det.uncompile().detect(images(2), backend="torch").scores,
                               rtol=0, atol=1e-5)


# ----------------------------------------------------------------------------- CUDA-graph cache
class FakeGraphs:
    """A stand-in for CUDA graph capture: "replay" reruns fn on the static input and writes
    into the static outputs, as a graph would; records what was captured."""

    def __init__(self, fail=False):
        self.captured, self.fail = [], fail

    def __call__(self, fn, static_in, warmup):
        if self.fail:
            raise RuntimeError("operation not permitted when stream is capturing")
        for _ in range(warmup):
            fn(static_in)
        outs = fn(static_in)
        self.captured.append(tuple(static_in.shape))

        def replay():
            for o, n in zip(outs, fn(static_in)):
                o.copy_(n)
        return replay, outs


def _fn(x, scale):
    return x.flatten(1).sum(1) * scale, x[:, 0] * scale


def test_graph_cache_keys_pads_caps_and_clones():
    cap = FakeGraphs()
    g = C.GraphCache(_fn, max_graphs=2, warmup=1, capture=cap)
    a = torch.rand(4, 1, 3, 3)
    out = g(a, 2.0)
    assert cap.captured == [(4, 1, 3, 3)] and g.stats["capture"] == 1 and g.stats["replay"] == 1
    torch.testing.assert_close(out[0], _fn(a, 2.0)[0])
    b = torch.rand(4, 1, 3, 3)
    out_b = g(b, 2.0)  # same key: replayed, and the first result is not overwritten
    torch.testing.assert_close(out[0], _fn(a, 2.0)[0])
    torch.testing.assert_close(out_b[1], _fn(b, 2.0)[1])
    small = torch.rand(3, 1, 3, 3)  # a smaller batch of the same image shape: padded replay
    got = g(small, 2.0)
    assert g.stats["padded"] == 1 and got[0].shape == (3,)
    torch.testing.assert_close(got[0], _fn(small, 2.0)[0])
    g(a, 3.0)  # another extra argument is another key: second graph
    assert len(g.graphs) == 2 and g.stats["capture"] == 2
    other = torch.rand(2, 1, 5, 5)  # cap reached: runs without a graph
    torch.testing.assert_close(g(other, 2.0)[0], _fn(other, 2.0)[0])
    assert g.stats["plain"] == 1 and len(g.graphs) == 2
    big = torch.rand(6, 1, 3, 3)  # larger than any captured batch, cap reached: plain
    torch.testing.assert_close(g(big, 2.0)[0], _fn(big, 2.0)[0])
    assert g.stats["plain"] == 2


def test_graph_cache_turns_itself_off_when_capture_fails(caplog):
    g = C.GraphCache(_fn, capture=FakeGraphs(fail=True))
    a = torch.rand(2, 1, 3, 3)
    with caplog.at_level("WARNING"):
        torch.testing.assert_close(g(a, 1.0)[0], _fn(a, 1.0)[0])
    assert "capture failed" in caplog.text and not g.enabled
    g(a, 1.0)
    assert g.stats["plain"] == 2 and not g.graphs


@pytest.mark.parametrize("name", SINGLE)
def test_compiled_scorer_through_graphs_equals_eager(name):
    """The scorer's graph path (stand-in capture on the CPU): full chunks replay, the
    remainder chunk is padded into the captured batch, and scores equal eager ones."""
    det = detector(name)
    x = images(19)
    eager = det.detect(x)
    cap = FakeGraphs()
    det._compile_opts = {"compiler": None, "cuda_graphs": True, "dtype": None}
    det._compiled = C.CompiledScorer(det.method, compiler=None, capture=cap)
    got = det.detect(x)
    torch.testing.assert_close(got.scores, eager.scores, rtol=0, atol=1e-5)
    torch.testing.assert_close(got.maps, eager.maps, rtol=0, atol=1e-5)
    stats = det._compiled.graphs.stats
    assert cap.captured == [(8, 1, 16, 16)] and stats["padded"] == 1 and stats["replay"] == 2


@pytest.mark.parametrize("name", SINGLE)
def test_bfloat16_networks_score_close_to_float32(name):
    """compile(dtype=torch.bfloat16): the networks in bfloat16, images, maps and scores in
    float32; close to the float32 scores (not equal) and in the same order."""
    det = detector(name)
    x = images(16)
    ref = det.detect(x)
    det.compile(compiler=None, dtype=torch.bfloat16)
    copy = det._compiled.copy
    assert next(copy.parameters()).dtype == torch.float32  # the anchor: inputs stay float32
    assert any(p.dtype == torch.bfloat16 for p in copy.parameters())
    got = det.detect(x)
    assert got.scores.dtype == torch.float32 and got.maps.dtype == torch.float32
    torch.testing.assert_close(got.scores, ref.scores, rtol=5e-2, atol=1e-3)
    torch.testing.assert_close(got.maps, ref.maps, rtol=0, atol=2e-2)
    rank = lambda s: s.argsort().argsort().float()  # noqa: E731
    assert torch.corrcoef(torch.stack([rank(got.scores), rank(ref.scores)]))[0, 1] > 0.9
