"""tools/cfsam_cost.py: the Table 4 columns for SSD300 with and without CFSAM."""
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tools"))

import cfsam_cost  # noqa: E402


def test_ssd300_baseline_is_the_papers_and_cfsam_adds_its_cost(capsys):
    assert cfsam_cost.main(["-c", "configs/ssd300.yml", "configs/ssd300_cfsam.yml"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 4 and "| 300x300 | 26,285,486 | 62.75 | 31.37 | 26.29M, 31.37 |" in lines[2]
    cells = [c.strip() for c in lines[3].split("|")]
    params, gmac = int(cells[3].replace(",", "")), float(cells[5])
    assert abs(params - 45.16e6) / 45.16e6 < 0.01 and abs(gmac - 45.22) < 0.1     # Table 4, within 1% / 0.1 G


def test_hostile_yaml_is_one_message(tmp_path, capsys):
    """Issue 25: a self-referencing config was a RecursionError here too; deep nesting likewise."""
    selfref = tmp_path / "self.yml"
    selfref.write_text("cfsam: &c {parts: *c}\n")
    deep = tmp_path / "deep.yml"
    deep.write_text("cfsam: " + "[" * 3000 + "]" * 3000 + "\n")
    for path, message in ((selfref, "self.yml: key 'cfsam.parts' refers to itself"),
                          (deep, "deep.yml: key 'cfsam[0][0][0]...' is nested more than")):
        capsys.readouterr()
        assert cfsam_cost.main(["-c", str(path)]) == 1
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, err
