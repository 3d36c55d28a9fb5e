"""Catalog entries for the federated engine's attacks and aggregators (issue 6)."""
from poisonjax.catalog import Entry

_A = "poisonjax.federated.attacks:"
_G = "poisonjax.federated.aggregators:"
_S = "fl_robustness"


def _atk(name, fn, family, paper, objective="model", goal="untargeted", knowledge="white-box", stealth="-",
         variability="dynamic"):
    return Entry(name=name, kind="attack", domain="federated", family=family, paper=paper, where=_A + fn,
                 objective=objective, goal=goal, knowledge=knowledge, stealthiness=stealth, scope="federated",
                 impact="performance", variability=variability, study=_S)


def _def(name, fn, paper, stealth="-"):
    return Entry(name=name, kind="defense", domain="federated", family="defense", paper=paper, where=_G + fn,
                 objective="-", goal="-", knowledge="-", stealthiness=stealth, scope="federated",
                 impact="robustness", variability="-", study=_S)


ENTRIES = [
    _atk("fl_label_flip", "flip_labels", "label_flipping",
         "Tolpegin et al., Data poisoning attacks against federated learning systems, ESORICS 2020",
         objective="label", knowledge="black-box", stealth="dirty-label", variability="static"),
    _atk("fl_targeted_label_flip", "flip_labels", "label_flipping",
         "Tolpegin et al., ESORICS 2020 (source -> target class)", objective="label", goal="targeted",
         knowledge="black-box", stealth="dirty-label", variability="static"),
    _atk("fl_badnets", "add_backdoor", "heuristic", "Gu et al., BadNets, 2017 (trigger in local data)",
         objective="data", goal="backdoor", knowledge="black-box", stealth="visible-trigger", variability="static"),
    _atk("fl_scaling", "scaling", "model_poisoning",
         "Bagdasaryan et al., How to backdoor federated learning, AISTATS 2020 (model replacement)",
         goal="backdoor", knowledge="gray-box"),
    _atk("sign_flip", "sign_flip", "model_poisoning", "Damaskinos et al. 2018; Li et al., RSA, AAAI 2019",
         knowledge="black-box"),
    _atk("gaussian_update", "gaussian", "model_poisoning", "Blanchard et al., Krum, NeurIPS 2017 (Gaussian Byzantine)",
         knowledge="black-box"),
    _atk("lie", "lie", "model_poisoning", "Baruch et al., A little is enough, NeurIPS 2019",
         stealth="camouflaged"),
    _atk("min_max", "min_max", "model_poisoning",
         "Shejwalkar & Houmansadr, Manipulating the Byzantine, NDSS 2021", stealth="camouflaged"),
    _atk("min_sum", "min_sum", "model_poisoning", "Shejwalkar & Houmansadr, NDSS 2021",
         stealth="camouflaged"),
    _atk("ipm", "ipm", "model_poisoning", "Xie et al., Fall of empires (inner product manipulation), UAI 2019"),
    _atk("fang_krum", "fang_krum", "model_poisoning",
         "Fang et al., Local model poisoning attacks to Byzantine-robust FL, USENIX Security 2020"),
    _atk("fang_trimmed_mean", "fang_trimmed_mean", "model_poisoning", "Fang et al., USENIX Security 2020"),
    _atk("adaptive_fl", "adaptive", "model_poisoning",
         "Adaptive attack hook (grid search against the deployed aggregator; cf. Shejwalkar & Houmansadr 2021)"),
    _def("fedavg", "fedavg", "McMahan et al., Communication-efficient learning, AISTATS 2017 (no defense)"),
    _def("krum", "krum", "Blanchard et al., Machine learning with adversaries, NeurIPS 2017"),
    _def("multi_krum", "multi_krum", "Blanchard et al., NeurIPS 2017"),
    _def("median", "median", "Yin et al., Byzantine-robust distributed learning, ICML 2018"),
    _def("trimmed_mean", "trimmed_mean", "Yin et al., ICML 2018"),
    _def("bulyan", "bulyan", "El Mhamdi et al., The hidden vulnerability of distributed learning, ICML 2018"),
    _def("rfa", "rfa", "Pillutla et al., Robust aggregation for federated learning, IEEE TSP 2022"),
    _def("fltrust", "fltrust", "Cao et al., FLTrust, NDSS 2021"),
    _def("flame", "flame", "Nguyen et al., FLAME, USENIX Security 2022 (simplified clustering)"),
    _def("foolsgold", "foolsgold", "Fung et al., The limitations of federated learning in sybil settings, RAID 2020"),
    _def("dnc", "dnc", "Shejwalkar & Houmansadr, Divide-and-Conquer, NDSS 2021"),
    _def("centered_clipping", "centered_clipping", "Karimireddy et al., Learning from history, ICML 2021"),
    _def("flare", "flare", "Wang et al., FLARE, AsiaCCS 2022"),
]
