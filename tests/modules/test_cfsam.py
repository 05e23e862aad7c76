"""CFSAM (rtdetr_fine/modules/cfsam.py): Partition/Combine, the fusion and restoration path, cross-layer attention."""
import pytest
import torch
from torch import nn

from rtdetr_fine.modules.cfsam import CFSAM, OnMaps, cfsam_on_maps, combine, partition, resize_tokens

SSD300_MAPS = [(512, 38), (1024, 19), (512, 10), (256, 5), (256, 3), (256, 1)]   # (channels, size)


@pytest.mark.parametrize("length, parts", [(2, 2), (6, 2), (1940, 2), (12, 3), (5, 1)])
def test_partition_combine_are_exact_inverses(length, parts):
    tokens = torch.randn(3, length, 5, dtype=torch.float64)
    subsequences = partition(tokens, parts)
    assert subsequences.shape == (3 * parts, length // parts, 5)
    assert torch.equal(combine(subsequences, parts, length), tokens)


def test_partition_interleaves_every_other_token_per_image():
    tokens = torch.arange(2 * 8 * 1, dtype=torch.float64).reshape(2, 8, 1)
    subsequences = partition(tokens, 2)
    for b in range(2):
        for p in range(2):     # row b * parts + p: tokens p, p + 2, p + 4, ... of image b
            assert torch.equal(subsequences[b * 2 + p], tokens[b, p::2])


@pytest.mark.parametrize("length", [1, 7, 189, 1941])
def test_odd_length_is_resized_and_restored(length):
    """An odd length is stretched to the next even length (linear interpolation) and restored at
    Combine: the original order and length come back, exactly for token-linear sequences (which
    linear interpolation reproduces) and up to interpolation error for others."""
    ramp = torch.linspace(-2, 3, length, dtype=torch.float64)
    tokens = torch.stack([ramp, 2 * ramp + 1], dim=-1).unsqueeze(0).repeat(2, 1, 1)      # [2, N, 2]
    subsequences = partition(tokens, 2)
    assert subsequences.shape == (4, (length + 1) // 2, 2)
    torch.testing.assert_close(subsequences, partition(resize_tokens(tokens, length + 1), 2), rtol=0, atol=0)
    torch.testing.assert_close(combine(subsequences, 2, length), tokens, rtol=0, atol=1e-12)
    noisy = torch.randn(2, length, 3, dtype=torch.float64)
    restored = combine(partition(noisy, 2), 2, length)
    assert restored.shape == noisy.shape
    torch.testing.assert_close(restored[:, [0, -1]], noisy[:, [0, -1]])   # endpoints are kept


def small_maps(batch=2, spec=((8, 6, 6), (16, 3, 3), (4, 1, 1)), seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, c, h, w, generator=g) for c, h, w in spec]


def test_with_identity_transformer_output_is_the_input_fused_with_itself():
    """Eq. 5 with L' = L: R_i = restore_i(split_i(Conv1x1(Concat(L, L)))), per map, shapes and channels kept."""
    torch.manual_seed(0)
    module = CFSAM([8, 16, 4], hidden_dim=12, num_layers=1, num_heads=2, dim_feedforward=24).eval()
    module.transformer = nn.Identity()
    feats = small_maps()                                  # 36 + 9 + 1 = 46 tokens
    with torch.no_grad():
        out = module(feats)
        local = [m(f) for m, f in zip(module.local, feats)]
        tokens = torch.cat([x.flatten(2) for x in local], dim=2)                       # [2, 12, 46]
        fused = module.fuse(torch.cat([tokens, tokens], dim=1))
        expected = []
        for i, piece in enumerate(torch.split(fused, [36, 9, 1], dim=2)):
            expected.append(module.restore[i](piece.reshape(2, 12, *feats[i].shape[-2:])))
    assert [o.shape for o in out] == [f.shape for f in feats]
    for o, e in zip(out, expected):
        torch.testing.assert_close(o, e, rtol=0, atol=0)


def test_every_map_attends_to_every_other_map():
    torch.manual_seed(0)
    module = CFSAM([8, 16, 4], hidden_dim=12, num_layers=1, num_heads=2, dim_feedforward=24).eval()
    feats = small_maps()
    with torch.no_grad():
        before = module(feats)
        feats[2] = feats[2] + 1.0                         # change only the 1x1 map
        after = module(feats)
    assert not torch.allclose(before[0], after[0])        # ... and the 6x6 map's output changes
    assert not torch.allclose(before[1], after[1])


def test_attention_stays_within_each_subsequence():
    """Eq. 3: a token attends only to the tokens of its own subsequence (Part = 2: same parity)."""
    torch.manual_seed(0)
    module = CFSAM([4], hidden_dim=8, num_layers=2, num_heads=2, dim_feedforward=16).eval()
    tokens = torch.randn(1, 8, 10)
    changed = tokens.clone()
    changed[:, :, 3] += torch.randn(8)                    # an odd-index token
    with torch.no_grad():
        before, after = module.global_attention(tokens), module.global_attention(changed)
    even, odd = slice(0, None, 2), slice(1, None, 2)
    torch.testing.assert_close(after[:, :, even], before[:, :, even])
    assert not torch.allclose(after[:, :, odd], before[:, :, odd])


def test_ssd300_maps_keep_their_shapes_and_gradients_reach_every_input():
    torch.manual_seed(0)
    channels = [c for c, _ in SSD300_MAPS]
    module = CFSAM(channels, hidden_dim=16, num_layers=1, num_heads=2, dim_feedforward=32)
    feats = [torch.randn(2, c, s, s, requires_grad=True) for c, s in SSD300_MAPS]
    out = module(feats)
    assert [o.shape for o in out] == [f.shape for f in feats]
    sum(o.square().mean() for o in out).backward()
    assert all(f.grad is not None and f.grad.abs().sum() > 0 for f in feats)


def test_odd_token_count_runs_and_keeps_shapes():
    torch.manual_seed(0)
    module = CFSAM([8, 16, 4], hidden_dim=12, num_layers=1, num_heads=2, dim_feedforward=24).eval()
    feats = small_maps(spec=((8, 5, 7), (16, 3, 4), (4, 2, 1)))      # 35 + 12 + 2 = 49 tokens
    with torch.no_grad():
        out = module(feats)
    assert [o.shape for o in out] == [f.shape for f in feats]
    assert all(torch.isfinite(o).all() for o in out)


def test_wrong_number_of_maps_is_an_error():
    module = CFSAM([8, 16], hidden_dim=8, num_layers=1, num_heads=2, dim_feedforward=16)
    with pytest.raises(ValueError, match="built for 2 maps, got 3"):
        module(small_maps())


def test_onnx_export_with_dynamic_batch_agrees_on_an_odd_token_count(tmp_path):
    """The traced module (resize indices, partition sizes, reshapes) runs in onnxruntime for another batch."""
    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    from rtdetr_fine import deploy
    torch.manual_seed(0)
    module = CFSAM([8, 16, 4], hidden_dim=12, num_layers=1, num_heads=2, dim_feedforward=24).eval()
    spec = ((8, 5, 7), (16, 3, 4), (4, 2, 1))                           # 49 tokens: resized to 50
    names = [f"map{i}" for i in range(3)]
    path = str(tmp_path / "cfsam.onnx")
    with torch.no_grad(), deploy.fixed_size_forms(module):
        torch.onnx.export(module, (small_maps(batch=1, spec=spec),), path, input_names=names,
                          dynamic_axes={n: {0: "N"} for n in names}, opset_version=deploy.OPSET, dynamo=False)
    feats = small_maps(batch=3, spec=spec, seed=1)
    with torch.no_grad():
        expected = module(feats)
    got = ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(
        None, {n: f.numpy() for n, f in zip(names, feats)})
    for e, g in zip(expected, got):
        assert g.shape == tuple(e.shape)
        torch.testing.assert_close(torch.from_numpy(g), e, rtol=1e-4, atol=1e-4)


# ---------------------------------------------------------------- ablations (the paper's Tables 5 and 6)

def small_module(components="full", channels=(8, 16, 4), seed=0):
    torch.manual_seed(seed)
    return CFSAM(list(channels), hidden_dim=12, num_layers=1, num_heads=2, dim_feedforward=24,
                 components=components).eval()


def test_lfe_is_local_extraction_and_channel_restore_only():
    """components: lfe -> R_i = Restore_i(Conv1x1(Conv3x3(F_i))): each map on its own, no Transformer, no fusion."""
    module = small_module("lfe")
    assert module.transformer is None and module.fuse is None
    assert not any(k.startswith(("transformer.", "fuse.")) for k in module.state_dict())
    feats = small_maps()
    with torch.no_grad():
        out = module(feats)
        expected = [restore(local(f)) for local, restore, f in zip(module.local, module.restore, feats)]
    for o, e in zip(out, expected):
        torch.testing.assert_close(o, e, rtol=0, atol=0)
    feats[2] = feats[2] + 1.0
    with torch.no_grad():
        torch.testing.assert_close(module(feats)[0], out[0], rtol=0, atol=0)   # no cross-layer interaction


def test_lfe_gfe_recovers_the_transformer_output_without_fusion():
    """components: lfe_gfe -> R = Recover(L'), L' = Combine(Transformer(Partition(L))): no Concat(L, L'), no fusion conv."""
    module = small_module("lfe_gfe")
    assert module.transformer is not None and module.fuse is None
    feats = small_maps()
    with torch.no_grad():
        out = module(feats)
        tokens = torch.cat([local(f).flatten(2) for local, f in zip(module.local, feats)], dim=2)   # [2, 12, 46]
        expected = module.recover(module.global_attention(tokens), [f.shape[-2:] for f in feats])
    for o, e in zip(out, expected):
        torch.testing.assert_close(o, e, rtol=0, atol=0)
    feats[2] = feats[2] + 1.0
    with torch.no_grad():
        assert not torch.allclose(module(feats)[0], out[0])                    # cross-layer interaction


def test_components_add_weights_and_the_default_is_the_full_module():
    counts = {c: sum(p.numel() for p in small_module(c).parameters()) for c in ("lfe", "lfe_gfe", "full")}
    assert counts["lfe"] < counts["lfe_gfe"] < counts["full"]
    full, default = small_module("full").state_dict(), small_module().state_dict()
    assert list(full) == list(default) and all(torch.equal(full[k], default[k]) for k in full)
    with pytest.raises(ValueError, match="components must be one of"):
        CFSAM([4], components="gfe")


def test_cfsam_on_all_maps_is_the_module_itself():
    kwargs = dict(hidden_dim=12, num_layers=1, num_heads=2, dim_feedforward=24)
    for maps in (None, [0, 1, 2]):
        torch.manual_seed(0)
        module = cfsam_on_maps([8, 16, 4], maps, **kwargs)
        assert type(module) is CFSAM
        reference = small_module()
        assert all(torch.equal(v, reference.state_dict()[k]) for k, v in module.state_dict().items())


def test_on_maps_runs_the_module_on_its_maps_and_passes_the_others_through():
    torch.manual_seed(0)
    module = cfsam_on_maps([8, 16, 4], [0, 2], hidden_dim=12, num_layers=1, num_heads=2, dim_feedforward=24).eval()
    assert isinstance(module, OnMaps) and module.module.in_channels == [8, 4]
    feats = small_maps()
    with torch.no_grad():
        out = module(feats)
        inner = module.module([feats[0], feats[2]])
    assert out[1] is feats[1]                                                  # passed through
    torch.testing.assert_close(out[0], inner[0], rtol=0, atol=0)
    torch.testing.assert_close(out[2], inner[1], rtol=0, atol=0)
    with pytest.raises(ValueError, match="built for 3 maps, got 2"):
        module(feats[:2])
    for bad in ([], [2, 1], [0, 3], [-1]):
        with pytest.raises(ValueError, match="map indices must be increasing"):
            cfsam_on_maps([8, 16, 4], bad)
