"""core.transformer: causality, masking, and SASRec's parameter tree unchanged by the move."""
import jax
import jax.numpy as jnp
import numpy as np

from poisonjax.core.transformer import CausalBlock, causal_mask


def test_causal_block_is_causal_and_masks_padding():
    blk = CausalBlock(hidden=16, num_heads=2)
    tok = jnp.array([[3, 4, 5, 6, 0, 0]])
    x = jax.random.normal(jax.random.PRNGKey(0), (1, 6, 16))
    valid = (tok > 0)[..., None].astype(jnp.float32)
    p = blk.init(jax.random.PRNGKey(1), x, causal_mask(tok > 0), valid)
    y = blk.apply(p, x, causal_mask(tok > 0), valid)
    x2 = x.at[:, 3].add(5.0)                      # change position 3 only
    y2 = blk.apply(p, x2, causal_mask(tok > 0), valid)
    np.testing.assert_allclose(y[:, :3], y2[:, :3], atol=1e-6)   # the past does not see the future
    assert float(jnp.abs(y[:, 3] - y2[:, 3]).max()) > 1e-3
    assert float(jnp.abs(y[:, 4:]).max()) == 0.0                 # padded positions zeroed


def test_sasrec_uses_core_block_with_its_own_param_names():
    from poisonjax.recsys.models import make_model
    m = make_model("sasrec", 20, 8, hidden=8)
    seqs = jnp.array([[0, 0, 1, 2, 3, 4, 5, 6]])
    p = m.init(jax.random.PRNGKey(0), seqs)
    assert {"attn_0", "ln1_0", "ff1_1", "ln_out"} <= set(p["params"])
    out = m.apply(p, seqs)
    seqs2 = seqs.at[0, 7].set(9)
    np.testing.assert_allclose(out[:, :7], m.apply(p, seqs2)[:, :7], atol=1e-6)
