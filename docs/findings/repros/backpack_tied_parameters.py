"""BackPACK 1.7.1: BatchGrad's grad_batch of a parameter used by two layers is not the sum over
its uses (it does not even sum to .grad). Needs only torch and backpack. Exits 1 while present."""
import torch
from backpack import backpack, extend
from backpack.extensions import BatchGrad
from torch import nn

torch.manual_seed(0)
a, b = nn.Linear(3, 3, bias=False), nn.Linear(3, 3, bias=False)
b.weight = a.weight                                   # one parameter, two uses
model = extend(nn.Sequential(a, nn.Tanh(), b))
x = torch.randn(4, 3)
g = torch.stack([torch.autograd.grad((model(x[i:i + 1]) ** 2).sum(), a.weight)[0]
                 for i in range(4)])                  # g_i, one example at a time
with backpack(BatchGrad()):
    (model(x) ** 2).sum().backward()                  # a sum: grad_batch should be g_i
print("grad_batch sums to .grad:", torch.allclose(a.weight.grad_batch.sum(0), a.weight.grad))
print("max |grad_batch - g_i|:  ", (a.weight.grad_batch - g).abs().max().item())
raise SystemExit(int(not torch.allclose(a.weight.grad_batch, g, atol=1e-6)))
