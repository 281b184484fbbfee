from setuptools import setup

setup(
    name="framedclient",
    version="0.1.0",
    description=(
        "Concurrent clients for framed TCP protocols on Twisted: framing, "
        "request-ID matching, self-healing connection pools, limits, metrics."
    ),
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="MIT",
    python_requires=">=3.10",
    # An explicit root makes editable installs (pip install -e .) put this
    # directory on sys.path with a .pth file instead of an import hook, so
    # Twisted's plugin discovery, which scans sys.path for twisted/plugins/
    # directories, finds twisted/plugins/framedclient_plugin.py.
    package_dir={"": "."},
    packages=[
        "framedclient",
        "framedclient.codecs",
        "framedclient.runner",
        "framedclient.bench",
        "framedclient.testing",
        "twisted.plugins",
    ],
    package_data={"framedclient": ["py.typed"], "framedclient.runner": ["*.html"]},
    install_requires=[
        "twisted>=24.7.0",
        "automat>=24.8.0",
        "attrs>=23.1.0",
    ],
    extras_require={
        "metrics": ["prometheus_client>=0.17"],
        "tls": ["twisted[tls]>=24.7.0"],
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
        ],
        "test": [
            "pytest>=8",
            "pytest-twisted>=1.14",
            "pytest-timeout>=2.3",
            "hypothesis>=6.100",
            "treq>=23.11",
            "prometheus_client>=0.17",
            "twisted[tls]>=24.7.0",
            "selenium>=4.20",
            "psutil>=5.9",
            "mypy>=1.10",
            "mypy-zope>=1.0",
            "ruff>=0.5",
            "build>=1.0",
            "uhashring>=2.1",
            "opentelemetry-api>=1.20",
            "opentelemetry-sdk>=1.20",
            # Both Redis reply parsers are tested against each other.
            "hiredis>=2.0",
        ],
    },
    entry_points={
        "console_scripts": [],
    },
    zip_safe=False,
)
