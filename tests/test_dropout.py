"""Dropout's two random streams: exact Bernoulli masks from bytes, torch's own draws kept for old runs."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from optbench import config, pipeline, restore
from optbench.compare.query import identity_of
from optbench.dropout import Dropout, byte_threshold, keep_mask
from optbench.model import SeedCNN

N = 2_000_000


def test_thresholds_are_exact_where_a_whole_number_of_bytes_allows():
    assert byte_threshold(0.75) == (1, 192)  # the seed's conv dropout: keep when the byte is < 192
    assert byte_threshold(0.5) == (1, 128)
    assert byte_threshold(1 - 2**-12) == (2, 65536 - 16)
    assert byte_threshold(1 - 2**-20) == (4, 2**32 - 2**12)
    k, t = byte_threshold(0.7)  # 0.7 has no exact k: the nearest 32-bit threshold
    assert k == 4 and abs(t / 2**32 - 0.7) <= 2**-33


@pytest.mark.parametrize("p", [0.25, 0.5 - 2**-9, 0.3])  # k = 1, 2 (threshold 32896), 4
def test_masks_read_the_generators_words_as_documented(p):
    """The stream, computed another way: the generator's 63-bit words in plain Python, each read as
    little-endian groups of k bytes without the group holding the sign bit (top bit flipped for k > 1),
    kept below the threshold."""
    x = torch.empty(5, 301)
    gen = torch.Generator().manual_seed(11)
    mask = keep_mask(x, p, "bits", gen)
    k, threshold = byte_threshold(1 - p)
    per_word = 8 // k - 1
    words = torch.empty(-(-x.numel() // per_word), dtype=torch.int64).random_(generator=gen.manual_seed(11))
    kept = []
    for word in words.tolist():
        raw = word.to_bytes(8, "little")
        flip = 0 if k == 1 else 1 << (8 * k - 1)
        kept += [int.from_bytes(raw[i * k : (i + 1) * k], "little") ^ flip < threshold for i in range(per_word)]
    scale = torch.tensor(1.0).div_(1 - p).item()
    assert mask.flatten().tolist() == [scale if keep else 0.0 for keep in kept[: x.numel()]]


@pytest.mark.parametrize("p", [0.25, 0.5, 0.3, 1 - 2**-12])
def test_each_element_is_kept_with_the_keep_probability(p):
    """2M elements: the kept fraction within 5 sd of 1 − p, while a threshold one step off would not be."""
    torch.manual_seed(0)
    mask = keep_mask(torch.empty(N), p, "bits")
    keep = 1 - p
    scale = torch.tensor(1.0).div_(keep).item()  # what F.dropout multiplies a kept element by
    assert set(mask.unique().tolist()) <= {0.0, scale}
    kept = (mask > 0).double().mean().item()
    band = 5 * math.sqrt(keep * p / N)
    assert abs(kept - keep) < band
    k, _ = byte_threshold(keep)
    if k == 1:  # the test can fail: one byte step (1/256) is far outside the band
        assert 1 / 256 > 2 * band


def test_neighbouring_elements_are_independent():
    """Seven elements share a 64-bit word: pairs within one (i, i + 1) and across words (i, i + 7), (i, i + 8)
    are kept jointly with probability keep²."""
    torch.manual_seed(1)
    kept = keep_mask(torch.empty(N), 0.25, "bits") > 0
    for lag in (1, 7, 8):
        both = (kept[:-lag] & kept[lag:]).double().mean().item()
        assert abs(both - 0.75**2) < 5 * math.sqrt(0.75**2 * (1 - 0.75**2) / N), lag


def test_masks_are_a_function_of_the_seed_and_not_of_the_thread_count():
    x = torch.empty(64, 32, 13, 13)
    masks = []
    for threads in (1, 2):
        torch.set_num_threads(threads)
        torch.manual_seed(5)
        masks.append(keep_mask(x, 0.25, "bits"))
    torch.manual_seed(6)
    other = keep_mask(x, 0.25, "bits")
    assert torch.equal(masks[0], masks[1]) and not torch.equal(masks[0], other)


def test_bernoulli_is_f_dropout_call_for_call():
    """Runs logged before ``dropout_rng`` drew ``F.dropout``'s masks: ``bernoulli`` draws exactly those."""
    x = torch.randn(64, 32, 13, 13, requires_grad=True)
    grad = torch.randn_like(x)
    outs = []
    for dropout in (lambda t: F.dropout(t, 0.25, training=True), Dropout(0.25, "bernoulli")):
        torch.manual_seed(3)
        out = dropout(x)
        (g,) = torch.autograd.grad(out, x, grad)
        outs.append((out, g, torch.get_rng_state()))
    (a, ga, state_a), (b, gb, state_b) = outs
    assert torch.equal(a, b) and torch.equal(ga, gb) and torch.equal(state_a, state_b)


