"""Clean, early-stopped SASRec victims on a full sequence file via the DDSP study's own path
(experiments.ddsp.early_stopping_maker / val_subset, core.victims.EarlyStoppingTraining via core.runner,
full-ranking test metrics via recsys.metrics). A wall-clock cap ends training early (reported as converged=false).

    PYTHONPATH=. python benchmarks/ddsp_clean_victim.py DATASET MAX_LEN K MAX_EPOCHS EVAL_EVERY PATIENCE CAP_S OUTDIR
    PYTHONPATH=. python benchmarks/ddsp_clean_victim.py beauty 20 1 150 2 5 1320 /tmp/clean_beauty   # README figure

Writes OUTDIR/result.json: test and validation HR/NDCG@10/@20, epochs, best epoch, the validation curve, seconds.
``DS2_DEADLINE="YYYY-MM-DD HH:MM"`` (UTC) caps the run at a clock time as well."""
import sys, time, json, os
import jax, jax.numpy as jnp, numpy as np
from poisonjax.core import runner
from poisonjax.data.sequences import load_sequences, leave_one_out
from poisonjax.recsys.models import make_model
from poisonjax.recsys import metrics as M
from experiments.ddsp import early_stopping_maker, val_subset
from configs.ddsp import get_config

ds_name, L, K, max_ep, every, pat, cap, out = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6]), float(sys.argv[7]), sys.argv[8]
t00 = time.time()
c = get_config("paper"); c.dataset = ds_name
c.model.max_len = L; c.train.epochs = max_ep; c.train.eval_every = every; c.train.patience = pat
ds = load_sequences(ds_name, os.environ["POISONJAX_DATA"], min_count=c.min_count)
sp = leave_one_out(ds.sequences, L)
print(ds_name, ds.num_users, ds.num_items, ds.num_interactions, sp.train_x.shape, flush=True)
mc = c.model
model = make_model(mc.name, ds.num_items, L, mc.hidden, mc.dropout, mc.num_blocks, mc.num_heads)
es = early_stopping_maker(c, model, ds.num_items)(L)
keys = jax.random.split(jax.random.PRNGKey(c.seed), K)   # study: victim keys
val = val_subset(sp, c.train.val_users, c.seed + 3)
problem = {"train": es.vt.problem({"x": jnp.repeat(jnp.asarray(sp.train_x)[None], K, 0),
                                   "y": jnp.repeat(jnp.asarray(sp.train_y)[None], K, 0)}, keys,
                                  jnp.ones((K, sp.train_x.shape[0]), jnp.float32)),
           "val": tuple(jnp.asarray(a) for a in val)}
t0 = time.time()
import calendar
dl = calendar.timegm(time.strptime(os.environ.get('DS2_DEADLINE', '2100-01-01 00:00'), '%Y-%m-%d %H:%M'))
cap = min(cap, dl - t0)
print('cap', cap, flush=True)
log = []
def stop(s):
    log.append(dict(t=round(time.time() - t0, 1), epoch=int(s.train.epoch), best_val=np.asarray(s.best_val).tolist(),
                    best_epoch=np.asarray(s.best_epoch).tolist(), bad=np.asarray(s.bad).tolist()))
    print(log[-1], os.getloadavg(), flush=True)
    return bool(s.done) or time.time() - t0 > cap
res = runner.run(es.as_attack_optimizer(), problem, es.vt.epochs, out + "/wd", chunk_size=every,
                 checkpoint_every=every, progress=False, desc="victims", stop_when=stop)
s = res.state
train_s = time.time() - t0
ranker = M.make_ensemble_ranker(model, c.eval_chunk)
r = np.asarray(ranker(s.best, jnp.asarray(sp.test_x), jnp.asarray(sp.test_y)[:, None], jnp.asarray(sp.history)))
test = [M.hit_ndcg(rk[:, 0], (10, 20)) for rk in r]
rv = np.asarray(ranker(s.best, jnp.asarray(sp.valid_x), jnp.asarray(sp.valid_y)[:, None], jnp.asarray(sp.valid_x)))
valm = [M.hit_ndcg(rk[:, 0], (10, 20)) for rk in rv]
resd = dict(dataset=ds_name, users=ds.num_users, items=ds.num_items, interactions=ds.num_interactions, max_len=L,
            K=K, max_epochs=max_ep, eval_every=every, patience=pat, cap_s=cap, converged=bool(s.done),
            epochs_run=int(s.train.epoch), best_epoch=np.asarray(s.best_epoch).tolist(),
            best_val_ndcg10=np.asarray(s.best_val).tolist(), test=test, valid=valm, train_seconds=round(train_s, 1),
            total_seconds=round(time.time() - t00, 1), log=log, loadavg_end=os.getloadavg())
json.dump(resd, open(out + "/result.json", "w"), indent=1)
print(json.dumps({k: v for k, v in resd.items() if k != "log"}), flush=True)
