import pytest
import torch

from scmvp_scvi._numerics import flush_denormals

# set_flush_denormal returns whether the CPU supports the setting; False is also PyTorch's default state
FLUSH_SUPPORTED = torch.set_flush_denormal(False)


def _subnormal_survives() -> bool:
    # 1e-39 is below float32's smallest normal number; flushed, the product is exactly 0
    return bool((torch.tensor([1e-39], dtype=torch.float32) * 1.0).item() != 0.0)


@pytest.mark.skipif(not FLUSH_SUPPORTED, reason="this CPU cannot flush subnormal numbers")
def test_flush_denormals_is_scoped():
    assert _subnormal_survives()
    with flush_denormals():
        assert not _subnormal_survives()
    assert _subnormal_survives()


def test_flush_denormals_restores_after_an_error():
    with pytest.raises(RuntimeError, match="stop"), flush_denormals():
        raise RuntimeError("stop")
    assert _subnormal_survives()
