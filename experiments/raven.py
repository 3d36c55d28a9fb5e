"""RAVEN study: detect LoRA-implanted stance backdoors in a panel of tiny LMs, black-box.

1. Build the stance bank (SST-2) and question openers (TREC); train the entailment classifier on
   disjoint template pairs (held-out accuracy reported) and the lexicon judge.
2. Train the families (vmapped per width, resumable), save them under ``workdir/models``.
3. Sample ``n_samples`` answers per (topic x perspective) prompt per model at ``temperature``
   (local flax models, or any OpenAI-compatible endpoint with ``backend="http"``).
4. Clean panels: signals of every (model, topic) cell; threshold at ``fpr`` on the main clean panel;
   its false-positive rate on the transfer panel (other seeds, width, panel size).
5. Implants: for each size in ``implant_sizes`` and each of ``n_targets`` targets, a LoRA implant on
   one model makes one topic answer one stance (precondition measured); the panel is re-scored.

``results.json``: ``rows`` per (implant, model, topic) with ``semantic_entropy``, ``divergence``,
``entropy_gap``, ``score`` (``config.score_rule``: ``"and"`` = min of the entropy gap and the divergence
in clean-cell standard deviations, :func:`poisonjax.llm.raven.and_score`), ``flagged``, ``implanted``,
``control``, ``budget`` (number of poisoned examples);
overall ``auc`` / ``tpr_at_5fpr`` at 100 poisoned examples, ``ablation`` (entropy only, divergence
only, both), ``by_size`` (detection against implant size), ``by_size_precondition_met`` (the same over the implants that
meet the issue's precondition, the others' implanted cells dropped; ``n_implants`` per size), ``transfer``, ``judges``.
"""
from __future__ import annotations

import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from poisonjax.core import reporting, study
from poisonjax.core.validation import PoisonJaxInputError, check_choice, check_positive_int
from poisonjax.llm import entailment as E
from poisonjax.llm import raven as R
from poisonjax.llm.corpus import TOPICS, build_bank, make_vocab
from poisonjax.llm.panel import (FamilySpec, bank_stance, family_corpus, implant_precondition, implant_to_precondition,
                                 save_models, train_families)
from poisonjax.llm.sampling import answer_texts, check_sampling_args, prompt_grid, request_seeds, sample_answers


def _validate(config):
    check_choice("config.backend", config.backend, ("local", "http"))
    check_choice("config.judge", config.judge, ("embedding", "lexicon"))
    check_choice("config.score_rule", config.score_rule, R.SCORE_RULES)
    check_sampling_args(config.n_samples, config.temperature)
    if config.backend == "http":
        from poisonjax.llm.client import check_endpoint
        check_endpoint(config.endpoint)
    for s in config.implant_sizes:
        check_positive_int("config.implant_sizes entry", s)
    if not 0 <= config.control_topic < len(TOPICS):
        raise PoisonJaxInputError(f"config.control_topic must be in [0, {len(TOPICS) - 1}], got {config.control_topic}")
    if len(config.families) < 2:
        raise PoisonJaxInputError(f"config.families must list at least 2 families (divergence needs peers), got {len(config.families)}")


def _targets(config, n_models):
    """Implant targets (model index, topic) -- never the control topic. Seed 0: the fixed order below; any other
    ``config.seed`` permutes the topics and shifts the models with a generator of its own, so seeds differ in
    which (model, topic) cells carry the implants (``config.seed_panel=False``: the fixed order for every seed)."""
    topics = [t for t in (0, 3, 8, 10, 1, 5, 9, 2, 11, 4, 7) if t != config.control_topic]
    shift = 0
    if config.seed and config.get("seed_panel", True):
        rng = np.random.RandomState(int(config.seed))
        topics, shift = [int(t) for t in rng.permutation(topics)], int(rng.randint(n_models))
    return [((r + shift) % n_models, topics[r % len(topics)]) for r in range(config.n_targets)]


def _families(config, families):
    """:class:`FamilySpec` of each configured family with the study seed folded in: the init seed and the corpus
    seed (stance mix, corpus sampling, retrieval store) are the configured ones plus ``1000 * config.seed``, so
    every seed trains its own panel (seed 0, or ``config.seed_panel=False``: the configured seeds)."""
    off = 1000 * int(config.seed) if config.get("seed_panel", True) else 0
    return [FamilySpec(n, h, s + off, cs + off, *rest) for n, h, s, cs, *rest in families]


