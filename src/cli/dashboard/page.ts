/**
 * The dashboard page: one HTML document, its script and its style, served by ./server.ts (no
 * front-end framework, nothing fetched from elsewhere). Everything that comes from the engine (lock
 * names, owners, hosts) is data: the script only ever sets `textContent`, never HTML.
 */

/** The document; `{{TITLE}}` and `{{QUERY}}` (the assets' `?token=`) are replaced by the server. */
export const PAGE_HTML = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{TITLE}}</title>
<link rel="stylesheet" href="app.css{{QUERY}}">
</head>
<body>
<header>
  <h1>{{TITLE}}</h1>
  <span id="engine" data-testid="engine"></span>
  <span id="status" data-testid="status" class="status">connecting…</span>
</header>
<div id="error" data-testid="error" class="error" hidden></div>
<section id="sale" data-testid="sale" hidden>
  <h2>Flash sale</h2>
  <div id="phases" class="phases"></div>
</section>
<section>
  <h2>Locks <small id="lock-count" data-testid="lock-count"></small></h2>
  <table id="locks" data-testid="locks">
    <thead><tr><th>Key</th><th>Mode</th><th>Host</th><th>PID</th><th>Token</th><th>TTL</th><th>Permits</th><th>Waiters</th><th id="admin-col" hidden></th></tr></thead>
    <tbody></tbody>
  </table>
  <p id="no-locks" class="muted" hidden>No locks held.</p>
</section>
<div class="columns">
<section>
  <h2>Recent events <small class="muted">(inferred from successive snapshots)</small></h2>
  <ol id="feed" data-testid="feed" class="feed"></ol>
</section>
<section>
  <h2>Wait and hold times, per key <small class="muted">(observed at the polling period)</small></h2>
  <div id="histograms" data-testid="histograms"></div>
