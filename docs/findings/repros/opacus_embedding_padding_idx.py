"""Opacus 1.6.0: grad_sample of nn.Embedding(padding_idx=...) gives the padding row a gradient.
Needs only torch and opacus. Exits 1 while the bug is present."""
import torch
from opacus import GradSampleModule
from torch import nn

torch.manual_seed(0)
model = nn.Sequential(nn.Embedding(4, 2, padding_idx=0), nn.Linear(2, 1))
x = torch.tensor([[0, 1, 0], [2, 0, 3]])            # (N, T) token indices; 0 is padding
g = [torch.autograd.grad(model(x[i:i + 1]).sum(), model[0].weight)[0] for i in range(2)]
gsm = GradSampleModule(model, loss_reduction="sum")
gsm(x).sum().backward()
print("autograd g_i, padding row:  ", [gi[0].tolist() for gi in g])          # zeros
print("opacus grad_sample, padding:", model[0].weight.grad_sample[:, 0].tolist())  # not zero
print("sum of grad_sample == .grad:", torch.allclose(model[0].weight.grad_sample.sum(0),
                                                     model[0].weight.grad))
raise SystemExit(int(not torch.allclose(model[0].weight.grad_sample, torch.stack(g))))
