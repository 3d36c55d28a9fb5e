#!/usr/bin/env bash
# BT's GPU job for issues 17 (backdoor suite) and 18 (T-Core). Usage (from the repo root):
#     bash benchmarks/gpu/backdoor_tcore.sh OUTDIR SECONDS        ($PY = python, default python3)
# GPU_JOB_TINY=1 shrinks every size (CPU check). Two lanes run in parallel (at most three python processes
# at once, each with XLA_PYTHON_CLIENT_MEM_FRACTION, per process as run_all.sh sets it; default 0.25):
#   lane 1: SimCLR pre-training of a narrow BN ResNet on the 10,000 cifar10_jpeg_20k training images + linear probe,
#           then two branches in parallel:
#           a) T-Core study, dataset threat (BadNets, Blended; none / T-Core / SS / AC; linear probe), then
#              BadNets in full fine-tuning mode (none / T-Core / SS), then WaNet (linear)
#           b) BadEncoder on that encoder (+ probe ACC/ASR) -> T-Core study, encoder threat (none / T-Core / CLP)
#   lane 2: backdoor study, paper variant on CIFAR-10 20k (BN ResNet victims, subset of attacks x defenses)
# Each stage writes its results into OUTDIR when it finishes; checkpoints and encoder caches stay in $BT_WORK.
set -u
OUT=${1:?usage: backdoor_tcore.sh OUTDIR SECONDS}
SECS=${2:-420}
PY=${PY:-python3}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
ROOT=$(pwd)
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
if ! $PY -c "import ml_collections" 2>/dev/null && [ -d "$HERE/bt_pylib" ]; then
  export PYTHONPATH="$PYTHONPATH:$HERE/bt_pylib"       # pure-python ml_collections copy (not on the GPU image)
fi
export PYTHONUNBUFFERED=1 TQDM_DISABLE=1
WORK=${BT_WORK:-/tmp/bt_work_$$}
mkdir -p "$WORK"
export JAX_COMPILATION_CACHE_DIR=${JAX_COMPILATION_CACHE_DIR:-$WORK/jax_cache}
export JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS=${JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS:-1}
# up to three python processes at once (lane 2, and lane 1's two branches); the lead's run_all.sh sets
# XLA_PYTHON_CLIENT_MEM_FRACTION per process (it assumes 3 processes per job), so each process keeps it
FRAC=${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.25}
if [ "${GPU_JOB_TINY:-0}" = "1" ]; then
  : "${BT_WIDTH:=4}" "${BT_EPOCHS:=1}" "${BT_SIMCLR_BATCH:=64}" "${BT_N_SIMCLR:=256}" "${BT_N_ADAPT:=300}" "${BT_N_EVAL:=200}"
  : "${BT_ATTACKS:=badnets}" "${BT_ATTACKS2:=blended}" "${BT_BE_STEPS:=3}" "${BT_BE_BATCH:=32}"
  : "${BT_BD_MODEL:=narrow_resnet}" "${BT_BD_WIDTH:=4}" "${BT_BD_K:=2}" "${BT_BD_NTRAIN:=400}" "${BT_BD_EPOCHS:=1}"
  : "${BT_BD_ATTACKS:=badnets}" "${BT_BD_DEFENSES:=none,spectral_signatures,clp,fine_pruning}" "${BT_FT_EPOCHS:=1}"
fi
: "${BT_WIDTH:=32}" "${BT_EPOCHS:=60}" "${BT_SIMCLR_BATCH:=512}"
: "${BT_BD_MODEL:=narrow_resnet}" "${BT_BD_WIDTH:=32}" "${BT_BD_K:=2}" "${BT_BD_EPOCHS:=30}"
export BT_WIDTH BT_EPOCHS BT_SIMCLR_BATCH BT_BD_MODEL BT_BD_WIDTH BT_BD_K BT_BD_EPOCHS
: "${BT_SIMCLR_SECONDS:=$(( SECS * 33 / 100 ))}" "${BT_BE_SECONDS:=$(( SECS * 15 / 100 ))}"
export BT_SIMCLR_SECONDS BT_BE_SECONDS
for v in BT_N_SIMCLR BT_N_ADAPT BT_N_EVAL BT_ATTACKS BT_ATTACKS2 BT_BE_STEPS BT_BE_BATCH BT_BD_NTRAIN BT_BD_ATTACKS BT_BD_DEFENSES BT_FT_EPOCHS; do
  [ -n "${!v:-}" ] && export "$v"
