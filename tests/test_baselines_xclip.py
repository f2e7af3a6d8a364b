"""X-CLIP baseline: a tiny random-weight checkpoint built here, loaded from its folder."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from actalign.baselines.xclip import XClip
from actalign.errors import ActAlignError
from baseline_models import build_xclip

TEXTS = ["red ball", "a ball", "blue", "the red ball in the net"]


@pytest.fixture(scope="module")
def xclip_dir(tmp_path_factory):
    # resize to 40 then crop 32: both steps of the preprocessing matter
    return build_xclip(
        tmp_path_factory.mktemp("models") / "tiny-xclip", num_frames=4, image_size=32, resize_to=40
    )


@pytest.fixture(scope="module")
def xclip(xclip_dir):
    return XClip(str(xclip_dir), dtype="float32")


def _frames(n, h=45, w=61, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, h, w, 3), dtype=np.uint8)


def _processor_pixels(directory, frames) -> torch.Tensor:
    """pixel_values (1, T, 3, S, S) from the checkpoint's own image processor, as transformers loads it."""
    from transformers import AutoImageProcessor

    processor = AutoImageProcessor.from_pretrained(directory)
    return processor(list(frames), return_tensors="pt")["pixel_values"]


def test_loads_from_a_folder_with_its_settings(xclip, xclip_dir):
    from transformers import XCLIPModel

    reference = XCLIPModel.from_pretrained(xclip_dir)
    assert xclip.num_frames == 4
    assert xclip.image_size == 32
    assert xclip.decode_size == 40
    assert xclip.parameters == sum(p.numel() for p in reference.parameters())
    assert xclip.identity.startswith("dir:") and xclip.identity.endswith("|float32")
    assert xclip.name_or_path == str(xclip_dir)


def test_frame_count_follows_the_config(tmp_path):
    model = XClip(str(build_xclip(tmp_path / "x6", num_frames=6)), dtype="float32")
    assert model.num_frames == 6
    assert len(model.frame_indices(100)) == 6
    assert model.score(_frames(6), TEXTS[:2]).shape == (2,)


def test_frame_indices_are_segment_centres(xclip):
    assert xclip.frame_indices(10).tolist() == [1, 3, 6, 8]
    assert xclip.frame_indices(16, 4).tolist() == [2, 6, 10, 14]
    assert xclip.frame_indices(3).tolist() == [0, 1, 1, 2]  # fewer frames than needed: repeated, in order
    assert xclip.frame_indices(1).tolist() == [0, 0, 0, 0]
    for n in range(1, 60):
        for k in (1, 4, 8, 16):
            idx = xclip.frame_indices(n, k)
            centres = (np.arange(k) + 0.5) * n / k
            assert len(idx) == k and np.all(np.diff(idx) >= 0) and idx[0] >= 0 and idx[-1] < n
            assert np.all(np.abs(idx + 0.5 - centres) <= 0.5 + 1e-9)  # the frame holding the centre
    with pytest.raises(ActAlignError, match="no frames"):
        xclip.frame_indices(0)


@pytest.mark.parametrize(
    "shape", [(4, 45, 61), (4, 61, 45), (4, 40, 40), (4, 20, 50), (4, 8, 8), (4, 720, 1280)]
)
def test_preprocessing_equals_the_processor(xclip, xclip_dir, shape):
    frames = _frames(*shape, seed=sum(shape))
    expected = _processor_pixels(xclip_dir, frames).numpy()[0]
    got = xclip.preprocess(frames)
    assert got.shape == expected.shape == (4, 3, 32, 32)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)


def test_scores_every_candidate_with_the_models_logits(xclip, xclip_dir):
    from transformers import AutoTokenizer, XCLIPModel

    frames = _frames(4)
    scores = xclip.score(frames, TEXTS)
    assert scores.shape == (len(TEXTS),) and np.all(np.isfinite(scores))
    assert len(set(np.round(scores, 6))) == len(TEXTS)  # a random model still tells the texts apart

    tokenizer = AutoTokenizer.from_pretrained(xclip_dir)
    model = XCLIPModel.from_pretrained(xclip_dir).eval()
    inputs = dict(tokenizer(TEXTS, return_tensors="pt", padding=True))
    with torch.no_grad():
        expected = model(**inputs, pixel_values=_processor_pixels(xclip_dir, frames)).logits_per_video[0]
    expected = expected.numpy()
    np.testing.assert_allclose(scores, expected, rtol=1e-5, atol=1e-5)

    order = [2, 0, 3, 1]  # each text's score does not depend on the others' order
    np.testing.assert_allclose(xclip.score(frames, [TEXTS[i] for i in order]), scores[order], atol=1e-5)


def test_half_precision_loads_and_scores_close_to_float32(xclip, xclip_dir):
    half = XClip(str(xclip_dir), dtype="bfloat16")
    assert half.identity.endswith("|bfloat16") and half.model.dtype == torch.bfloat16
    frames = _frames(4)
    np.testing.assert_allclose(half.score(frames, TEXTS), xclip.score(frames, TEXTS), atol=0.1)


def test_the_frames_change_the_scores(xclip):
    a = xclip.score(_frames(4, seed=1), TEXTS)
    b = xclip.score(_frames(4, seed=2), TEXTS)
    assert not np.allclose(a, b)


def test_wrong_inputs_are_clear_errors(xclip):
    with pytest.raises(ActAlignError, match="exactly 4 frames"):
        xclip.score(_frames(3), TEXTS)
    with pytest.raises(ActAlignError, match="uint8"):
        xclip.score(_frames(4).astype(np.float32), TEXTS)
    with pytest.raises(ActAlignError, match="empty"):
        xclip.score(_frames(4), ["a", " "])
    with pytest.raises(ActAlignError, match=r"\(N, H, W, 3\)"):
        xclip.preprocess(_frames(4)[..., :2])


def test_other_checkpoints_are_refused(clip_dir, tmp_path):
    with pytest.raises(ActAlignError, match="'clip' model"):
        XClip(str(clip_dir))
    with pytest.raises(ActAlignError, match="No X-CLIP model directory"):
        XClip(str(tmp_path / "absent"))
    with pytest.raises(ActAlignError, match="HF_HUB_OFFLINE"):  # tests are offline: no download
        XClip("nobody/xclip-absent")
