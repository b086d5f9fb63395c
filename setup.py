"""Packaging for ssl_retrieval: the library, its Beam pipelines and the pinned stack."""

import setuptools

# TF and ScaNN move together: scann 1.4.2's TF ops are built against TF 2.20 only.
INSTALL_REQUIRES = [
    "tensorflow==2.20.*",
    "tf-keras==2.20.*",
    "tensorflow-recommenders==0.7.7",
    "scann[tf]==1.4.2",
    "apache-beam==2.77.*",
    # Fast CRC32C for the TFRecord framing the Beam writers produce.
    "google-crc32c",
    # Compression of what crosses a GroupByKey in the preprocessing job (Beam depends on it too).
    "zstandard",
    "tensorflow-datasets",
    "absl-py",
    # Progress bars on a terminal (ssl_retrieval/progress_bar.py); implicit and TFDS need it too.
    "tqdm",
    "numpy",
    "matplotlib",
    "scikit-learn",
    "fastapi",
    "uvicorn",
    "httpx",
    # The peers (ssl_retrieval/evaluation/peers.py): established libraries as references.
    # LightFM builds from source: the Makefile's install says how.
    "implicit==0.7.3",
    "lightfm==1.17",
]

EXTRAS_REQUIRE = {
    # selenium drives the Debian archive's chromium + chromium-driver in tests/test_page_browser.py;
    # pytest-xdist runs the tests on every core (`make test`: -n auto).
    "test": ["pytest", "pytest-xdist", "ruff==0.17.*", "selenium"],
}

setuptools.setup(
    name="ssl_retrieval",
    version="0.1.0",
    description=(
        "Self-supervised two-tower item retrieval (Yao et al., CIKM 2021): "
        "Beam preprocessing, TFRS training, evaluation and ScaNN serving."
    ),
    python_requires=">=3.11,<3.12",
    packages=setuptools.find_packages(
        include=["ssl_retrieval", "ssl_retrieval.*", "pipelines", "pipelines.*"]
    ),
    # The browser page (ssl_retrieval/serving/page.py): plain HTML, JS and CSS, no build step.
    package_data={"ssl_retrieval.serving": ["static/*"]},
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS_REQUIRE,
)
