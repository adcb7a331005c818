#!/usr/bin/env python3
"""Replays a sample of the fixtures from the JSON alone, with the Python standard library only
(no torch, no numpy). It shows that a consumer needs nothing but the JSON and README.md, and it is
a template for the Lua tests. Exit status 0 when every check passes.

    python3 Tests/Fixtures/sampling/check_fixtures.py
"""
import json
import math
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
FAIL = []
PASSED = [0]


def close(name, got, want, rtol, atol=0.0):
    g, w = flat(got), flat(want)
    assert len(g) == len(w), name
    worst = 0.0
    for a, b in zip(g, w):
        err = abs(a - b) / max(abs(b), atol / rtol if rtol else 1.0, 1e-300) if rtol else abs(a - b)
        worst = max(worst, err)
    if worst > (rtol if rtol else atol):
        FAIL.append("%s: worst error %.3e" % (name, worst))
    else:
        PASSED[0] += 1
    return worst


def flat(v):
    if isinstance(v, (list, tuple)):
        out = []
        for e in v:
            out.extend(flat(e))
        return out
    return [float(v)]


# ---- tiny tensor helpers on N x D lists ----
def add(a, b):
    return [[x + y for x, y in zip(r, s)] for r, s in zip(a, b)]


def scale(a, c):
    return [[x * c for x in r] for r in a]


def axpy(c, a, b):  # c*a + b
    return [[c * x + y for x, y in zip(r, s)] for r, s in zip(a, b)]


# ---- denoisers ----
def gmm(problem, x, sigma, flow=False):
    means, stds, w = problem["means"], problem["stds"], problem["weights"]
    out = []
    for row in x:
        logs, posts = [], []
        for mu, s, wk in zip(means, stds, w):
            if flow:
                a = 1.0 - sigma
                v = a * a * s * s + sigma * sigma
                diff = [xi - a * mi for xi, mi in zip(row, mu)]
                g = a * s * s / v
            else:
                v = s * s + sigma * sigma
                diff = [xi - mi for xi, mi in zip(row, mu)]
                g = s * s / v
            sq = sum(d * d for d in diff)
            logs.append(math.log(wk) - 0.5 * len(row) * math.log(2 * math.pi * v) - 0.5 * sq / v)
            posts.append([mi + g * d for mi, d in zip(mu, diff)])
        m = max(logs)
        e = [math.exp(l - m) for l in logs]
        z = sum(e)
        out.append([sum(e[k] / z * posts[k][j] for k in range(len(e))) for j in range(len(row))])
    return out


class Noise:
    def __init__(self, case, used_only=False):
        pairs = list(zip(case["noise"], case["noise_calls"]))
        if used_only:
            pairs = [p for p in pairs if p[1]["used"]]
        self.pairs = pairs
        self.j = 0

    def __call__(self, sigma=None, sigma_next=None):
        z, call = self.pairs[self.j]
        self.j += 1
        if call["via"] == "noise_sampler":
            close("noise call sigma", [sigma, sigma_next], [call["sigma"], call["sigma_next"]], 1e-12)
        return z


def ancestral_step(s0, s1, eta):
    if not eta:
        return s1, 0.0
    up = min(s1, eta * (s1 * s1 * (s0 * s0 - s1 * s1) / (s0 * s0)) ** 0.5)
    return (s1 * s1 - up * up) ** 0.5, up


# ---- a few samplers, in the k-diffusion style ----
def euler(D, x, sig, opts, noise):
    churn = opts.get("s_churn", 0.0)
    tmin = opts.get("s_tmin", 0.0)
    tmax = float(opts.get("s_tmax", "inf"))
    for i in range(len(sig) - 1):
        gamma = min(churn / (len(sig) - 1), 2 ** 0.5 - 1) if tmin <= sig[i] <= tmax else 0.0
        sh = sig[i] * (gamma + 1)
        if gamma > 0:
            x = axpy(opts.get("s_noise", 1.0) * (sh * sh - sig[i] * sig[i]) ** 0.5, noise(), x)
        d = D(x, sh)
        x = add(x, scale([[(a - b) / sh for a, b in zip(r, s)] for r, s in zip(x, d)], sig[i + 1] - sh))
    return x


def euler_ancestral(D, x, sig, opts, noise):
    for i in range(len(sig) - 1):
        den = D(x, sig[i])
        down, up = ancestral_step(sig[i], sig[i + 1], opts["eta"])
        dvec = [[(a - b) / sig[i] for a, b in zip(r, s)] for r, s in zip(x, den)]
        x = add(x, scale(dvec, down - sig[i]))
        if sig[i + 1] > 0:
            x = axpy(opts["s_noise"] * up, noise(sig[i], sig[i + 1]), x)
    return x


def dpmpp_2m(D, x, sig, opts, noise):
    old = None
    for i in range(len(sig) - 1):
        den = D(x, sig[i])
        if sig[i + 1] == 0:
            h = math.inf
        else:
            h = math.log(sig[i]) - math.log(sig[i + 1])
        if old is None or sig[i + 1] == 0:
            dd = den
        else:
            r = (math.log(sig[i - 1]) - math.log(sig[i])) / h
            dd = [[(1 + 1 / (2 * r)) * a - (1 / (2 * r)) * b for a, b in zip(p, q)] for p, q in zip(den, old)]
        ratio = sig[i + 1] / sig[i]
        x = [[ratio * a - math.expm1(-h) * b for a, b in zip(p, q)] for p, q in zip(x, dd)]
        old = den
    return x


