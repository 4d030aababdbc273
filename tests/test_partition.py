"The log Z head (`ProjZ`) and prompt pooling (`pool_prompt`) of `flowrl_nb.partition`."
import pytest
import torch
from hypothesis import given, settings, strategies as st

from flowrl_nb.partition import ProjZ, pool_prompt

torch.set_num_threads(1)


def n_params(m): return sum(p.numel() for p in m.parameters())


# --- ProjZ --------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize('H', [1, 2, 7, 16, 64, 128])
def test_param_count_formula(H):
    assert n_params(ProjZ(H)) == 2 * H * H + 7 * H + 1 == ProjZ.num_params(H)


@pytest.mark.parametrize('H,L', [(8, 1), (8, 2), (8, 4), (32, 5)])
def test_param_count_other_depths(H, L):
    assert n_params(ProjZ(H, num_layers=L)) == ProjZ.num_params(H, L)


@pytest.mark.parametrize('H,want,quoted', [(896, 1_611_905, 1.6e6), (1536, 4_729_345, 4.7e6), (3584, 25_715_201, 25.7e6)])
def test_param_count_quoted_in_flowrl_md(H, want, quoted):
    assert 2 * H * H + 7 * H + 1 == ProjZ.num_params(H) == want
    assert round(want / 1e5) * 1e5 == pytest.approx(quoted)


def test_architecture_matches_recipe():
    z = ProjZ(8, num_layers=3, dropout=0.1)
    kinds = [type(m).__name__ for m in z.net]
    assert kinds == ['Linear', 'GELU', 'LayerNorm', 'Dropout'] * 2 + ['Linear']
    assert z.net[3].p == 0.1 and z.net[-1].out_features == 1
    assert set(z.state_dict()) == {f'net.{i}.{w}' for i in (0, 2, 4, 6, 8) for w in ('weight', 'bias')}


def test_default_init_is_pytorch_default():
    torch.manual_seed(0); z = ProjZ(8)
    torch.manual_seed(0); ref = torch.nn.Linear(8, 8)
    assert torch.equal(z.net[0].weight, ref.weight) and torch.equal(z.net[0].bias, ref.bias)
    assert torch.equal(z.net[2].weight, torch.ones(8)) and torch.equal(z.net[2].bias, torch.zeros(8))


def test_forward_shape_and_grad():
    z = ProjZ(8).eval()
    x = torch.randn(5, 8, requires_grad=True)
    y = z(x)
    assert y.shape == (5,) and y.dtype == torch.float32
    y.sum().backward()
    assert x.grad is not None and all(p.grad is not None for p in z.parameters())


def test_dropout_off_in_eval():
    z = ProjZ(8, dropout=0.5).eval()
    x = torch.randn(4, 8)
    assert torch.equal(z(x), z(x))


@pytest.mark.parametrize('kw,msg', [
    (dict(hidden_size=0), 'hidden_size must be a positive integer, got 0'),
    (dict(hidden_size=-3), 'hidden_size must be a positive integer, got -3'),
    (dict(hidden_size=8.0), 'hidden_size must be a positive integer, got 8.0'),
    (dict(hidden_size=True), 'hidden_size must be a positive integer, got True'),
    (dict(hidden_size=8, num_layers=0), 'num_layers must be an integer >= 1, got 0'),
    (dict(hidden_size=8, num_layers=2.0), 'num_layers must be an integer >= 1, got 2.0'),
    (dict(hidden_size=8, dropout=1.0), 'dropout must be in [0, 1), got 1.0'),
    (dict(hidden_size=8, dropout=-0.1), 'dropout must be in [0, 1), got -0.1'),
])
def test_constructor_errors(kw, msg):
    with pytest.raises(ValueError) as e: ProjZ(**kw)
    assert msg in str(e.value)


@pytest.mark.parametrize('shape', [(8,), (2, 3, 8), (2, 7), (2, 9)])
def test_forward_shape_errors(shape):
    with pytest.raises(ValueError) as e: ProjZ(8)(torch.randn(*shape))
    assert f'ProjZ expects input of shape (B, 8), got {shape}' in str(e.value)


def test_forward_dtype_error():
    with pytest.raises(ValueError, match=r'got torch.bfloat16: cast'): ProjZ(8)(torch.randn(2, 8, dtype=torch.bfloat16))


# --- pool_prompt --------------------------------------------------------------------------------------------------
def _batch(lens, P, H, side, fill=0.0, seed=0, dtype=torch.float32):
    "Rows of real content of the given lengths, padded to P on `side` with `fill`; also the per-row content."
    g = torch.Generator().manual_seed(seed)
    content = [torch.randn(l, H, generator=g, dtype=torch.float32).to(dtype) for l in lens]
    h = torch.full((len(lens), P, H), fill, dtype=dtype)
    m = torch.zeros(len(lens), P, dtype=torch.long)
    for i, c in enumerate(content):
        sl = slice(P - len(c), P) if side == 'left' else slice(0, len(c))
        h[i, sl], m[i, sl] = c, 1
    return h, m, content


