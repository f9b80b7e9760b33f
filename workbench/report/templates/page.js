// workbench report page: draw the Vega-Lite charts (lazily), legend clicks hide a series, SVG/PNG/CSV downloads,
// and on a live page reload every few seconds keeping the reader's scroll position.
// body[data-ready="1"]: the charts on the first screen are drawn; body[data-drawn="all"]: every chart is.
(function () {
  "use strict";
  var views = (window.wbViews = {});
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
  function legendValue(item) {
    for (var i = 0; item && i < 6; i++) {
      var role = item.mark && item.mark.role;
      if (role && role.indexOf("legend") === 0 && item.datum && item.datum.value !== undefined) return item.datum.value;
      item = item.mark && item.mark.group;
    }
    return null;
  }
  var data = {};
  function draw(fig) {
    var id = fig.getAttribute("data-fig");
    var spec = JSON.parse(document.getElementById("spec-" + id).textContent);
    Object.keys(spec.datasets || {}).forEach(function (k) { spec.datasets[k] = rows(spec.datasets[k]); });
    data[id] = spec.datasets;
    return window.vegaEmbed(fig.querySelector(".chart"), spec, { renderer: "svg", actions: false, tooltip: { theme: "light" } })
      .then(function (res) {
        var view = (views[id] = res.view);
        view.addEventListener("click", function (event, item) {
          var value = legendValue(item);
          if (value === null) return;
          var hidden = view.signal("hidden").slice(), at = hidden.indexOf(value);
          if (at < 0) hidden.push(value); else hidden.splice(at, 1);
          view.signal("hidden", hidden).runAsync();
        });
      });
  }
  document.addEventListener("click", function (e) {
    var b = e.target.closest && e.target.closest("button[data-dl]");
    if (!b) return;
    var kind = b.getAttribute("data-dl"), id = b.getAttribute("data-fig"), view = views[id];
    if (kind === "svg" && view) view.toSVG().then(function (s) { save(id + ".svg", new Blob([s], { type: "image/svg+xml" })); });
    if (kind === "png" && view) view.toCanvas(2).then(function (c) { c.toBlob(function (blob) { save(id + ".png", blob); }, "image/png"); });
    if (kind === "data") save(id + ".csv", new Blob([csv(data[id][b.getAttribute("data-set")])], { type: "text/csv" }));
    if (kind === "file") save(b.getAttribute("data-name"), new Blob([document.getElementById(b.getAttribute("data-src")).value], { type: "text/csv" }));
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
  // the rest when the browser is idle (after the first screen is painted), one chart per idle period
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
  var body = document.body, every = parseFloat(body.getAttribute("data-reload") || "0"), key = "wb-scroll:" + location.pathname;
  all.then(function () { body.setAttribute("data-drawn", "all"); }, function () { body.setAttribute("data-drawn", "error"); });
  // a live page returns to the reader's place once every chart above it has its height
  (every > 0 ? all : first).then(function () {
    if (every > 0) {
      var y = parseFloat(sessionStorage.getItem(key) || "0");
      if (y > 0) window.scrollTo(0, y);
      window.addEventListener("scroll", function () { sessionStorage.setItem(key, String(window.scrollY)); });
      setTimeout(function () { sessionStorage.setItem(key, String(window.scrollY)); location.reload(); }, every * 1000);
    }
    body.setAttribute("data-ready-ms", String(Math.round(performance.now())));
    body.setAttribute("data-ready", "1");
  }).catch(function (err) { console.error("chart: " + err); body.setAttribute("data-ready", "error"); });
})();
