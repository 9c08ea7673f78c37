"""The report as one self-contained HTML page: inline CSS, inline SVG charts, a little inline
JavaScript for the matrix filter and the cell details. Nothing is loaded from anywhere else, so
the file opens offline, from a mail attachment or a CI artifact alike."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from html import escape
from typing import Any

import pandas as pd

from glow.report.charts import Chart
from glow.report.data import Matrix, detail, differs, snippet

CSS = """
:root{--ink:#1f2933;--muted:#616e7c;--line:#e4e7eb;--bg:#f5f7fa;--card:#fff;--accent:#0072B2;
--pass:#1b7837;--pass-bg:#e3f4e1;--fail:#b2182b;--fail-bg:#fde0dc;--err:#8a4b00;--err-bg:#fff1d6;
--pend:#616e7c;--pend-bg:#eef0f2}
*{box-sizing:border-box}
body{margin:0;font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;
color:var(--ink);background:var(--bg)}
header{background:#102a43;color:#fff;padding:22px 32px 18px}
header h1{margin:0 0 4px;font-size:22px;font-weight:600}
header .sub{color:#bcccdc;font-size:13px}
.chips{display:flex;flex-wrap:wrap;gap:10px;margin-top:14px}
.chip{background:rgba(255,255,255,.1);border-radius:8px;padding:6px 12px;font-size:13px}
.chip b{display:block;font-size:18px;font-weight:600}
nav{position:sticky;top:0;z-index:5;background:#fff;border-bottom:1px solid var(--line);
padding:8px 32px;display:flex;gap:18px;flex-wrap:wrap}
nav a{color:var(--accent);text-decoration:none;font-size:13px}
main{max-width:1280px;margin:0 auto;padding:18px 24px 60px}
section{background:var(--card);border:1px solid var(--line);border-radius:10px;padding:18px 22px;
margin:18px 0}
section h2{margin:0 0 4px;font-size:17px}
section p.lead{margin:0 0 12px;color:var(--muted)}
.grid{display:grid;grid-template-columns:repeat(auto-fit,minmax(480px,1fr));gap:18px}
figure{margin:0}
figure svg.chart{width:100%;max-width:780px;height:auto;display:block}
figcaption{color:var(--muted);font-size:12px;margin-top:4px}
table{border-collapse:collapse;width:100%;font-size:13px}
th,td{padding:6px 8px;border-bottom:1px solid var(--line);text-align:left;vertical-align:top}
th{background:#f8f9fb;font-weight:600;color:#3e4c59;white-space:nowrap}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
.tablewrap{overflow-x:auto}
.muted{color:var(--muted)}
.note{background:#fffbea;border:1px solid #f7d070;border-radius:8px;padding:8px 12px;margin:8px 0}
.controls{display:flex;gap:14px;align-items:center;flex-wrap:wrap;margin:6px 0 12px}
.controls label{cursor:pointer}
#matrix-table td.cell{min-width:150px;max-width:260px;cursor:pointer;
border-left:3px solid transparent}
#matrix-table td.o-pass{background:var(--pass-bg);border-left-color:var(--pass)}
#matrix-table td.o-fail{background:var(--fail-bg);border-left-color:var(--fail)}
#matrix-table td.o-error{background:var(--err-bg);border-left-color:var(--err)}
#matrix-table td.o-pending,#matrix-table td.o-ungraded,#matrix-table td.o-graded{
background:var(--pend-bg);border-left-color:var(--pend)}
#matrix-table td.empty{background:#fafbfc;cursor:default}
#matrix-table .score{font-weight:600;font-variant-numeric:tabular-nums}
#matrix-table .out{display:block;color:#3e4c59;font-size:12px;overflow:hidden;
text-overflow:ellipsis;white-space:nowrap;max-width:240px}
#matrix-table a.trace{font-size:11px;color:var(--accent)}
#matrix-table th.scn{white-space:normal;max-width:220px}
.badge{display:inline-block;border-radius:4px;padding:0 5px;font-size:11px;margin-left:4px;
background:#fff;border:1px solid var(--line)}
dialog{border:none;border-radius:12px;max-width:820px;width:92vw;padding:0;
box-shadow:0 20px 60px rgba(0,0,0,.3)}
dialog header{padding:14px 20px}
dialog .body{padding:14px 20px}
dialog pre{white-space:pre-wrap;background:var(--bg);padding:10px;border-radius:6px;
max-height:320px;overflow:auto;font-size:12px}
dialog code{font-size:12px}
dialog button{float:right;background:none;border:1px solid #fff;color:#fff;border-radius:6px;
padding:2px 10px;cursor:pointer}
footer{color:var(--muted);font-size:12px;text-align:center;padding:20px}
"""

SCRIPT = """
(function(){
  var cells = JSON.parse(document.getElementById('cell-data').textContent);
  var meta = JSON.parse(document.getElementById('report-meta').textContent);
  var rows = Array.prototype.slice.call(document.querySelectorAll('#matrix-table tbody tr'));
  var count = document.getElementById('matrix-count');
  function apply(filter){
    if (['all','failures','disagree'].indexOf(filter) < 0) filter = 'all';
    var shown = 0;
    rows.forEach(function(tr){
      var keep = filter === 'all' || (filter === 'failures' && tr.dataset.failing === '1')
        || (filter === 'disagree' && tr.dataset.disagree === '1');
      tr.hidden = !keep; if (keep) shown++;
    });
    var radio = document.querySelector('input[name=filter][value=' + filter + ']');
    if (radio) radio.checked = true;
    document.body.dataset.filter = filter;
    if (count) count.textContent = shown + ' of ' + rows.length + ' rows shown';
  }
  function fromHash(){
    var m = /filter=([a-z]+)/.exec(location.hash || '');
    apply(m ? m[1] : 'all');
  }
  document.querySelectorAll('input[name=filter]').forEach(function(input){
    input.addEventListener('change', function(){
      history.replaceState(null, '', '#filter=' + input.value); apply(input.value);
    });
  });
  window.addEventListener('hashchange', fromHash);
  fromHash();
  var dialog = document.getElementById('cell-detail');
  function text(el, value){ el.textContent = value == null ? '' : value; }
  function show(id){
    var c = cells[id]; if (!c || !dialog) return;
    text(document.getElementById('d-title'), c.scenario + ' · ' + c.column);
    var score = c.score == null ? '' : ' · score ' + c.score.toFixed(2);
    text(document.getElementById('d-status'), c.status + score);
    text(document.getElementById('d-output'), c.output || '(no output)');
    text(document.getElementById('d-error'), c.error || '');
    document.getElementById('d-error-wrap').hidden = !c.error;
    text(document.getElementById('d-standards'), c.standards || '(none)');
    text(document.getElementById('d-id'), id);
    text(document.getElementById('d-key'), 'trace-' + id);
    text(document.getElementById('d-cli'), "glow tests invocation invocation_trace --body '" +
      JSON.stringify({test_id: meta.test_id, test_invocation_id: id}) + "'");
    var link = document.getElementById('d-link');
    link.hidden = !meta.ui_url;
    if (meta.ui_url) link.href = meta.ui_url + '/artifacts/key/trace-' + id;
    dialog.showModal ? dialog.showModal() : dialog.setAttribute('open', '');
  }
  document.querySelectorAll('#matrix-table td.cell[data-inv]').forEach(function(td){
    td.addEventListener('click', function(ev){
      if (ev.target.tagName === 'A' && ev.target.getAttribute('href').charAt(0) !== '#') return;
      ev.preventDefault(); show(td.dataset.inv);
    });
  });
  var close = document.getElementById('d-close');
  if (close) close.addEventListener('click', function(){ dialog.close(); });
  document.body.dataset.ready = '1';
})();
"""


def _num(value: Any, fmt: str = ".3f") -> str:
    if value is None or pd.isna(value):
        return "–"
    return format(value, fmt)


def _money(value: Any) -> str:
    """USD for people: cents for large sums, three significant digits for small ones (a
    simulated model's $0.00127 must not read $0.0000)."""
    if value is None or pd.isna(value):
        return "unknown"
    if value == 0 or abs(value) >= 1:
        return f"${value:,.2f}"
    # Enough decimals for three significant digits, never scientific notation.
    decimals = max(4, 2 - math.floor(math.log10(abs(value))))
    return f"${value:.{decimals}f}"


def _figure(chart: Chart) -> str:
    caption = f"<figcaption>{escape(chart.caption)}</figcaption>" if chart.caption else ""
    return (
        f'<figure id="chart-{chart.name}"><h3 class="muted" style="margin:4px 0;font-size:13px">'
        f"{escape(chart.title)}</h3>{chart.svg}{caption}</figure>"
    )


def _table(headers: Sequence[tuple[str, bool]], rows: Iterable[Sequence[str]], id_: str) -> str:
    """A table; `headers` are (title, numeric); cells are already-escaped HTML."""
    head = "".join(f'<th class="num">{h}</th>' if num else f"<th>{h}</th>" for h, num in headers)
    body = []
    for row in rows:
        cells = "".join(
            f'<td class="num">{c}</td>' if num else f"<td>{c}</td>"
            for c, (_, num) in zip(row, headers, strict=True)
        )
        body.append(f"<tr>{cells}</tr>")
    return (
        f'<div class="tablewrap"><table id="{id_}"><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table></div>"
    )


def leaderboard_table(board: pd.DataFrame) -> str:
    """The leaderboard as an HTML table; the failure-inclusive column only when it differs."""
    show_all = any(
        differs(a, b) for a, b in zip(board["mean_score_all"], board["mean_score"], strict=True)
    )
    show_k = board["pass_at_k"].notna().any()
    agents = board["agent"].nunique() > 1
    headers = [("#", True), ("model", False)]
    headers += [("agent", False)] if agents else []
    show_skipped = bool(board["n_skipped"].fillna(0).gt(0).any())
    headers += [("n", True), ("done", True), ("failed", True), ("terminated", True)]
    headers += [("skipped", True)] if show_skipped else []
    headers += [("score", True), ("95% CI", True)]
    headers += [("score, failures as 0", True)] if show_all else []
    headers += [("pass rate", True)]
    headers += [(f"pass@{int(board['k'].max())}", True)] if show_k else []
    headers += [("cost", True), ("cost / pass", True), ("p50 latency", True)]
    rows = []
    for row in board.to_dict("records"):
        cells = [str(row["rank"]), f"<b>{escape(row['model'])}</b>"]
        cells += [escape(row["agent"])] if agents else []
        cells += [str(row["n"]), str(row["n_completed"]), str(row["n_failed"])]
        cells += [str(row["n_terminated"])]
        cells += [str(row["n_skipped"])] if show_skipped else []
        cells += [_num(row["mean_score"])]
        cells += [f"{_num(row['ci95_low'], '.3f')} – {_num(row['ci95_high'], '.3f')}"]
        if show_all:
            mark = "" if not differs(row["mean_score_all"], row["mean_score"]) else " ◆"
            cells += [_num(row["mean_score_all"]) + mark]
        cells += [_num(row["pass_rate"], ".1%")]
        cells += [_num(row["pass_at_k"], ".1%")] if show_k else []
        cells += [_money(row["cost_usd"]), _money(row["cost_per_pass_usd"])]
        cells += [f"{_num(row['latency_p50_s'], '.2f')} s"]
        rows.append(cells)
    return _table(headers, rows, "leaderboard-table")


def pairwise_table(frame: pd.DataFrame, labels: list[str]) -> str:
    headers = [("comparison", False), ("pairs", True), ("clusters", True), ("mean A", True)]
    headers += [("mean B", True), ("A − B", True), ("95% CI", True), ("p", True)]
    headers += [("wins / ties / losses", True), ("method", False)]
    rows = [
        [
            escape(name),
            str(r["n_pairs"]),
            _num(r.get("n_clusters"), ".0f"),
            _num(r["mean_a"]),
            _num(r["mean_b"]),
            f"<b>{_num(r['mean_diff'], '+.3f')}</b>",
            f"{_num(r['ci95_low'], '+.3f')} – {_num(r['ci95_high'], '+.3f')}",
            _num(r["p_value"], ".3g"),
            f"{r['wins']} / {r['ties']} / {r['losses']}",
            escape(str(r.get("method", ""))),
        ]
        for name, r in zip(labels, frame.to_dict("records"), strict=True)
    ]
    return _table(headers, rows, "pairwise-table")


def regression_table(frame: pd.DataFrame, labels: list[str]) -> str:
    headers = [("model", False), ("pairs", True), ("before", True), ("now", True)]
    headers += [("change", True), ("95% CI", True), ("p", True), ("newly failing", True)]
    headers += [("newly passing", True), ("cost before", True), ("cost now", True)]
    rows = [
        [
            escape(name),
            str(r["n_pairs"]),
            _num(r["mean_base"]),
            _num(r["mean_new"]),
            f"<b>{_num(r['delta'], '+.3f')}</b>",
            f"{_num(r['ci95_low'], '+.3f')} – {_num(r['ci95_high'], '+.3f')}",
            _num(r["p_value"], ".3g"),
            str(r["newly_failing"]),
            str(r["newly_passing"]),
            _money(r.get("cost_base_usd")),
            _money(r.get("cost_new_usd")),
        ]
        for name, r in zip(labels, frame.to_dict("records"), strict=True)
    ]
    return _table(headers, rows, "regression-table")


def _cell_html(cell: dict[str, Any] | None, ui_url: str | None) -> str:
    if cell is None:
        return '<td class="empty muted">not run</td>'
    inv = cell["invocation_id"]
    score = "" if cell["score"] is None else f'<span class="score">{cell["score"]:.2f}</span>'
    badge = (
        ""
        if cell["outcome"] in ("pass", "fail")
        else f'<span class="badge">{cell["status"]}</span>'
    )
    if cell["outcome"] == "error" and cell.get("error_type"):
        badge = f'<span class="badge">{escape(str(cell["error_type"]))}</span>'
    shown = snippet(cell["output"]) or snippet(cell.get("error_message"))
    href = f"{ui_url}/artifacts/key/trace-{inv}" if ui_url else f"#inv-{inv}"
    return (
        f'<td class="cell o-{cell["outcome"]}" data-inv="{escape(inv)}" '
        f'title="invocation {escape(inv)}">'
        f'{score}{badge} <a class="trace" href="{escape(href)}" data-key="trace-{escape(inv)}">'
        f'trace</a><span class="out">{escape(shown)}</span></td>'
    )


def matrix_section(matrix: Matrix, ui_url: str | None) -> tuple[str, dict[str, Any]]:
    """The scenario x model matrix and the per-cell details its panel shows (by invocation id)."""
    head = "".join(f"<th>{escape(c)}</th>" for c in matrix.columns)
    epochs = any(r["epoch"] > 1 for r in matrix.rows)
    body = []
    details: dict[str, Any] = {}
    for row in matrix.rows:
        name = escape(row["scenario_id"]) + (
            f" <span class='muted'>#{row['epoch']}</span>" if epochs else ""
        )
        tags = "".join(
            f'<span class="badge">{t}</span>'
            for t, on in (("disagree", row["disagree"]), ("failing", row["failing"]))
            if on
        )
        cells = "".join(_cell_html(c, ui_url) for c in row["cells"])
        body.append(
            f'<tr data-failing="{int(row["failing"])}" data-disagree="{int(row["disagree"])}">'
            f'<th class="scn">{name}<br><span class="muted">{escape(row["category"])}</span>'
            f"{tags}</th>"
            f"{cells}</tr>"
        )
        for column, cell in zip(matrix.columns, row["cells"], strict=True):
            if cell is None:
                continue
            standards = ", ".join(f"{k} {v:.2f}" for k, v in cell["standards"].items())
            error = ": ".join(x for x in (cell["error_type"], cell["error_message"]) if x)
            details[cell["invocation_id"]] = {
                "scenario": row["scenario_id"],
                "column": column,
                "status": cell["status"],
                "score": None if cell["score"] is None else round(cell["score"], 4),
                "output": detail(cell["output"]),
                "error": detail(error),
                "standards": standards,
            }
    note = ""
    if matrix.capped:
        note = (
            f'<p class="note" id="matrix-capped">Showing {len(matrix.rows):,} of '
            f"{matrix.total_rows:,} scenario rows to keep this page usable: rows where models "
            "disagree first, then failing rows, then the rest. Every invocation is in "
            "<code>invocations.parquet</code>.</p>"
        )
    controls = (
        '<div class="controls" role="radiogroup">'
        '<label><input type="radio" name="filter" value="all" checked> all</label>'
        f'<label><input type="radio" name="filter" value="failures"> failures '
        f'<span class="muted">({matrix.n_failing:,})</span></label>'
        f'<label><input type="radio" name="filter" value="disagree"> models disagree '
        f'<span class="muted">({matrix.n_disagree:,})</span></label>'
        '<span class="muted" id="matrix-count"></span></div>'
    )
    html = (
        '<section id="matrix"><h2>Scenarios × models</h2><p class="lead">Each cell: score, '
        "output and a link to its trace (Prefect artifact "
        "<code>trace-&lt;invocation id&gt;</code>). "
        "Click a cell for the full output, the per-standard scores and how to fetch the stored "
        f"trace. A link to this page ending in <code>#filter=failures</code> or "
        f"<code>#filter=disagree</code> opens it filtered.</p>{note}{controls}"
        f'<div class="tablewrap"><table id="matrix-table"><thead><tr><th>scenario</th>{head}'
        f"</tr></thead><tbody>{''.join(body)}</tbody></table></div></section>"
    )
    return html, details


DIALOG = """
<dialog id="cell-detail"><header><button id="d-close" type="button">close</button>
<b id="d-title"></b><div class="sub" id="d-status"></div></header><div class="body">
<h4>Output</h4><pre id="d-output"></pre>
<div id="d-error-wrap"><h4>Error</h4><pre id="d-error"></pre></div>
<h4>Scores per standard</h4><p id="d-standards"></p>
<h4>Trace</h4><p>invocation <code id="d-id"></code>, Prefect artifact <code id="d-key"></code>
<a id="d-link" target="_blank" rel="noopener">open in the Prefect UI</a></p>
<p class="muted">The stored trace, from the Glow API:</p><pre id="d-cli"></pre></div></dialog>
"""


def _json(value: Any) -> str:
    """JSON safe inside a <script> element: no `<` at all, so no `</script>` or `<!--`."""
    return json.dumps(value, ensure_ascii=False).replace("<", "\\u003c")


def page(
    *,
    title: str,
    subtitle: str,
    chips: Sequence[tuple[str, str]],
    sections: Sequence[tuple[str, str, str]],
    details: dict[str, Any],
    meta: dict[str, Any],
    footer: str,
) -> str:
    """The whole document. `sections` are (anchor id, nav title, HTML)."""
    chip_html = "".join(f'<div class="chip"><b>{escape(v)}</b>{escape(k)}</div>' for k, v in chips)
    nav = "".join(f'<a href="#{a}">{escape(t)}</a>' for a, t, _ in sections)
    body = "".join(html for _, _, html in sections)
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>{escape(title)}</title><style>{CSS}</style></head><body>"
        f'<header><h1>{escape(title)}</h1><div class="sub">{escape(subtitle)}</div>'
        f'<div class="chips">{chip_html}</div></header><nav>{nav}</nav><main>{body}</main>'
        f"<footer>{footer}</footer>{DIALOG}"
        f'<script type="application/json" id="cell-data">{_json(details)}</script>'
        f'<script type="application/json" id="report-meta">{_json(meta)}</script>'
        f"<script>{SCRIPT}</script></body></html>"
    )
