"""A one-shot check of a GPU machine for the deep half: one command, JSON and PASS/FAIL lines.

Phases (each under its own timeout, ``signal.alarm``; a phase that overruns FAILs and the next
one runs):

- ``env``: ``nvidia-smi``, torch and CUDA versions, bf16 support, the size of ``/dev/shm``
  (DataLoader workers share batches through it; Docker's default 64 MiB is too small);
- ``fit``: a few bf16 training steps (fp32 on the CPU) of ``r2plus1d_18``, tiny ``vit_gru_small``,
  tiny ``slowfast_r50`` and ``variable_aspect_cnn`` fed by the trainer's uint8 path
  (:func:`fvcflow.deep.data.to_input`): every loss finite;
- ``resume``: two epochs in one go vs one epoch, a checkpoint (weights, optimiser, the device's RNG
  state through :func:`fvcflow.deep.loop.rng_state`), a fresh model, the second epoch: the same
  weights (bit for bit on the CPU, within 1e-5 on CUDA);
- ``predict``: eval logits of one model on the device vs on the CPU, within 1e-3;
- ``ddp``: DistributedDataParallel on every GPU there is (NCCL; on the CPU 2 gloo ranks), ranks
  started as the trainer starts them (:func:`fvcflow.deep.distributed.start_ranks`): one fp32 SGD
  step of ``r2plus1d_18`` with SyncBatchNorm equals one process's step on the union batch
  (CUDA, within 1e-4: SyncBatchNorm normalises over every rank's clips; gloo has none, so on the
  CPU only the ranks' agreement is checked), then bf16 steps in channels_last_3d: finite, and
  every rank holds the same weights;
- ``launcher``: the same check under ``torchrun --standalone --nproc-per-node N`` (the ranks join
  from the launcher's variables, :func:`fvcflow.config.launch_env`, each on ``cuda:LOCAL_RANK``);
- ``defaults``: the batch size, precision and memory format chosen for the device
  (:func:`fvcflow.deep.device.choose_defaults`) for ``r2plus1d_18`` at 16x112x112, and one training
  step at that batch: it fits (peak memory vs the card's);
- ``throughput``: ``r2plus1d_18`` (``--quick``: ``naive_3dcnn``, 32 clips) training clips/s fed
  by the real cached-clip DataLoader
  (uint8, workers, pinned memory) vs the same loop on clips already in device memory, over at
  least 1,000 clips (target ratio >= 0.85; checked on CUDA only, on 2 CPU cores the loader
  competes with the model for them); peak memory.

    python -m benchmarks.gpu_check                      # on a GPU machine, under 6 minutes on one H100
    python -m benchmarks.gpu_check --device cpu --quick # every phase on the CPU, small, < 3 minutes
"""

from __future__ import annotations

import argparse
import io
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from fvcflow.deep import distributed
from fvcflow.deep.clips import ClipCache, ClipSource
from fvcflow.deep.data import ClipDataset, RawClips, make_loader, to_input
from fvcflow.deep.loop import rng_state, set_rng_state
from fvcflow.models.torch_common import ClipSpec, build_video_model, clip_spec
from fvcflow.video import VideoWriter

RATIO_TARGET = 0.85


class PhaseTimeout(Exception):
    pass


def _alarm(signum, frame):
    raise PhaseTimeout


def fused(device: torch.device) -> dict:
    return {"fused": True} if device.type == "cuda" else {}


def autocast(device: torch.device):
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return torch.autocast("cpu", enabled=False)


def raw_batch(spec: ClipSpec, batch: int, seed: int, side: int) -> RawClips:
    """A batch as the loader ships it: random uint8 clips, some cropped (by the flip/crop box fields)."""
    g = torch.Generator().manual_seed(seed)
    data = torch.randint(0, 256, (batch, spec.frames, side, side, spec.n_channels), dtype=torch.uint8,
                         generator=g)
    aug = torch.tensor([[i % 2, i % 3, i % 2, side - (i % 3), side - (i % 2)] for i in range(batch)],
                       dtype=torch.int32)                   # flip, crop top, left, height, width
    return RawClips(data, aug)