done
DRIVER="$WORK/bt_driver.py"
cat > "$DRIVER" <<'PYEOF'
"""BT's GPU driver for issues 17/18 (embedded into benchmarks/gpu/backdoor_tcore.sh). One stage per call:

    python bt_driver.py STAGE OUTDIR WORKDIR

Stages: env | simclr | tcore_dataset | badencoder | tcore_encoder | backdoor. Each writes small JSON/MD/PNG
files into OUTDIR as soon as a piece finishes; checkpoints / encoder caches stay under WORKDIR.
Sizes come from BT_* environment variables set by the shell script (GPU_JOB_TINY=1 shrinks everything).
"""
import json
import os
import shutil
import sys
import time
import traceback
from pathlib import Path

STAGE, OUT, WORK = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
OUT.mkdir(parents=True, exist_ok=True)
WORK.mkdir(parents=True, exist_ok=True)
CACHE = WORK / "encoders"
E = os.environ


def ev(name, default, cast=int):
    return cast(E.get(name, default))


W = ev("BT_WIDTH", 32)
EP = ev("BT_EPOCHS", 60)
SIMCLR_BATCH = ev("BT_SIMCLR_BATCH", 512)
SIMCLR_LR = ev("BT_SIMCLR_LR", 2e-3, float)
N_SIMCLR = ev("BT_N_SIMCLR", 0)             # 0: all 10,000 training images
N_ADAPT = ev("BT_N_ADAPT", 8000)
N_EVAL = ev("BT_N_EVAL", 2000)
ATTACKS = [a for a in E.get("BT_ATTACKS", "badnets,blended").split(",") if a]
TC_DEFENSES = [d for d in E.get("BT_TC_DEFENSES", "none,tcore,spectral_signatures,activation_clustering").split(",") if d]
BE_STEPS = ev("BT_BE_STEPS", 600)
BE_BATCH = ev("BT_BE_BATCH", 256)
BE_LR = ev("BT_BE_LR", 1e-3, float)
BE_TRIG = ev("BT_BE_TRIGGER", 10)
TINY = E.get("GPU_JOB_TINY", "0") == "1"


def log(*a):
    print(f"[bt {STAGE} {time.strftime('%H:%M:%S')}]", *a, flush=True)


def write(name, obj):
    p = OUT / name
    tmp = p.with_suffix(p.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1, default=float))
    tmp.replace(p)
    log("wrote", p)


def load_json(p):
    try:
        return json.loads(Path(p).read_text())
    except Exception:
        return None


def enc_epochs():
    f = WORK / "simclr_epochs.txt"                 # chosen by stage simclr (time-budgeted), read by later stages
    return int(f.read_text()) if f.exists() else EP


def enc_name():
    return f"simclr_narrow_w{W}_e{enc_epochs()}"


