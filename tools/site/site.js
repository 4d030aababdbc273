// The docs site's page script (tools/docs.py copies it to assets/site.js): KaTeX typesetting of the math spans, the
// on-page table of contents' current section, and full-text search with MiniSearch over assets/search-index.js.
// Everything is local: it works from a local server and from file:// (the index is a script, not a fetch).
(function () {
  'use strict';
  var root = document.body.getAttribute('data-root') || '';

  // ------------------------------------------------------------------ math
  function typesetMath() {
    if (!window.katex) return;
    document.querySelectorAll('span.math').forEach(function (el) {
      var tex = el.textContent;
      katex.render(tex, el, {displayMode: el.classList.contains('display'), throwOnError: false});
      el.setAttribute('data-tex', tex);
    });
  }

  // ------------------------------------------------------------------ table of contents: the section being read
  function followSections() {
    var links = Array.prototype.slice.call(document.querySelectorAll('nav.toc a[href^="#"]'));
    if (!links.length) return;
    var targets = links.map(function (a) { return document.getElementById(decodeURIComponent(a.hash.slice(1))); });
    function update() {
      var current = 0;
      for (var i = 0; i < targets.length; i++) {
        if (targets[i] && targets[i].getBoundingClientRect().top < 90) current = i;
      }
      if (window.innerHeight + window.scrollY >= document.documentElement.scrollHeight - 2) {  // at the end: the last section
        for (var j = targets.length - 1; j >= 0; j--) {
          if (targets[j] && targets[j].getBoundingClientRect().top < window.innerHeight) { current = j; break; }
        }
      }
      links.forEach(function (a, i) { a.classList.toggle('current', i === current); });
      var toc = links[current].closest('nav.toc'), a = links[current];  // keep the current entry in the column's view
      if (toc && (a.offsetTop < toc.scrollTop || a.offsetTop + a.offsetHeight > toc.scrollTop + toc.clientHeight)) {
        toc.scrollTop = a.offsetTop - toc.clientHeight / 3;
      }
    }
    window.addEventListener('scroll', update, {passive: true});
    update();
  }

  // ------------------------------------------------------------------ search
  var input = document.getElementById('search-input');
  var panel = document.getElementById('search-results');
  var engine = null, docs = null, loading = null, pending = null;

  function loadScript(src) {
    return new Promise(function (resolve, reject) {
      var s = document.createElement('script');
      s.src = src; s.onload = resolve;
      s.onerror = function () { reject(new Error('could not load ' + src)); };
      document.head.appendChild(s);
    });
  }

  function loadIndex() {  // on first use: the library, then the index (every page's sections)
    if (!loading) {
      loading = loadScript(root + 'assets/minisearch.js')
        .then(function () { return loadScript(root + 'assets/search-index.js'); })
        .then(function () {
          docs = {};
          window.SEARCH_DOCS.forEach(function (d) { docs[d.id] = d; });
          engine = new MiniSearch({fields: ['title', 'heading', 'text'], storeFields: []});
          engine.addAll(window.SEARCH_DOCS);
        });
    }
    return loading;
  }

  function escapeHtml(s) {
    return s.replace(/[&<>"]/g, function (c) { return {'&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;'}[c]; });
  }

  function snippet(text, terms) {  // about 180 characters around the first term found, terms marked
    var lower = text.toLowerCase(), at = -1;
    terms.forEach(function (t) { var i = lower.indexOf(t.toLowerCase()); if (i >= 0 && (at < 0 || i < at)) at = i; });
    var start = Math.max(0, at - 60);
    if (start > 0) { var sp = text.indexOf(' ', start); if (sp >= 0 && sp < at) start = sp + 1; }  // begin at a word
    var s = text.slice(start, start + 180);
    var out = escapeHtml(s);
    terms.slice().sort(function (a, b) { return b.length - a.length; }).forEach(function (t) {
      if (t.length < 2) return;
      out = out.replace(new RegExp('(' + t.replace(/[.*+?^${}()|[\]\\]/g, '\\$&') + ')', 'gi'), '<mark>$1</mark>');
    });
    return (start > 0 ? '… ' : '') + out + (start + 180 < text.length ? ' …' : '');
  }

  function search(query) {
    var opts = {boost: {title: 3, heading: 2}, prefix: function (term) { return term.length > 2; }, fuzzy: 0.15};
    var hits = engine.search(query, Object.assign({combineWith: 'AND'}, opts));
    if (!hits.length) hits = engine.search(query, opts);  // no section has every word: any word
    return hits.slice(0, 12);
  }

  function show(query) {
    query = query.trim();
    if (!query) { panel.hidden = true; panel.innerHTML = ''; return; }
    if (!engine) {
      pending = query;
      panel.hidden = false; panel.innerHTML = '<div class="search-note">Loading the index…</div>';
      loadIndex().then(function () { if (pending !== null) { var q = pending; pending = null; show(q); } })
        .catch(function (e) { panel.innerHTML = '<div class="search-note">Search is unavailable: ' + escapeHtml(String(e.message)) + '</div>'; });
      return;
    }
    var hits = search(query);
    panel.hidden = false;
    if (!hits.length) { panel.innerHTML = '<div class="search-note">No page mentions “' + escapeHtml(query) + '”.</div>'; return; }
    panel.innerHTML = '<div class="search-note">' + hits.length + (hits.length === 12 ? '+' : '') + ' results for “' +
      escapeHtml(query) + '”</div>' + hits.map(function (h) {
        var d = docs[h.id];
        return '<a class="search-hit" href="' + escapeHtml(root + d.url) + '"><span class="hit-title">' + escapeHtml(d.title) +
          (d.heading ? ' <span class="hit-sep">›</span> ' + escapeHtml(d.heading) : '') + '</span>' +
          '<span class="hit-text">' + snippet(d.text, h.terms) + '</span></a>';
      }).join('');
  }

  if (input && panel) {
    input.addEventListener('focus', function () { loadIndex(); if (input.value.trim()) show(input.value); });
    input.addEventListener('input', function () { show(input.value); });
    input.addEventListener('keydown', function (e) {
      var hits = panel.querySelectorAll('a.search-hit');
      if (e.key === 'Enter' && hits.length) { e.preventDefault(); hits[0].click(); }
      if (e.key === 'ArrowDown' && hits.length) { e.preventDefault(); hits[0].focus(); }
      if (e.key === 'Escape') { input.value = ''; show(''); }
    });
    panel.addEventListener('keydown', function (e) {
      var hits = Array.prototype.slice.call(panel.querySelectorAll('a.search-hit')), i = hits.indexOf(document.activeElement);
      if (e.key === 'ArrowDown' && i < hits.length - 1) { e.preventDefault(); hits[i + 1].focus(); }
      if (e.key === 'ArrowUp') { e.preventDefault(); (i > 0 ? hits[i - 1] : input).focus(); }
      if (e.key === 'Escape') { input.focus(); input.value = ''; show(''); }
    });
    document.addEventListener('keydown', function (e) {  // "/" searches, as on most documentation sites
      if (e.key === '/' && document.activeElement !== input && !/^(INPUT|TEXTAREA|SELECT)$/.test(document.activeElement.tagName)) {
        e.preventDefault(); input.focus();
      }
    });
    document.addEventListener('click', function (e) {
      if (!panel.contains(e.target) && e.target !== input) panel.hidden = true;
    });
    var q = new URLSearchParams(window.location.search).get('q');  // ?q=words opens the page with those results
    if (q) { input.value = q; show(q); }
  }

  typesetMath();
  followSections();
})();