</section>
</div>
<script src="app.js{{QUERY}}"></script>
</body>
</html>
`;

/** The style sheet. */
export const PAGE_CSS = `
:root { color-scheme: light dark; --fg: #1d2330; --muted: #6b7280; --bg: #f7f8fa; --card: #fff; --line: #e3e6eb; --accent: #2563eb; --bad: #b91c1c; --good: #15803d; }
* { box-sizing: border-box; }
body { margin: 0; padding: 16px 24px; font: 14px/1.4 system-ui, -apple-system, "Segoe UI", sans-serif; color: var(--fg); background: var(--bg); }
header { display: flex; align-items: baseline; gap: 16px; flex-wrap: wrap; }
h1 { font-size: 20px; margin: 0 0 8px; }
h2 { font-size: 15px; margin: 16px 0 8px; }
small, .muted { color: var(--muted); font-weight: normal; }
.status { padding: 2px 8px; border-radius: 10px; background: var(--line); font-size: 12px; }
.status.live { background: #dcfce7; color: var(--good); }
.error { margin: 8px 0; padding: 8px 12px; border-left: 4px solid var(--bad); background: #fee2e2; color: var(--bad); white-space: pre-wrap; }
section { background: var(--card); border: 1px solid var(--line); border-radius: 8px; padding: 4px 16px 12px; margin: 12px 0; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; padding: 4px 8px; border-bottom: 1px solid var(--line); font-variant-numeric: tabular-nums; }
td.key { font-family: ui-monospace, monospace; word-break: break-all; }
td.ttl { min-width: 80px; }
.bar { height: 6px; background: var(--accent); border-radius: 3px; }
button { font: inherit; padding: 2px 10px; border: 1px solid var(--bad); color: var(--bad); background: transparent; border-radius: 4px; cursor: pointer; }
.columns { display: grid; grid-template-columns: 1fr 1fr; gap: 12px; }
.columns section { margin: 0; }
.feed { list-style: none; padding: 0; margin: 0; max-height: 320px; overflow: auto; }
.feed li { padding: 2px 0; border-bottom: 1px dotted var(--line); }
.feed .kind { display: inline-block; min-width: 112px; font-weight: 600; }
.feed .time { color: var(--muted); margin-right: 8px; font-variant-numeric: tabular-nums; }
.kind-released, .kind-handed-over { color: var(--good); }
.kind-expired, .kind-gave-up, .kind-force-released { color: var(--bad); }
.hist { margin-bottom: 10px; }
.hist .name { font-family: ui-monospace, monospace; }
.hist .rows { display: grid; grid-template-columns: 56px 1fr 1fr; gap: 2px 8px; font-size: 12px; }
.hist .cell { display: flex; align-items: center; gap: 4px; }
.hist .wait .bar { background: #f59e0b; }
.phases { display: grid; grid-template-columns: 1fr 1fr; gap: 12px; }
.phase { border: 1px solid var(--line); border-radius: 8px; padding: 8px 12px; }
.phase h3 { margin: 0 0 6px; font-size: 14px; }
.phase dl { display: grid; grid-template-columns: auto 1fr; gap: 2px 12px; margin: 0; }
.phase dt { color: var(--muted); }
.phase dd { margin: 0; font-variant-numeric: tabular-nums; }
.phase .verdict.bad { color: var(--bad); font-weight: 700; }
.phase .verdict.good { color: var(--good); font-weight: 700; }
.workers { display: flex; flex-wrap: wrap; gap: 3px; margin-top: 6px; }
.worker { min-width: 22px; padding: 0 4px; height: 22px; border-radius: 4px; background: var(--line); font-size: 10px; display: flex; align-items: center; justify-content: center; }
.worker.holder { background: var(--accent); color: #fff; }
@media (prefers-color-scheme: dark) { :root { --fg: #e5e7eb; --muted: #9ca3af; --bg: #0f1115; --card: #171a21; --line: #2a2f3a; } .error { background: #3b1111; } .status.live { background: #14361f; } }
`;

/** The script: an EventSource on /events; every snapshot re-renders with textContent only. */
export const PAGE_JS = `'use strict';
(function () {
  var params = new URLSearchParams(location.search);
  var token = params.get('token');
  var q = token ? '?token=' + encodeURIComponent(token) : '';
  var state = null;
  var receivedAt = 0;

  function $(id) { return document.getElementById(id); }
  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }
  function clear(node) { while (node.firstChild) node.removeChild(node.firstChild); }
  function ms(n) {
    if (n < 0) return 'session';
    if (n < 10000) return (n / 1000).toFixed(1) + ' s';
    return Math.round(n / 1000) + ' s';
  }
  function bucketLabel(buckets, i) {
    if (i === 0) return '< ' + ms(buckets[0]);
    if (i >= buckets.length) return '≥ ' + ms(buckets[buckets.length - 1]);
    return '< ' + ms(buckets[i]);
  }

  function tick() {
    if (!state) return;
    var elapsed = Date.now() - receivedAt;
    var cells = document.querySelectorAll('td.ttl[data-remaining]');
    for (var i = 0; i < cells.length; i++) {
      var r = Number(cells[i].getAttribute('data-remaining'));
      cells[i].textContent = r < 0 ? 'session' : ms(Math.max(0, r - elapsed));
    }
  }

  function forceRelease(key, button) {
    if (!confirm('Force-release "' + key + '"? Its holder loses the lock at its next renewal.')) return;
    button.disabled = true;
    var headers = { 'Content-Type': 'application/json', 'X-Dlock-Admin': '1' };
    if (token) headers['X-Dlock-Token'] = token;
    fetch('api/release' + q, { method: 'POST', headers: headers, body: JSON.stringify({ key: key }) })
      .then(function (r) { return r.json().then(function (body) { return { ok: r.ok, body: body }; }); })
      .then(function (r) {
        if (!r.ok) showError(r.body.error || 'force release refused');
      })
      .catch(function (e) { showError('force release failed: ' + e); })
      .then(function () { button.disabled = false; });
  }

  function showError(text) {
    var box = $('error');
    box.textContent = text;
    box.hidden = !text;
  }

  function renderLocks(s) {
    var body = $('locks').tBodies[0];
    clear(body);
    var locks = s.locks || [];
    var admin = !!s.admin;
    $('admin-col').hidden = !admin;
    $('no-locks').hidden = locks.length > 0;
    $('lock-count').textContent = locks.length + ' held' + (s.prefix ? ' under "' + s.prefix + '"' : '') + (s.truncated ? ' (limit reached: there may be more)' : '');
    locks.forEach(function (k) {
      k.holders.forEach(function (h, i) {
        var tr = el('tr');
        tr.setAttribute('data-key', k.key);
        tr.setAttribute('data-testid', 'lock-row');
        var first = i === 0;
        tr.appendChild(el('td', 'key', first ? k.key : ''));
        tr.appendChild(el('td', 'mode', k.mode === 'permits' ? 'permits/' + (k.limit === null ? '?' : k.limit) : k.mode));
        tr.appendChild(el('td', 'host', h.host === null ? '?' : h.host));
        tr.appendChild(el('td', 'pid', h.pid === null ? '?' : h.pid));
        tr.appendChild(el('td', 'token', h.token));
        var ttl = el('td', 'ttl', ms(h.remainingMs));
        ttl.setAttribute('data-remaining', String(h.remainingMs));
        tr.appendChild(ttl);
        tr.appendChild(el('td', 'permits', h.permits));
        tr.appendChild(el('td', 'waiters', first ? k.waiters : ''));
        if (admin) {
          var td = el('td');
          if (first) {
            var b = el('button', 'force', 'Force release');
            b.setAttribute('data-testid', 'force-release');
            b.addEventListener('click', function () { forceRelease(k.key, b); });
            td.appendChild(b);
          }
          tr.appendChild(td);
        }
        body.appendChild(tr);
      });
    });
  }

  function renderFeed(s) {
    var list = $('feed');
    clear(list);
    var events = (s.events || []).slice().reverse();
    if (events.length === 0) list.appendChild(el('li', 'muted', 'nothing yet'));
    events.forEach(function (e) {
      var li = el('li', 'kind-' + e.kind);
      li.setAttribute('data-kind', e.kind);
      li.setAttribute('data-key', e.key);
      li.appendChild(el('span', 'time', new Date(e.at).toLocaleTimeString()));
      li.appendChild(el('span', 'kind', e.kind));
      li.appendChild(el('code', 'key', e.key));
      li.appendChild(document.createTextNode(' ' + e.text + (e.inferred ? '' : ' (this dashboard)')));
      list.appendChild(li);
    });
  }

  function renderHistograms(s) {
    var box = $('histograms');
    clear(box);
    var h = s.histograms || {};
    var keys = Object.keys(h);
    if (keys.length === 0) box.appendChild(el('p', 'muted', 'no hold has ended yet'));
    keys.forEach(function (key) {
      var d = el('div', 'hist');
      d.setAttribute('data-key', key);
      d.appendChild(el('div', 'name', key));
      var rows = el('div', 'rows');
      rows.appendChild(el('span', 'muted', ''));
      rows.appendChild(el('span', 'muted', 'waited'));
      rows.appendChild(el('span', 'muted', 'held'));
      var max = Math.max.apply(null, h[key].wait.concat(h[key].hold).concat([1]));
      for (var i = 0; i < h[key].hold.length; i++) {
        rows.appendChild(el('span', 'muted', bucketLabel(s.buckets, i)));
        ['wait', 'hold'].forEach(function (which) {
          var n = h[key][which][i];
          var cell = el('span', 'cell ' + which);
          var bar = el('span', 'bar');
          bar.style.width = Math.round((n / max) * 100) + 'px';
          cell.appendChild(bar);
          cell.appendChild(el('span', which + '-count', n));
          rows.appendChild(cell);
        });
      }
      d.appendChild(rows);
      box.appendChild(d);
    });
  }

  function renderSale(s) {
    var box = $('sale');
    if (!s.sale) { box.hidden = true; return; }
    box.hidden = false;
    var phases = $('phases');
    clear(phases);
    s.sale.phases.forEach(function (p) {
      var d = el('div', 'phase');
      d.setAttribute('data-testid', 'phase');
      d.setAttribute('data-lock', p.lock ? 'on' : 'off');
      d.setAttribute('data-state', p.state);
      d.appendChild(el('h3', '', (p.lock ? 'With the lock' : 'Without the lock') + ' — ' + p.state));
      var dl = el('dl');
      function row(label, value, cls) {
        dl.appendChild(el('dt', '', label));
        var dd = el('dd', cls || '', value);
        dd.setAttribute('data-field', cls || label);
        dl.appendChild(dd);
      }
      row('buyers', p.done + ' / ' + p.buyers, 'buyers');
      row('stock', p.stockNow === null ? '?' : p.stockNow + ' of ' + p.stock, 'stock');
      row('orders', p.orders, 'orders');
      row('oversold', p.oversold, 'oversold');
      row('lock holder', p.lock ? (p.holder === null ? 'nobody' : 'worker ' + p.holder.worker + ' (pid ' + p.holder.pid + ', token ' + p.holder.token + ')') : 'no lock', 'holder');
      row('lock changed hands', p.lock ? p.handoffs + ' times' : '-', 'handoffs');
      if (p.verdict) row('verdict', p.verdict, 'verdict ' + (p.oversold > 0 ? 'bad' : 'good'));
      d.appendChild(dl);
      var w = el('div', 'workers');
      for (var i = 0; i < p.workers; i++) {
        var c = el('span', 'worker' + (p.holder && p.holder.worker === i ? ' holder' : ''), p.lock ? 'w' + i + ' ×' + (p.locks[i] || 0) : 'w' + i);
        c.setAttribute('title', p.lock ? 'worker ' + i + ': lock acquired ' + (p.locks[i] || 0) + ' times' : 'worker ' + i);
        w.appendChild(c);
      }
      d.appendChild(w);
      phases.appendChild(d);
    });
  }

  function render(s) {
    state = s;
    receivedAt = Date.now();
    $('engine').textContent = s.engine || '';
    showError(s.error || '');
    if (!s.error) {
      renderLocks(s);
      renderFeed(s);
      renderHistograms(s);
    }
    renderSale(s);
    tick();
  }

  var source = new EventSource('events' + q);
  source.onopen = function () { $('status').textContent = 'live'; $('status').className = 'status live'; };
  source.onerror = function () { $('status').textContent = 'disconnected, retrying…'; $('status').className = 'status'; };
  source.onmessage = function (m) { render(JSON.parse(m.data)); };
  setInterval(tick, 100);
})();
`;