def env(args, device) -> dict:
    smi = shutil.which("nvidia-smi")
    out = {"torch": torch.__version__, "cuda": torch.version.cuda, "device": str(device),
           "cuda_available": torch.cuda.is_available(), "gpus": torch.cuda.device_count(),
           "bf16": bool(device.type == "cuda" and torch.cuda.is_bf16_supported()),
           "cpus": os.cpu_count()}
    if smi:
        proc = subprocess.run([smi, "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
                              capture_output=True, text=True, timeout=30)
        out["nvidia_smi"] = proc.stdout.strip().splitlines()
    shm = shutil.disk_usage("/dev/shm").total if Path("/dev/shm").exists() else 0
    out["dev_shm_mib"] = round(shm / 2**20)
    problems = []
    if device.type == "cuda" and not out["bf16"]:
        problems.append("no bf16 on this GPU")
    if shm < 1 << 30:
        problems.append(f"/dev/shm is {out['dev_shm_mib']} MiB (DataLoader workers need >= 1 GiB: "
                        "docker run --shm-size=8g)")
    out["problems"] = problems
    out["ok"] = not problems or device.type == "cpu"
    return out


def fit(args, device) -> dict:
    side = 32 if args.quick else 112
    models = {"r2plus1d_18": ({}, 4 if args.quick else 16),
              "vit_gru_small": ({"embed_dim": 64, "depth": 2, "heads": 2, "patch": 8},
                                4 if args.quick else 16),
              "slowfast_r50": ({"width": 8}, 8 if args.quick else 32),
              "variable_aspect_cnn": ({}, 4 if args.quick else 8)}
    out = {}
    for name, (params, frames) in models.items():
        spec = clip_spec(name, {"frames": frames, "size": None if clip_spec(name).size is None else side})
        model = build_video_model(name, clip=spec, seed=0, **params).to(device).train()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4, **fused(device))
        losses = []
        start = time.perf_counter()
        for step in range(1 if args.quick else 10):
            raw = raw_batch(spec, 2 if args.quick else 8, step, side)
            y = torch.tensor([i % 2 for i in range(len(raw))], dtype=torch.float32, device=device)
            with autocast(device):
                loss = F.binary_cross_entropy_with_logits(model(to_input(raw, spec, device)).float(), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(loss.detach())
        losses = [float(v) for v in torch.stack(losses).cpu()]
        out[name] = {"losses": [round(v, 4) for v in losses],
                     "seconds": round(time.perf_counter() - start, 2),
                     "finite": bool(np.isfinite(losses).all())}
        del model, opt
    out["ok"] = all(v["finite"] for v in out.values())
    return out


def _epoch(model, opt, spec, device, epoch: int, steps: int, side: int) -> None:
    for step in range(steps):
        raw = raw_batch(spec, 4, 1000 * epoch + step, side)
        y = torch.tensor([0, 1, 0, 1], dtype=torch.float32, device=device)
        with autocast(device):
            loss = F.binary_cross_entropy_with_logits(model(to_input(raw, spec, device)).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()


def resume(args, device) -> dict:
    spec, side, steps = ClipSpec(frames=4, clips=1, size=32), 32, 3
    name = "naive_3dcnn"

    def fresh():
        model = build_video_model(name, clip=spec, seed=1).to(device)
        return model, torch.optim.AdamW(model.parameters(), lr=1e-3)

    torch.manual_seed(7)
    straight, opt = fresh()
    for epoch in range(2):
        _epoch(straight, opt, spec, device, epoch, steps, side)
    torch.manual_seed(7)
    first, opt = fresh()
    _epoch(first, opt, spec, device, 0, steps, side)
    buf = io.BytesIO()
    torch.save({"model": first.state_dict(), "optimizer": opt.state_dict(), "rng": rng_state(device)}, buf)
    del first, opt                                          # "interrupted"
    snap = torch.load(io.BytesIO(buf.getvalue()), map_location="cpu", weights_only=True)
    torch.manual_seed(123)                                  # the new process's streams differ
    resumed, opt = fresh()
    resumed.load_state_dict(snap["model"])
    opt.load_state_dict(snap["optimizer"])
    set_rng_state(snap["rng"], device)
    _epoch(resumed, opt, spec, device, 1, steps, side)
    pairs = zip(straight.state_dict().values(), resumed.state_dict().values())
    diff = max(float((a - b).abs().max()) for a, b in pairs if a.is_floating_point())
    tol = 0.0 if device.type == "cpu" else 1e-5
    return {"max_weight_diff": diff, "tolerance": tol, "ok": diff <= tol}


def predict(args, device) -> dict:
    spec = ClipSpec(frames=4 if args.quick else 16, clips=1, size=32 if args.quick else 112)
    model = build_video_model("r2plus1d_18", clip=spec, seed=3).eval()
    raw = raw_batch(spec, 4, 99, spec.size)
    with torch.no_grad():
        cpu = torch.sigmoid(model(to_input(raw, spec, torch.device("cpu"))))
        on = torch.sigmoid(model.to(device)(to_input(raw, spec, device))).cpu()
    diff = float((cpu - on).abs().max())
    return {"max_prob_diff": diff, "tolerance": 1e-3, "compared": f"{device} vs cpu", "ok": diff <= 1e-3}


def throughput(args, device) -> dict:
    quick = args.quick
    name = "naive_3dcnn" if quick else "r2plus1d_18"       # quick: the loader path, not the model, on a CPU
    frames, side, batch = (4, 32, 8) if quick else (16, 112, 32)
    clips = 32 if quick else 1024
    workers = 1 if quick else min(8, os.cpu_count() or 1)
    spec = clip_spec(name, {"frames": frames, "clips": 4, "size": side})
    with tempfile.TemporaryDirectory(prefix="fvc-gpu-check-") as tmp:
        rng = np.random.default_rng(0)
        sources = []
        n_videos = 8 if quick else 64
        for i in range(n_videos):
            path = Path(tmp) / f"v{i}.mp4"
            with VideoWriter(path, side + 16, side + 16, 25.0) as w:
                w.write(rng.integers(0, 255, (frames * 3, side + 16, side + 16, 3), dtype=np.uint8))
            sources.append(ClipSource(f"v{i}", str(path), f"h{i}", frames * 3))
        ds = ClipDataset(sources, [i % 2 for i in range(n_videos)], spec, ClipCache(Path(tmp) / "clips"),
                         train=True).prepare()
        loader = make_loader(ds, batch_size=batch, shuffle=True, workers=workers,
                             pin_memory=device.type == "cuda", raw=True)
        model = build_video_model(name, clip=spec).to(device).train()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4, **fused(device))
        if device.type == "cuda":
            torch.backends.cudnn.benchmark = True
            torch.cuda.reset_peak_memory_stats(device)

        def step(x, y):
            with autocast(device):
                loss = F.binary_cross_entropy_with_logits(model(x).float(), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        def sync():
            if device.type == "cuda":
                torch.cuda.synchronize(device)

        def fed(n: int) -> float:
            seen, epoch, start = 0, 0, None
            while seen < n:
                loader.sampler.set_epoch(epoch)
                for raw, y, _ in loader:
                    step(to_input(raw, spec, device), y.to(device, non_blocking=True))
                    if start is None:                       # warm-up step: workers start, cudnn picks
                        sync()
                        start = time.perf_counter()
                        continue
                    seen += len(y)
                    if seen >= n:
                        break
                epoch += 1
            sync()
            return seen / (time.perf_counter() - start)

        def resident(n: int) -> float:
            raw, y, _ = next(iter(loader))
            x, y = to_input(raw, spec, device), y.to(device)
            step(x, y)
            sync()
            start, seen = time.perf_counter(), 0
            while seen < n:
                step(x, y)
                seen += len(y)
            sync()
            return seen / (time.perf_counter() - start)

        a, b = fed(clips), resident(clips)
    peak = (torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    ratio = a / b
    return {"model": name, "clip": f"{frames}x{side}x{side}", "batch": batch, "workers": workers,
            "clips": clips,
            "loader_clips_per_s": round(a, 1), "resident_clips_per_s": round(b, 1), "ratio": round(ratio, 3),
            "target": RATIO_TARGET, "peak_mib": round(peak),
            "peak_of": "GPU" if device.type == "cuda" else "RSS",
            "ok": ratio >= RATIO_TARGET or device.type != "cuda"}


# -- DDP: spawned ranks and a launcher's ---------------------------------------------------------
DDP_CLIP = {"frames": 4, "clips": 1, "size": 32}


def ddp_rank(ctx, out: str, steps: int) -> None:
    """One rank: an fp32 SGD step on its share of a global batch (2 clips per rank), then ``steps``
    bf16 (CUDA) steps in channels_last_3d; its weights after each saved as ``<rank>.pt``."""
    spec = ClipSpec(**DDP_CLIP)
    cuda = ctx.device.type == "cuda"
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False   # fp32 compared
    model = build_video_model("r2plus1d_18", clip=spec, seed=0).to(ctx.device).train()
    net = distributed.wrap(model, ctx)                      # SyncBatchNorm on CUDA
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    raw = raw_batch(spec, 2 * ctx.world, 5, spec.size)
    mine = slice(2 * ctx.rank, 2 * ctx.rank + 2)
    y = torch.tensor([i % 2 for i in range(2 * ctx.world)], dtype=torch.float32)[mine].to(ctx.device)
    loss = F.binary_cross_entropy_with_logits(net(to_input(RawClips(raw.data[mine], raw.aug[mine]), spec,
                                                           ctx.device)).float(), y)
    loss.backward()
    opt.step()
    one = {k: v.detach().cpu().clone() for k, v in net.module.state_dict().items()}   # BN statistics too
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    fmt = torch.channels_last_3d if cuda else None
    if fmt is not None:
        net.module.to(memory_format=fmt)
    losses = []
    for step in range(steps):
        raw = raw_batch(spec, 2, 100 * step + ctx.rank, spec.size)
        yy = torch.tensor([0.0, 1.0], device=ctx.device)
        with torch.autocast(ctx.device.type, dtype=torch.bfloat16, enabled=cuda):
            loss = F.binary_cross_entropy_with_logits(net(to_input(raw, spec, ctx.device, memory_format=fmt))
                                                      .float(), yy)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.detach())
    torch.save({"one": one, "last": {k: v.detach().cpu() for k, v in net.module.named_parameters()},
                "losses": torch.stack(losses).float().cpu(), "device": str(ctx.device),
                "syncbn": any(isinstance(m, torch.nn.SyncBatchNorm) for m in net.modules())},
               Path(out) / f"{ctx.rank}.pt")


def _single_step(world: int, device) -> dict:
    """One process's fp32 SGD step on the union batch of ``world`` ranks (BatchNorm over all of it)."""
    spec = ClipSpec(**DDP_CLIP)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        model = build_video_model("r2plus1d_18", clip=spec, seed=0).to(device).train()
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        raw = raw_batch(spec, 2 * world, 5, spec.size)
        y = torch.tensor([i % 2 for i in range(2 * world)], dtype=torch.float32, device=device)
        F.binary_cross_entropy_with_logits(model(to_input(raw, spec, device)).float(), y).backward()
        opt.step()
        return {k: v.detach().cpu() for k, v in model.state_dict().items()}
    finally:
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True


def _ddp_verdict(folder: Path, world: int, device) -> dict:
    ranks = [torch.load(folder / f"{r}.pt", weights_only=True) for r in range(world)]
    agree = max(float((a - b).abs().max()) for r in ranks[1:] for k, a in ranks[0]["last"].items()
                for b in [r["last"][k]] if a.is_floating_point())
    finite = all(bool(torch.isfinite(r["losses"]).all()) for r in ranks)
    out = {"world": world, "devices": [r["device"] for r in ranks],
           "backend": distributed.backend_for(device), "syncbn": ranks[0]["syncbn"],
           "ranks_max_weight_diff": agree, "bf16_losses_finite": finite}
    ok = agree == 0.0 and finite
    if device.type == "cuda":                   # SyncBatchNorm: the union batch's statistics
        single = _single_step(world, device)
        diff = max(float((ranks[0]["one"][k] - v).abs().max()) for k, v in single.items()
                   if v.is_floating_point())
        out.update({"vs_one_process_max_diff": diff, "tolerance": 1e-4})
        ok = ok and ranks[0]["syncbn"] and diff <= 1e-4
    out["ok"] = ok
    return out


def _world(device) -> list:
    if device.type == "cuda":
        return [torch.device("cuda", i) for i in range(torch.cuda.device_count())]
    return [torch.device("cpu")] * 2


def ddp(args, device) -> dict:
    devices = _world(device)
    if len(devices) < 2:
        return {"ok": True, "skipped": f"{len(devices)} GPU: DDP needs 2"}
    with tempfile.TemporaryDirectory(prefix="fvc-gpu-ddp-") as tmp:
        address = f"tcp://127.0.0.1:{distributed.free_port()}"
        ranks = distributed.start_ranks(ddp_rank, devices, address, 120, (tmp, 3))
        try:
            ranks.wait_started(120)
            ctx = distributed.join(0, len(devices), devices[0], address, 120)
            try:
                ddp_rank(ctx, tmp, 3)
            finally:
                distributed.leave()
        finally:
            ranks.stop()
        if ranks.failure():
            return {"ok": False, "error": ranks.failure()}
        return _ddp_verdict(Path(tmp), len(devices), device)


def launcher(args, device) -> dict:
    devices = _world(device)
    if len(devices) < 2:
        return {"ok": True, "skipped": f"{len(devices)} GPU: DDP needs 2"}
    with tempfile.TemporaryDirectory(prefix="fvc-gpu-torchrun-") as tmp:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node",
               str(len(devices)), "-m", "benchmarks.gpu_check", "--device", device.type, "--launched", tmp]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=170,
                              env={**os.environ, "OMP_NUM_THREADS": "1"})
        if proc.returncode != 0:
            return {"ok": False, "error": (proc.stderr.strip().splitlines() or ["?"])[-1][:300]}
        return _ddp_verdict(Path(tmp), len(devices), device)


