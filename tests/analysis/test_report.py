"""`carprobe report` end to end on a tiny synthetic render set and tiny models, and the report
framework's contract (self-contained HTML, sections, numbers from the CSVs, re-rendering)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from analysis import cli
from analysis.report import SECTIONS, write_report
from analysis.report import context as R
from analysis.report.html import external_references, format_number
from analysis.report.sections import primary_rows, sample_grid_rows

from tests.analysis.synthetic_set import QUICK_TOML, render_synthetic_set

EXPECTED_SECTIONS = {  # id → title; every one but the overview, the baselines and the number tables holds a figure
    "overview": "Overview", "baselines": "Against the baselines", "samples": "Sample images", "silhouettes": "Property silhouettes",
    "per-value": "Per-value breakdown", "nr-prec": "NR-Prec (Kobs et al.)",
    "embedding-space": "Embedding-space metrics", "retrieval": "Retrieval", "tsne": "t-SNE projections",
    "effects": "Factor effects: a change of factor against a change of car", "tables": "All numbers",
}
WITHOUT_FIGURE = {"overview", "baselines", "tables"}


class TinyNet(nn.Module):
    """A two-layer conv net: fast on CPU, and its random embeddings still depend on colour and shape."""

    def __init__(self, dim: int):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 5, stride=2)
        self.head = nn.Linear(8 * 4 * 4, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.conv(x))
        x = nn.functional.adaptive_avg_pool2d(x, 4).flatten(1)
        return self.head(x)


def write_tiny_model(path: Path, seed: int, dim: int = 8) -> Path:
    torch.manual_seed(seed)
    scripted = torch.jit.script(TinyNet(dim).eval())
    scripted.save(str(path))
    sidecar = {"preprocess": {"resize": 32, "crop": 32}, "normalize": True, "distance": "cosine"}
    path.with_suffix(".json").write_text(json.dumps(sidecar))
    return path


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A rendered tiny set, two tiny models, and one `carprobe report` run over them."""
    root = tmp_path_factory.mktemp("report")
    render_set = render_synthetic_set(QUICK_TOML, root / "tiny")
    model_a = write_tiny_model(root / "tiny_a.pt", seed=1)
    model_b = write_tiny_model(root / "tiny_b.pt", seed=2)
    out = root / "results"
    argv = ["report", str(render_set), "--models", str(model_a), str(model_b), "torchvision:resnet18:16",
            "--names", "alpha", "beta", "resnet18", "--random-init", "--out", str(out), "--quiet",
            "--workers", "0", "--device", "cpu"]
    return {"set": render_set, "out": out, "argv": argv, "models": [model_a, model_b]}


@pytest.fixture(scope="module")
def report_run(tiny, capsys_module):
    code = cli.main(tiny["argv"])
    captured = capsys_module()
    return {**tiny, "code": code, "stdout": captured.out, "stderr": captured.err,
            "html": (tiny["out"] / "report.html").read_text(encoding="utf-8")}


@pytest.fixture(scope="module")
def capsys_module():
    """Module-scoped stdout/stderr capture (pytest's capsys is function-scoped)."""
    import contextlib
    import io

    out, err = io.StringIO(), io.StringIO()
    stack = contextlib.ExitStack()
    stack.enter_context(contextlib.redirect_stdout(out))
    stack.enter_context(contextlib.redirect_stderr(err))

    def read():
        stack.close()
        return type("Captured", (), {"out": out.getvalue(), "err": err.getvalue()})

    yield read
    stack.close()


def sections_of(html: str) -> dict[str, str]:
    found = {}
    for match in re.finditer(r'<section class="report-section" id="([^"]+)"(.*?)</section>', html, re.S):
        found[match.group(1)] = match.group(2)
    return found


def read_csv(path: Path) -> pd.DataFrame:
    frame = pd.read_csv(path)
    for column in ("model", "factor", "subset", "metric", "level"):
        if column in frame:
            frame[column] = frame[column].fillna("").astype(str)
    return frame


# --- end to end ------------------------------------------------------------------------

def test_report_command_writes_results_and_prints_path_and_summary(report_run):
    assert report_run["code"] == 0, report_run["stderr"]
    out = report_run["out"]
    assert str(out / "report.html") in report_run["stdout"]
    for name in (R.RESULTS_JSON, R.SILHOUETTES, R.SILHOUETTES_PER_VALUE, R.NR_PRECISION, R.EMBEDDING_METRICS,
                 R.RETRIEVAL, R.SPECTRA, R.TSNE):
        assert (out / name).is_file(), name
    # summary: one line per model naming its factor with the highest controlled silhouette
    sil = read_csv(out / R.SILHOUETTES)
    for model in ("alpha", "beta", "resnet18"):
        rows = sil[(sil["model"] == model) & (sil["subset"] == sil["factor"])]
        top = rows.loc[rows["value"].idxmax()]
        line = next(l for l in report_run["stdout"].splitlines() if l.strip().startswith(model + ":"))
        assert R.factor_label(top["factor"]) in line and f"{top['value']:.3f}" in line