def dpmpp_2m_sde(D, x, sig, opts, noise):
    eta, st = opts["eta"], opts["solver_type"]
    old, h_last = None, None
    for i in range(len(sig) - 1):
        den = D(x, sig[i])
        h = None
        if sig[i + 1] == 0:
            x = den
        else:
            h = math.log(sig[i]) - math.log(sig[i + 1])
            eh = eta * h
            c = -math.expm1(-h - eh)
            x = [[sig[i + 1] / sig[i] * math.exp(-eh) * a + c * b for a, b in zip(p, q)] for p, q in zip(x, den)]
            if old is not None:
                r = h_last / h
                if st == "heun":
                    k = (c / (-h - eh) + 1) / r
                else:
                    k = 0.5 * c / r
                x = [[a + k * (b - o) for a, b, o in zip(p, q, w)] for p, q, w in zip(x, den, old)]
            if eta:
                x = axpy(sig[i + 1] * (-math.expm1(-2 * eh)) ** 0.5 * opts["s_noise"], noise(sig[i], sig[i + 1]), x)
        old, h_last = den, h
    return x


def ddpm(D, x, sig, opts, noise):
    for i in range(len(sig) - 1):
        s, sn = sig[i], sig[i + 1]
        den = D(x, s)
        acp, acpp = 1 / (s * s + 1), 1 / (sn * sn + 1)
        al = acp / acpp
        out = []
        for r, dr in zip(x, den):
            out.append([(1 / al) ** 0.5 * (a / (1 + s * s) ** 0.5 - (1 - al) * ((a - b) / s) / (1 - acp) ** 0.5)
                        for a, b in zip(r, dr)])
        if sn > 0:
            out = axpy(((1 - al) * (1 - acpp) / (1 - acp)) ** 0.5, noise(s, sn), out)
            out = scale(out, (1 + sn * sn) ** 0.5)
        x = out
    return x


SAMPLERS = {"euler": euler, "euler_ancestral": euler_ancestral, "dpmpp_2m": dpmpp_2m,
            "dpmpp_2m_sde": dpmpp_2m_sde, "ddpm": ddpm}


def check_samplers():
    S = json.load(open(os.path.join(HERE, "samplers.json")))
    prob = S["problem"]
    for c in S["denoiser_checks"]:
        flow = c["model"] == "gmm_flow"
        got = gmm(prob, c["x"], c["t"] if flow else c["sigma"], flow)
        close("denoiser %s %s" % (c["model"], c.get("sigma", c.get("t"))), got, c["denoised"], 1e-12, 1e-12)
    for c in S["cases"]:
        fn = SAMPLERS.get(c["sampler"])
        if fn is None or "sigmas" not in c:
            continue
        if c["sampler"] == "ddim":
            continue
        flow = c["x_init"] == "z"
        D = lambda x, s, flow=flow: gmm(prob, x, s, flow)
        sig = S["sigma_sets"][c["sigmas"]]
        x = S["x_inits"][c["x_init"]]
        noise = Noise(c, used_only=c["name"].startswith("euler_churn"))
        got = fn(D, x, sig, c["options"], noise)
        close("%s/%s" % (c["name"], c["sigmas"]), got, c["x_final"], 1e-9, 1e-9)
        if noise.pairs:
            assert noise.j == len(noise.pairs), c["name"] + ": noise not all consumed"
    for d in S["diffusers_cases"]:
        eq = d.get("k_equivalent")
        if eq and eq["sampler"] in SAMPLERS:
            D = lambda x, s: gmm(prob, x, s)
            fake = {"noise": d["noise"], "noise_calls": [{"via": "diffusers", "used": True}] * len(d["noise"])}
            opts = dict(eq.get("options", {}))
            opts.setdefault("s_noise", 1.0)
            got = SAMPLERS[eq["sampler"]](D, eq["x_init"], eq["sigmas"], opts, Noise(fake))
            close("diffusers %s -> %s" % (d["name"], eq["sampler"]), got, d["x_final"], 0, 1e-6)


def karras(p):
    n, lo, hi, rho = p["n"], p["sigma_min"], p["sigma_max"], p["rho"]
    ramp = [i / (n - 1) for i in range(n)]
    return [(hi ** (1 / rho) + r * (lo ** (1 / rho) - hi ** (1 / rho))) ** rho for r in ramp] + [0.0]


def kl_optimal(p):
    n = p["n"]
    return [math.tan(i / (n - 1) * math.atan(p["sigma_min"]) + (1 - i / (n - 1)) * math.atan(p["sigma_max"]))
            for i in range(n)] + [0.0]


def check_schedules():
    S = json.load(open(os.path.join(HERE, "schedules.json")))
    fns = {"karras": karras, "kl_optimal": kl_optimal}
    for c in S:
        if c["name"] in fns:
            close("schedule %s %s" % (c["name"], c["params"]), fns[c["name"]](c["params"]), c["sigmas"], 1e-12)
        if "sigmas_f64" in c:
            close("f32 vs f64 %s" % c["name"], c["sigmas"], c["sigmas_f64"], c["max_rel_diff_f32_vs_f64"] * 1.01 + 1e-15)


if __name__ == "__main__":
    check_schedules()
    check_samplers()
    for f in FAIL:
        print("FAIL", f)
    print("%d passed, %d failed" % (PASSED[0], len(FAIL)))
    sys.exit(1 if FAIL else 0)
