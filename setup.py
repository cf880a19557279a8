"""anira_jax: token-level adaptive computation in recurrent Transformers (JAX/Flax)."""
import setuptools

setuptools.setup(
    name="anira_jax",
    version="0.1.0",
    description="Token-level adaptive computation in recurrent Transformers: ANIRA-E and ANIRA-O "
                "on complexity-controlled tasks.",
    long_description=open("README.md").read(),
    long_description_content_type="text/markdown",
    packages=setuptools.find_packages(include=["anira_jax", "anira_jax.*"]),
    python_requires=">=3.11",
    install_requires=[
        "jax>=0.8",
        "flax>=0.10",
        "optax>=0.2.4",
        "orbax-checkpoint>=0.11",
        "chex>=0.1.89",
        "ml-collections>=1.0",
        "numpy>=1.26",
        "scipy>=1.11",
        "tensorflow-datasets>=4.9.9",
        "array_record>=0.7",
        "tqdm>=4.66",
        "matplotlib>=3.8",
    ],
    extras_require={
        # pytest-xdist: the suite on both cores of a CI machine (pytest.ini); tensorboardX: the
        # test of train.tensorboard's event files (tests/test_loop.py). pytest 9.2's node ids
        # drop the group pytest-xdist 3.8 appends for --dist loadgroup, so every xdist_group
        # is split over both workers, which then both build its shared fixtures (pytest-xdist
        # issue 1386).
        "test": ["pytest>=8,<9.2", "pytest-xdist>=3.5", "nbclient>=0.10", "nbformat>=5.10",
                 "ipykernel>=6.29", "tensorboardX>=2.6"],
        "bench": ["torch==2.13.0"],
        # train.tensorboard: TensorBoard scalars, written without TensorFlow or TensorBoard.
        "tensorboard": ["tensorboardX>=2.6"],
    },
)
