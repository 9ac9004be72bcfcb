"""bench/device/checkpoint_parts.py: a training checkpoint cut into parts small enough to come back from a
device call, and put together again with the weights exact and AdamW's moments within bf16 precision."""

import importlib.util
import os

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
spec = importlib.util.spec_from_file_location("checkpoint_parts", os.path.join(ROOT, "bench", "device", "checkpoint_parts.py"))
checkpoint_parts = importlib.util.module_from_spec(spec)
spec.loader.exec_module(checkpoint_parts)


def test_split_and_join_round_trip(tmp_path, monkeypatch):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.Linear(128, 8))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    for _ in range(3):
        optimizer.zero_grad()
        model(torch.randn(4, 64)).square().mean().backward()
        optimizer.step()
    run, parts, back = tmp_path / "run", tmp_path / "parts", tmp_path / "back"
    run.mkdir()
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "state": {"step": 3}},
               run / "checkpoint.pt")
    (run / "log.jsonl").write_text('{"step": 3}\n')
    monkeypatch.setattr(checkpoint_parts, "PART_BYTES", 16 * 1024)
    count = checkpoint_parts.split(str(run), str(parts))
    assert count > 1 and all(os.path.getsize(parts / (checkpoint_parts.PART % k)) <= 16 * 1024 for k in range(count))
    compact = sum(os.path.getsize(parts / (checkpoint_parts.PART % k)) for k in range(count))
    assert compact < 0.75 * os.path.getsize(run / "checkpoint.pt")        # the moments travel as bf16
    assert checkpoint_parts.join(str(parts), str(back))
    assert (back / "log.jsonl").read_text() == '{"step": 3}\n'
    restored = torch.load(back / "checkpoint.pt", weights_only=False)
    assert all(torch.equal(restored["model"][k], v) for k, v in model.state_dict().items())
    for key, state in optimizer.state_dict()["state"].items():
        for name in ("exp_avg", "exp_avg_sq"):
            mine = restored["optimizer"]["state"][key][name]
            assert mine.dtype == torch.float32
            assert torch.allclose(mine, state[name], rtol=1e-2, atol=1e-12)
    fresh = torch.optim.AdamW(model.parameters(), lr=1e-3)
    fresh.load_state_dict(restored["optimizer"])                            # loads back into an optimizer
    assert restored["state"]["step"] == 3
