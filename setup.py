"""Packaging for poisonjax (see README.md)."""
from setuptools import find_packages, setup

setup(
    name="poisonjax",
    version="0.1.0",
    description="JAX research library for data-poisoning attacks and defenses",
    long_description=open("README.md", encoding="utf-8").read() if __import__("os").path.exists("README.md") else "",
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["poisonjax", "poisonjax.*"]),
    package_data={"poisonjax.data": ["sha256/*"]},  # the shipped SHA-256 tables of the datasets
    install_requires=[
        "jax>=0.6,<0.12",
        "flax>=0.10,<0.13",
        "optax>=0.2.4,<0.3",
        "jraph>=0.0.6.dev0,<0.1",
        "numpy>=1.26,<3",
        "orbax-checkpoint>=0.11,<0.13",
        "ml_collections>=0.1.1,<2",
        "scipy>=1.11,<2",
        "scikit-learn>=1.3,<2",
        "tqdm>=4.60,<5",
        "matplotlib>=3.7,<4",
    ],
    extras_require={
        "test": ["pytest>=7", "pytest-xdist>=3"],
        "docs": ["mkdocs>=1.6,<2", "mkdocstrings[python]>=0.26,<2"],  # mkdocs build --strict
        "tensorboard": ["tensorboardX>=2.6"],
        "flower": ["flwr>=1.8"],  # poisonjax.federated.flower.PoisonjaxStrategy
    },
    entry_points={"console_scripts": ["poisonjax=poisonjax.cli:main"]},
)
