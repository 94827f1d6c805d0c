"""`genfleet train-embedded` at toy size: a run SIGKILLed after a checkpoint and started again ends with exactly the
weights of an unbroken run: the VAE and the encoded set kept, the diffusion model's state restored. Real
processes, a real kill. (The scorer's stage has nothing to resume; it is skipped here.)"""

import os
import signal
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

from tests.helpers import ROOT, wait_for

# Each stage's steps at the least its one-cycle schedule takes; a checkpoint every 20 diffusion steps
TOY = ["--skip-scorer", "--vae-steps", "40", "--pictures", "96", "--steps", "60", "--batch-size", "4",
       "--checkpoint-every", "20"]


def train(out: Path, ckpt: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "genfleet", "train-embedded", *TOY, "--out", str(out),
                             "--checkpoint-dir", str(ckpt)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})


def weights(out: Path) -> dict[str, torch.Tensor]:
    return {f"{f.parent.name}.{k}": v for f in sorted(out.rglob("*.safetensors")) for k, v in load_file(f).items()}


def test_a_killed_run_resumes_to_the_weights_of_an_unbroken_one(tmp_path):
    unbroken = train(tmp_path / "a", tmp_path / "a-ckpt")
    _, err = unbroken.communicate(timeout=600)
    assert unbroken.returncode == 0, err
    killed = train(tmp_path / "b", tmp_path / "b-ckpt")
    checkpoint = tmp_path / "b-ckpt" / "diffusion.pt"
    wait_for(checkpoint.exists, 600, "no diffusion checkpoint was written", proc=killed)
    killed.send_signal(signal.SIGKILL)  # mid-diffusion, after its first checkpoint
    killed.wait(timeout=30)
    assert killed.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    step = torch.load(checkpoint, map_location="cpu", weights_only=False)["step"]
    assert 0 < step < 60
    resumed = train(tmp_path / "b", tmp_path / "b-ckpt")
    out, err = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, err
    assert f"resumed from {checkpoint} at step {step}" in out
    a, b = weights(tmp_path / "a"), weights(tmp_path / "b")
    assert a.keys() == b.keys() and {k.split(".")[0] for k in a} == {"vae", "unet", "text_encoder"}
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, different[:5]
