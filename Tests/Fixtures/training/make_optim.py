"""Reference for Kiri's optimiser kernels (issue 15): three steps of torch.nn.utils.clip_grad_norm_, then
torch.optim.AdamW, then an EMA of the weights as diffusers' EMAModel updates it, on small seeded tensors.
Run with a Python that has torch: python make_optim.py > optim.json
"""
import json

import torch

torch.manual_seed(0)
shapes = [(5,), (3, 4), (7,)]
params = [torch.nn.Parameter(torch.randn(s, dtype=torch.float32)) for s in shapes]
ema = [p.detach().clone() for p in params]
options = dict(lr=1e-2, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2)
max_norm, decay = 0.5, 0.99
optimizer = torch.optim.AdamW(params, **options)

record = {
    "options": {"lr": options["lr"], "beta1": options["betas"][0], "beta2": options["betas"][1],
                "eps": options["eps"], "weight_decay": options["weight_decay"], "max_norm": max_norm, "decay": decay},
    "initial": [p.detach().flatten().tolist() for p in params],
    "steps": [],
}
for step in range(3):
    grads = [torch.randn(s, dtype=torch.float32) * (step + 1) for s in shapes]
    for p, g in zip(params, grads):
        p.grad = g.clone()
    total = torch.nn.utils.clip_grad_norm_(params, max_norm)
    optimizer.step()
    with torch.no_grad():
        for e, p in zip(ema, params):
            e.sub_((1 - decay) * (e - p))   # diffusers.training_utils.EMAModel.step with a fixed decay
    state = [optimizer.state[p] for p in params]
    record["steps"].append({
        "grads": [g.flatten().tolist() for g in grads],
        "total_norm": float(total),
        "params": [p.detach().flatten().tolist() for p in params],
        "exp_avg": [s["exp_avg"].flatten().tolist() for s in state],
        "exp_avg_sq": [s["exp_avg_sq"].flatten().tolist() for s in state],
        "ema": [e.flatten().tolist() for e in ema],
    })
print(json.dumps(record))
