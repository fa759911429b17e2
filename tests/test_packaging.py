"""The package's stated Python versions agree with what its pinned dependencies accept.

Flower installs an app's dependencies per run with ``uv sync``, which resolves for every
Python version ``requires-python`` admits; one version that a pinned dependency refuses
fails the whole run (exit code 608). So the next dependency bump must not be able to widen
the gap silently: these tests read ``pyproject.toml`` and the installed distributions' own
``Requires-Python`` metadata.
"""

from __future__ import annotations

import re
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path

import pytest
import tomllib
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.version import Version

PYPROJECT = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
PROJECT = PYPROJECT["project"]


def _claimed_minors() -> list[Version]:
    """Every 3.x minor release (as 3.x.0) that ``requires-python`` admits."""
    spec = SpecifierSet(PROJECT["requires-python"])
    minors = [Version(f"3.{minor}.0") for minor in range(0, 30)]
    claimed = [v for v in minors if v in spec]
    assert claimed, f"requires-python {spec} admits no Python 3 release"
    assert Version("3.30.0") not in spec, "requires-python needs an upper bound"
    return claimed


def _pinned() -> list[Requirement]:
    return [Requirement(r) for r in PROJECT["dependencies"]]


def test_requires_python_agrees_with_flower():
    flwr = distribution("flwr")
    flwr_python = SpecifierSet(flwr.metadata["Requires-Python"])
    refused = [str(v) for v in _claimed_minors() if v not in flwr_python]
    assert not refused, (
        f"pyproject.toml requires-python {PROJECT['requires-python']!r} admits Python "
        f"{refused}, which flwr {flwr.version} refuses (Requires-Python {flwr_python}): "
        "`flwr run .` would fail to resolve the app's dependencies (exit code 608)"
    )


@pytest.mark.parametrize("requirement", _pinned(), ids=lambda r: r.name)
def test_requires_python_agrees_with_every_dependency(requirement: Requirement):
    try:
        dist = distribution(requirement.name)
    except PackageNotFoundError:
        pytest.skip(f"{requirement.name} is not installed here, so its metadata is unknown")
    stated = dist.metadata.get("Requires-Python")
    if not stated:
        return  # no constraint stated: every Python is accepted
    accepted = SpecifierSet(stated)
    refused = [str(v) for v in _claimed_minors() if not accepted.contains(v, prereleases=True)]
    assert not refused, (
        f"requires-python {PROJECT['requires-python']!r} admits Python {refused}, which "
        f"{requirement.name} {dist.version} refuses (Requires-Python {accepted})"
    )


def test_classifiers_list_exactly_the_claimed_versions():
    listed = sorted(
        m.group(1)
        for c in PROJECT.get("classifiers", [])
        if (m := re.fullmatch(r"Programming Language :: Python :: (3\.\d+)", c))
    )
    claimed = sorted(f"{v.major}.{v.minor}" for v in _claimed_minors())
    assert listed == claimed, f"classifiers say {listed}, requires-python says {claimed}"


def test_readme_states_the_claimed_versions():
    claimed = [f"{v.major}.{v.minor}" for v in _claimed_minors()]
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    stated = f"Python {claimed[0]}-{claimed[-1]}"
    assert stated in readme, f"README should state '{stated}' (from requires-python)"


def test_license_is_an_spdx_string():
    # setuptools >= 77 deprecates the TOML table form (removal announced for 2027-02-18)
    assert isinstance(PROJECT["license"], str)
    backend = [Requirement(r) for r in PYPROJECT["build-system"]["requires"]]
    setuptools = next(r for r in backend if r.name == "setuptools")
    assert Version("77") in setuptools.specifier or setuptools.specifier.contains("77.0")
    assert not any(Version(v) in setuptools.specifier for v in ("69", "76.9"))
