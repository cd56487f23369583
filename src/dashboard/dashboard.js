// canary-gate dashboard: keeps the server-rendered pages live by long-polling the JSON
// (`?wait=<version>` answers as soon as something changed). No framework, no build step.
// Text from the cluster is only ever set with textContent; the rollout page swaps in HTML
// fragments the server rendered (and escaped) itself.
(function () {
  'use strict';
  var root = document.documentElement;
  var polls = 0;
  var PAUSE = 1000;
  var RETRY = 5000;

  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) { e.className = cls; }
    if (text !== undefined) { e.textContent = text; }
    return e;
  }
  function age(s) {
    s = Math.max(0, s | 0);
    if (s < 60) { return s + 's'; }
    if (s < 3600) { return Math.floor(s / 60) + 'm' + (s % 60) + 's'; }
    if (s < 86400) { return Math.floor(s / 3600) + 'h' + Math.floor((s % 3600) / 60) + 'm'; }
    return Math.floor(s / 86400) + 'd' + Math.floor((s % 86400) / 3600) + 'h';
  }
  function pct(v) { return v === null || v === undefined ? 'n/a' : v.toFixed(2) + '%'; }
  function ms(v) { return v === null || v === undefined ? 'n/a' : Math.round(v) + ' ms'; }
  var SVG = 'http://www.w3.org/2000/svg';
  function bar(weight, max) {
    var s = document.createElementNS(SVG, 'svg');
    s.setAttribute('class', 'bar');
    s.setAttribute('viewBox', '0 0 100 10');
    s.setAttribute('preserveAspectRatio', 'none');
    var w = Math.min(100, weight), m = Math.min(100, max);
    var parts = [['rect', { 'class': 'track', width: 100, height: 10 }],
      ['rect', { 'class': 'fill', width: w, height: 10 }],
      ['line', { 'class': 'max', x1: m, y1: 0, x2: m, y2: 10 }]];
    parts.forEach(function (p) {
      var n = document.createElementNS(SVG, p[0]);
      Object.keys(p[1]).forEach(function (k) { n.setAttribute(k, String(p[1][k])); });
      s.appendChild(n);
    });
    return s;
  }
  function gates(r) {
    var td = el('td', 'gates');
    var c = r.last_check;
    if (c) {
      var span = el('span', 'vs');
      span.appendChild(document.createTextNode('success '));
      span.appendChild(el('span', 'c', pct(c.canary_success)));
      span.appendChild(document.createTextNode(' vs '));
      span.appendChild(el('span', 's', pct(c.stable_success)));
      span.appendChild(document.createTextNode(' · p99 '));
      span.appendChild(el('span', 'c', ms(c.canary_p99_ms)));
      span.appendChild(document.createTextNode(' vs '));
      span.appendChild(el('span', 's', ms(c.stable_p99_ms)));
      td.appendChild(span);
    } else if (r.gates) {
      td.textContent = r.gates;
    } else {
      td.appendChild(el('span', 'muted', 'no check yet'));
    }
    return td;
  }
  function row(r) {
    var tr = el('tr');
    tr.setAttribute('data-key', r.namespace + '/' + r.name);
    tr.setAttribute('data-weight', String(r.weight));
    tr.setAttribute('data-phase', r.phase);
    tr.setAttribute('data-source', 'poll');
    tr.appendChild(el('td', '', r.namespace));
    var name = el('td');
    var a = el('a', '', r.name);
    a.setAttribute('href', r.url);
    name.appendChild(a);
    tr.appendChild(name);
    var ph = el('td');
    ph.appendChild(el('span', 'phase phase-' + r.phase, r.phase));
    tr.appendChild(ph);
    var w = el('td', 'weight');
    w.appendChild(bar(r.weight, r.max_weight));
    w.appendChild(document.createTextNode(' '));
    w.appendChild(el('span', 'w', r.weight + '%'));
    tr.appendChild(w);
    tr.appendChild(el('td', 'num', age(r.age_seconds)));
    tr.appendChild(gates(r));
    var checks = el('td', 'num');
    checks.appendChild(el('span', 'good', String(r.passed_checks)));
    checks.appendChild(document.createTextNode(' / '));
    checks.appendChild(el('span', 'bad', String(r.failed_checks)));
    checks.appendChild(el('span', 'muted', ' of ' + r.threshold));
    tr.appendChild(checks);
    tr.appendChild(el('td', 'msg', r.message));
    return tr;
  }
  function logPoll(text) {
    var log = document.getElementById('poll-log');
    if (!log) { return; }
    var li = el('li', '', text);
    li.setAttribute('data-poll', String(polls));
    log.appendChild(li);
    while (log.children.length > 100) { log.removeChild(log.firstChild); }
    root.setAttribute('data-polls', String(polls));
  }
  function renderList(data) {
    var table = document.getElementById('rollouts');
    var status = document.getElementById('status');
    if (!table || !status) { return; }
    var body = table.tBodies[0];
    while (body.firstChild) { body.removeChild(body.firstChild); }
    data.rollouts.forEach(function (r) { body.appendChild(row(r)); });
    if (data.rollouts.length === 0) {
      var tr = el('tr', 'empty');
      var td = el('td', 'muted', 'no rollouts recorded on any Deployment');
      td.setAttribute('colspan', '8');
      tr.appendChild(td);
      body.appendChild(tr);
    }
    status.setAttribute('data-version', data.version);
    status.textContent = data.rollouts.length + ' rollout(s) · ' + data.generated_at +
      (data.error ? ' · cluster: ' + data.error : '') + ' · live';
    logPoll(data.rollouts.map(function (r) {
      return r.namespace + '/' + r.name + '=' + r.weight + ':' + r.phase;
    }).join(' '));
  }
  function pollList(version) {
    fetch('/api/rollouts?wait=' + encodeURIComponent(version), { cache: 'no-store' })
      .then(function (r) { if (!r.ok) { throw new Error(String(r.status)); } return r.json(); })
      .then(function (data) {
        polls += 1;
        renderList(data);
        setTimeout(function () { pollList(data.version); }, PAUSE);
      })
      .catch(function () { setTimeout(function () { pollList(version); }, RETRY); });
  }
  function pollRollout(version) {
    var url = window.location.pathname + '?fragment=live&wait=' + encodeURIComponent(version);
    fetch(url, { cache: 'no-store' })
      .then(function (r) {
        if (!r.ok) { throw new Error(String(r.status)); }
        var v = r.headers.get('x-version') || version;
        return r.text().then(function (t) { return [v, t]; });
      })
      .then(function (vt) {
        polls += 1;
        var live = document.getElementById('live');
        if (live && vt[0] !== live.getAttribute('data-version')) {
          live.innerHTML = vt[1];
          live.setAttribute('data-version', vt[0]);
        }
        root.setAttribute('data-polls', String(polls));
        setTimeout(function () { pollRollout(vt[0]); }, PAUSE);
      })
      .catch(function () { setTimeout(function () { pollRollout(version); }, RETRY); });
  }
  var page = document.body.getAttribute('data-page');
  root.setAttribute('data-script', 'running');
  if (page === 'list') {
    var status = document.getElementById('status');
    pollList(status ? status.getAttribute('data-version') || '' : '');
  } else if (page === 'rollout') {
    var live = document.getElementById('live');
    pollRollout(live ? live.getAttribute('data-version') || '' : '');
  }
})();