def test_results_manifest_describes_set_and_models(report_run):
    manifest = json.loads((report_run["out"] / R.RESULTS_JSON).read_text())
    info = json.loads((report_run["set"] / "dataset.json").read_text())
    assert manifest["set"]["spec_hash"] == info["spec_hash"]
    assert manifest["set"]["images"] == info["counts"]["images"] == 16
    assert manifest["set"]["factors"] == ["car.body", "paint.color", "camera.azimuth", "background.color"]
    names = [m["name"] for m in manifest["models"]]
    assert names == ["alpha", "beta", "resnet18"]
    fingerprints = [m["fingerprint"] for m in manifest["models"]]
    assert len(set(fingerprints)) == 3 and all(len(f) == 64 for f in fingerprints)
    assert manifest["models"][0]["preprocess"]["crop"] == 32
    assert [m["random_init"] for m in manifest["models"]] == [False, False, True]
    assert manifest["tsne"]["n"] == 16 and manifest["tsne"]["seed"] == 0


def test_tables_are_tidy_and_sane(report_run):
    out = report_run["out"]
    sil = read_csv(out / R.SILHOUETTES)
    assert {"model", "factor", "subset", "metric", "value"} <= set(sil.columns)
    assert sil["value"].between(-1, 1).all()
    # every factor on its controlled subset for every model (car.body has no subset: whole set)
    controlled = sil[sil["subset"] == sil["factor"]]
    assert set(controlled["factor"]) == {"paint.color", "camera.azimuth", "background.color"}
    assert set(controlled["model"]) == {"alpha", "beta", "resnet18"}
    tsne = read_csv(out / R.TSNE)
    assert len(tsne) == 3 * 16 and np.isfinite(tsne[["x", "y"]].to_numpy()).all()
    spectra = read_csv(out / R.SPECTRA)
    sums = spectra.groupby("model")["value"].sum()
    assert np.allclose(sums, 1.0, atol=1e-6)


def test_html_is_self_contained(report_run):
    html = report_run["html"]
    assert external_references(html) == []
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", html, re.I)
    assert "<link" not in html and "<script" not in html
    sources = re.findall(r'<img[^>]+src="([^"]+)"', html)
    assert sources and all(s.startswith("data:image/png;base64,") for s in sources)


def test_html_has_every_section_with_a_figure(report_run):
    found = sections_of(report_run["html"])
    assert list(found) == list(EXPECTED_SECTIONS)  # in this order
    for section_id, title in EXPECTED_SECTIONS.items():
        body = found[section_id]
        assert re.search(rf"<h2><span class=\"num\">\d+</span>{re.escape(title.replace('&', '&amp;'))}</h2>", body), title
        figures = body.count('<img src="data:image/png;base64,')
        assert figures >= (0 if section_id in WITHOUT_FIGURE else 1), section_id
    # the measures are told apart
    assert "cosine" in found["silhouettes"] and "[−1, 1]" in found["silhouettes"]
    assert "2.576" in found["nr-prec"] and "z-score" in found["nr-prec"]


def test_html_tables_hold_the_numbers_of_the_csvs(report_run):
    html, out = report_run["html"], report_run["out"]
    found = sections_of(html)
    for file_name, section_id in ((R.SILHOUETTES, "silhouettes"), (R.NR_PRECISION, "nr-prec"),
                                  (R.RETRIEVAL, "retrieval"), (R.SILHOUETTES_PER_VALUE, "per-value")):
        frame = read_csv(out / file_name)
        if section_id == "per-value":  # the breakdown shows the controlled subsets (whole set without one)
            frame = primary_rows(frame)
        for value in frame["value"]:
            assert format_number(float(value), 3) in found[section_id], (file_name, value)
    for value in read_csv(out / R.EMBEDDING_METRICS)["value"]:
        assert format_number(float(value), 4) in found["embedding-space"]
    # the overview names the set, its spec hash and every model with its fingerprint
    manifest = json.loads((out / R.RESULTS_JSON).read_text())
    assert manifest["set"]["spec_hash"] in found["overview"]
    for model in manifest["models"]:
        assert model["name"] in found["overview"] and model["fingerprint"][:12] in found["overview"]
    # the all-numbers appendix holds every tidy table, row for row
    for file_name in (R.SILHOUETTES, R.RETRIEVAL):
        frame = read_csv(out / file_name)
        assert f"{file_name} ({len(frame)} rows)" in found["tables"]