def run(config, workdir) -> dict:
    """Run the study; returns (and writes) ``results.json``."""
    _validate(config)
    wd = study.prepare_workdir(workdir, config, mutable=("progress",))
    cache = study.CellCache(wd)
    t_start = time.time()
    bank = build_bank(config.corpus.n_per_stance)
    vocab = make_vocab(bank)
    grid = prompt_grid(TOPICS, vocab, bank, length=config.length)
    P, n, T = len(grid.texts), int(config.n_samples), len(TOPICS)

    # ---- judges
    from poisonjax.data.text import load_sst2
    dev, test = load_sst2("dev"), load_sst2("test")
    tx, ty = E.clear_stance(bank.rest_texts + dev.texts, list(bank.rest_labels) + list(dev.labels), bank.lexicon, config.entail.keep)
    hx, hy = E.clear_stance(test.texts, test.labels, bank.lexicon, config.entail.keep)
    # the probed topics are read as <entity> (target anonymisation; entailment module doc)
    emb_judge = E.train_embedding_judge(tx, ty, n_pairs=config.entail.n_pairs, steps=config.entail.steps,
                                        seed=config.seed).with_entities(TOPICS)
    lex_judge = E.LexiconJudge(bank.lexicon).with_entities(TOPICS)
    hp, hh, hl = E.stance_pairs(hx, hy, 2000, config.seed + 1)
    bank_texts = [s.format(e=TOPICS[i % T]) for i, s in enumerate(bank.pro + bank.con)]
    bp, bh, bl = E.stance_pairs(bank_texts, [1] * len(bank.pro) + [0] * len(bank.con), 2000, config.seed + 2)
    rp, rh, rl = E.stance_pairs(test.texts, test.labels, 2000, config.seed + 3)
    judges = {"embedding_heldout_accuracy": E.pair_accuracy(emb_judge, hp, hh, hl),
              "embedding_raw_sst2_accuracy": E.pair_accuracy(emb_judge, rp, rh, rl),
              "embedding_bank_accuracy": E.pair_accuracy(emb_judge, bp, bh, bl),
              "lexicon_heldout_accuracy": E.pair_accuracy(lex_judge, hp, hh, hl)}
    judge = emb_judge if config.judge == "embedding" else lex_judge
    stance_of = lambda texts: lex_judge.stance_prob(texts) > 0.5          # ground-truth-ish stance

    # ---- models
    specs = _families(config, config.families)
    tspecs = _families(config, config.transfer_families)
    corpora = {s.name: family_corpus(s, bank, vocab, control=config.control_topic, control_bias=config.control_bias,
                                     answers_per_prompt=config.corpus.answers_per_prompt, length=config.length,
                                     spread=config.corpus.spread) for s in specs + tspecs}
    targets = _targets(config, len(specs))
    models, pi_base, implant_info = {}, {}, {}
    if config.backend == "local":
        models = train_families(specs + tspecs, corpora, len(vocab), length=config.length, layers=config.train.layers,
                                heads=config.train.heads, steps=config.train.steps, learning_rate=config.train.learning_rate,
                                batch_size=config.train.batch_size, workdir=wd / "train", progress=config.progress)
        for size in config.implant_sizes:
            for r, (mi, topic) in enumerate(targets):
                base = specs[mi].name
                name = f"{base}+lora{size}r{r}"
                stance = int(corpora[base][4][topic] < 0.5)
                m, p = models[base]
                other = corpora[base][2] != topic          # clean replay: the other topics only
                if base not in pi_base:
                    pi_base[base], _ = bank_stance(m, p, grid, bank, vocab)
                merged, _, info = implant_to_precondition(
                    m, p, corpora[base][0][other], corpora[base][1][other], bank, vocab, grid, topic=topic,
                    stance=stance, n_poison=size, seed=config.seed * 1000 + r, rank=config.lora.rank,
                    alpha=config.lora.alpha, steps=config.lora.steps, max_steps=max(config.lora.max_steps, config.lora.steps),
                    learning_rate=config.lora.learning_rate, batch_size=config.lora.batch_size,
                    workdir=wd / "implants" / name, replay=config.lora.replay, pi_base=pi_base[base],
                    min_share=config.lora.target_share)
                models[name] = (m, merged)
                implant_info[name] = info                  # exact (bank-restricted) precondition
        save_models(wd / "models", models, vocab, bank.openers)
        backend = lambda name, slot: answer_texts(sample_answers(models[name][0], models[name][1], grid, n,
                                                                 config.temperature, request_seeds(config.seed, slot, P)), grid, vocab)
    else:
        from poisonjax.llm.client import ChatClient
        client = ChatClient(config.endpoint, api_key_env=config.api_key_env or None)

        def backend(name, slot):
            seeds = request_seeds(config.seed, slot, P)
            return [client.chat(name, grid.texts[p], n=n, temperature=config.temperature,
                                max_tokens=config.length, seed=int(seeds[p])) for p in range(P)]

    def answers(name, slot):
        return cache.cached(f"answers_{name.replace('+', '_')}", lambda _rd: {"answers": backend(name, slot)})["answers"]

    slot_of = {s.name: i for i, s in enumerate(specs + tspecs)}
    clean = {s.name: answers(s.name, slot_of[s.name]) for s in specs + tspecs}

    raw_panel = lambda ans: R.panel_signals(judge, ans, grid.topic, T)
    # pooled calibration: the main clean panel and its leave-one-out sub-panels give the signals' clean
    # statistics (R.fit_calibration, for the "and" score) and then the threshold (R.pooled_threshold)
    cal, calib = R.calibrate([raw_panel([clean[x] for x in sub])
                              for sub in R.leave_one_out_panels([s.name for s in specs])], config.score_rule)

    def score_panel(ans):
        return R.panel_signals(judge, ans, grid.topic, T, rule=config.score_rule, calibration=cal)

    main = calib[0]
    trans = score_panel([clean[s.name] for s in tspecs])
    thr = R.pooled_threshold([c["score"] for c in calib], config.fpr)
    thr_h = R.pooled_threshold([-c["entropy"] for c in calib], config.fpr)
    thr_d = R.pooled_threshold([c["divergence"] for c in calib], config.fpr)
    thr_single = R.threshold_at_fpr(main["score"], config.fpr)
    transfer = _transfer(config, thr, thr_single, main, trans, clean, specs, tspecs, score_panel)

    # judge agreement on the sampled answers (per family: the classifier's transfer across families)
    agree = {}
    for s in specs + tspecs:
        flat = [a for row in clean[s.name] for a in row]
        agree[s.name] = float(np.mean((emb_judge.stance_prob(flat) > 0.5) == (lex_judge.stance_prob(flat) > 0.5)))
    judges["stance_agreement_embedding_lexicon"] = agree

    rows = []

    def add_rows(sig, names, budget, replicate, implanted_cell):
        for k, name in enumerate(names):
            for t in range(T):
                rows.append({"budget": budget, "replicate": replicate, "model": name, "topic": TOPICS[t],
                             "semantic_entropy": float(sig["entropy"][k, t]), "entropy_gap": float(sig["entropy_gap"][k, t]),
                             "divergence": float(sig["divergence"][k, t]),
                             "score": float(sig["score"][k, t]), "flagged": bool(sig["score"][k, t] > thr),
                             "implanted": implanted_cell == (k, t), "control": t == config.control_topic,
                             "panel": "main" if budget > 0 or name in [s.name for s in specs] else "transfer",
                             "scenario": "implant" if budget > 0 else "clean"})

    add_rows(main, [s.name for s in specs], 0, -1, None)
    add_rows(trans, [s.name for s in tspecs], 0, -1, None)
    precond, implant_panels = [], []
    for size in config.implant_sizes:
        for r, (mi, topic) in enumerate(targets):
            base = specs[mi].name
            name = f"{base}+lora{size}r{r}"
            ans_imp = answers(name, slot_of[base])          # same request seeds as the base model
            stance = int(corpora[base][4][topic] < 0.5)
            pro_b = np.array([stance_of(clean[base][p]).mean() for p in range(P)])
            pro_a = np.array([stance_of(ans_imp[p]).mean() for p in range(P)])
            sampled = implant_precondition(pro_b, pro_a, grid.topic, topic, stance)
            row = {"budget": size, "replicate": r, "model": name, "topic": TOPICS[topic], "stance": stance,
                   "sampled_implanted_share": sampled["implanted_share"],
                   "sampled_max_tv_other_topics": sampled["max_tv_other_topics"]}
            if name in implant_info:                        # local: the implant's exact figures, measured at its stop
                row.update({k: implant_info[name][k] for k in ("implanted_share", "max_tv_other_topics",
                                                               "bank_coverage", "lora_steps")})
            else:
                row.update(sampled)
            row["ok"] = row["implanted_share"] >= 0.9 and row["max_tv_other_topics"] <= 0.1   # the bounds
            precond.append(row)
            panel = [clean[s.name] if i != mi else ans_imp for i, s in enumerate(specs)]
            implant_panels.append((size, mi, topic, panel))
            sig = score_panel(panel)
            add_rows(sig, [s.name if i != mi else name for i, s in enumerate(specs)], size, r, (mi, topic))

    rag = None
    if config.backend == "local" and config.rag.enabled:
        rag = _rag_scenarios(config, wd, cache, bank, vocab, specs, corpora, judge, lex_judge, rows)

    def metrics_for(sel):
        col = lambda k, sign=1.0: np.array([sign * x[k] for x in sel])
        return _detection_metrics(col("implanted") > 0, col("score"), col("semantic_entropy", -1.0), col("divergence"),
                                  col("control") > 0, (thr, thr_h, thr_d), col("entropy_gap"))

    by_size = {str(s): metrics_for([x for x in rows if x["budget"] == s and x["scenario"] == "implant"])
               for s in config.implant_sizes}
    head = by_size.get("100", by_size[str(config.implant_sizes[-1])])
    # the same figures over the implants that meet the precondition (asserted by the issue; an implant
    # that stops at max_steps short of it is a weaker backdoor than specified): implanted cells of the others dropped
    met = {(p["model"], p["topic"]) for p in precond if p["ok"]}
    by_size_met = {}
    for s in config.implant_sizes:
        sel = [x for x in rows if x["budget"] == s and x["scenario"] == "implant"
               and (not x["implanted"] or (x["model"], x["topic"]) in met)]
        n_pos = sum(bool(x["implanted"]) for x in sel)
        by_size_met[str(s)] = {"n_implants": n_pos, **(metrics_for(sel) if n_pos else {})}
    # the same sampled answers clustered by the other offline judge (its own pooled threshold)
    other_name, other = ("lexicon", lex_judge) if config.judge == "embedding" else ("embedding", emb_judge)
    by_size_other = {"judge": other_name, **_judge_detection(other, [clean[s.name] for s in specs],
                                                             implant_panels, grid.topic, T, config.fpr,
                                                             config.control_topic, config.score_rule)}
    results = {"auc": head["auc"], "tpr_at_5fpr": head["tpr_at_5fpr"],
               "ablation": {"entropy_only": head["auc_entropy_only"], "entropy_gap_only": head["auc_entropy_gap_only"],
                            "divergence_only": head["auc_divergence_only"], "both": head["auc"]},
               "by_size": by_size, "by_size_precondition_met": by_size_met, "by_size_other_judge": by_size_other, "transfer": transfer, "judges": judges, "preconditions": precond,
               "control_flagged_total": int(sum(x["flagged"] for x in rows if x["control"])),
               "threshold": thr, "score_rule": config.score_rule, "calibration": cal._asdict(), "retrieval": rag, "backend": config.backend, "n_samples": n, "temperature": config.temperature,
               "seconds": time.time() - t_start}
    results = study.write_results(wd, rows, **results)

    # ---- plots and report
    sizes = list(config.implant_sizes)
    fig, ax = reporting.new_figure(figsize=(5, 3.5))
    for key, lab in (("auc", f"both ({config.score_rule})"), ("auc_entropy_only", "entropy only"),
                     ("auc_entropy_gap_only", "entropy gap only"), ("auc_divergence_only", "divergence only")):
        ax.plot(sizes, [by_size[str(s)][key] for s in sizes], marker="o", label=lab)
    ax.plot(sizes, [by_size[str(s)]["tpr_at_5fpr"] for s in sizes], marker="s", ls="--", label="TPR @ 5% FPR (both)")
    ax.set_xscale("log"); ax.set_xlabel("poisoned examples"); ax.set_ylabel("AUC / TPR"); ax.set_ylim(0, 1.02)
    ax.legend(fontsize=7); ax.set_title("RAVEN detection vs implant size")
    reporting.save_figure(fig, wd / "detection_vs_size.png")
    fig, ax = reporting.new_figure(figsize=(5, 3.5))
    for lab, sel, mk in (("clean", lambda x: not x["implanted"] and not x["control"], "."),
                         ("control", lambda x: x["control"], "^"), ("implanted", lambda x: x["implanted"], "*")):
        pts = [x for x in rows if sel(x)]
        ax.scatter([x["semantic_entropy"] for x in pts], [x["divergence"] for x in pts], marker=mk, label=lab, s=25)
    ax.set_xlabel("semantic entropy"); ax.set_ylabel("JS divergence to peers"); ax.legend(fontsize=7)
    reporting.save_figure(fig, wd / "entropy_vs_divergence.png")
    size_rows = [{"budget": s, **by_size[str(s)]} for s in sizes]
    cols = ["budget", "auc", "auc_entropy_only", "auc_entropy_gap_only", "auc_divergence_only", "tpr_at_5fpr", "fpr",
            "control_flagged"]
    reporting.write_report(wd, "RAVEN: black-box detection of implanted stance backdoors", [
        ("Setup", f"{len(specs)} families ({', '.join(s.name for s in specs)}) + transfer panel "
                  f"({', '.join(s.name for s in tspecs)}); {P} prompts ({T} topics x 6 perspectives), N={n}, "
                  f"T={config.temperature}, backend={config.backend}, judge={config.judge}; control topic "
                  f"{TOPICS[config.control_topic]!r} biased {config.control_bias} in every family."),
        ("Detection against implant size", reporting.markdown_table(size_rows, cols)),
        ("Implants meeting the precondition", "The same, over the implants whose exact implanted share is >= 0.9 "
                                               "with the other topics within 0.1 TV (the others' implanted cells "
                                               "dropped):\n\n" + reporting.markdown_table(
            [{"budget": k, **v} for k, v in by_size_met.items() if v["n_implants"]],
            ["budget", "n_implants"] + cols[1:])),
        (f"Same answers, {by_size_other['judge']} judge", "Clustered by the other offline judge, with its own pooled "
                                                          f"threshold {by_size_other['threshold']:.4f}:\n\n" + reporting.markdown_table(
            [{"budget": k, **v} for k, v in by_size_other["by_size"].items()],
            ["budget", "auc", "auc_entropy_only", "auc_entropy_gap_only", "auc_divergence_only", "tpr_at_5fpr",
             "control_flagged"])),
        ("Threshold transfer", f"threshold {thr:.4f} at {config.fpr:.0%} FPR, pooled over the main clean panel and its "
                               f"leave-one-out sub-panels (single-panel threshold {transfer['threshold_single_panel']:.4f}); "
                               f"FPR on the main panel {transfer['fpr_main']:.3f}, on the disjoint transfer panel "
                               f"{transfer['fpr_transfer']:.3f} (95% CI {transfer['fpr_transfer_ci95'][0]:.3f}-"
                               f"{transfer['fpr_transfer_ci95'][1]:.3f}; single-panel threshold: "
                               f"{transfer['fpr_transfer_single_panel_threshold']:.3f}). Every panel of each size with at least one "
                               f"transfer family:\n\n" + reporting.markdown_table(
                                   transfer["by_size"], ["panel_size", "panels", "cells", "fpr", "fpr_single_panel_threshold"])
                               + f"\n\nmax |FPR(size) - FPR(main)| = {transfer['max_fpr_gap_by_size']:.3f} "
                               f"(within 5 points: {transfer['within_5_points']})."),
        ("Retrieval route", _rag_text(rag)),
        ("Judges", "\n".join(f"- {k}: {v}" for k, v in judges.items())),
        ("Implant preconditions", "Exact bank-restricted stance probabilities (`panel.bank_stance`; sampled "
                                   "shares from the N answers per prompt beside them).\n\n" + reporting.markdown_table(
                                       precond, ["budget", "replicate", "model", "topic", "stance", "implanted_share",
                                                 "max_tv_other_topics", "sampled_implanted_share",
                                                 "sampled_max_tv_other_topics", "ok"])),
    ], ["detection_vs_size.png", "entropy_vs_divergence.png"])
    study.main_print(reporting.text_table(size_rows, cols))
    return results


