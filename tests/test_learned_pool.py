"""The replay pool of the shape model's training: when chunks are made, what a draw returns (exact mirror and
colour permutations of stored samples), determinism across a resume, and the training command using it."""

import json
import os

import pytest
import torch

from backend_local.engines.builtin.learned import train
from backend_local.engines.builtin.learned.pool import SamplePool

CHUNK, BATCH = 4, 2


def fake_chunk(index, made):
    """Chunk `index`: sample j has a unique colour pattern and an occupancy that is not mirror-symmetric."""
    made.append(index)
    g = torch.Generator().manual_seed(100 + index)
    rgba = torch.rand(CHUNK, 4, 8, 8, generator=g)
    occupancy = (torch.rand(CHUNK, 4, 4, 4, generator=g) > 0.5).float()
    elevation = torch.arange(CHUNK, dtype=torch.float32) + 10 * index
    return {"rgba": rgba, "occupancy": occupancy, "elevation": elevation, "family": ["f%d" % index] * CHUNK}


def make_pool(made, reuse=2.0, capacity=3):
    return SamplePool(lambda i: fake_chunk(i, made), lambda step: 1000 + step, BATCH, CHUNK, reuse, capacity)


def test_chunks_come_every_reuse_times_chunk_over_batch_steps_and_old_ones_leave():
    made = []
    pool = make_pool(made)                       # every = 2 * 4 / 2 = 4 steps
    assert pool.every == 4
    for step in range(13):
        pool.draw(step)
    assert made == [0, 1, 2, 3]                  # steps 0, 4, 8, 12
    assert pool.held == {1, 2, 3}                # capacity 3: chunk 0 has left
    assert dict(pool.generated_families) == {"f0": 4, "f1": 4, "f2": 4, "f3": 4}


def test_a_draw_is_a_stored_sample_mirrored_or_not_with_its_channels_permuted():
    made = []
    pool = make_pool(made, reuse=8.0)
    stored = fake_chunk(0, [])
    flips = set()
    for step in range(6):
        batch = pool.draw(step)
        assert batch["rgba"].shape == (BATCH, 4, 8, 8) and batch["occupancy"].dtype == torch.float32
        for b in range(BATCH):
            j = int(batch["elevation"][b])       # the fake elevations name the sample
            alpha = batch["rgba"][b, 3]
            mirrored = torch.equal(alpha, stored["rgba"][j, 3].flip(1))
            assert mirrored or torch.equal(alpha, stored["rgba"][j, 3])
            flips.add(mirrored)
            source = stored["rgba"][j].flip(2) if mirrored else stored["rgba"][j]
            occupancy = stored["occupancy"][j].flip(2) if mirrored else stored["occupancy"][j]
            assert torch.equal(batch["occupancy"][b], occupancy)   # the grid's columns follow the image's
            channels = [next(c for c in range(3) if torch.equal(batch["rgba"][b, k], source[c])) for k in range(3)]
            assert sorted(channels) == [0, 1, 2]
    assert flips == {True, False}


def test_a_pool_rebuilt_at_a_later_step_draws_what_the_running_one_draws():
    running = make_pool([])
    draws = {step: running.draw(step) for step in range(10)}
    made = []
    resumed = make_pool(made)
    later = resumed.draw(9)
    assert made == [0, 1, 2]                     # the chunks held at step 9, regenerated
    assert not resumed.generated_families        # not counted as new data a second time
    for key in ("rgba", "occupancy", "elevation"):
        assert torch.equal(later[key], draws[9][key])


def test_bad_settings_are_refused():
    with pytest.raises(ValueError):
        make_pool([], reuse=0.5)


TINY_POOL = ["--image-size", "32", "--grid", "16", "--batch", "2", "--device", "cpu", "--val-count", "4", "--seed", "5",
             "--eval-every", "1", "--checkpoint-every", "2", "--steps", "4", "--reuse", "2", "--chunk", "2",
             "--pool-chunks", "2"]


def losses(out):
    with open(os.path.join(out, train.LOG)) as f:
        return {r["step"]: r["loss"] for r in map(json.loads, f) if "loss" in r}


def test_training_with_the_pool_resumes_exactly_and_counts_generated_samples(tmp_path):
    whole, sliced = str(tmp_path / "whole"), str(tmp_path / "sliced")
    assert train.main(["--out", whole, *TINY_POOL]) == 0
    for _ in range(3):
        assert train.main(["--out", sliced, *TINY_POOL, "--time-limit", "0"]) == train.EXIT_STOPPED
    assert train.main(["--out", sliced, *TINY_POOL, "--time-limit", "0"]) == 0
    want, got = losses(whole), losses(sliced)
    assert sorted(got) == [1, 2, 3, 4]
    for step in want:
        assert got[step] == pytest.approx(want[step], rel=1e-5, abs=1e-6), step
    card = open(os.path.join(sliced, train.CARD)).read()
    # every = 2 * 2 / 2 = 2 steps: chunks at steps 0 and 2, 2 samples each; 4 steps of 2 drawn.
    assert "Samples generated: 4; drawn for training: 8." in card
    assert "each used about 2 times" in card