def test_each_model_has_one_colour_in_every_figure_and_table(report_run):
    html = report_run["html"]
    swatches = dict(re.findall(r'<span class="swatch" style="background:(#[0-9A-Fa-f]{6})"></span>([^<]+)<', html))
    by_model = {}
    for colour, model in swatches.items():
        by_model.setdefault(model, set()).add(colour)
    assert set(by_model) == {"alpha", "beta", "resnet18"}
    assert all(len(c) == 1 for c in by_model.values())
    assert len({next(iter(c)) for c in by_model.values()}) == 3


def test_rerender_from_results_uses_the_csvs_and_computes_nothing(report_run, monkeypatch, capsys):
    out = report_run["out"]
    original = (out / R.SILHOUETTES).read_bytes()
    sil = read_csv(out / R.SILHOUETTES)
    sil.loc[0, "value"] = 0.987654  # a number no computation produced
    sil.to_csv(out / R.SILHOUETTES, index=False)
    (out / "report.html").unlink()

    import analysis.embed
    import analysis.models

    def forbidden(*args, **kwargs):
        raise AssertionError("re-rendering must not embed or load models")

    monkeypatch.setattr(analysis.embed, "embed_render_set", forbidden)
    monkeypatch.setattr(analysis.models, "load_model", forbidden)
    try:
        assert cli.main(["report", "--results", str(out)]) == 0
        html = (out / "report.html").read_text(encoding="utf-8")
        assert "0.988" in sections_of(html)["silhouettes"]
        assert list(sections_of(html)) == list(EXPECTED_SECTIONS)
        assert str(out / "report.html") in capsys.readouterr().out
    finally:
        (out / R.SILHOUETTES).write_bytes(original)  # other tests read the computed numbers


def test_effects_are_written_and_their_section_rerenders_from_effects_csv(report_run):
    from analysis.effects import EFFECTS_CSV, read_effects

    out = report_run["out"]
    effects = read_effects(out)
    ratios = effects[effects["metric"] == "effect_ratio"]
    assert set(ratios["model"]) == {"alpha", "beta", "resnet18"}
    assert set(ratios["factor"]) == {"car.body", "paint.color", "camera.azimuth", "background.color"}
    assert "effect ratio" in sections_of(report_run["html"])["effects"].lower()
    original = (out / EFFECTS_CSV).read_bytes()
    changed = pd.read_csv(out / EFFECTS_CSV)
    changed.loc[changed["metric"] == "effect_ratio", "value"] = 7.654321  # a number no computation produced
    changed.to_csv(out / EFFECTS_CSV, index=False)
    try:  # only the effects section (`report --results` draws every section: see the test above)
        from analysis.effects.report_section import section as effects_section

        html = write_report(out / "effects_only.html", None, out, sections=[effects_section]).read_text(encoding="utf-8")
        section = sections_of(html)["effects"]
        assert "7.654" in section and section.count('<img src="data:image/png;base64,') >= 3
    finally:
        (out / "effects_only.html").unlink(missing_ok=True)
        (out / EFFECTS_CSV).write_bytes(original)


def test_rerender_without_the_render_set_leaves_out_the_image_sections(report_run, tmp_path):
    copy = tmp_path / "results"
    copy.mkdir()
    for path in report_run["out"].iterdir():
        if path.suffix in (".csv", ".json"):
            (copy / path.name).write_bytes(path.read_bytes())
    manifest = json.loads((copy / R.RESULTS_JSON).read_text())
    manifest["set"]["path"] = str(tmp_path / "moved-away")
    (copy / R.RESULTS_JSON).write_text(json.dumps(manifest))
    out = write_report(copy / "report.html", None, copy)
    found = sections_of(out.read_text(encoding="utf-8"))
    assert "samples" not in found and "tsne" not in found
    assert {"overview", "silhouettes", "retrieval", "tables"} <= set(found)


# --- user errors -----------------------------------------------------------------------