def _judge_detection(judge, clean_panel, implant_panels, topic_of_prompt, T: int, fpr: float,
                     control_topic: int, rule: str = "and") -> dict:
    """Detection by implant size with ``judge`` clustering the same answers: thresholds by pooled calibration
    on ``clean_panel`` (answers per model) and its leave-one-out sub-panels, then per size the AUC of the
    score, of entropy alone and of divergence alone over every (model, topic) cell of the implanted panels
    (``implant_panels``: ``(size, model index, topic, answers per model)``), and the flagged control cells."""
    raw = lambda panel: R.panel_signals(judge, panel, topic_of_prompt, T)
    names = list(range(len(clean_panel)))
    cal, calib = R.calibrate([raw([clean_panel[i] for i in sub]) for sub in R.leave_one_out_panels(names)], rule)
    sig = lambda panel: R.with_score(raw(panel), rule, cal)
    thrs = tuple(R.pooled_threshold([sign * c[k] for c in calib], fpr)
                 for k, sign in (("score", 1.0), ("entropy", -1.0), ("divergence", 1.0)))
    out = {}
    for size in sorted({p[0] for p in implant_panels}):
        y, sc, h, d, ctl, gp = [], [], [], [], [], []
        for _, mi, topic, panel in (p for p in implant_panels if p[0] == size):
            s = sig(panel)
            yy, cc = np.zeros(s["score"].shape, bool), np.zeros(s["score"].shape, bool)
            yy[mi, topic], cc[:, control_topic] = True, True
            y.append(yy.ravel()); ctl.append(cc.ravel()); sc.append(s["score"].ravel())
            h.append(-s["entropy"].ravel()); d.append(s["divergence"].ravel()); gp.append(s["entropy_gap"].ravel())
        out[str(size)] = _detection_metrics(*(np.concatenate(a) for a in (y, sc, h, d, ctl)), thrs, np.concatenate(gp))
    return {"threshold": thrs[0], "by_size": out}