def launched(out: str, device_type: str) -> int:
    """A rank started by torchrun: join from the launcher's variables, run :func:`ddp_rank`."""
    from fvcflow.config import launch_env

    env = launch_env("torchrun")
    ctx = distributed.join_launched(env, 120, cuda=device_type == "cuda")
    try:
        ddp_rank(ctx, out, 3)
    finally:
        distributed.leave_launched()
    return 0


def defaults(args, device) -> dict:
    from fvcflow.deep.device import choose_defaults, describe

    spec = clip_spec("r2plus1d_18", {"frames": 16, "size": 112})
    model = build_video_model("r2plus1d_18", clip=spec, seed=0)
    conv3d = any(isinstance(m, torch.nn.Conv3d) for m in model.modules())
    if device.type == "cuda":
        torch.cuda.empty_cache()
    info = describe(device)
    chosen = choose_defaults(info, clip_elements=spec.n_channels * 16 * 112 * 112, conv3d=conv3d)
    out = {"device": info.__dict__, "model": "r2plus1d_18", "clip": "16x112x112", **chosen.params()}
    side = 112
    if args.quick:                  # the chosen settings stepped on a small model and clip
        spec, side = clip_spec("naive_3dcnn", {"frames": 4, "size": 32}), 32
        model = build_video_model("naive_3dcnn", clip=spec, seed=0)
        out["stepped"] = "naive_3dcnn 4x32x32"
    fmt = torch.channels_last_3d if chosen.channels_last else None
    model = model.to(device).train()
    if fmt is not None:
        model = model.to(memory_format=fmt)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, **fused(device))
    batch = chosen.batch_size if device.type == "cuda" or not args.quick else min(chosen.batch_size, 4)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    for step in range(2):
        raw = raw_batch(spec, batch, step, side)
        y = torch.tensor([i % 2 for i in range(batch)], dtype=torch.float32, device=device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=chosen.precision == "bf16"):
            loss = F.binary_cross_entropy_with_logits(model(to_input(raw, spec, device, memory_format=fmt))
                                                      .float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    out["stepped_batch"] = batch
    out["loss_finite"] = bool(torch.isfinite(loss.detach()).item())
    if device.type == "cuda":
        out["peak_mib"] = round(torch.cuda.max_memory_allocated(device) / 2**20)
        out["peak_of_free"] = round(out["peak_mib"] / max(1, info.free_mib), 3)
        out["bf16_on_ampere"] = chosen.precision == ("bf16" if info.capability >= (8, 0) else "fp32")
    out["ok"] = out["loss_finite"] and out.get("bf16_on_ampere", True)
    return out


PHASES = {"env": (env, 60), "fit": (fit, 120), "resume": (resume, 60), "predict": (predict, 60),
          "ddp": (ddp, 150), "launcher": (launcher, 180), "defaults": (defaults, 90),
          "throughput": (throughput, 150)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda", help="cuda, cuda:N or cpu")
    ap.add_argument("--quick", action="store_true",
                    help="small clips and counts (every phase, minutes on a CPU)")
    ap.add_argument("--phases", default=",".join(PHASES), help="comma-separated subset")
    ap.add_argument("--launched", metavar="DIR", help=argparse.SUPPRESS)   # a torchrun rank of 'launcher'
    args = ap.parse_args(argv)
    if args.launched:
        return launched(args.launched, torch.device(args.device).type)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda but torch sees no CUDA device (try --device cpu --quick)",
              file=sys.stderr)
        return 2
    if device.type == "cuda":
        torch.cuda.set_device(device)
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    signal.signal(signal.SIGALRM, _alarm)
    failed = []
    for name in args.phases.split(","):
        func, limit = PHASES[name]
        start = time.perf_counter()
        signal.alarm(limit)
        try:
            result = func(args, device)
        except PhaseTimeout:
            result = {"ok": False, "error": f"over its {limit} s timeout"}
        except Exception as exc:  # noqa: BLE001 - a phase's failure is reported, the next phase runs
            first = str(exc).splitlines()[0] if str(exc) else ""
            result = {"ok": False, "error": f"{type(exc).__name__}: {first}"}
        finally:
            signal.alarm(0)
        result["seconds"] = round(time.perf_counter() - start, 1)
        print(json.dumps({"phase": name, **result}, default=str), flush=True)
        print(f"{'PASS' if result['ok'] else 'FAIL'}: {name}", flush=True)
        if not result["ok"]:
            failed.append(name)
        if device.type == "cuda":
            torch.cuda.empty_cache()
    which = f" ({', '.join(failed)})" if failed else ""
    print(f"{'PASS' if not failed else 'FAIL'}: gpu_check on {device}{which}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
