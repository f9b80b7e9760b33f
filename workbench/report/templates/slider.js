// The compute slider: N*, D*, tokens per parameter and the loss with its interval at any budget, interpolated
// log-linearly in the table the report computed with the plan's own functions (report.decision.slider_table).
window.wbSlider = function (human, sci) {
  "use strict";
  var box = document.getElementById("slider"), holder = document.getElementById("slider-data");
  if (!box || !holder) return;
  var t = JSON.parse(holder.textContent), col = t.columns, C = col.C, n = C.length;
  var range = document.getElementById("sl-range"), typed = document.getElementById("sl-c"), gpus = document.getElementById("sl-gpus");
  function interp(name, c) {  // log-linear between the two grid budgets around c
    var v = col[name];
    if (!v) return null;
    var lo = 0, hi = n - 1;
    if (c <= C[0]) hi = 1; else if (c >= C[n - 1]) lo = n - 2;
    else while (hi - lo > 1) { var mid = (lo + hi) >> 1; if (C[mid] <= c) lo = mid; else hi = mid; }
    var a = v[lo], b = v[hi];
    if (a == null || b == null || a <= 0 || b <= 0) return a == null ? null : a;
    var f = (Math.log(c) - Math.log(C[lo])) / (Math.log(C[hi]) - Math.log(C[lo]));
    return Math.exp(Math.log(a) + f * (Math.log(b) - Math.log(a)));
  }
  function put(key, text, value) {
    var el = box.querySelector("[data-out='" + key + "']");
    if (!el) return;
    el.textContent = text;
    if (value != null) el.setAttribute("data-value", String(value)); else el.removeAttribute("data-value");
  }
  function span(lo, hi, f) { return lo == null || hi == null ? "" : " [" + f(lo) + ", " + f(hi) + "]"; }
  function loss(v) { return v == null ? "-" : v.toFixed(4); }
  function show(c) {
    if (!(c > 0) || !isFinite(c)) { put("where", "type a budget in FLOPs, such as 1e22 or 3.8e25"); return; }
    var inside = c >= C[0] && c <= C[n - 1];
    var N = interp("N", c), D = interp("D", c);
    put("C", sci(c) + " FLOPs", c);
    put("N", human(N) + span(interp("N_lo", c), interp("N_hi", c), human), N);
    put("D", human(D) + span(interp("D_lo", c), interp("D_hi", c), human), D);
    put("tpp", (D / N).toFixed(1), D / N);
    var L = interp("L", c);
    put("L", L == null ? "no loss law (isoFLOP law only)" : loss(L) + span(interp("L_lo", c), interp("L_hi", c), loss), L);
    ["N_lo", "N_hi", "D_lo", "D_hi", "L_lo", "L_hi"].forEach(function (k) { var el = box.querySelector("[data-out='" + k.split("_")[0] + "']"); if (el) { var v = interp(k, c); if (v != null) el.setAttribute("data-" + k.toLowerCase().replace("_", "-"), String(v)); } });
    if (col.LL) put("LL", loss(interp("LL", c)) + span(interp("LL_lo", c), interp("LL_hi", c), loss), interp("LL", c));
    if (col.NI) put("inf", "N " + human(interp("NI", c)) + ", D " + human(interp("DI", c)) + " for " + human(t.inference_tokens) + " inference tokens");
    if (col.NU) put("dc", "N " + human(interp("NU", c)) + ", D " + human(interp("DU", c)) + " with " + human(t.unique_tokens) + " unique tokens");
    if (t.gpu_s_per_flop) {
      var g = Math.max(1, parseInt(gpus.value, 10) || t.gpus), hours = c * t.gpu_s_per_flop / 3600;
      put("gpu", (hours / 24 / g).toPrecision(3) + " days on " + g.toLocaleString("en") + " GPUs (" + hours.toPrecision(3) + " GPU-hours; " + t.gpu_how + ")", hours / 24 / g);
    }
    var past = Math.log10(c / t.fitted[1]);
    var where = "fitted budgets " + sci(t.fitted[0]) + " to " + sci(t.fitted[1]) + " FLOPs; " +
      (past > 0.005 ? past.toFixed(1) + " decades past the largest fitted budget: an extrapolation" : c < t.fitted[0] ? "below the fitted range" : "inside the fitted range");
    if (!inside) where += "; outside this table (" + sci(C[0]) + " to " + sci(C[n - 1]) + "): the nearest end's trend is extended";
    put("where", where, past);
    range.setAttribute("aria-valuetext", sci(c) + " FLOPs");
  }
  range.addEventListener("input", function () { var c = Math.pow(10, parseFloat(range.value)); typed.value = sci(c); show(c); });
  typed.addEventListener("change", function () {
    var c = parseFloat(typed.value.replace(/\s/g, ""));
    if (c > 0) range.value = String(Math.log10(c));
    show(c);
  });
  gpus.addEventListener("input", function () { show(parseFloat(typed.value)); });
  show(parseFloat(typed.value));
};
