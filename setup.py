import re
from pathlib import Path

from setuptools import setup

HERE = Path(__file__).parent


def read_version() -> str:
    # Read, not imported: importing framedclient here would need its
    # dependencies before they are installed.
    text = (HERE / "framedclient" / "_version.py").read_text(encoding="utf-8")
    match = re.search(r'^__version__ = "([^"]+)"$', text, re.MULTILINE)
    if match is None:
        raise RuntimeError("no __version__ in framedclient/_version.py")
    return match.group(1)


# The lowest releases the suite passes with; .ci/lowest-deps installs
# exactly these and runs the tests, so a floor cannot silently rot.
TWISTED_FLOOR = "24.11.0"
AUTOMAT_FLOOR = "24.8.1"  # TypeMachineBuilder; 24.8.0 was yanked
ATTRS_FLOOR = "23.1.0"

setup(
    name="framedclient",
    version=read_version(),
    description=(
        "Concurrent clients for framed TCP protocols on Twisted: framing, "
        "request-ID matching, self-healing connection pools, limits, metrics."
    ),
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    author="framedclient developers",
    license_expression="MIT",
    license_files=["LICENSE"],
    classifiers=[
        "Development Status :: 3 - Alpha",
        "Framework :: Twisted",
        "Intended Audience :: Developers",
        "Operating System :: POSIX :: Linux",
        "Programming Language :: Python :: 3",
        "Programming Language :: Python :: 3 :: Only",
        "Programming Language :: Python :: 3.11",
        "Programming Language :: Python :: 3.12",
        "Programming Language :: Python :: 3.13",
        "Topic :: Internet",
        "Topic :: Software Development :: Libraries :: Python Modules",
        "Topic :: System :: Networking",
        "Typing :: Typed",
    ],
    keywords="twisted client framing connection-pool protocol",
    # typing.Unpack (client.py) is 3.11's.  CI runs the whole suite on 3.11
    # and the quick set on 3.12 and 3.13 (.ci/other-pythons, docs/index.md).
    python_requires=">=3.11",
    # An explicit root makes editable installs (pip install -e .) put this
    # directory on sys.path with a .pth file instead of an import hook, so
    # Twisted's plugin discovery, which scans sys.path for twisted/plugins/
    # directories, finds twisted/plugins/framedclient_plugin.py.
    package_dir={"": "."},
    packages=[
        "framedclient",
        "framedclient.codecs",
        "framedclient.metrics",
        "framedclient.clients",
        "framedclient.runner",
        "framedclient.bench",
        "framedclient.testing",
        "twisted.plugins",
    ],
    package_data={"framedclient": ["py.typed"], "framedclient.runner": ["*.html"]},
    install_requires=[
        f"twisted>={TWISTED_FLOOR}",
        f"automat>={AUTOMAT_FLOOR}",
        f"attrs>={ATTRS_FLOOR}",
    ],
    extras_require={
        "metrics": ["prometheus_client>=0.17"],
        "tls": [f"twisted[tls]>={TWISTED_FLOOR}"],
        "otel": ["opentelemetry-api>=1.20"],
        # A faster parser for Redis arrays (framedclient.codecs.redis).
        "hiredis": ["hiredis>=2.0"],
        "bench": [
            "matplotlib>=3.7",
            "psutil>=5.9",
            "tqdm>=4.60",
            # Baselines of `python -m framedclient.bench redis|memcache`.
            "txredisapi>=1.4",
            "redis>=5.0",
            "pymemcache>=4.0",
            "hiredis>=2.0",
            # Baseline of `python -m framedclient.bench axfr` (inbound_xfr).
            "dnspython>=2.6",
        ],
        # What the test suite imports: `pip install 'framedclient[test]'`
        # from the sdist runs its tests (.ci/sdist-check).
        "test": [
            "pytest>=8",
            "pytest-twisted>=1.14",
            "pytest-timeout>=2.3",
            "hypothesis>=6.100",
            "treq>=23.11",
            "prometheus_client>=0.17",
            f"twisted[tls]>={TWISTED_FLOOR}",
            "selenium>=4.20",
            "psutil>=5.9",
            # Both Redis reply parsers are tested against each other.
            "hiredis>=2.0",
            # An independent ketama implementation to place keys against.
            "uhashring>=2.1",
            # Spans checked with the SDK's in-memory exporter.
            "opentelemetry-api>=1.20",
            "opentelemetry-sdk>=1.20",
        ],
        # Lint, types, packaging and the documentation site (.ci/run).
        "dev": [
            "mypy>=1.10",
            "mypy-zope>=1.0",
            "ruff>=0.5",
            "build>=1.0",
            "sphinx>=8",
            "myst-parser>=4",
            "sphinxcontrib-zopeext>=0.4",
            "furo>=2024.1",
            # autodoc imports every documented module, framedclient.tracing
            # included (tests/test_docs_site.py checks the list is whole).
            "opentelemetry-api>=1.20",
        ],
    },
    zip_safe=False,
)
