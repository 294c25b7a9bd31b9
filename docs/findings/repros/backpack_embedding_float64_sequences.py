"""BackPACK 1.7.1: BatchGrad through nn.Embedding on (N, T) index sequences fails in float64
(RuntimeError: expected scalar type Float but found Double). Needs only torch and backpack.
Exits 1 while the bug is present."""
import torch
from backpack import backpack, extend
from backpack.extensions import BatchGrad
from torch import nn

torch.manual_seed(0)
model = extend(nn.Sequential(nn.Embedding(5, 3), nn.Linear(3, 2)).double())
x = torch.tensor([[1, 2, 1], [3, 1, 0]])              # (N, T) token indices
try:
    with backpack(BatchGrad()):
        model(x).sum().backward()
except RuntimeError as exc:
    print("RuntimeError:", exc)                       # expected scalar type Float but found Double
    raise SystemExit(1) from None
print("grad_batch", tuple(model[0].weight.grad_batch.shape))