def choose_epochs(x, t_stage):
    """Epochs that fit ``BT_SIMCLR_SECONDS`` (absent: BT_EPOCHS): time 8 SimCLR steps (after compiling one),
    then allow for a second compilation (the runner's scan) and the probe."""
    budget = E.get("BT_SIMCLR_SECONDS")
    if not budget:
        return EP
    import jax
    import jax.numpy as jnp
    from poisonjax.vision.ssl.encoders import build_encoder
    from poisonjax.vision.ssl.simclr import ProjectionHead, simclr_optimizer
    module, d = build_encoder("narrow", W)
    head = ProjectionHead(hidden=d, out=128)
    opt = simclr_optimizer(module, head, n=len(x), batch_size=SIMCLR_BATCH, epochs=EP, temperature=0.5,
                           lr=SIMCLR_LR, image_shape=x.shape[1:])
    prob = {"x": jnp.asarray(x)}
    step = jax.jit(opt.step)
    t0 = time.time()
    st = jax.block_until_ready(step(jax.jit(opt.init)(jax.random.PRNGKey(0), prob), prob))
    t_comp = time.time() - t0
    t0 = time.time()
    for _ in range(8):
        st = step(st, prob)
    jax.block_until_ready(st)
    t_epoch = (time.time() - t0) / 8 * (len(x) // SIMCLR_BATCH)
    left = float(budget) - (time.time() - t_stage) - 1.5 * t_comp - 20.0
    ep = int(max(1, min(EP, left // max(t_epoch, 1e-6))))
    log(f"calibration: compile {t_comp:.1f} s, {t_epoch:.2f} s/epoch -> {ep} epochs (budget {budget} s)")
    write("simclr_calibration.json", {"compile_seconds": t_comp, "seconds_per_epoch": t_epoch, "epochs": ep,
                                      "budget_seconds": float(budget)})
    return ep


def copy_study(wd, prefix):
    for f in ("results.json", "report.md", "asr_heatmap.png"):
        if (Path(wd) / f).exists():
            shutil.copy(Path(wd) / f, OUT / f"{prefix}_{f}")
    log("copied", prefix)


# ------------------------------------------------------------------------------------------------
def stage_env():
    import jax
    write("env.json", {"jax": jax.__version__, "devices": [str(d) for d in jax.devices()],
                       "backend": jax.default_backend(), "tiny": TINY,
                       "settings": {k: v for k, v in E.items() if k.startswith(("BT_", "XLA_", "JAX_"))}})


def stage_simclr():
    import jax
    import numpy as np
    from poisonjax.vision.ssl.encoders import load_cifar10_20k, save_encoder
    from poisonjax.vision.ssl.probe import cifar_probe_split, linear_probe
    from poisonjax.vision.ssl.simclr import pretrain_simclr
    t_stage = time.time()
    if (WORK / "simclr_epochs.txt").exists() and (CACHE / enc_name() / "meta.json").exists():
        log("encoder cached", enc_name())
        return
    x, _ = load_cifar10_20k("train")
    if N_SIMCLR:
        x = x[np.random.RandomState(0).permutation(len(x))[:N_SIMCLR]]
    ep = choose_epochs(x, t_stage)
    (WORK / "simclr_epochs.txt").write_text(str(ep))
    path = CACHE / enc_name()
    t0 = time.time()
    b = pretrain_simclr(x, jax.random.PRNGKey(0), arch="narrow", width=W, epochs=ep, batch_size=SIMCLR_BATCH,
                        lr=SIMCLR_LR, workdir=CACHE / f"{enc_name()}.run", progress=False, chunk_size=50)
    t_pre = time.time() - t0
    log(f"pretrained {ep} epochs in {t_pre:.1f} s, loss {b.meta['final_loss']:.4f}")
    xa, ya, xe, ye = cifar_probe_split()
    t1 = time.time()
    acc = linear_probe(b, xa, ya, xe, ye, epochs=300, key=jax.random.PRNGKey(1))
    b = b._replace(meta={**b.meta, "probe_accuracy": acc})
    from poisonjax.vision.ssl.encoders import EncoderBundle, init_encoder
    try:                                   # the same architecture untrained: what SimCLR adds over random features
        r = init_encoder(jax.random.PRNGKey(0), "narrow", W)
        r = r if isinstance(r, EncoderBundle) else EncoderBundle(r[0], r[1], {"arch": "narrow", "width": W})
        acc0 = linear_probe(r, xa, ya, xe, ye, epochs=300, key=jax.random.PRNGKey(1))
    except Exception:
        traceback.print_exc()
        acc0 = None
    save_encoder(path, b)
    # the loss curve (metrics.jsonl of the runner), thinned
    curve = []
    mf = CACHE / f"{enc_name()}.run" / "metrics.jsonl"
    if mf.exists():
        lines = mf.read_text().splitlines()
        for ln in lines[:: max(1, len(lines) // 40)] + lines[-1:]:
            try:
                curve.append(json.loads(ln))
            except json.JSONDecodeError:
                pass
    write("simclr.json", {"encoder": enc_name(), "arch": "narrow", "width": W, "widths": [W, 2 * W, 4 * W],
                          "epochs": ep, "batch_size": SIMCLR_BATCH, "lr": SIMCLR_LR, "n_images": int(len(x)),
                          "steps": b.meta["steps"], "final_loss": b.meta["final_loss"], "pretrain_seconds": t_pre,
                          "probe_accuracy": acc, "random_init_probe_accuracy": acc0, "probe": "logistic regression, full-batch Adam 300 steps, "
                          "CIFAR-10 test split 8,000 adapt / 2,000 eval", "probe_seconds": time.time() - t1,
                          "loss_curve": curve})


def tcore_config(threats, attacks, enc_attacks, defenses):
    from configs.tcore import get_config
    c = get_config("quick")
    c.n_adapt, c.n_eval, c.n_victims = N_ADAPT, N_EVAL, 1
    c.threats, c.attacks, c.encoder_attacks, c.defenses = tuple(threats), tuple(attacks), tuple(enc_attacks), tuple(defenses)
    c.modes = ("linear",)
    c.target_class = 0
    c.encoder_target_class = 0
    c.encoder_trigger_size = BE_TRIG
    c.encoder.source, c.encoder.arch, c.encoder.width, c.encoder.epochs = "simclr", "narrow", W, enc_epochs()
    c.encoder.cache_dir = str(CACHE)
    c.train.head_epochs = 50
    c.tcore.mask_steps, c.tcore.max_seed_batch, c.tcore.head_epochs = 200, 512, 50
    if TINY:
        c.tcore.confusion_steps, c.tcore.max_unlearn_steps, c.tcore.mask_steps = 20, 20, 10
        c.tcore.head_epochs, c.train.head_epochs = 5, 5
    return c


def need_encoder():
    if not (CACHE / enc_name() / "meta.json").exists():
        log("no SimCLR encoder (stage simclr did not finish); skipping")
        sys.exit(3)


def stage_tcore_dataset(attacks=None):
    need_encoder()
    import experiments.tcore as T
    for a in (ATTACKS if attacks is None else attacks):
        t0 = time.time()
        wd = WORK / f"tcore_dataset_{a}"
        try:
            T.run(tcore_config(["dataset"], [a], [], TC_DEFENSES), wd)
            copy_study(wd, f"tcore_dataset_{a}")
        except Exception:                                            # next attack still runs
            traceback.print_exc()
            (OUT / f"tcore_dataset_{a}_error.txt").write_text(traceback.format_exc())
        log(f"attack {a}: {time.time() - t0:.1f} s")


def stage_tcore_ft():
    """Full fine-tuning mode (encoder + head, BN statistics frozen, crop/flip), BadNets: none / T-Core / SS."""
    need_encoder()
    import experiments.tcore as T
    ep = ev("BT_FT_EPOCHS", 10)
    for a in [a for a in E.get("BT_FT_ATTACKS", "badnets").split(",") if a]:
        t0 = time.time()
        c = tcore_config(["dataset"], [a], [], [d for d in E.get("BT_FT_DEFENSES", "none,tcore,spectral_signatures").split(",") if d])
        c.modes = ("finetune",)
        c.train.ft_epochs, c.train.ft_batch_size, c.train.augment = ep, 128, True
        c.tcore.ft_epochs, c.tcore.ft_batch_size, c.tcore.augment = ep, 128, True
        wd = WORK / f"tcore_ft_{a}"
        try:
            T.run(c, wd)
            copy_study(wd, f"tcore_ft_{a}")
        except Exception:
            traceback.print_exc()
            (OUT / f"tcore_ft_{a}_error.txt").write_text(traceback.format_exc())
        log(f"finetune {a}: {time.time() - t0:.1f} s")


def stage_tcore_dataset2():
    stage_tcore_dataset([a for a in E.get("BT_ATTACKS2", "wanet").split(",") if a])


def stage_badencoder():
    need_encoder()
    import jax
    from poisonjax.vision.ssl.encoder_attacks import default_trigger, get_or_poison
    from poisonjax.vision.ssl.encoders import load_encoder
    from poisonjax.vision.ssl.probe import cifar_probe_split, probe_accuracy_and_asr
    clean = load_encoder(CACHE / enc_name(), arch="narrow", width=W)
    trig = default_trigger((32, 32, 3), size=BE_TRIG)
    xa, ya, xe, ye = cifar_probe_split()
    res = {"encoder": enc_name(), "trigger": f"white {BE_TRIG}x{BE_TRIG} patch bottom-right", "target_class": 0,
           "steps": BE_STEPS, "batch_size": BE_BATCH, "lr": BE_LR, "shadow": "10,000 cifar10_jpeg_20k train images",
           "references": "first 3 training images of class 0"}
    res["clean"] = probe_accuracy_and_asr(clean, xa, ya, xe, ye, trig, 0, epochs=300, key=jax.random.PRNGKey(1))
    steps = BE_STEPS
    cal = load_json(OUT / "simclr_calibration.json")
    if cal and E.get("BT_BE_SECONDS"):       # a BadEncoder step (768 fwd+bwd + 256 fwd) costs about one SimCLR step
        t_step = cal["seconds_per_epoch"] / max(1, (N_SIMCLR or 10000) // SIMCLR_BATCH)
        steps = int(max(min(50, BE_STEPS), min(BE_STEPS, float(E["BT_BE_SECONDS"]) / max(t_step, 1e-6))))
        log(f"BadEncoder: {t_step:.3f} s per SimCLR step -> {steps} steps (budget {E['BT_BE_SECONDS']} s)")
    res["steps"] = steps
    write("badencoder.json", res)
    t0 = time.time()
    pb = get_or_poison(CACHE, clean, "badencoder", target_class=0, trigger=trig, tag="" if BE_TRIG == 4 else f"_p{BE_TRIG}",
                       epochs=1000, max_steps=steps, batch_size=BE_BATCH, lr=BE_LR, progress=False)
    res["attack_seconds"] = time.time() - t0
    res["meta"] = {k: v for k, v in pb.meta.items() if isinstance(v, (int, float, str))}
    res["badencoder"] = probe_accuracy_and_asr(pb, xa, ya, xe, ye, trig, 0, epochs=300, key=jax.random.PRNGKey(1))
    res["probe_comparison"] = probe_comparison(pb, xa, ya, xe, ye, trig)
    write("badencoder.json", res)


def probe_comparison(bundle, xa, ya, xe, ye, trig):
    """The two linear probes of the package on the same encoder (the T-Core study's ASR 0.976 against
    badencoder.json's 0.394 on 2026-11-30): ssl.probe's full-batch head and T-Core's mini-batch head (the
    study's 50 epochs), plus how far the triggered eval features sit from the adaptation features in
    standardised units (a channel rare on clean images that the trigger wakes is multiplied by 1/std)."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    from poisonjax.core.poisoning import apply_trigger, attack_success_rate
    from poisonjax.core.training import accuracy, feature_standardization
    from poisonjax.vision.ssl.encoders import encode
    from poisonjax.vision.ssl.probe import fit_linear_head
    from poisonjax.vision.tcore.common import train_head
    ha, he = encode(bundle, xa), encode(bundle, xe)
    ht = encode(bundle, np.asarray(apply_trigger(jnp.asarray(xe), trig)))
    yj = jnp.asarray(ye)
    out = {}
    def score(name, lg):
        out[name] = {"clean_accuracy": float(accuracy(lg(he), yj)),
                     "asr": float(attack_success_rate(lg(ht).argmax(-1), yj, 0))}
    for ep in (300, 3000):
        h = fit_linear_head(ha, ya, epochs=ep, key=jax.random.PRNGKey(1))
        score(f"full_batch_{ep}", h.logits)
    for ep in (5, 50):
        p = train_head(ha, jnp.asarray(ya), jnp.ones(len(ya)), jax.random.PRNGKey(1), 10, epochs=ep, learning_rate=1e-2)
        score(f"minibatch_{ep}_epochs", lambda z, p=p: z @ p["kernel"] + p["bias"])
    mu, sd = feature_standardization(ha)
    zt, za = jnp.abs((ht - mu) / sd), jnp.abs((ha - mu) / sd)
    out["max_abs_z_adapt"], out["max_abs_z_triggered"] = float(za.max()), float(zt.max())
    out["n_features_z_triggered_over_10"] = int((zt.max(0) > 10).sum())
    out["min_std"] = float(sd.min())
    return out


def stage_tcore_encoder():
    need_encoder()
    tag = "" if BE_TRIG == 4 else f"_p{BE_TRIG}"
    if not (CACHE / f"{enc_name()}_badencoder_t0{tag}" / "meta.json").exists():
        log("no BadEncoder encoder; skipping")
        sys.exit(3)
    import experiments.tcore as T
    wd = WORK / "tcore_encoder"
    defs = [d for d in E.get("BT_TC_ENC_DEFENSES", "none,tcore,clp").split(",") if d]
    T.run(tcore_config(["encoder"], [], ["badencoder"], defs), wd)
    copy_study(wd, "tcore_encoder")


def stage_backdoor():
    from configs.backdoor import get_config
    import experiments.backdoor as B
    c = get_config("paper")
    c.model = E.get("BT_BD_MODEL", "preact_resnet18")
    c.width = ev("BT_BD_WIDTH", 64)
    c.n_victims = ev("BT_BD_K", 2)
    c.n_train = ev("BT_BD_NTRAIN", 0)
    c.train.epochs = ev("BT_BD_EPOCHS", 30)
    c.attacks = tuple(a for a in E.get("BT_BD_ATTACKS", "badnets,blended,wanet").split(",") if a)
    c.defenses = tuple(d for d in E.get("BT_BD_DEFENSES", "none,spectral_signatures,activation_clustering,clp,fine_pruning").split(",") if d)
    if TINY:
        c.dataset = E.get("BT_BD_DATASET", "cifar10_20k")
        c.defense_params.fine_pruning.finetune_epochs = 1
    wd = WORK / "backdoor"
    # per-attack cell files are small JSON: mirror them into OUTDIR as they appear (a watcher thread)
    import threading

    def mirror():
        while True:
            cells = wd / "cells"
            if cells.exists():
                (OUT / "backdoor_cells").mkdir(exist_ok=True)
                for f in cells.glob("*.json"):
                    dst = OUT / "backdoor_cells" / f.name
                    if not dst.exists():
                        shutil.copy(f, dst)
            time.sleep(2)

    threading.Thread(target=mirror, daemon=True).start()
    write("backdoor_config.json", {"model": c.model, "width": c.width, "n_victims": c.n_victims, "epochs": c.train.epochs,
                                   "n_train": c.n_train, "attacks": list(c.attacks), "defenses": list(c.defenses),
                                   "batch_size": c.train.batch_size, "lr": c.train.learning_rate,
                                   "augment": bool(c.train.augment), "dataset": c.dataset})
    B.run(c, wd)
    time.sleep(3)
    copy_study(wd, "backdoor")


if __name__ == "__main__":
    t0 = time.time()
    try:
        {"env": stage_env, "simclr": stage_simclr, "tcore_dataset": stage_tcore_dataset,
         "tcore_dataset2": stage_tcore_dataset2, "tcore_ft": stage_tcore_ft,
         "badencoder": stage_badencoder, "tcore_encoder": stage_tcore_encoder, "backdoor": stage_backdoor}[STAGE]()
    except SystemExit:
        raise
    except Exception:
        traceback.print_exc()
        (OUT / f"{STAGE}_error.txt").write_text(traceback.format_exc())
        sys.exit(1)
    log(f"done in {time.time() - t0:.1f} s")
PYEOF
T0=$(date +%s)
END=$((T0 + SECS - 10))                                  # stop everything 10 s before the limit
left() { echo $((END - $(date +%s))); }
stage() {                                                # stage NAME MIN_SECONDS
  local name=$1 min=$2 l
  l=$(left)
  if [ "$l" -lt "$min" ]; then echo "[bt] skip $name: ${l}s left < ${min}s"; return 0; fi
  echo "[bt] start $name at +$(( $(date +%s) - T0 ))s (${l}s left)"
  timeout -k 5 "$l" env XLA_PYTHON_CLIENT_MEM_FRACTION=$FRAC $PY "$DRIVER" "$name" "$OUT" "$WORK"
  local rc=$?
  echo "[bt] end $name rc=$rc at +$(( $(date +%s) - T0 ))s"
  echo "$name rc=$rc t=$(( $(date +%s) - T0 ))" >> "$OUT/stages.txt"
  return 0
}
lane1() {
  stage env 10; stage simclr 60
  ( stage tcore_dataset 60; stage tcore_ft 60; stage tcore_dataset2 40 ) > "$OUT/lane1a.log" 2>&1 &
  local pa=$!
  ( stage badencoder 40; stage tcore_encoder 40 ) > "$OUT/lane1b.log" 2>&1 &
  wait $pa $!
}
lane2() { stage backdoor 60; }
lane1 > "$OUT/lane1.log" 2>&1 &
P1=$!
lane2 > "$OUT/lane2.log" 2>&1 &
P2=$!
wait $P1 $P2
# last-resort copies of whatever the backdoor study finished (per-attack cells are small JSON)
if [ -d "$WORK/backdoor/cells" ]; then mkdir -p "$OUT/backdoor_cells"; cp -n "$WORK/backdoor/cells/"*.json "$OUT/backdoor_cells/" 2>/dev/null; fi
for f in "$OUT"/*.log; do tail -c 200000 "$f" > "$f.t" && mv "$f.t" "$f"; done
echo "[bt] all done in $(( $(date +%s) - T0 ))s" | tee -a "$OUT/stages.txt"
[ "${BT_KEEP_WORK:-0}" = "1" ] || rm -rf "$WORK"
exit 0
