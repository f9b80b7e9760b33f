// workbench report page: draw the Vega-Lite charts (lazily), HTML legends that hide a series (mouse and keyboard),
// keyboard zoom, the training curves' controls, SVG/PNG/CSV downloads, sortable tables (aria-sort), the compute
// slider, and on a live page a status file polled through a <script> tag (file:// allows it; fetch would not).
// body[data-ready="1"]: the charts on the first screen are drawn; body[data-drawn="all"]: every chart is.
(function () {
  "use strict";
  var views = (window.wbViews = {}), specs = {}, data = {}, body = document.body;
  function human(v) {
    if (v == null || isNaN(v)) return "";
    var a = Math.abs(v), units = [["T", 1e12], ["B", 1e9], ["M", 1e6], ["K", 1e3]];
    for (var i = 0; i < units.length; i++) if (a >= units[i][1]) return +(v / units[i][1]).toPrecision(3) + units[i][0];
    return String(+v.toPrecision(3));
  }
  window.wbHuman = human;
  function count(v, how) {  // the Vega format type of counts; on a log axis only mantissas 1, 2 and 5 are labelled
    if (how === "log" && v > 0) {
      var m = v / Math.pow(10, Math.floor(Math.log10(v) + 1e-9));
      if (!(Math.abs(m - 1) < 1e-6 || Math.abs(m - 2) < 1e-6 || Math.abs(m - 5) < 1e-6)) return "";
    }
    return human(v);
  }
  function sci(v) {  // FLOPs as Python's format(v, ".3g"): 1e+17, 3.16e+18
    if (!isFinite(v)) return "-";
    var s = v.toExponential(2).replace(/\.?0+e/, "e");
    return Math.abs(v) >= 1e-4 && Math.abs(v) < 1e3 ? String(+v.toPrecision(3)) : s;
  }
  window.wbSci = sci;
  function rows(d) {
    if (!d || !d.columns) return d;
    var keys = Object.keys(d.columns), n = keys.length ? d.columns[keys[0]].length : 0, out = new Array(n);
    for (var i = 0; i < n; i++) { var o = {}; for (var k = 0; k < keys.length; k++) o[keys[k]] = d.columns[keys[k]][i]; out[i] = o; }
    return out;
  }
  function csv(list) {
    if (!list.length) return "";
    var keys = Object.keys(list[0]).filter(function (k) { return k.charAt(0) !== "_" && k !== "Symbol(vega_id)"; });
    var quote = function (v) { v = v == null ? "" : String(v); return /[",\n]/.test(v) ? '"' + v.replace(/"/g, '""') + '"' : v; };
    return [keys.join(",")].concat(list.map(function (r) { return keys.map(function (k) { return quote(r[k]); }).join(","); })).join("\n") + "\n";
  }
  function save(name, blob) {
    var a = document.createElement("a");
    a.href = URL.createObjectURL(blob); a.download = name; document.body.appendChild(a); a.click();
    setTimeout(function () { URL.revokeObjectURL(a.href); a.remove(); }, 2000);
  }
  function hiddenOf(fig) {
    return Array.prototype.slice.call(fig.querySelectorAll(".legend button.key[aria-pressed='false']")).map(function (b) { return b.getAttribute("data-series"); });
  }
  // --- the training curves' controls: x-axis, log loss axis, range, filter, validation curves ---------------
  var SIZE = /^\s*(>=?|<=?)?\s*([\d.]+(?:e[+-]?\d+)?)\s*([KMBT]?)\s*(?:-\s*([\d.]+(?:e[+-]?\d+)?)\s*([KMBT]?))?\s*$/i;
  var MULT = { "": 1, K: 1e3, M: 1e6, B: 1e9, T: 1e12 };
  function parseFilter(text) {  // {text} | {lo, hi}: a run id substring, or a size (>100M, <1B, 50M-200M)
    var m = SIZE.exec(text || "");
    if (!text || !text.trim()) return { text: "", lo: 0, hi: -1 };
    if (!m || (!m[1] && !m[4] && !/[KMBT]$/i.test(text.trim()))) return { text: text.trim().toLowerCase(), lo: 0, hi: -1 };
    var a = parseFloat(m[2]) * MULT[(m[3] || "").toUpperCase()];
    if (m[4]) return { text: "", lo: a, hi: parseFloat(m[4]) * MULT[(m[5] || "").toUpperCase()] };
    if (m[1] && m[1][0] === ">") return { text: "", lo: a, hi: Infinity };
    if (m[1] && m[1][0] === "<") return { text: "", lo: 0, hi: a };
    return { text: "", lo: a / 1.05, hi: a * 1.05 };
  }
  function controlState(fig) {
    var s = {};
    fig.querySelectorAll("[data-control]").forEach(function (el) { s[el.getAttribute("data-control")] = el.type === "checkbox" ? el.checked : el.value; });
    return s;
  }
  function applyControls(spec, state) {  // a copy of the spec with the x field, the loss scale and range chosen
    var meta = spec.usermeta.curves;
    if (!meta) return spec;
    spec = JSON.parse(JSON.stringify(spec));
    spec.params.forEach(function (p) { if (p.name === "xkey" && state.x) p.value = state.x; if (p.name === "showval" && "val" in state) p.value = !!state.val; });
    spec.layer.forEach(function (layer) {
      var e = layer.encoding;
      if (state.x && e.x) e.x.title = meta.x_axes[state.x];
      if (state.x === "s" && e.x) e.x.axis = { format: "~s" };
      if (state.x === "f" && e.x) e.x.axis = { format: ".1~e" };
      if (e.y) {
        e.y.scale = state.y === "log" ? { type: "log" } : { zero: false };
        if (state.range !== "full") e.y.scale.domain = meta.domain;
        e.y.title = "loss (nats/token)" + (state.range !== "full" ? ", lines beyond the axis clipped" : "") + (state.y === "log" ? ", log scale" : "");
      }
    });
    return spec;
  }
  function setFilter(fig, view) {
    var input = fig.querySelector("[data-control='filter']");
    if (!input || !view) return;
    var f = parseFilter(input.value);
    view.signal("filt", f.text).signal("filt_lo", f.lo).signal("filt_hi", f.hi === Infinity ? 1e30 : f.hi).runAsync();
    var note = fig.querySelector("[data-control-note]");
    if (note) note.textContent = f.text ? "runs whose id contains " + JSON.stringify(f.text) : f.hi >= 0 ? "runs with N from " + human(f.lo) + " to " + (f.hi === Infinity ? "any" : human(f.hi)) : "";
  }
  // --- drawing -------------------------------------------------------------------------------------------
  function draw(fig) {
    var id = fig.getAttribute("data-fig");
    if (!specs[id]) {
      var spec = JSON.parse(document.getElementById("spec-" + id).textContent);
      Object.keys(spec.datasets || {}).forEach(function (k) { spec.datasets[k] = rows(spec.datasets[k]); });
      specs[id] = spec; data[id] = spec.datasets;
    }
    var spec = applyControls(specs[id], controlState(fig));
    if (views[id]) { views[id].finalize(); delete views[id]; }
    var el = fig.querySelector(".chart");
    return window.vegaEmbed(el, spec, { renderer: "svg", actions: false, tooltip: { theme: "light" }, expressionFunctions: { wbcount: count } })
      .then(function (res) {
        var view = (views[id] = res.view);
        view._wbZoom = zoomSignals(res.vgSpec);
        var hidden = hiddenOf(fig);
        if (hidden.length) view.signal("hidden", hidden);
        setFilter(fig, view);
        if (specs[id].usermeta.curves) curveHover(fig);
        return view.runAsync();
      });
  }
  // the training curves' tooltip: the nearest drawn point to the pointer, found in the chart's own data
  var tip = null;
  function tipBox() {
    if (!tip) { tip = document.createElement("div"); tip.className = "wbtip"; tip.setAttribute("role", "status"); document.body.appendChild(tip); }
    return tip;
  }
  function curveHover(fig) {
    var id = fig.getAttribute("data-fig"), el = fig.querySelector(".chart"), pending = false;
    if (el._wbHover) return;  // once per chart: it reads the current view on every move
    el._wbHover = true;
    var runs = data[id].runs, byIndex = {};
    runs.forEach(function (r) { byIndex[r.i] = r; });
    function nearest(e) {
      pending = false;
      var view = views[id];
      if (!view) return;
      var svg = el.querySelector("svg"), box = svg.getBoundingClientRect(), o = view.origin();
      var px = e.clientX - box.left - o[0], py = e.clientY - box.top - o[1], sx = view.scale("x"), sy = view.scale("y");
      var key = view.signal("xkey"), hidden = view.signal("hidden"), filt = view.signal("filt"), lo = view.signal("filt_lo"), hi = view.signal("filt_hi");
      var best = null, bestD = 400;  // within 20 px
      ["curves", "val"].forEach(function (set) {
        if (set === "val" && !view.signal("showval")) return;
        (data[id][set] || []).forEach(function (d) {
          if (d.l == null || !(d[key] > 0)) return;
          var run = byIndex[d.r];
          if (!run || hidden.indexOf(run.series) >= 0) return;
          if (filt ? run.run.toLowerCase().indexOf(filt) < 0 : hi >= 0 && !(run.N >= lo && run.N <= hi)) return;
          var dx = sx(d[key]) - px, dy = sy(d.l) - py, dd = dx * dx + dy * dy;
          if (dd < bestD) { bestD = dd; best = { d: d, run: run, set: set }; }
        });
      });
      var t = tipBox();
      if (!best) { t.style.display = "none"; if (view.signal("hl") !== -1) view.signal("hl", -1).runAsync(); return; }
      var d = best.d, r = best.run;
      t.textContent = "";
      [["run", r.run], ["N (params)", human(r.N)], ["budget", r.series], ["step", d.s == null ? "-" : Math.round(d.s).toLocaleString("en")],
       ["tokens", human(d.t)], ["FLOPs", sci(d.f)], [best.set === "val" ? "validation loss" : "training loss", (+d.l).toPrecision(4)]].forEach(function (kv) {
        var line = document.createElement("div"), k = document.createElement("b");
        k.textContent = kv[0] + ": "; line.appendChild(k); line.appendChild(document.createTextNode(String(kv[1]))); t.appendChild(line);
      });
      t.style.display = "block";
      t.style.left = Math.min(e.clientX + 14, window.innerWidth - 260) + "px";
      t.style.top = e.clientY + 14 + "px";
      if (view.signal("hl") !== d.r) view.signal("hl", d.r).runAsync();
    }
    el.addEventListener("mousemove", function (e) { if (!pending) { pending = true; requestAnimationFrame(function () { nearest(e); }); } });
    el.addEventListener("mouseleave", function () { tipBox().style.display = "none"; if (views[id]) views[id].signal("hl", -1).runAsync(); });
  }
  function zoomSignals(vg) {  // the signals that hold the zoomed x and y domains (Vega-Lite's bind: scales)
    var out = {};
    (vg.scales || []).forEach(function (s) {
      var m = s.domainRaw && s.domainRaw.signal && /^(\w+)\["(.+)"\]$/.exec(s.domainRaw.signal);
      if (m && (s.name === "x" || s.name === "y")) out[s.name] = m[1] + "_" + m[2].replace(/\W/g, "_");
    });
    return out;
  }
  function zoom(view, factor, panX, panY) {
    var z = view._wbZoom || {};
    ["x", "y"].forEach(function (axis) {
      if (!z[axis]) return;
      var sc = view.scale(axis), d = sc.domain().slice(), log = sc.type === "log";
      var f = log ? Math.log : function (v) { return v; }, g = log ? Math.exp : function (v) { return v; };
      var a = f(d[0]), b = f(d[1]), mid = (a + b) / 2, half = ((b - a) / 2) * factor, shift = (b - a) * (axis === "x" ? panX : panY);
      view.signal(z[axis], [g(mid - half + shift), g(mid + half + shift)]);
    });
    view.runAsync();
  }
  function resetZoom(view) { var z = view._wbZoom || {}; Object.keys(z).forEach(function (k) { view.signal(z[k], null); }); view.runAsync(); }
  document.addEventListener("keydown", function (e) {
    var box = e.target.closest && e.target.closest(".chartbox");
    if (!box) return;
    var view = views[box.closest("figure").getAttribute("data-fig")];
    if (!view) return;
    var k = e.key, act = { "+": [0.8, 0, 0], "=": [0.8, 0, 0], "-": [1.25, 0, 0], ArrowLeft: [1, -0.1, 0], ArrowRight: [1, 0.1, 0], ArrowUp: [1, 0, 0.1], ArrowDown: [1, 0, -0.1] }[k];
    if (act) { zoom(view, act[0], act[1], act[2]); e.preventDefault(); }
    else if (k === "0") { resetZoom(view); e.preventDefault(); }
  });
  document.addEventListener("click", function (e) {
    var key = e.target.closest && e.target.closest(".legend button.key");
    if (key) {
      key.setAttribute("aria-pressed", key.getAttribute("aria-pressed") === "false" ? "true" : "false");
      var fig = key.closest("figure"), view = views[fig.getAttribute("data-fig")];
      if (view) view.signal("hidden", hiddenOf(fig)).runAsync();
      return;
    }
    var b = e.target.closest && e.target.closest("button[data-dl]");
    if (!b) return;
    var kind = b.getAttribute("data-dl"), id = b.getAttribute("data-fig"), view = views[id];
    if (kind === "svg" && view) view.toSVG().then(function (s) { save(id + ".svg", new Blob([s], { type: "image/svg+xml" })); });
    if (kind === "png" && view) view.toCanvas(2).then(function (c) { c.toBlob(function (blob) { save(id + ".png", blob); }, "image/png"); });
    if (kind === "data") save(id + ".csv", new Blob([csv(data[id][b.getAttribute("data-set")])], { type: "text/csv" }));
    if (kind === "file") save(b.getAttribute("data-name"), new Blob([document.getElementById(b.getAttribute("data-src")).value], { type: "text/csv" }));
  });
  document.addEventListener("change", function (e) {
    var el = e.target.closest && e.target.closest("[data-control]");
    if (!el) return;
    var fig = el.closest("figure");
    if (el.getAttribute("data-control") === "filter") return setFilter(fig, views[fig.getAttribute("data-fig")]);
    draw(fig);
  });
  document.addEventListener("input", function (e) {
    var el = e.target.closest && e.target.closest("[data-control='filter']");
    if (el) { var fig = el.closest("figure"); setFilter(fig, views[fig.getAttribute("data-fig")]); }
  });
  // --- sortable tables: a header is a button (Enter or Space sorts), its th carries aria-sort -------------
  document.querySelectorAll("table.sortable th.sort").forEach(function (th) {
    th.querySelector("button").addEventListener("click", function () {
      var table = th.closest("table"), tbody = table.tBodies[0], col = th.cellIndex;
      var asc = th.getAttribute("aria-sort") !== "ascending";
      table.querySelectorAll("th.sort").forEach(function (h) { h.setAttribute("aria-sort", "none"); });
      th.setAttribute("aria-sort", asc ? "ascending" : "descending");
      var list = Array.prototype.slice.call(tbody.rows);
      list.sort(function (a, b) {
        var x = a.cells[col].dataset.v, y = b.cells[col].dataset.v;
        var nx = parseFloat(x), ny = parseFloat(y), both = !isNaN(nx) && !isNaN(ny);
        var d = both ? nx - ny : (x === "" ? 1 : y === "" ? -1 : x.localeCompare(y));
        return asc ? d : -d;
      });
      list.forEach(function (r) { tbody.appendChild(r); });
    });
  });
  // Draw lazily: the charts on the first screen at once (the page is then ready), the others one per task
  // afterwards, and any chart the reader scrolls to before its turn at once (a 500-run page opens fast).
  var figs = Array.prototype.slice.call(document.querySelectorAll("figure[data-fig]")), drawing = [];
  function drawOnce(fig) {
    var at = figs.indexOf(fig);
    if (!drawing[at]) drawing[at] = draw(fig).catch(function (err) { console.error("chart " + fig.getAttribute("data-fig") + ": " + err); throw err; });
    return drawing[at];
  }
  function onScreen(fig) { var r = fig.getBoundingClientRect(); return r.bottom > 0 && r.top < window.innerHeight; }
  var first = window.vegaEmbed ? Promise.all(figs.filter(onScreen).map(drawOnce)) : Promise.resolve();
  var idle = window.requestIdleCallback || function (f) { return setTimeout(f, 50); };
  var all = !window.vegaEmbed ? Promise.resolve() : first.then(function () {
    return new Promise(function (done, fail) {
      var next = 0;
      function step() {
        while (next < figs.length && drawing[next]) next++;
        if (next >= figs.length) return Promise.all(drawing).then(done, fail);
        drawOnce(figs[next]).then(function () { idle(step, { timeout: 500 }); }, fail);
      }
      requestAnimationFrame(function () { idle(step, { timeout: 500 }); });
    });
  });
  if (window.vegaEmbed && window.IntersectionObserver) {
    var seen = new IntersectionObserver(function (entries) {
      entries.forEach(function (e) { if (e.isIntersecting) { seen.unobserve(e.target); drawOnce(e.target); } });
    }, { rootMargin: "300px 0px" });
    figs.forEach(function (f) { seen.observe(f); });
  }
  if (window.wbSlider) window.wbSlider(human, sci);
  all.then(function () { body.setAttribute("data-drawn", "all"); }, function () { body.setAttribute("data-drawn", "error"); });
  // --- a live page: poll the watcher's status file; reload only when its version differs from the page's ----
  var every = parseFloat(body.getAttribute("data-reload") || "0"), key = "wb-scroll:" + location.pathname;
  var live = document.getElementById("live"), timer = null;
  function stop(text, state) {
    if (timer) clearInterval(timer);
    timer = null;
    body.setAttribute("data-live", state);
    if (live) { live.textContent = text; live.classList.add("stopped"); }
  }
  window.wbLiveStamp = function (stamp) {
    var mine = body.getAttribute("data-version");
    if (stamp.version !== mine) { sessionStorage.setItem(key, String(window.scrollY)); location.reload(); return; }
    if (stamp.state !== "running") stop(stamp.line, "stopped");
  };
  function poll() {
    var old = document.getElementById("wb-stamp");
    if (old) old.remove();
    var s = document.createElement("script");
    s.id = "wb-stamp";
    s.src = body.getAttribute("data-stamp") + "?t=" + Date.now();
    s.onerror = function () { stop("Stopped: no live status file (" + body.getAttribute("data-stamp") + ") next to this page, so it no longer updates; it shows the sweep as of " + body.getAttribute("data-updated") + ".", "stopped"); };
    document.head.appendChild(s);
  }
  (every > 0 ? all : first).then(function () {
    if (every > 0 && body.getAttribute("data-stamp")) {
      var y = parseFloat(sessionStorage.getItem(key) || "0");
      if (y > 0) window.scrollTo(0, y);
      body.setAttribute("data-live", "polling");
      timer = setInterval(poll, every * 1000);
      poll();
    }
    body.setAttribute("data-ready-ms", String(Math.round(performance.now())));
    body.setAttribute("data-ready", "1");
  }).catch(function (err) { console.error("chart: " + err); body.setAttribute("data-ready", "error"); });
})();
