"""Catalog entries of the survey's classic families (issue 22): feature space, availability, MetaPoison,
influence and label flipping (all run by ``poisonjax run classics``)."""
from poisonjax.catalog import Entry

_C = "poisonjax.vision.classics."


def _e(name, where, family, paper, *, objective="input", goal="targeted", knowledge="white-box",
       stealthiness="clean-label", scope="single-task", notes=""):
    return Entry(name=name, kind="attack", domain="vision", family=family, paper=paper, where=_C + where,
                 objective=objective, goal=goal, knowledge=knowledge, stealthiness=stealthiness, scope=scope,
                 impact="performance", variability="static", study="classics", notes=notes)


ENTRIES = [
    _e("convex_polytope", "feature_space:convex_polytope_attack", "feature_space",
       "Zhu et al., Transferable Clean-Label Poisoning Attacks on Deep Neural Nets, ICML 2019", scope="transfer",
       notes="L-inf bounded; target feature in the convex hull of the poisons' features; measured "
             "black-box (ensemble of 3 extractors, held-out victim extractor, 5 poisons)"),
    _e("bullseye_polytope", "feature_space:bullseye_polytope_attack", "feature_space",
       "Aghakhani et al., Bullseye Polytope: A Scalable Clean-Label Poisoning Attack with Improved "
       "Transferability, EuroS&P 2021", scope="transfer", notes="L-inf bounded; target at the poisons' centroid"),
    _e("unlearnable_examples", "availability:error_minimizing_noise", "bilevel",
       "Huang et al., Unlearnable Examples: Making Personal Data Unexploitable, ICLR 2021", goal="untargeted",
       notes="error-minimizing noise (min-min, stop at 99% train accuracy), sample-wise and class-wise, "
             "L-inf 8/255 and 16/255; measured on CIFAR-10 + ConvNet"),
    _e("adversarial_poisoning", "availability:error_maximizing_noise", "heuristic",
       "Fowl et al., Adversarial Examples Make Strong Poisons, NeurIPS 2021", goal="untargeted",
       notes="class-targeted PGD at a clean model, L-inf"),
    _e("tensorclog", "availability:tensorclog_noise", "heuristic",
       "Shen et al., TensorClog: An Imperceptible Poisoning Attack on Deep Neural Network Applications, "
       "IEEE Access 2019", goal="untargeted", notes="gradient-norm minimisation, L-inf"),
    _e("uniform_noise", "availability:uniform_noise", "heuristic",
       "baseline: uniform L-inf noise of the same eps on every training image", goal="untargeted",
       knowledge="black-box"),
    _e("metapoison", "metapoison:metapoison_attack", "bilevel",
       "Huang et al., MetaPoison: Practical General-purpose Clean-label Data Poisoning, NeurIPS 2020",
       knowledge="gray-box", notes="K=2 unrolled meta-gradients over a staggered surrogate ensemble"),
    _e("influence_attack", "influence_attacks:influence_training_set_attack", "influence",
       "Koh & Liang, Understanding Black-box Predictions via Influence Functions, ICML 2017",
       stealthiness="camouflaged", notes="binary logistic regression, exact Hessian; L-inf bounded inputs"),
    _e("adversarial_label_flip", "influence_attacks:adversarial_label_flip", "label_flipping",
       "greedy label flips by influence on the attacker's validation error (Koh & Liang 2017 influence; "
       "the issue's alternative to ALFA, Xiao et al. 2012), best of class-concentrated candidates",
       objective="label", goal="untargeted", stealthiness="dirty-label"),
    _e("random_label_flip", "influence_attacks:random_label_flip", "label_flipping",
       "baseline: uniformly random label flips (poisonjax.core.poisoning.flip_labels)", objective="label",
       goal="untargeted", knowledge="black-box", stealthiness="dirty-label"),
]
