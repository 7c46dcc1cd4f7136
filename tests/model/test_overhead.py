from pathlib import Path

from model.overhead import backbone_params, table, variants

STUDY = Path(__file__).resolve().parents[2] / "studies" / "cpu" / "norm_vs_qkv.yaml"


def test_the_papers_choice_costs_about_8_percent_at_vit_b_and_6_at_the_cpu_scale():
    cells = variants(STUDY)
    paper = backbone_params(cells["norms+qkv_third"], "base")
    assert 8.0 < paper.extra_pct < 8.5  # the paper: about +8 %
    assert backbone_params(cells["baseline"], "base").extra == 0
    assert 5.5 < backbone_params(cells["norms+qkv_third"]).extra_pct < 6.5  # micro: 4 blocks, 96 dims


def test_table_has_a_row_per_variant_and_a_column_per_scale():
    lines = table(STUDY, ["tiny"]).splitlines()
    assert lines[0] == "| variant (dinov2 backbone) | micro (32 px) | tiny (224 px, /16) |"
    assert [line.split(" | ")[0].lstrip("| ") for line in lines[2:]] == list(variants(STUDY))
    assert "+0.000 M" in lines[2] and "(+0.0 %)" in lines[2]