def test_bits_masks_dropout_in_training_only():
    x = torch.randn(64, 256, requires_grad=True)
    layer = Dropout(0.5, "bits")
    torch.manual_seed(0)
    out = layer(x)
    torch.manual_seed(0)
    mask = keep_mask(x, 0.5, "bits")
    assert torch.equal(out, x * mask) and 0.4 < (out == 0).float().mean() < 0.6
    (g,) = torch.autograd.grad(out.sum(), x)
    assert torch.equal(g, mask)
    assert torch.equal(layer.eval()(x), x)


def test_an_unknown_stream_is_refused():
    with pytest.raises(ValueError, match="model.net.dropout_rng='fast'; choose one of: bits, bernoulli"):
        SeedCNN(dropout_rng="fast")


def test_a_run_logged_before_the_setting_is_its_bernoulli_row():
    """Old runs' params lack the key: their identity is the bernoulli one's, never today's default's."""
    old = {"model.net.init": "keras", "optimizer.name": "adam"}
    assert identity_of(old) == identity_of({**old, "model.net.dropout_rng": "bernoulli"})
    assert identity_of(old) != identity_of({**old, "model.net.dropout_rng": "bits"})
    assert "model.net.dropout_rng" not in dict(identity_of({"optimizer.name": "adam"}))  # no model logged


def test_rerun_of_a_run_logged_before_the_setting_draws_its_masks():
    record = OmegaConf.to_container(config.compose(), resolve=True)
    assert record["model"]["net"]["dropout_rng"] == "bits"
    del record["model"]["net"]["dropout_rng"]
    assert restore.rebuild(record).model.net.dropout_rng == "bernoulli"
    record["model"]["net"]["dropout_rng"] = "bits"
    assert restore.rebuild(record).model.net.dropout_rng == "bits"


def test_a_hydra_folder_written_before_the_setting_reruns_with_its_masks(tmp_path):
    (tmp_path / ".hydra").mkdir()
    (tmp_path / ".hydra" / "overrides.yaml").write_text("- optimizer=sgd\n")
    stored = OmegaConf.to_container(config.compose("optimizer=sgd"), resolve=False)
    del stored["model"]["net"]["dropout_rng"]
    (tmp_path / ".hydra" / "config.yaml").write_text(OmegaConf.to_yaml(stored))
    cfg = restore.from_folder(tmp_path)
    assert cfg.model.net.dropout_rng == "bernoulli" and cfg.optimizer.name == "sgd"


def test_the_two_streams_train_differently_and_each_reproducibly(data_root):
    def run(*extra):
        cfg = config.compose(
            f"data.root={data_root}", "data.subset=512", "trainer.max_epochs=1", "trainer.enable_progress_bar=false",
            "~logger", *extra,
        )  # fmt: skip
        metrics = pipeline.run(cfg).metrics
        return {k: v for k, v in metrics.items() if k != "total_time_s"}

    bits, again, bernoulli = run(), run(), run("model.net.dropout_rng=bernoulli")
    assert bits == again
    assert bits["train_loss"] != bernoulli["train_loss"]
    assert bits["train_loss"] == pytest.approx(bernoulli["train_loss"], rel=0.2)
