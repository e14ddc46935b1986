"""What a public research repository carries: a citation file naming the kit and the LAFITE paper
(with the package's licence and version), and the README's Citing section."""

from __future__ import annotations

from pathlib import Path

import tomllib
import yaml

REPO = Path(__file__).resolve().parents[1]
PAPER = "Towards Language-Free Training for Text-to-Image Generation"


def test_citation_file_names_the_kit_and_the_paper():
    citation = yaml.safe_load((REPO / "CITATION.cff").read_text())
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert citation["cff-version"] == "1.2.0" and citation["type"] == "software"
    assert citation["license"] == project["license"]["text"] and citation["version"] == project["version"]
    (paper,) = citation["references"]
    assert paper["title"] == PAPER and paper["year"] == 2022 and paper["authors"][0]["family-names"] == "Zhou"


def test_readme_has_a_citing_section_for_both():
    readme = (REPO / "README.md").read_text()
    citing = readme.split("## Citing", 1)[1].split("\n## ", 1)[0]
    assert "@software{lafite_research_kit" in citing and PAPER in citing and "CVPR" in citing