@settings(max_examples=60, deadline=None)
@given(lens=st.lists(st.integers(1, 9), min_size=1, max_size=5), extra=st.integers(0, 4), H=st.integers(1, 12),
       seed=st.integers(0, 1000), exclude_last=st.booleans())
def test_padding_side_does_not_matter(lens, extra, H, seed, exclude_last):
    if exclude_last: lens = [max(l, 2) for l in lens]
    P = max(lens) + extra
    hl, ml, content = _batch(lens, P, H, 'left', seed=seed)
    hr, mr, _ = _batch(lens, P, H, 'right', seed=seed)
    left, right = pool_prompt(hl, ml, exclude_last), pool_prompt(hr, mr, exclude_last)
    want = torch.stack([(c[:-1] if exclude_last else c).mean(0) for c in content])
    torch.testing.assert_close(left, right, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(left, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize('side', ['left', 'right'])
@pytest.mark.parametrize('exclude_last', [False, True])
def test_padded_values_change_nothing(side, exclude_last):
    h0, m, _ = _batch([2, 5, 3], 7, 6, side, fill=0.0)
    base = pool_prompt(h0, m, exclude_last)
    for fill in (1e6, -3.0, float('nan'), float('inf')):
        h, _, _ = _batch([2, 5, 3], 7, 6, side, fill=fill)
        assert torch.equal(pool_prompt(h, m, exclude_last), base)


def test_exclude_last_drops_exactly_the_last_real_token():
    H = 4
    # row 0 left-padded, row 1 right-padded, row 2 full, row 3 with a hole: whichever pattern, the last 1 goes
    m = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 1, 1, 0]])
    h = torch.arange(4 * 5 * H, dtype=torch.float32).reshape(4, 5, H)
    last = [4, 2, 4, 3]
    got = pool_prompt(h, m, exclude_last=True)
    for i in range(4):
        keep = m[i].bool().clone(); keep[last[i]] = False
        torch.testing.assert_close(got[i], h[i][keep].mean(0))
    # and changing only the dropped token's hidden state changes nothing
    h2 = h.clone(); h2[torch.arange(4), torch.tensor(last)] = 1e9
    assert torch.equal(pool_prompt(h2, m, exclude_last=True), got)
    assert not torch.equal(pool_prompt(h2, m), pool_prompt(h, m))


def test_exclude_last_matches_recipe_slice_for_left_padding():
    "With left padding, dropping the last real token == the recipe's slice that drops column P-1 of the prompt."
    h, m, _ = _batch([3, 5, 2], 6, 4, 'left')
    recipe_h, recipe_m = h[:, :-1], m[:, :-1]
    recipe = (recipe_h * recipe_m.unsqueeze(-1)).sum(1) / recipe_m.sum(1, keepdim=True)
    torch.testing.assert_close(pool_prompt(h, m, exclude_last=True), recipe)


@pytest.mark.parametrize('dtype', [torch.float32, torch.bfloat16, torch.float64])
def test_output_keeps_hidden_dtype(dtype):
    h, m, _ = _batch([2, 4], 5, 3, 'left', dtype=dtype)
    assert pool_prompt(h, m).dtype == dtype
    assert pool_prompt(h, m.bool()).dtype == dtype
    assert pool_prompt(h, m.float()).dtype == dtype


def test_grad_flows_only_through_prompt_tokens():
    h, m, _ = _batch([2, 4], 5, 3, 'left')
    h.requires_grad_(True)
    pool_prompt(h, m).sum().backward()
    assert torch.equal(h.grad.abs().sum(-1) > 0, m.bool())


@pytest.mark.parametrize('hidden,mask,kw,msg', [
    ((2, 8), (2, 4), {}, 'hidden must have shape (B, P, H), got (2, 8)'),
    ((2, 4, 8), (2, 5), {}, 'prompt_mask must have shape (B, P) = (2, 4), got (2, 5)'),
    ((2, 4, 8), (3, 4), {}, 'prompt_mask must have shape (B, P) = (2, 4), got (3, 4)'),
])
def test_shape_errors(hidden, mask, kw, msg):
    with pytest.raises(ValueError) as e: pool_prompt(torch.randn(*hidden), torch.ones(*mask), **kw)
    assert msg in str(e.value)


def test_mask_value_and_empty_row_errors():
    h = torch.randn(3, 4, 2)
    with pytest.raises(ValueError, match='prompt_mask must contain only 0 and 1'):
        pool_prompt(h, torch.full((3, 4), 0.5))
    m = torch.tensor([[1, 1, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]])
    with pytest.raises(ValueError, match=r'prompt_mask rows \[1, 2\] have no prompt tokens$'): pool_prompt(h, m)
    m = torch.tensor([[1, 1, 0, 0], [0, 0, 0, 1], [0, 0, 1, 1]])
    assert pool_prompt(h, m).shape == (3, 2)
    with pytest.raises(ValueError, match=r'rows \[1\] have no prompt tokens left after exclude_last'):
        pool_prompt(h, m, exclude_last=True)


def test_pool_then_head():
    h, m, _ = _batch([3, 5], 6, 8, 'left', dtype=torch.bfloat16)
    log_z = ProjZ(8)(pool_prompt(h, m).float())
    assert log_z.shape == (2,) and log_z.dtype == torch.float32
