"""What training prints: one labelled bar per phase with the loss, and none of Lightning's start-up lines."""

import logging

import pytest

from scmvp_scvi import SCMVP

LIGHTNING_LINES = ("GPU available", "TPU available", "Tip:")


class Recorder(logging.Handler):
    def __init__(self):
        super().__init__(level=logging.DEBUG)
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


@pytest.fixture
def lightning_messages():
    """What Lightning's start-up logger lets through, whatever handlers the session has."""
    recorder = Recorder()
    lightning = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    lightning.addHandler(recorder)
    yield recorder.messages
    lightning.removeHandler(recorder)


def _train(mdata, **kwargs):
    SCMVP.setup_mudata(mdata)
    model = SCMVP(mdata, n_hidden=16, n_latent=4, n_heads=2)
    model.train(max_epochs=2, pretrain_epochs=2, accelerator="cpu", **kwargs)
    return model


def test_training_shows_a_bar_per_phase_and_no_banners(small_mdata, capfd, lightning_messages):
    _train(small_mdata)
    output = "".join(capfd.readouterr())
    assert "pretraining: 100%" in output and "joint training: 100%" in output
    assert "2/2" in output and "loss=" in output
    assert "Epoch 1/2" not in output  # the anonymous bar is replaced
    for line in LIGHTNING_LINES:
        assert line not in output
        assert not any(line in message for message in lightning_messages)


def test_progress_bar_can_be_switched_off(small_mdata, capfd):
    _train(small_mdata, enable_progress_bar=False)
    output = "".join(capfd.readouterr())
    assert "pretraining" not in output and "joint training" not in output


def test_lightning_lines_come_back_at_debug_level_and_levels_are_restored(small_mdata, lightning_messages):
    package = logging.getLogger("scmvp_scvi")
    lightning = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    before = lightning.level
    package.setLevel(logging.DEBUG)
    try:
        _train(small_mdata, enable_progress_bar=False)
    finally:
        package.setLevel(logging.NOTSET)
    assert any("GPU available" in message for message in lightning_messages)
    assert lightning.level == before


@pytest.mark.parametrize("phase", ["pretraining", "joint"])
def test_quiet_training_restores_lightning_logging_after_an_error(small_mdata, phase, monkeypatch):
    lightning = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    before = lightning.level
    SCMVP.setup_mudata(small_mdata)
    model = SCMVP(small_mdata, n_hidden=16, n_latent=4, n_heads=2)
    if phase == "joint":
        model.train(max_epochs=0, pretrain_epochs=1, accelerator="cpu", enable_progress_bar=False)

    def fail(*args, **kwargs):
        raise RuntimeError("stop")

    monkeypatch.setattr(model.module, "loss", fail)
    with pytest.raises(RuntimeError, match="stop"):
        model.train(max_epochs=1, pretrain_epochs=1, accelerator="cpu", enable_progress_bar=False)
    assert lightning.level == before
