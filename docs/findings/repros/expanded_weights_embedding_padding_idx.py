"""torch 2.13.0 ExpandedWeights: grad_sample of nn.Embedding(padding_idx=...) gives the padding
row a gradient. Needs only torch. Exits 1 while the bug is present."""
import torch
from torch import nn
from torch.nn.utils._per_sample_grad import call_for_per_sample_grads

torch.manual_seed(0)
model = nn.Sequential(nn.Embedding(4, 2, padding_idx=0), nn.Linear(2, 1))
x = torch.tensor([[0, 1, 0], [2, 0, 3]])            # (N, T) token indices; 0 is padding
g = [torch.autograd.grad(model(x[i:i + 1]).sum(), model[0].weight)[0] for i in range(2)]
call_for_per_sample_grads(model, loss_reduction="sum")(x).sum().backward()
ew = model[0].weight.grad_sample
print("autograd g_i, padding row:     ", [gi[0].tolist() for gi in g])  # zeros
print("ExpandedWeights, padding row:  ", ew[:, 0].tolist())             # not zero
raise SystemExit(int(not torch.allclose(ew, torch.stack(g))))
