"""Run by tests/test_training.py under `python -m torch.distributed.run --nproc_per_node 2`:
trains GANomaly (no normalisation layers) with anomgan.training.fit on a fixed tiny data set and
writes each rank's final weights to OUT/rank<r>.safetensors (rank 0 also writes a checkpoint)."""
import os
import sys

import torch
from safetensors.torch import save_file

from anomgan.training import fit

out = sys.argv[1]
torch.set_num_threads(1)
g = torch.Generator().manual_seed(123)
normal = torch.rand(8, 1, 16, 16, generator=g)
res = fit(normal, None, "ganomaly", steps=3, batch_size=4, seed=5, progress=False,
          checkpoint_dir=os.path.join(out, "ckpt"), log_path=os.path.join(out, "log.jsonl"),
          width=8, max_width=16, z_dim=4, norm="none")
rank = int(os.environ["RANK"])
state = {k: v.contiguous() for k, v in res.method.state_dict().items() if isinstance(v, torch.Tensor)}
save_file(state, os.path.join(out, f"rank{rank}.safetensors"))
losses = torch.tensor([[v for _, v in sorted(h["losses"].items())] for h in res.history], dtype=torch.float64)
save_file({"losses": losses}, os.path.join(out, f"losses{rank}.safetensors"))
