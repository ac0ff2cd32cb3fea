"""One training step (forward, backward, Adam update) of notebook 04's small CNN and SimpleRNN on a
batch of 32 digits, float and QAT (4-bit LSQ fake quant on weights and activations): qdrift vs
PyTorch 2.13 eager, single thread, in one run."""
import numpy as np
import torch
import torch.nn.functional as F

import qdrift as qd
from qdrift import training as T
from timing import best_time

torch.set_num_threads(1)
L = qd.layers
BATCH = 32
QMIN, QMAX = -8, 7     # 4-bit signed codes


def qdrift_models():
    cnn = qd.Sequential([L.Conv2D(8, 3, padding="same", use_bias=False), L.BatchNormalization(), L.ReLU(),
                         L.Conv2D(16, 3, strides=2, padding="same", use_bias=False), L.BatchNormalization(), L.ReLU(),
                         L.Flatten(), L.Dense(10)], input_shape=(8, 8, 1), seed=0)
    rnn = qd.Sequential([L.SimpleRNN(32), L.Dense(10)], input_shape=(8, 8), seed=0)
    return {"cnn": cnn, "rnn": rnn}


class TorchCNN(torch.nn.Module):
    def __init__(self, qat):
        super().__init__()
        self.qat = qat
        self.c1, self.b1 = torch.nn.Conv2d(1, 8, 3, padding=1, bias=False), torch.nn.BatchNorm2d(8, eps=1e-3)
        self.c2, self.b2 = torch.nn.Conv2d(8, 16, 3, stride=2, padding=1, bias=False), torch.nn.BatchNorm2d(16, eps=1e-3)
        self.fc = torch.nn.Linear(256, 10)
        self.s = torch.nn.Parameter(torch.full((8,), 0.1))     # LSQ scales: 4 weights, 4 activations
        self.z = torch.nn.Parameter(torch.zeros(8))

    def fq(self, t, i):
        if not self.qat:
            return t
        return torch._fake_quantize_learnable_per_tensor_affine(t, self.s[i:i + 1], self.z[i:i + 1], QMIN, QMAX,
                                                                1.0 / (t.numel() * QMAX) ** 0.5)

    def forward(self, x):
        x = self.fq(x, 0)
        x = self.fq(F.relu(self.b1(F.conv2d(x, self.fq(self.c1.weight, 1), padding=1))), 2)
        x = self.fq(F.relu(self.b2(F.conv2d(x, self.fq(self.c2.weight, 3), stride=2, padding=1))), 4)
        return self.fq(F.linear(x.flatten(1), self.fq(self.fc.weight, 5), self.fc.bias), 6)


class TorchRNN(torch.nn.Module):
    def __init__(self, qat):
        super().__init__()
        self.qat = qat
        self.rnn = torch.nn.RNN(8, 32, batch_first=True)
        self.fc = torch.nn.Linear(32, 10)
        self.s = torch.nn.Parameter(torch.full((8,), 0.1))
        self.z = torch.nn.Parameter(torch.zeros(8))

    def fq(self, t, i):
        if not self.qat:
            return t
        return torch._fake_quantize_learnable_per_tensor_affine(t, self.s[i:i + 1], self.z[i:i + 1], QMIN, QMAX,
                                                                1.0 / (t.numel() * QMAX) ** 0.5)

    def forward(self, x):
        if not self.qat:
            return self.fc(self.rnn(x)[0][:, -1])
        # QAT quantizes the weights and the state at every step: the step loop qdrift runs too.
        w_ih, w_hh = self.fq(self.rnn.weight_ih_l0, 1), self.fq(self.rnn.weight_hh_l0, 2)
        x = self.fq(x, 0)
        h = torch.zeros(x.shape[0], 32)
        for t in range(x.shape[1]):
            h = self.fq(torch.tanh(x[:, t] @ w_ih.T + self.rnn.bias_ih_l0 + h @ w_hh.T + self.rnn.bias_hh_l0), 3)
        return self.fq(F.linear(h, self.fq(self.fc.weight, 4), self.fc.bias), 5)


def run():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 10, BATCH)
    cfg = qd.QuantConfig(weights=dict(bits=4, symmetric=True, granularity="per_tensor"), activations=dict(bits=4),
                         state=dict(bits=4))
    rows = []
    for kind, model in qdrift_models().items():
        x = rng.random((BATCH,) + model.input_shape).astype(np.float32)
        for qat in (False, True):
            m = model.quantize(cfg, qat=True, lsq=True, calibration=x) if qat else model
            opt = T.Adam(1e-3)

            def step_qd():
                _, _, grads = T.forward_backward(m, x, y, loss="cross_entropy")
                T.apply_gradients(m, grads, opt)

            tm = TorchCNN(qat) if kind == "cnn" else TorchRNN(qat)
            topt = torch.optim.Adam(tm.parameters(), 1e-3)
            xt = torch.from_numpy(x).permute(0, 3, 1, 2).contiguous() if kind == "cnn" else torch.from_numpy(x)
            yt = torch.from_numpy(y)

            def step_torch():
                topt.zero_grad()
                F.cross_entropy(tm(xt), yt).backward()
                topt.step()

            t_qd, t_torch = best_time(step_qd, repeats=20), best_time(step_torch, repeats=20)
            label = f"{kind} {'QAT 4-bit LSQ' if qat else 'float'} step, batch {BATCH}"
            rows.append(dict(case=label, qdrift_ms=t_qd * 1e3, torch_ms=t_torch * 1e3, torch_over_qdrift=t_torch / t_qd))
    for r in rows:
        print(f"{r['case']:<36} qdrift {r['qdrift_ms']:8.3f} ms   torch {r['torch_ms']:8.3f} ms   "
              f"torch/qdrift {r['torch_over_qdrift']:.2f}")
    return rows


if __name__ == "__main__":
    run()