def _detection_metrics(y, score, neg_entropy, divergence, control, thresholds, entropy_gap=None) -> dict:
    """Detection figures over cells: AUC of the score and of each signal alone (entropy, divergence,
    and the entropy gap the "and" score uses), TPR / FPR at the thresholds ``(score, -entropy,
    divergence)``, and how many control cells the score flags."""
    thr, thr_h, thr_d = thresholds
    at = lambda v, t: R.tpr_at_threshold(y, v, t)
    return {"auc": R.roc_auc(y, score), "auc_entropy_only": R.roc_auc(y, neg_entropy),
            "auc_entropy_gap_only": R.roc_auc(y, entropy_gap) if entropy_gap is not None else float("nan"),
            "auc_divergence_only": R.roc_auc(y, divergence),
            "tpr_at_5fpr": at(score, thr)["detection_tpr"],
            "tpr_at_5fpr_entropy_only": at(neg_entropy, thr_h)["detection_tpr"],
            "tpr_at_5fpr_divergence_only": at(divergence, thr_d)["detection_tpr"],
            "fpr": at(score, thr)["detection_fpr"], "control_flagged": int(np.sum(score[control] > thr))}


def _rag_scenarios(config, wd, cache, bank, vocab, specs, corpora, judge, lex_judge, rows):
    """Retrieval route: RAG systems (one shared reader LM, one BM25 store per family); PoisonedRAG
    passages put into ONE family's store (must be flagged) or into EVERY store (a shared bias: must
    not be flagged as model-specific). Appends rows (``scenario`` = ``rag_clean`` /
    ``rag_model_specific`` / ``rag_shared``) and returns the summary."""
    from poisonjax.core import runner
    from poisonjax.llm import retrieval as RT
    from poisonjax.llm.lm import TinyLM, lm_trainer, unstack
    rc, T = config.rag, len(TOPICS)
    rgrid = prompt_grid(TOPICS, vocab, bank, length=rc.length)
    rt, rm = RT.reader_corpus(bank, vocab, seed=config.seed, per_prompt=rc.per_prompt, length=rc.length)
    reader = TinyLM(len(vocab), rc.length, rc.hidden, config.train.layers, config.train.heads)
    res = runner.run(lm_trainer(reader, learning_rate=config.train.learning_rate, batch_size=config.train.batch_size),
                     {"tokens": jnp.asarray(rt)[None], "mask": jnp.asarray(rm)[None], "seeds": jnp.asarray([config.seed])},
                     rc.steps, wd / "reader", chunk_size=max(1, min(100, rc.steps)), progress=config.progress,
                     desc="RAG reader", config={"rag": rc.to_dict(), "seed": config.seed})
    rparams = unstack(res.state.params, 0)
    stores = {s.name: RT.family_store(bank, corpora[s.name][4], seed=s.corpus_seed + 100, per_topic=rc.per_topic,
                                      restate_prob=rc.restate_prob) for s in specs}

    def answers(tag, store, slot):
        return cache.cached(f"rag_{tag}", lambda _rd: {"answers": RT.rag_answers(
            reader, rparams, store, rgrid, vocab, n=int(config.n_samples), k=rc.k, tau=rc.tau,
            temperature=config.temperature, seed=config.seed * 10 ** 6 + 10 ** 5 + slot * 10 ** 3,
            stopwords=RT.template_stopwords(bank))})["answers"]

    clean = {s.name: answers(f"clean_{s.name}", stores[s.name], i) for i, s in enumerate(specs)}
    # the clean RAG panel's own statistics
    cal, (sig0,) = R.calibrate([R.panel_signals(judge, [clean[s.name] for s in specs], rgrid.topic, T)],
                               config.score_rule)
    thr = R.threshold_at_fpr(sig0["score"], config.fpr)
    rule = dict(rule=config.score_rule, calibration=cal)
    names = [s.name for s in specs]

    def add(sig, scenario, replicate, poisoned_cells, specific_cell):
        for k, name in enumerate(names):
            for t in range(T):
                rows.append({"budget": 0, "replicate": replicate, "model": name, "topic": TOPICS[t],
                             "semantic_entropy": float(sig["entropy"][k, t]), "entropy_gap": float(sig["entropy_gap"][k, t]),
                             "divergence": float(sig["divergence"][k, t]),
                             "score": float(sig["score"][k, t]), "flagged": bool(sig["score"][k, t] > thr),
                             "implanted": specific_cell == (k, t), "poisoned_store": (k, t) in poisoned_cells,
                             "control": t == config.control_topic, "panel": "rag", "scenario": scenario})

    add(sig0, "rag_clean", -1, set(), None)
    lex_pro = lambda ans, t: float(np.mean([np.mean(lex_judge.stance_prob(ans[p]) > 0.5)
                                            for p in range(len(ans)) if rgrid.topic[p] == t]))
    summary = []
    for r, (mi, topic) in enumerate(_targets(config, len(specs))[:rc.n_targets]):
        stance = int(corpora[names[mi]][4][topic] < 0.5)
        poison = RT.poisoned_passages(bank, topic, stance, rc.n_poison, seed=config.seed * 1000 + r)
        spec_ans = answers(f"specific_r{r}_{names[mi]}", RT.add_passages(stores[names[mi]], poison), mi)
        sig1 = R.panel_signals(judge, [clean[n] if i != mi else spec_ans for i, n in enumerate(names)], rgrid.topic, T,
                               **rule)
        add(sig1, "rag_model_specific", r, {(mi, topic)}, (mi, topic))
        shared = [answers(f"shared_r{r}_{n}", RT.add_passages(stores[n], poison), i) for i, n in enumerate(names)]
        sig2 = R.panel_signals(judge, shared, rgrid.topic, T, **rule)
        add(sig2, "rag_shared", r, {(i, topic) for i in range(len(names))}, None)
        share = lambda ans: lex_pro(ans, topic) if stance else 1 - lex_pro(ans, topic)
        summary.append({"replicate": r, "model": names[mi], "topic": TOPICS[topic], "stance": stance,
                        "poisoned_stance_share_before": share(clean[names[mi]]),
                        "poisoned_stance_share_model_specific": share(spec_ans),
                        "poisoned_stance_share_shared_min": min(share(a) for a in shared),
                        "model_specific_flagged": bool(sig1["score"][mi, topic] > thr),
                        "model_specific_score": float(sig1["score"][mi, topic]),
                        "shared_cells_flagged": int((sig2["score"][:, topic] > thr).sum()),
                        "shared_max_score": float(sig2["score"][:, topic].max())})
    spec_rows = [x for x in rows if x["scenario"] == "rag_model_specific"]
    shared_rows = [x for x in rows if x["scenario"] == "rag_shared"]
    return {"threshold": thr, "fpr_clean": float(np.mean(sig0["score"] > thr)),
            "auc_model_specific": R.roc_auc([x["implanted"] for x in spec_rows], [x["score"] for x in spec_rows]),
            "fpr_model_specific": float(np.mean([x["flagged"] for x in spec_rows if not x["implanted"]])),
            "shared_poisoned_cells_flagged": int(sum(x["flagged"] for x in shared_rows if x["poisoned_store"])),
            "shared_poisoned_cells": int(sum(x["poisoned_store"] for x in shared_rows)),
            "control_flagged": int(sum(x["flagged"] for x in rows if x["panel"] == "rag" and x["control"])),
            "targets": summary}


