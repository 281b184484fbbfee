import hashlib
import json
import os
import re
import shlex
import shutil
import sys
import sysconfig
from pathlib import Path
from typing import Any

from setuptools import setup
from setuptools.command.build_ext import build_ext

HERE = Path(__file__).parent

# The hot path compiled with mypyc when it can be ("compiled mode",
# docs/design.md).  The same .py files are the source of truth: a machine
# without a C compiler, or FRAMEDCLIENT_COMPILE=0, installs them as they are.
# framedclient/_mode.py holds the same list (tests/test_compiled_mode.py
# checks that they agree).
COMPILED_MODULES = [
    "framedclient/deadlines.py",
    "framedclient/framing.py",
    "framedclient/metrics/histogram.py",
    "framedclient/codecs/fc1.py",
    "framedclient/engine.py",
    "framedclient/pool.py",
    # The protocol codecs' encode/decode and the RESP framers (issue 22).
    "framedclient/codecs/redis.py",
    "framedclient/codecs/resp3.py",
    "framedclient/codecs/memcache.py",
    "framedclient/datapath.py",
]
#: Written next to the compiled modules: each source's hash at build time,
#: so that an in-place .so whose .py was edited since is not imported.
SOURCES_RECORD = "framedclient/_compiled_sources.json"
def compile_choice() -> tuple[bool, bool, str]:
    """
    Whether to compile, whether a failure is an error, and why.

    FRAMEDCLIENT_COMPILE=1 asks for the compiled build (failing if it
    cannot); =0 skips it; unset compiles when mypyc and a C compiler are
    here, except for editable installs (pip install -e .), whose in-place
    extensions would shadow the .py files being edited.
    """
    asked = os.environ.get("FRAMEDCLIENT_COMPILE", "").strip().lower()
    if asked in ("0", "no", "false", "off"):
        return False, False, "FRAMEDCLIENT_COMPILE=0"
    required = asked in ("1", "yes", "true", "on")
    if sys.implementation.name != "cpython":
        return False, required, f"mypyc needs CPython, not {sys.implementation.name}"
    if not required and "editable_wheel" in sys.argv:
        return False, False, "an editable install (FRAMEDCLIENT_COMPILE=1 compiles it)"
    try:
        import mypyc.build  # noqa: F401
    except ImportError:
        return False, required, "mypyc (the mypy package) is not importable"
    compiler = shlex.split(sysconfig.get_config_var("CC") or "cc")[:1]
    compiler = [os.environ.get("CC", compiler[0] if compiler else "cc").split()[0]]
    # (Windows: setuptools finds MSVC itself.)
    if os.name != "nt" and shutil.which(compiler[0]) is None:
        return False, required, f"no C compiler ({compiler[0]} is not on PATH)"
    include = sysconfig.get_paths()["include"]
    if not (Path(include) / "Python.h").exists():
        return False, required, f"no Python.h in {include} (python3-dev)"
    return True, required, "compiled"


def source_hashes() -> dict[str, str]:
    return {
        path[: -len(".py")].replace("/", "."): hashlib.sha256(
            (HERE / path).read_bytes()
        ).hexdigest()
        for path in COMPILED_MODULES
    }


class OptionalBuildExt(build_ext):
    """
    Build the mypyc extensions, or fall back to the pure modules when the
    build fails (unless FRAMEDCLIENT_COMPILE=1), as msgpack and PyYAML do;
    and record the sources' hashes beside the extensions.
    """

    required = False

    def run(self) -> None:
        try:
            super().run()
        except Exception as error:
            if self.required:
                raise
            self._fall_back(error)
            return
        self._remove_stale_extensions()
        self._record_sources()

    def _remove_stale_extensions(self) -> None:
        # A module compiled by an earlier build and since dropped from
        # COMPILED_MODULES would still sit in build/lib.* (which the wheel
        # takes whole) or beside its source (in place), and shadow its .py.
        built = {Path(self.get_ext_filename(ext.name)) for ext in self.extensions}
        bases = [HERE] if self.inplace else []
        bases.append(Path(self.build_lib))
        for base in bases:
            for path in (base / "framedclient").rglob("*"):
                stale = path.relative_to(base) not in built
                if path.suffix in (".so", ".pyd") and stale:
                    path.unlink()

    def build_extension(self, ext: Any) -> None:
        try:
            super().build_extension(ext)
        except Exception as error:
            if self.required:
                raise
            self._fall_back(error)

    def _fall_back(self, error: BaseException) -> None:
        self.extensions = []
        sys.stderr.write(
            f"warning: framedclient's compiled modules failed to build ({error}); "
            "installing the pure-Python modules\n"
        )

    def _record_sources(self) -> None:
        if not self.extensions:
            return
        record = json.dumps(source_hashes(), indent=1, sort_keys=True) + "\n"
        targets = [Path(self.build_lib) / SOURCES_RECORD]
        if self.inplace:
            targets = [HERE / SOURCES_RECORD]
        for target in targets:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(record, encoding="utf-8")


def compiled_extensions() -> list[Any]:
    wanted, required, why = compile_choice()
    OptionalBuildExt.required = required
    if not wanted:
        if required:
            raise RuntimeError(f"FRAMEDCLIENT_COMPILE=1 but cannot compile: {why}")
        sys.stderr.write(f"framedclient: pure-Python build ({why})\n")
        return []
    from mypyc.build import mypycify

    try:
        return list(
            mypycify(
                COMPILED_MODULES,
                opt_level=os.environ.get("FRAMEDCLIENT_OPT_LEVEL", "3"),
                group_name="framedclient",
            )
        )
    except BaseException as error:  # mypycify exits on a type error
        if required:
            raise
        sys.stderr.write(
            f"warning: mypyc could not compile framedclient ({error!r}); "
            "installing the pure-Python modules\n"
        )
        return []


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
            # The other cluster client of `python -m framedclient.bench redis-cluster`.
            "coredis>=4.0",
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
            # The pub/sub bench's test runs its baselines in one run.
            "redis>=5.0",
            "txredisapi>=1.4",
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
    ext_modules=compiled_extensions(),
    cmdclass={"build_ext": OptionalBuildExt},
    zip_safe=False,
)