def test_user_errors_exit_2_with_a_clear_message(tiny, tmp_path, capsys):
    cases = [
        (["report", str(tmp_path / "nope"), "--models", "torchvision:resnet18"], "not a carprobe render set"),
        (["report", str(tiny["set"]), "--models", str(tmp_path / "missing.pt")], "not found"),
        (["report", str(tiny["set"]), "--models", str(tiny["models"][0]), "--names", "a", "b"], "--names"),
        (["report", str(tiny["set"]), "--models", str(tiny["models"][0]), "--label", "colour"], "--label"),
        (["report", str(tiny["set"])], "--models"),
        (["report", str(tiny["set"]), "--models", str(tiny["models"][0]), "--workers", "x"],
         "'auto' or a non-negative integer"),
        (["report", "--results", str(tmp_path / "no-results")], "does not exist"),
        (["report", "--results", str(tmp_path)], "results.json"),
    ]
    for argv, message in cases:
        assert cli.main(argv + ["--out", str(tmp_path / "o")] if "--results" not in argv else argv) == 2, argv
        assert message in capsys.readouterr().err, argv


def test_a_set_where_no_factor_varies_is_refused(tmp_path, tiny, capsys):
    fixed = QUICK_TOML.split("[car]")[0].replace('kind = "one_at_a_time"\nacross = ["car.body"]', 'kind = "grid"')
    render_set = render_synthetic_set(fixed, tmp_path / "fixed")
    assert cli.main(["report", str(render_set), "--models", str(tiny["models"][0]), "--out", str(tmp_path / "o")]) == 2
    assert "no factor varies" in capsys.readouterr().err


# --- the framework ---------------------------------------------------------------------

def test_sections_are_registered_with_plugins_before_the_number_tables():
    names = [getattr(s, "__name__", "") for s in SECTIONS]
    assert names[0] == "overview_section" and names[-1] == "tables_section"
    assert "plugin:analysis.saliency.report_section" in names and "plugin:analysis.train.report_section" in names
    assert "plugin:analysis.effects.report_section" in names


def test_a_section_that_references_the_network_is_refused(report_run, tmp_path):
    def leaky(results_dir, context):
        return context.section("leak", "Leak", '<img src="https://example.org/x.png">')

    with pytest.raises(RuntimeError, match="self-contained"):
        write_report(tmp_path / "r.html", None, report_run["out"], sections=[leaky])


def test_custom_sections_plug_in_and_none_leaves_a_section_out(report_run, tmp_path):
    def extra(results_dir, context):
        frame = pd.DataFrame({"model": context.models, "score": [0.125, 0.5, 0.75]})
        return context.section("extra", "Extra results", context.table_html(frame, "Scores."))

    def absent(results_dir, context):
        return None

    html = write_report(tmp_path / "r.html", None, report_run["out"], sections=[absent, extra]).read_text()
    assert list(sections_of(html)) == ["extra"]
    assert "<b>Table 1.</b> Scores." in html and "0.125" in html


def test_sample_grid_shows_each_factor_varying_with_the_others_fixed(tiny):
    meta = pd.read_csv(tiny["set"] / "metadata.csv")
    factors = ["car.body", "paint.color", "camera.azimuth", "background.color"]
    rows = dict(sample_grid_rows(meta, factors))
    assert [v for v, _ in rows["paint.color"]] == ["blue", "red", "yellow"]
    for factor in ("paint.color", "camera.azimuth", "background.color"):
        picked = meta.set_index("index").loc[[i for _, i in rows[factor]]]
        assert (picked["subset"] == factor).all()
        assert picked["car.body"].nunique() == 1  # the same car identity along the row
        assert picked[factor].nunique() == len(picked)
    assert [v for v, _ in rows["car.body"]] == ["sedan", "suv"]


def test_method_boxes_state_each_convention_once(report_run):
    from analysis.metrics import SIGNIFICANT_Z

    assert R.NR_PREC_SIGNIFICANT == SIGNIFICANT_Z
    sections = sections_of(report_run["html"])
    nr = sections["nr-prec"]
    assert "two-sided p = 0.01" in nr and "not a formal test of the mean" in nr
    assert "quantile bins" in nr and "Euclidean" in nr and "float64" in nr
    # 2 images per colour on the controlled subsets: no embedding can reach 2.576 there
    assert "cannot reach" in nr
    assert "quantile bins" in sections["silhouettes"] and "bootstrap over images" in sections["silhouettes"]
    assert "float64" in sections["retrieval"]
    for name in (R.SILHOUETTES, R.NR_PRECISION):
        table = read_csv(report_run["out"] / name)
        assert {"ci_low", "ci_high", "binning", "max_attainable"} <= set(table.columns)
        assert (table["binning"] == "none").all()  # the set lists every value
        assert ((table["ci_low"] <= table["value"] + 1e-12) & (table["value"] <= table["ci_high"] + 1e-12)).all()