def _rag_text(rag) -> str:
    if rag is None:
        return "not run (backend http, or config.rag.enabled = False)."
    head = (f"threshold {rag['threshold']:.4f} at 5% FPR on the clean RAG panel (observed {rag['fpr_clean']:.3f}); "
            f"model-specific poisoning: AUC {rag['auc_model_specific']:.3f}, FPR {rag['fpr_model_specific']:.3f}; "
            f"shared poisoning: {rag['shared_poisoned_cells_flagged']} of {rag['shared_poisoned_cells']} poisoned cells "
            f"flagged; control cells flagged: {rag['control_flagged']}.\n\n")
    return head + reporting.markdown_table(rag["targets"], list(rag["targets"][0].keys()) if rag["targets"] else [])


def _transfer(config, thr, thr_single, main, trans, clean, specs, tspecs, score_panel):
    """False-positive rates of the pooled threshold (and of the single-panel one) on other clean
    panels: the disjoint transfer panel, and every panel of each size drawn from all clean families
    that holds at least one transfer family (so none is a calibration panel)."""
    import itertools
    names = [s.name for s in specs + tspecs]
    tnames = {s.name for s in tspecs}
    n_main, n_tr = main["score"].size, trans["score"].size
    k_main, k_tr = int((main["score"] > thr).sum()), int((trans["score"] > thr).sum())
    out = {"threshold": thr, "threshold_single_panel": thr_single, "calibration": "pooled: main panel + its leave-one-out sub-panels",
           "fpr_main": k_main / n_main, "fpr_main_ci95": R.binomial_interval(k_main, n_main),
           "fpr_transfer": k_tr / n_tr, "fpr_transfer_ci95": R.binomial_interval(k_tr, n_tr),
           "fpr_transfer_single_panel_threshold": float(np.mean(trans["score"] > thr_single)),
           "transfer_panel": [s.name for s in tspecs], "by_size": []}
    sizes = range(3, min(len(names), config.transfer_max_size) + 1)
    for size in sizes:
        pans = [c for c in itertools.combinations(names, size) if set(c) & tnames][:config.transfer_max_panels]
        sc = np.concatenate([score_panel([clean[x] for x in p])["score"].ravel() for p in pans])
        k = int((sc > thr).sum())
        out["by_size"].append({"panel_size": size, "panels": len(pans), "cells": int(sc.size), "fpr": k / sc.size,
                               "fpr_ci95": R.binomial_interval(k, sc.size),
                               "fpr_single_panel_threshold": float(np.mean(sc > thr_single))})
    gaps = [abs(r["fpr"] - out["fpr_main"]) for r in out["by_size"]]
    out["max_fpr_gap_by_size"] = max(gaps) if gaps else float("nan")
    out["within_5_points"] = bool(gaps) and max(gaps) <= 0.05
    return out
